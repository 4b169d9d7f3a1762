"""The bundled procedural sample clip."""

import numpy as np
import pytest
from PIL import Image

from simharmon.data.sample import make_sample_frames, sample_frames_dir, write_sample


def test_committed_frames_equal_a_fresh_render():
    frames = make_sample_frames()
    files = sorted(sample_frames_dir().glob("frame_*.png"))
    assert [f.name for f in files] == [f"frame_{i:03d}.png" for i in range(24)]
    for path, frame in zip(files, frames):
        with Image.open(path) as picture:
            assert picture.mode == "RGB" and picture.size == (256, 144)
            assert np.array_equal(np.asarray(picture), frame), f"{path.name} differs from make_sample_frames()"
    assert sum(f.stat().st_size for f in files) < 1_000_000
    assert (sample_frames_dir() / "README.md").is_file()


def test_shape_and_determinism():
    a = make_sample_frames(num_frames=3, width=64, height=48, seed=1)
    b = make_sample_frames(num_frames=3, width=64, height=48, seed=1)
    assert len(a) == 3 and all(f.shape == (48, 64, 3) and f.dtype == np.uint8 for f in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], make_sample_frames(num_frames=1, width=64, height=48, seed=2)[0])


def test_camera_pan_is_a_smooth_crop():
    frames = make_sample_frames(num_frames=2)
    # The sky (above the skyline and the actor) of frame 1 is frame 0 shifted left by 2 pixels.
    assert np.array_equal(frames[1][:8, :-2], frames[0][:8, 2:])


def test_actor_is_warmer_than_the_scene():
    frame = make_sample_frames(num_frames=1)[0].astype(np.int32)
    warm = (frame[..., 0] - frame[..., 2]) > 120  # strongly red-over-blue pixels: only the car
    assert 50 < warm.sum() < frame.shape[0] * frame.shape[1] // 4


def test_write_sample(tmp_path):
    paths = write_sample(tmp_path, num_frames=2, width=32, height=16)
    assert [p.name for p in paths] == ["frame_000.png", "frame_001.png"]
    assert np.asarray(Image.open(paths[1])).shape == (16, 32, 3)


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_sample_frames(num_frames=0)
    with pytest.raises(ValueError):
        make_sample_frames(width=8)
