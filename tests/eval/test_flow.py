"""Flow from depth + poses (kornia), and RAFT from local weights."""

import numpy as np
import pytest
import torch

from simharmon.eval.flow import RaftFlow, depth_flow_pair, flow_from_depth

K = np.array([[100.0, 0, 31.5], [0, 100.0, 23.5], [0, 0, 1]])


def _pose(tx=0.0, yaw=0.0):
    pose = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    pose[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    pose[0, 3] = tx
    return pose


def test_lateral_translation_of_a_plane_is_uniform():
    depth = np.full((48, 64), 10.0)
    flow = flow_from_depth(depth, K, _pose(0.0), _pose(0.5))
    # The camera moves +0.5 m along x: a point at 10 m moves -f * 0.5 / 10 = -5 px.
    assert np.allclose(flow[..., 0], -5.0, atol=1e-5) and np.allclose(flow[..., 1], 0.0, atol=1e-5)


def test_points_at_infinity_only_rotate():
    depth = np.full((48, 64), np.inf)
    assert np.allclose(flow_from_depth(depth, K, _pose(0.0), _pose(3.0)), 0.0)
    rotated = flow_from_depth(depth, K, _pose(), _pose(yaw=0.01))
    assert np.allclose(rotated[24, 32, 0], -100 * np.tan(0.01), atol=0.05)  # a yaw to the right moves content left


def test_behind_the_camera_is_nan_and_pairs_invert():
    depth = np.full((48, 64), 1.0)
    forward, backward = depth_flow_pair(depth, depth, K, _pose(), _pose(tx=0.2))
    assert np.allclose(forward, -backward, atol=1e-5)
    behind = flow_from_depth(depth, K, _pose(), _pose(yaw=np.pi))
    assert np.isnan(behind).all()
    with pytest.raises(ValueError):
        flow_from_depth(depth, K[:2], _pose(), _pose())


@pytest.fixture(scope="module")
def raft_file(tmp_path_factory):
    from torchvision.models.optical_flow import raft_large

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("raft") / "raft_large.pth"
    torch.save(raft_large(weights=None, progress=False).state_dict(), path)
    return path


def test_raft_from_local_weights_pads_small_frames(raft_file):
    raft = RaftFlow(raft_file, num_flow_updates=2)
    a = np.random.default_rng(0).integers(0, 256, (44, 60, 3), dtype=np.uint8)
    flow = raft(a, np.roll(a, 2, axis=1))
    assert flow.shape == (44, 60, 2) and flow.dtype == np.float32 and np.isfinite(flow).all()


def test_raft_weight_errors(tmp_path, raft_file):
    with pytest.raises(FileNotFoundError):
        RaftFlow(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="raft_large"):
        RaftFlow(bad)
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read"):
        RaftFlow(tmp_path / "junk.pth")
