"""Actor masks reach mask-reading models (enhance --masks, replay from a drive), and the bundled
default is what a run without --weights and --config uses."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import simharmon.models.bundled as bundled
from simharmon.cli import main
from simharmon.config import load_config, save_config
from simharmon.io.atomic import atomic_save_png
from simharmon.io.frame_sources import load_image_rgb
from simharmon.io.pixels import frame_to_uint8_hwc, uint8_hwc_to_frame
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime.inputs import normalize_inputs
from simharmon.runtime.optimize import OptimizedEnhancer
from simharmon.runtime.stream import StreamingEnhancer

H, W = 32, 48


@pytest.fixture
def masked_config(tmp_path):
    base = load_config("tiny")
    config = base.replace(stream=dataclasses.replace(
        base.stream, layout="per_frame", offsets=(1,), history="partial", mask_condition=True, region_pixel=True,
        region_pixel_band=1))
    path = tmp_path / "masked.yaml"
    save_config(config, path)
    return config, path


def _frames_and_masks(folder: Path, count=3):
    gen = np.random.default_rng(0)
    (folder / "frames").mkdir(parents=True)
    (folder / "masks").mkdir()
    frames, masks = [], []
    for t in range(count):
        image = gen.integers(0, 256, (H, W, 3), dtype=np.uint8)
        mask = np.zeros((H, W), np.uint8)
        mask[4 + t:20 + t, 10:30] = 255
        atomic_save_png(folder / "frames" / f"f{t:03d}.png", image)
        Image.fromarray(mask, mode="L").save(folder / "masks" / f"f{t:03d}.png")
        frames.append(image)
        masks.append(mask)
    return frames, masks


def test_a_mask_of_the_wrong_size_is_a_clear_error(masked_config, tmp_path, capsys):
    _, path = masked_config
    _frames_and_masks(tmp_path)
    Image.fromarray(np.zeros((4, 8), np.uint8), mode="L").save(tmp_path / "masks" / "f001.png")
    assert main(["enhance", str(tmp_path / "frames"), "--out", str(tmp_path / "out"), "--config", str(path),
                 "--masks", str(tmp_path / "masks"), "--no-progress", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "cannot enhance frame 'f001'" in err and "mask must have shape [B, 1, 32, 48]" in err and "[1, 1, 4, 8]" in err


def test_enhance_feeds_masks_and_matches_the_stream(masked_config, tmp_path):
    config, path = masked_config
    frames, masks = _frames_and_masks(tmp_path)
    out = tmp_path / "out"
    assert main(["enhance", str(tmp_path / "frames"), "--out", str(out), "--config", str(path), "--masks",
                 str(tmp_path / "masks"), "--no-progress", "--device", "cpu"]) == 0
    # The CLI seeds the model from the config's default seed; build the same and step it by hand.
    model = OptimizedEnhancer(build_enhancer(config, device="cpu")).prepare()
    stream = StreamingEnhancer(model)
    for t, (image, mask) in enumerate(zip(frames, masks)):
        expected = frame_to_uint8_hwc(stream.step(uint8_hwc_to_frame(image), **normalize_inputs({"mask": mask}, H, W)))[0]
        got = load_image_rgb(out / "frames" / f"f{t:03d}.png")
        assert np.array_equal(got, expected), t
        outside = mask == 0
        outside[max(0, 3 + t):21 + t + 1, 9:31] = False  # the 1-pixel band may change
        assert np.array_equal(got[outside], image[outside])  # region_pixel: the input itself


def test_enhance_without_masks_passes_frames_through(masked_config, tmp_path, capsys):
    _, path = masked_config
    frames, _ = _frames_and_masks(tmp_path)
    out = tmp_path / "out"
    assert main(["enhance", str(tmp_path / "frames"), "--out", str(out), "--config", str(path), "--no-progress",
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "passes through unchanged" in captured.err and "3 frame(s) passed through unchanged" in captured.out
    for t, image in enumerate(frames):
        assert np.array_equal(load_image_rgb(out / "frames" / f"f{t:03d}.png"), image)
    record = json.loads((out / "run.json").read_text())
    assert record["passthrough"] == {"reason": "no_mask", "frames": 3}


def test_missing_masks_are_clear_errors(masked_config, tmp_path, capsys):
    _, path = masked_config
    _frames_and_masks(tmp_path)
    (tmp_path / "masks" / "f001.png").unlink()
    args = ["enhance", str(tmp_path / "frames"), "--config", str(path), "--no-progress", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "a"), "--masks", str(tmp_path / "nope")]) == 1
    assert "is not a folder" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--masks", str(tmp_path / "masks")]) == 1
    assert "no mask for frame 'f001'" in capsys.readouterr().err


def test_default_weights_rules(monkeypatch, tmp_path):
    assert bundled.default_weights([tmp_path / "w.pt"], None) == [tmp_path / "w.pt"]
    assert bundled.default_weights([], "tiny") == []
    monkeypatch.setattr(bundled, "BUNDLED_WEIGHTS", tmp_path / "missing.safetensors")
    with pytest.raises(FileNotFoundError, match="bundled default model .* is missing"):
        bundled.default_weights([], None)


def test_replay_without_masks_says_frames_pass_through(masked_config, tmp_path, capsys):
    _, path = masked_config
    frames, _ = _frames_and_masks(tmp_path, count=2)
    out = tmp_path / "run"
    assert main(["replay", str(tmp_path / "frames"), "--out", str(out), "--config", str(path), "--no-progress",
                 "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "has none: their frames pass through unchanged" in captured.err
    assert "passed through unchanged (no mask)" in captured.out
    enhanced = sorted((out / "cameras").rglob("enhanced/*.png"))
    assert len(enhanced) == 2 and all(np.array_equal(load_image_rgb(p), f) for p, f in zip(enhanced, frames))
