"""The bundled sample drive: reproducible byte for byte, small, and exactly consistent under its flow."""

import numpy as np
import pytest
import torch

from simharmon.data.sample_drive import NUM_FRAMES, make_sample_drive, sample_drive_dir, write_sample_drive
from simharmon.eval.evaluate import one_thread
from simharmon.eval.flow import depth_flow_pair
from simharmon.eval.temporal import flow_to_tensor, warping_error_pair
from simharmon.io.drives import open_drive


@pytest.fixture(scope="module")
def drive():
    return open_drive(sample_drive_dir())


@pytest.fixture(scope="module")
def rendered():
    return make_sample_drive()


def _files(root):
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def test_regenerating_gives_identical_files(tmp_path):
    committed = _files(sample_drive_dir())
    fresh = _files(write_sample_drive(tmp_path / "sample"))
    assert list(fresh) == list(committed)
    for name, path in fresh.items():
        assert path.read_bytes() == committed[name].read_bytes(), f"{name} differs from write_sample_drive()"
    assert sum(p.stat().st_size for p in committed.values()) < 3_000_000


def test_layout(drive):
    assert drive.cameras == ["left", "right"] and drive.info.fps == 12.0
    for name in drive.cameras:
        camera = drive.camera(name)
        assert (camera.width, camera.height) == (256, 144) and camera.intrinsics.fx == 128.0
        assert drive.frame_count(name) == NUM_FRAMES
        assert all(drive.has(layer, name) for layer in ("gt", "mask", "depth", "pose", "flow"))


def _unit(image):
    return torch.from_numpy(image.astype(np.float64) / 255).permute(2, 0, 1)[None]


@pytest.mark.parametrize("camera", ["left", "right"])
def test_warping_error_is_exactly_zero_under_the_stored_flow(drive, camera):
    with one_thread():
        _check_exact(drive, camera)


def _check_exact(drive, camera):
    gt = [drive.read_gt(camera, t) for t in range(NUM_FRAMES)]
    frames = [image for _, _, image in drive.iter_frames(camera)]
    for t in range(NUM_FRAMES - 1):
        forward, backward = (flow_to_tensor(f) for f in drive.read_flow(camera, t))
        assert warping_error_pair(_unit(gt[t]), _unit(gt[t + 1]), forward, backward) == 0.0
        # The input is exact outside the actor (masked out of both frames), and flickers on it.
        keep = [(drive.read_mask(camera, s) == 0)[..., None] for s in (t, t + 1)]
        assert warping_error_pair(_unit(frames[t] * keep[0]), _unit(frames[t + 1] * keep[1]), forward,
                                  backward) == 0.0
        if drive.read_mask(camera, t).any() and drive.read_mask(camera, t + 1).any():
            assert warping_error_pair(_unit(frames[t]), _unit(frames[t + 1]), forward, backward) > 0.0
    # ... and positive for a flickering version, and with Lai et al.'s border clamping.
    forward, backward = (flow_to_tensor(f) for f in drive.read_flow(camera, 4))
    assert warping_error_pair(_unit(gt[4]), _unit((gt[5] * 0.9).astype(np.uint8)), forward, backward) > 1e-4
    assert warping_error_pair(_unit(gt[4]), _unit(gt[5]), forward, backward, out_of_frame="clamp") > 0


@pytest.mark.parametrize("camera", ["left", "right"])
def test_depth_and_poses_give_the_stored_flow_on_the_static_scene(drive, camera):
    intrinsics = drive.camera(camera).intrinsics.matrix()
    for t in (0, 17):
        stored = drive.read_flow(camera, t)
        derived = depth_flow_pair(drive.read_depth(camera, t), drive.read_depth(camera, t + 1), intrinsics,
                                  drive.read_pose(camera, t), drive.read_pose(camera, t + 1))
        for index, mask in ((0, drive.read_mask(camera, t)), (1, drive.read_mask(camera, t + 1))):
            static = mask == 0  # the inserted vehicle moves on its own: only its stored flow is exact
            assert np.allclose(derived[index][static], stored[index][static], atol=1e-3)
            assert not np.allclose(derived[index][~static], stored[index][~static], atol=0.5)


def test_actor_is_the_only_difference_and_is_mismatched(rendered):
    for layers in rendered.values():
        for t in (0, NUM_FRAMES - 1):
            frame, gt, mask = layers["frames"][t], layers["gt"][t], layers["masks"][t] > 0
            assert np.array_equal(frame[~mask], gt[~mask])
            assert 0.02 < mask.mean() < 0.15
            assert np.abs(frame[mask].astype(int) - gt[mask]).mean() > 10  # the ISP changed its look
