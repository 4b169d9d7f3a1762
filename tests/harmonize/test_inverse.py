"""Inverse harmonization, the harmony classifier and ``simharmon curate --recipe inverse``."""

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

from simharmon.cli import main
from simharmon.harmonize.inverse import InverseRecipe
from simharmon.harmonize.models import build_classifier, load_classifier
from simharmon.models.checkpoints import CheckpointError

from .helpers import write_release


def _resnet50_state():
    torch.manual_seed(0)
    net = torchvision.models.resnet50(weights=None)
    net.fc = torch.nn.Linear(net.fc.in_features, 2)  # as DiffHarmony's classify_cand_gen_data.py
    return net.state_dict()


def test_published_classifier_layout_loads_and_mismatches_are_named(tmp_path):
    state = _resnet50_state()
    path = tmp_path / "model_state_dict.pth"
    torch.save(state, path)
    model, report = load_classifier(path)
    assert report.ok and model.arch == "resnet50" and model.input_size == 256
    probs = model.composite_probability(torch.rand(2, 3, 100, 140))  # resized to 256 inside
    assert probs.shape == (2,) and ((probs >= 0) & (probs <= 1)).all()
    state.pop("layer1.0.conv1.weight")
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="1 missing: layer1.0.conv1.weight"):
        load_classifier(path)
    state["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="a harmony classifier has 2 classes"):
        load_classifier(path)
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="not a readable torch state dict"):
        load_classifier(path)


class _Shift:
    """A stand-in generator: brightens the foreground by 10 * (seed - s0)."""

    untrained = False

    def __call__(self, image, mask, seed=None):
        out = image.astype(np.int32)
        out[mask > 0] += 10 * (seed % 7)
        return np.clip(out, 0, 255).astype(np.uint8)


def test_recipe_keeps_the_most_likely_composite():
    clf = build_classifier("resnet18", input_size=32).eval()
    recipe = InverseRecipe(_Shift(), clf, candidates=5)
    image = np.full((32, 32, 3), 100, np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    out, params = recipe(image, mask, np.random.default_rng(0))
    scores = params["inverse"]["p_composite"]
    assert params["inverse"]["chosen"] == int(np.argmax(scores)) and len(scores) == 5
    cands = recipe.propose(image, mask, params["inverse"]["seed"] - params["inverse"]["chosen"])
    assert np.array_equal(out, cands[params["inverse"]["chosen"]])


def test_curate_inverse_recipe_writes_the_manifest(tmp_path, capsys):
    write_release(tmp_path / "inverse")
    clf = build_classifier("resnet18", input_size=32)
    save_file({k: v.contiguous() for k, v in clf.net.state_dict().items()}, str(tmp_path / "clf.safetensors"))
    out = tmp_path / "curated"
    assert main(["curate", "--procedural", "2", "--procedural-size", "48x32", "--recipe", "inverse,isp", "--out",
                 str(out), "--inverse-weights", str(tmp_path / "inverse"), "--classifier",
                 str(tmp_path / "clf.safetensors"), "--classifier-size", "32", "--candidates", "2",
                 "--inverse-resolution", "32", "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    entries = {**manifest["train"], **manifest["test"]}
    inverse = {k: v for k, v in entries.items() if "_inverse_" in k}
    assert len(inverse) == 2 and len(entries) == 4
    provenance = json.loads((out / "curate.json").read_text())["pairs"]
    for key, entry in inverse.items():
        assert set(entry) == {"image", "target_image", "prompt", "mask"}
        inp = np.asarray(Image.open(out / entry["image"]).convert("RGB"))
        target = np.asarray(Image.open(out / entry["target_image"]).convert("RGB"))
        mask = np.asarray(Image.open(out / entry["mask"]).convert("L")) > 0
        assert np.array_equal(inp[~mask], target[~mask])
        assert len(provenance[key]["inverse"]["p_composite"]) == 2


def test_curate_inverse_needs_its_models(tmp_path, capsys):
    assert main(["curate", "--procedural", "1", "--recipe", "inverse", "--out", str(tmp_path / "c")]) == 1
    assert "needs the inverse harmonizer's weights" in capsys.readouterr().err
