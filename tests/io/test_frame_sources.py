"""Frame sources (folders, videos) and the MP4 writer."""

import numpy as np
import pytest
from PIL import Image

from simharmon.io.frame_sources import (
    FrameReadError,
    load_image_rgb,
    natural_sort_key,
    open_frame_source,
)
from simharmon.io.video import write_mp4


def _image(value, height=8, width=10):
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = value
    image[..., 1] = np.arange(width, dtype=np.uint8)[None, :]
    return image


def _save(path, image, **kwargs):
    Image.fromarray(image).save(path, **kwargs)


def test_natural_sort_key():
    names = ["frame10.png", "frame2.png", "Frame1.png", "frame02b.png", "a.png"]
    assert sorted(names, key=natural_sort_key) == ["a.png", "Frame1.png", "frame2.png", "frame02b.png", "frame10.png"]


def test_folder_natural_order_names_and_fps(tmp_path):
    for index in (10, 2, 1):
        _save(tmp_path / f"frame{index}.png", _image(index))
    source = open_frame_source(tmp_path)
    assert source.kind == "folder" and source.fps == 30.0 and len(source) == 3
    assert source.names == ["frame1", "frame2", "frame10"]
    items = list(source)
    assert [(i, n) for i, n, _ in items] == [(0, "frame1"), (1, "frame2"), (2, "frame10")]
    assert [int(img[0, 0, 0]) for _, _, img in items] == [1, 2, 10]
    assert items[0][2].dtype == np.uint8 and items[0][2].shape == (8, 10, 3)
    assert [i for i, _, _ in source.iter_from(2)] == [2]
    assert list(source.iter_from(3)) == []
    assert int(source.read(1)[0, 0, 0]) == 2 and int(source.read(-1)[0, 0, 0]) == 10
    with pytest.raises(IndexError):
        source.read(3)
    with pytest.raises(IndexError):
        list(source.iter_from(4))


def test_folder_mixed_extensions_case_insensitive(tmp_path):
    _save(tmp_path / "f1.PNG", _image(1))
    _save(tmp_path / "f2.jpg", _image(2), quality=100)
    _save(tmp_path / "f3.JPEG", _image(3), quality=100)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden.png").write_bytes(b"ignored")
    (tmp_path / "sub").mkdir()
    source = open_frame_source(tmp_path)
    assert source.names == ["f1", "f2", "f3"]
    assert all(img.shape == (8, 10, 3) for _, _, img in source)
    assert int(source.read(0)[0, 0, 0]) == 1


def test_folder_converts_grey_and_rgba(tmp_path):
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 4, 4), 100, np.uint8)).save(tmp_path / "b.png")
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "c.png")
    images = [img for _, _, img in open_frame_source(tmp_path)]
    assert all(img.shape == (4, 4, 3) and img.dtype == np.uint8 for img in images)
    assert [int(img[0, 0, 0]) for img in images] == [200, 100, 255]


def test_duplicate_stems_are_rejected(tmp_path):
    _save(tmp_path / "f1.png", _image(1))
    _save(tmp_path / "f1.jpg", _image(1))
    with pytest.raises(ValueError, match="share the name 'f1'"):
        open_frame_source(tmp_path)


def test_missing_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        open_frame_source(missing)


def test_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no frames here")
    with pytest.raises(ValueError, match=r"no \.png/\.jpg/\.jpeg frames in .*"):
        open_frame_source(tmp_path)


def test_corrupt_image_names_the_file(tmp_path):
    _save(tmp_path / "f1.png", _image(1))
    (tmp_path / "f2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    source = open_frame_source(tmp_path)  # decoding is lazy
    with pytest.raises(FrameReadError, match="f2.png"):
        list(source)


def test_truncated_image_names_the_file(tmp_path):
    path = tmp_path / "f.png"
    _save(path, np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(FrameReadError, match="f.png"):
        load_image_rgb(path)


@pytest.mark.parametrize("name, match", [("clip.txt", "unsupported input file type '.txt'"),
                                         ("frame.png", "single image"), ("noext", "no extension")])
def test_unsupported_files(tmp_path, name, match):
    (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ValueError, match=match):
        open_frame_source(tmp_path / name)


def test_corrupt_video(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"definitely not an mp4 file" * 10)
    with pytest.raises(FrameReadError, match="broken.mp4"):
        open_frame_source(path)


def test_video_round_trip(tmp_path):
    frames = [_image(20 * i, height=48, width=64) for i in range(7)]
    path = tmp_path / "clip.mp4"
    assert write_mp4(path, frames, fps=24) == 7
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]
    source = open_frame_source(path)
    assert source.kind == "video" and len(source) == 7 and source.fps == pytest.approx(24)
    assert source.names[0] == "frame_000000" and source.names[-1] == "frame_000006"
    decoded = list(source)
    assert [(i, n) for i, n, _ in decoded] == list(zip(range(7), source.names))
    for (_, _, image), original in zip(decoded, frames):
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
        assert abs(float(image[..., 0].mean()) - float(original[..., 0].mean())) < 6  # lossy codec
    assert [i for i, _, _ in source.iter_from(5)] == [5, 6]
    assert abs(float(source.read(3)[..., 0].mean()) - 60) < 6


def test_video_odd_size_is_padded_and_generators_work(tmp_path):
    path = tmp_path / "odd.mp4"
    assert write_mp4(path, (_image(100, height=47, width=63) for _ in range(3)), fps=30000 / 1001, codec="mpeg4") == 3
    source = open_frame_source(path)
    assert len(source) == 3 and source.read(0).shape == (48, 64, 3)
    assert source.fps == pytest.approx(30000 / 1001)


def test_write_mp4_errors_leave_nothing(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        write_mp4(tmp_path / "a.mp4", [], fps=30)
    with pytest.raises(ValueError, match="frame 1 is 32x16"):
        write_mp4(tmp_path / "b.mp4", [_image(0), np.zeros((16, 32, 3), np.uint8)], fps=30)
    with pytest.raises(ValueError, match="fps"):
        write_mp4(tmp_path / "c.mp4", [_image(0)], fps=0)
    assert list(tmp_path.iterdir()) == []
