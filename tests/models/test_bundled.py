"""The bundled default model (issue 7): its card, its config, and its targets re-computed.

The held-out targets are re-measured here on a small subset of the benchmark's held-out set
(``benchmarks/default_model.py`` runs 64 composites and records the numbers in
``benchmarks/results/default-model-cpu-*.json``); the model card quotes that file.
"""

import hashlib
import re

import pytest

from simharmon.eval.heldout import (
    HELDOUT_SEED_BASE,
    drive_warping_errors,
    heldout_composites,
    image_enhancer,
    score_heldout,
    sequence_enhancer,
)
from simharmon.io.drives import open_drive
from simharmon.models.bundled import BUNDLED_NAME, MODEL_CARD, bundled_weights
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime.optimize import OptimizedEnhancer

SAMPLE_DRIVE = bundled_weights().parents[1] / "sample_drive"


@pytest.fixture(scope="module")
def model():
    plain = build_enhancer(None, weights=[str(bundled_weights())], device="cpu").eval()
    return OptimizedEnhancer(plain).prepare()


def test_config_and_card_match_the_weights(model):
    config = model.config
    assert config.name == BUNDLED_NAME and not config.untrained
    assert config.stream.layout == "per_frame" and config.stream.mask_condition and config.stream.region_pixel
    card = MODEL_CARD.read_text()
    digest = hashlib.sha256(bundled_weights().read_bytes()).hexdigest()
    assert digest in card, "MODEL_CARD.md must name the sha256 of the weights it describes"
    params = sum(p.numel() for p in model.model.parameters())
    assert f"{params:,}" in card, f"MODEL_CARD.md must state the parameter count ({params:,})"
    assert re.search(r"licen[cs]e", card, re.I) and "procedural" in card


def test_heldout_composites_are_deterministic_and_outside_training_seeds():
    a, b = heldout_composites(2), heldout_composites(2)
    assert all((x.composite == y.composite).all() and (x.mask == y.mask).all() for x, y in zip(a, b))
    assert HELDOUT_SEED_BASE >= 1_000_000  # curate draws procedural scenes 0 .. N-1
    assert any((s.composite != s.target).any() for s in a) and all(s.mask.any() for s in a)


def test_heldout_targets(model):
    scores = score_heldout(heldout_composites(16), image_enhancer(model))
    fmse, psnr = scores.fmse, scores.psnr
    assert fmse["model"] <= 0.5 * fmse["input"], fmse
    assert fmse["model"] < fmse["reinhard"], fmse
    assert psnr["model"] > psnr["reinhard"], psnr


def test_sample_drive_warping_error_not_above_input(model):
    drive = open_drive(SAMPLE_DRIVE)
    errors = drive_warping_errors(drive, sequence_enhancer(model))
    assert errors["model"] <= errors["input"], errors
