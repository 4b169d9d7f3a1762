"""The drivestudio processed layout, and open_drive's detection of every kind."""

import numpy as np
import pytest
from drive_helpers import write_small_drive
from PIL import Image

from simharmon.io.drive import DriveError, FrameSourceDrive
from simharmon.io.drives import detect_kind, open_drive
from simharmon.io.drivestudio import OPENCV_TO_DATASET, DriveStudioDrive
from simharmon.io.video import write_mp4


def _scene(root, steps=3, cams=(0, 1)):
    """A processed scene as drivestudio writes it (JPEG images, text matrices, 0/255 masks)."""
    rng = np.random.default_rng(0)
    for folder in ("images", "ego_pose", "intrinsics", "extrinsics", "dynamic_masks/all"):
        (root / folder).mkdir(parents=True)
    images = {}
    for t in range(steps):
        ego = np.eye(4)
        ego[:3, 3] = (5.0 + t, 2.0, 0.0)
        np.savetxt(root / "ego_pose" / f"{t:03d}.txt", ego)
        for cam in cams:
            image = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "images" / f"{t:03d}_{cam}.jpg", quality=95)
            images[t, cam] = np.asarray(Image.open(root / "images" / f"{t:03d}_{cam}.jpg").convert("RGB"))
            mask = np.zeros((32, 48), np.uint8)
            mask[4:12, 8 + t:20 + t] = 255
            Image.fromarray(mask).save(root / "dynamic_masks" / "all" / f"{t:03d}_{cam}.png")
    for cam in cams:
        np.savetxt(root / "intrinsics" / f"{cam}.txt", [40.0, 41.0, 24.0, 16.0, 0.1, 0.0, 0.0, 0.0, 0.0])
        extrinsic = np.eye(4)
        extrinsic[:3, 3] = (1.5, 0.0, 2.0)
        np.savetxt(root / "extrinsics" / f"{cam}.txt", extrinsic)
    return images


def test_reads_a_processed_scene(tmp_path):
    images = _scene(tmp_path / "023")
    drive = open_drive(tmp_path / "023")
    assert isinstance(drive, DriveStudioDrive) and drive.cameras == ["cam0", "cam1"] and drive.info.fps == 10.0
    assert drive.frame_names("cam1") == ["000", "001", "002"]
    assert np.array_equal(drive.read_frame("cam1", 2), images[2, 1])
    intrinsics = drive.camera("cam0").intrinsics
    assert (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy) == (40.0, 41.0, 24.0, 16.0)
    mask = drive.read_mask("cam0", 1)
    assert mask.dtype == np.float32 and mask.sum() == 8 * 12 and mask[4, 9] == 1.0
    # Camera-to-world, relative to the first ego pose, in OpenCV axes: the camera's z is the ego's x.
    pose = drive.read_pose("cam0", 2)
    assert np.allclose(pose[:3, 3], (1.5 + 2.0, 0.0, 2.0))
    assert np.allclose(pose[:3, :3], OPENCV_TO_DATASET[:3, :3])
    assert not drive.has("gt", "cam0") and not drive.has("depth", "cam0")


def test_missing_image_and_bad_matrix(tmp_path):
    _scene(tmp_path / "s")
    (tmp_path / "s" / "images" / "001_1.jpg").unlink()
    with pytest.raises(DriveError, match="timesteps"):
        DriveStudioDrive(tmp_path / "s")
    _scene(tmp_path / "t")
    (tmp_path / "t" / "ego_pose" / "002.txt").write_text("1 2 3\n")
    with pytest.raises(DriveError, match="ego pose"):
        DriveStudioDrive(tmp_path / "t")


def test_detects_every_kind(tmp_path):
    write_small_drive(tmp_path / "drive", num_frames=2)
    _scene(tmp_path / "scene")
    frames = tmp_path / "frames"
    frames.mkdir()
    clip = [np.full((16, 16, 3), v, np.uint8) for v in (10, 200, 90)]
    for index, image in enumerate(clip):
        Image.fromarray(image).save(frames / f"f{index}.png")
    write_mp4(tmp_path / "clip.mp4", clip, fps=5)
    assert [detect_kind(tmp_path / p) for p in ("drive", "scene", "frames", "clip.mp4")] == \
        ["folder", "drivestudio", "frames", "video"]
    folder = open_drive(frames)
    assert isinstance(folder, FrameSourceDrive) and folder.cameras == ["frames"] and folder.info.kind == "frames"
    assert np.array_equal(folder.read_frame("frames", 1), clip[1])
    video = open_drive(tmp_path / "clip.mp4", fps=7.5)
    assert video.cameras == ["clip"] and video.frame_count("clip") == 3 and video.info.fps == 7.5
    with pytest.raises(FileNotFoundError):
        open_drive(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown drive kind"):
        open_drive(frames, kind="rosbag")
    with pytest.raises(DriveError):
        open_drive(tmp_path / "clip.mp4", kind="frames")
