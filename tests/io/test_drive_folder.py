"""Our drive folder format: write then read round-trips exactly; bad drives get clear errors."""

import json

import numpy as np
import pytest
from drive_helpers import H, K, W, write_small_drive

from simharmon.io.drive import CameraInfo, DriveError
from simharmon.io.drive_folder import DriveFolderWriter, FolderDrive, write_drive
from simharmon.io.drives import open_drive
from simharmon.io.video import write_mp4


def test_round_trip_is_exact(tmp_path):
    scenes = write_small_drive(tmp_path / "drive")
    drive = open_drive(tmp_path / "drive")
    assert isinstance(drive, FolderDrive) and drive.info.kind == "folder"
    assert drive.cameras == ["front", "rear"] and drive.info.fps == 10.0
    assert drive.camera("front") == CameraInfo("front", W, H, K)
    for name, data in scenes.items():
        assert drive.frame_names(name) == [f"{t:06d}" for t in range(6)]
        for t, stem, image in drive.iter_frames(name):
            assert np.array_equal(image, data["frames"][t]) and stem == f"{t:06d}"
            assert np.array_equal(drive.read_gt(name, t), data["gt"][t])
            assert np.array_equal(drive.read_mask(name, t), data["masks"][t] / 255.0)
            assert np.array_equal(drive.read_depth(name, t), data["depth"][t])
            assert np.array_equal(drive.read_pose(name, t), data["poses"][t])
        for t in range(5):
            forward, backward = drive.read_flow(name, t)
            assert np.array_equal(forward, data["flow"][t][0]) and np.array_equal(backward, data["flow"][t][1])
        assert drive.read_flow(name, 5) is None
        assert all(drive.has(layer, name) for layer in ("gt", "mask", "depth", "pose", "flow"))


def test_copy_round_trip_and_same_bytes(tmp_path):
    write_small_drive(tmp_path / "a")
    copy = write_drive(open_drive(tmp_path / "a"), tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file())
    assert files_a == files_b
    for relative in files_a:
        if relative.name != "drive.json":  # the copy records where it came from
            assert (tmp_path / "a" / relative).read_bytes() == (copy / relative).read_bytes(), relative


def test_frames_as_video_and_optional_layers(tmp_path):
    scenes = write_small_drive(tmp_path / "d", cameras=("cam",), layers=())
    meta = json.loads((tmp_path / "d" / "drive.json").read_text())
    write_mp4(tmp_path / "d" / "cam" / "clip.mp4", scenes["cam"]["frames"], fps=10)
    meta["cameras"][0]["frames"] = "cam/clip.mp4"
    (tmp_path / "d" / "drive.json").write_text(json.dumps(meta))
    drive = open_drive(tmp_path / "d")
    assert not any(drive.has(layer, "cam") for layer in ("gt", "mask", "depth", "pose", "flow"))
    assert drive.read_gt("cam", 0) is None and drive.read_flow("cam", 0) is None
    frames = [image for _, _, image in drive.iter_frames("cam")]
    assert len(frames) == 6 and frames[2].shape == (H, W, 3)  # lossy, so only the shape is exact
    assert np.array_equal(drive.read_frame("cam", 2), frames[2])


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "drive.json").unlink(), "not a drive folder"),  # then it is read as frames
    (lambda root: (root / "drive.json").write_text("{"), "cannot parse"),
    (lambda root: (root / "front" / "frames" / "000003.png").unlink(), "000003"),
    (lambda root: (root / "front" / "flow" / "000001.npz").write_bytes(b"junk"), "000001.npz"),
    (lambda root: (root / "front" / "gt" / "000002.png").write_bytes(b"\x89PNG\r\n\x1a\njunk"), "000002.png"),
    (lambda root: (root / "front" / "poses.txt").write_text("1 2 3\n"), "poses"),
])
def test_damaged_drives_name_the_problem(tmp_path, damage, message):
    root = tmp_path / "drive"
    write_small_drive(root)
    damage(root)
    with pytest.raises((DriveError, ValueError)) as info:
        drive = FolderDrive(root)
        drive.read_flow("front", 1)
        drive.read_gt("front", 2)
    assert message in str(info.value)


def test_metadata_validation(tmp_path):
    root = tmp_path / "drive"
    write_small_drive(root)
    meta = json.loads((root / "drive.json").read_text())
    for change, message in ((dict(version=2), "version"), (dict(frame_count=0), "frame_count"),
                            (dict(extra=1), "unknown keys"), (dict(format="x"), "not a simharmon drive")):
        (root / "drive.json").write_text(json.dumps(dict(meta, **change)))
        with pytest.raises(DriveError, match=message):
            FolderDrive(root)
    bad_camera = dict(meta["cameras"][0], frames="../elsewhere")
    (root / "drive.json").write_text(json.dumps(dict(meta, cameras=[bad_camera])))
    with pytest.raises(DriveError, match="relative path inside"):
        FolderDrive(root)
    wrong_size = dict(meta["cameras"][0], width=32)
    (root / "drive.json").write_text(json.dumps(dict(meta, cameras=[wrong_size])))
    with pytest.raises(DriveError, match="uint8"):
        FolderDrive(root).read_frame("front", 0)


def test_writer_checks(tmp_path):
    writer = DriveFolderWriter(tmp_path / "w", "w", 10.0, [CameraInfo("c", 8, 4)])
    with pytest.raises(DriveError):
        writer.write_frame("c", 0, np.zeros((4, 9, 3), np.uint8))
    writer.write_frame("c", 0, np.zeros((4, 8, 3), np.uint8))
    with pytest.raises(DriveError, match="incomplete"):
        writer.finish(2)
    with pytest.raises(DriveError, match="not empty"):
        DriveFolderWriter(tmp_path / "w", "w", 10.0, [CameraInfo("c", 8, 4)])
    with pytest.raises(DriveError, match="camera name"):
        CameraInfo("bad/name", 8, 4)
