"""``simharmon harmonize`` end to end on tiny images: outputs, resume, refusals, untrained statement."""

import json

import numpy as np
import pytest
from PIL import Image

from simharmon.cli import main
from simharmon.data.procedural import procedural_scene

from .helpers import write_release


@pytest.fixture
def inputs(tmp_path):
    images, masks = tmp_path / "img", tmp_path / "mask"
    images.mkdir(), masks.mkdir()
    for i in range(2):
        image, mask = procedural_scene(i, 48, 40)
        Image.fromarray(image).save(images / f"f{i}.png")
        Image.fromarray(mask).save(masks / f"f{i}.png")
    return images, masks


def _read(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_untrained_run_says_so_keeps_background_and_resumes(inputs, tmp_path, capsys):
    images, masks = inputs
    out = tmp_path / "out"
    args = [str(images), "--masks", str(masks), "--out", str(out), "--method", "diffharmony++", "--resolution", "32",
            "--no-progress"]
    assert main(["harmonize", *args]) == 0
    text = capsys.readouterr().out
    assert "UNTRAINED random weights" in text and "harmonized 2/2" in text
    for i in range(2):
        result, source = _read(out / "diffharmony++" / f"f{i}.png"), _read(images / f"f{i}.png")
        mask = np.asarray(Image.open(masks / f"f{i}.png")) > 0
        assert result.shape == source.shape
        assert np.array_equal(result[~mask], source[~mask])  # the input's pixels outside the mask
        assert not np.array_equal(result[mask], source[mask])
    run = json.loads((out / "diffharmony++" / "run.json").read_text())
    assert run["done"] == ["f0", "f1"] and run["settings"]["untrained"] is True
    (out / "diffharmony++" / "f1.png").unlink()
    assert main(["harmonize", *args]) == 0
    assert "(1 from an earlier run)" in capsys.readouterr().out
    assert main(["harmonize", *args[:-1], "--steps", "2"]) == 1
    assert "other settings" in capsys.readouterr().err


def test_trained_weights_folder_and_reinhard(inputs, tmp_path, capsys):
    images, masks = inputs
    write_release(tmp_path / "weights")
    out = tmp_path / "out"
    assert main(["harmonize", str(images / "f0.png"), "--masks", str(masks / "f0.png"), "--out", str(out),
                 "--method", "diffharmony", "--weights", str(tmp_path / "weights"), "--resolution", "32",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "UNTRAINED" not in text and (out / "diffharmony" / "f0.png").is_file()
    assert main(["harmonize", str(images), "--masks", str(masks), "--out", str(out), "--method", "reinhard",
                 "--no-progress"]) == 0
    assert (out / "reinhard" / "f1.png").is_file()


def test_clear_errors(inputs, tmp_path, capsys):
    images, masks = inputs
    write_release(tmp_path / "w", cvae_name="not_a_cvae")
    out = str(tmp_path / "out")
    assert main(["harmonize", str(images), "--masks", str(masks), "--out", out, "--method", "diffharmony++",
                 "--weights", str(tmp_path / "w"), "--resolution", "32"]) == 1
    assert "needs the Harmony-VAE" in capsys.readouterr().err
    (masks / "f1.png").unlink()
    assert main(["harmonize", str(images), "--masks", str(masks), "--out", out, "--method", "reinhard"]) == 1
    assert "no mask in" in capsys.readouterr().err
    assert main(["harmonize", str(images / "f0.png"), "--masks", str(masks), "--out", out, "--method", "reinhard"]) == 1
    assert "must be one mask image" in capsys.readouterr().err
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "f1.png")
    assert main(["harmonize", str(images), "--masks", str(masks), "--out", out, "--method", "reinhard"]) == 1
    assert "is 10x10 but image f1.png is 48x40" in capsys.readouterr().err
    assert main(["harmonize", str(images), "--masks", str(masks), "--out", out, "--method", "diffharmony",
                 "--resolution", "30"]) == 1
    assert "multiple of 8" in capsys.readouterr().err


def test_registry_is_light_and_consistent():
    import subprocess
    import sys

    from simharmon.harmonize.cli import BACKEND_CHOICES
    from simharmon.harmonize.registry import METHODS, resolve_builder
    from simharmon.runtime.stages_runner import BACKENDS

    assert set(BACKEND_CHOICES) <= set(BACKENDS)
    assert all(callable(resolve_builder(name)) for name in METHODS)
    # Every CLI start imports the registry: it must not pull in diffusers.
    code = "import sys, simharmon.cli; print(any(m.startswith('diffusers') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
