"""``simharmon curate``: manifest layout, splits, masks, determinism and input errors."""

import json

import numpy as np
import pytest
from PIL import Image

from simharmon.cli import main
from simharmon.data.curate import CurateConfig, curate, load_sources


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture()
def folders(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        _write(tmp_path / "images" / f"{name}.png", rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
        mask = np.zeros((32, 48), np.uint8)
        mask[8:24, 10:30] = 255
        _write(tmp_path / "masks" / f"{name}.png", mask)
    return tmp_path


def _load(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_cli_writes_nvidia_manifest_and_masks(folders):
    out = folders / "out"
    code = main(["curate", "--images", str(folders / "images"), "--masks", str(folders / "masks"), "--out", str(out),
                 "--recipe", "isp,artifacts", "--temporal", "1", "--temporal-frames", "3", "--test-fraction", "0.34",
                 "--no-progress"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest) == {"train", "test"}
    assert len(manifest["train"]) + len(manifest["test"]) == 6 and len(manifest["test"]) == 2
    sources = {split: {key.rsplit("_", 2)[0] for key in entries} for split, entries in manifest.items()}
    assert not sources["train"] & sources["test"], "a source image appears in both splits"
    for entries in manifest.values():
        for entry in entries.values():
            assert {"image", "target_image", "prompt"} <= set(entry) and entry["prompt"]
            image, target, mask = (_load(out / entry[k]) for k in ("image", "target_image", "mask"))
            source = entry["target_image"].split("/")[-1]
            assert np.array_equal(target, _load(folders / "images" / source))
            outside = mask[..., 0] == 0
            assert np.array_equal(image[outside], target[outside])
            assert not np.array_equal(image, target)
    temporal = json.loads((out / "temporal.json").read_text())
    entry = next(iter(temporal["train"].values()))
    assert len(entry["frames"]) == len(entry["targets"]) == len(entry["masks"]) == 3
    with np.load(out / entry["flow"]) as flow:
        assert flow["flow_fw"].shape == (2, 2) + _load(out / entry["frames"][0]).shape[:2]


def test_curation_is_deterministic(tmp_path):
    sources = load_sources(None, None, procedural=2, procedural_size=(48, 32))
    config = CurateConfig(recipes=("isp", "artifacts"), variants=2, seed=3)
    curate(sources, tmp_path / "one", config, progress=False)
    curate(sources, tmp_path / "two", config, progress=False)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel
    curate(sources, tmp_path / "three", CurateConfig(recipes=("isp", "artifacts"), variants=2, seed=4), progress=False)
    assert (tmp_path / "one/inputs/procedural_00000_isp_00.png").read_bytes() != \
        (tmp_path / "three/inputs/procedural_00000_isp_00.png").read_bytes()


def test_random_masks_when_none_given(tmp_path, folders):
    result = curate(load_sources(folders / "images", None), tmp_path / "out", CurateConfig(), progress=False)
    assert result.pairs["train"] + result.pairs["test"] == 3
    mask = _load(next((tmp_path / "out" / "masks").glob("*.png")))
    assert 0 < (mask[..., 0] > 0).mean() < 1


def test_clear_errors(tmp_path, folders, capsys):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_sources(tmp_path / "missing", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .png"):
        load_sources(tmp_path / "empty", None)
    _write(folders / "masks" / "a.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="10x10 but image a.png is 48x32"):
        load_sources(folders / "images", folders / "masks")
    (folders / "masks" / "b.png").unlink()
    with pytest.raises(ValueError, match="no mask"):
        load_sources(folders / "images", folders / "masks")
    with pytest.raises(ValueError, match="recipe"):
        CurateConfig(recipes=("isp", "relight"))
    assert main(["curate", "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert "error: no .png" in capsys.readouterr().err
    _write(folders / "masks" / "a.png", np.zeros((32, 48), np.uint8))
    _write(folders / "masks" / "b.png", np.zeros((32, 48), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        curate(load_sources(folders / "images", folders / "masks"), tmp_path / "o2", progress=False)
