"""Atomic writes: complete files under the final name, nothing left behind on failure."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from simharmon.io.atomic import atomic_path, atomic_save_png, atomic_write_bytes, atomic_write_json


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir())


def test_write_bytes_creates_parents_and_replaces(tmp_path):
    target = tmp_path / "a" / "b" / "data.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert _leftovers(target.parent) == ["data.bin"]


def test_failure_leaves_no_temp_and_keeps_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as temp:
            temp.write_text("half-writ")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == ["out.txt"]


def test_keyboard_interrupt_cleans_up(tmp_path):
    target = tmp_path / "frame.png"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as temp:
            temp.write_bytes(b"\x89PNG partial")
            raise KeyboardInterrupt
    assert _leftovers(tmp_path) == []


def test_temp_keeps_extension_and_directory(tmp_path):
    target = tmp_path / "enhanced.mp4"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path and temp.suffix == ".mp4" and temp.name.startswith(".")
        assert not target.exists()
        temp.write_bytes(b"x")
    assert target.read_bytes() == b"x"


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f", b"1")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


def test_save_png_round_trip_and_deterministic_bytes(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    atomic_save_png(tmp_path / "a.png", image)
    atomic_save_png(tmp_path / "b.png", image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), image)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


@pytest.mark.parametrize(
    "image, error",
    [
        (np.zeros((4, 4, 3), np.float32), TypeError),
        (np.zeros((4, 4), np.uint8), ValueError),
        (np.zeros((4, 4, 4), np.uint8), ValueError),
        ([[0]], TypeError),
    ],
)
def test_save_png_rejects_bad_images(tmp_path, image, error):
    with pytest.raises(error):
        atomic_save_png(tmp_path / "x.png", image)
    assert _leftovers(tmp_path) == []


def test_write_json(tmp_path):
    atomic_write_json(tmp_path / "run.json", {"a": [1, 2], "b": "ü"})
    assert json.loads((tmp_path / "run.json").read_text(encoding="utf-8")) == {"a": [1, 2], "b": "ü"}


def test_write_json_unserializable_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "run.json", {"a": object()})
    assert _leftovers(tmp_path) == []


def test_refuses_directory_target(tmp_path):
    with pytest.raises(IsADirectoryError):
        atomic_write_bytes(tmp_path, b"x")
