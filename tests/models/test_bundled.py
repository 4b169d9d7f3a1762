"""The bundled default model (issues 7 and 15): its card, its config, and its targets re-computed.

The targets are re-measured here on subsets of the benchmark's sets (``benchmarks/default_model.py``
runs 64 real-photo and 64 procedural composites and records the numbers in
``benchmarks/results/default-model-cpu-*.json``; the model card quotes that file).
"""

import hashlib
import re

import numpy as np
import pytest

from simharmon.eval.heldout import (
    HELDOUT_SEED_BASE,
    drive_warping_errors,
    heldout_composites,
    image_enhancer,
    score_drive_frames,
    score_heldout,
    sequence_enhancer,
    stream_runner,
)
from simharmon.eval.photo_heldout import (
    heldout_sequences,
    photo_heldout_composites,
    photo_targets,
    score_photo_heldout,
    sequence_flicker,
)
from simharmon.io.drives import open_drive
from simharmon.models.bundled import BUNDLED_NAME, MODEL_CARD, bundled_weights
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime.factory import engine_for

SAMPLE_DRIVE = bundled_weights().parents[1] / "sample_drive"


@pytest.fixture(scope="module")
def model():
    plain = build_enhancer(None, weights=[str(bundled_weights())], device="cpu").eval()
    return engine_for(plain).model  # the optimized model every front door runs


@pytest.fixture(scope="module")
def photo_scores(model):
    """Two composites of each held-out photo at 256x144 and one at 512x288 (24 in all)."""
    small = photo_heldout_composites(2, sizes=((256, 144),))
    large = photo_heldout_composites(1, sizes=((512, 288),))
    return score_photo_heldout(small + large, image_enhancer(model))["summary"]["overall"]


def test_config_and_card_match_the_weights(model):
    config = model.config
    assert config.name == BUNDLED_NAME and not config.untrained
    stream = config.stream
    assert stream.layout == "per_frame" and stream.mask_condition and stream.region_pixel
    assert stream.colour_transform == "smooth_affine_curve" and not config.tokenizer.decoder
    card = MODEL_CARD.read_text()
    digest = hashlib.sha256(bundled_weights().read_bytes()).hexdigest()
    assert digest in card, "MODEL_CARD.md must name the sha256 of the weights it describes"
    params = sum(p.numel() for p in model.model.parameters())
    assert f"{params:,}" in card, f"MODEL_CARD.md must state the parameter count ({params:,})"
    assert re.search(r"licen[cs]e", card, re.I) and "procedural" in card and "Real photographs" in card
    assert bundled_weights().stat().st_size < 8_000_000  # a few MB


def test_heldout_composites_are_deterministic_and_outside_training_seeds():
    a, b = heldout_composites(2), heldout_composites(2)
    assert all((x.composite == y.composite).all() and (x.mask == y.mask).all() for x, y in zip(a, b))
    assert HELDOUT_SEED_BASE >= 1_000_000  # curate draws procedural scenes 0 .. N-1
    assert any((s.composite != s.target).any() for s in a) and all(s.mask.any() for s in a)


# Issue-15 targets the bundled model does NOT meet yet (benchmarks/results/default-model-cpu-20261203.json:
# fMSE 0.749x identity, beats identity on 54.7 %, worst rise 395 on an identity-fMSE < 100 composite).
# Strict: once a model meets them, these report XPASS and fail, so the marks must go.
NOT_MET = pytest.mark.xfail(strict=True, reason="issue-15 target not met by the bundled model (see MODEL_CARD.md)")


def test_real_photo_fmse_beats_reinhard(photo_scores):
    assert photo_targets(photo_scores)["fmse_at_most_0.8_of_reinhard"], photo_scores
    assert photo_scores["fmse"]["model"] < photo_scores["fmse"]["input"], photo_scores


@NOT_MET
def test_real_photo_fmse_at_most_half_of_identity(photo_scores):
    assert photo_targets(photo_scores)["fmse_at_most_half_of_input"], photo_scores


@NOT_MET
def test_real_photo_beats_identity_and_spares_good_composites(photo_scores):
    targets = photo_targets(photo_scores)
    assert targets["beats_input_on_90_percent"], photo_scores
    assert targets["no_small_input_composite_worse_by_50"], photo_scores


def test_real_photo_keeps_detail(photo_scores):
    assert photo_targets(photo_scores)["laplacian_energy_at_least_0.8"], photo_scores


def test_history_reduces_flicker_on_a_jittered_real_sequence(model):
    flicker = sequence_flicker(heldout_sequences(8, frames=12), stream_runner(model))  # the benchmark's set
    assert flicker["ratio_sequence_to_frame_by_frame"] <= 0.8, flicker


def test_procedural_heldout_targets(model):
    scores = score_heldout(heldout_composites(16), image_enhancer(model))
    fmse, psnr = scores.fmse, scores.psnr
    assert fmse["model"] <= 0.5 * fmse["input"], fmse
    assert fmse["model"] < fmse["reinhard"], fmse
    assert psnr["model"] > psnr["reinhard"], psnr


def test_sample_drive_both_cameras_beat_their_input_and_flicker_no_more(model):
    drive = open_drive(SAMPLE_DRIVE)
    kept: dict = {}
    errors = drive_warping_errors(drive, sequence_enhancer(model), keep=kept)
    assert errors["model"] <= errors["input"], errors
    scores = score_drive_frames(drive, kept)
    assert all(np.isfinite(s["model"]["fmse"]) for s in scores.values())
    for camera, s in scores.items():
        assert s["model"]["fmse"] < s["input"]["fmse"], (camera, s)
