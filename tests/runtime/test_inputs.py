"""Renderer forms -> the step's per-frame inputs (runtime/inputs.py): conversions against hand computations."""

import numpy as np
import pytest
import torch

from simharmon.config import StreamConfig
from simharmon.runtime.inputs import PoseTracker, intrinsics_matrix, normalize_inputs, relative_pose, used_inputs

H, W = 16, 32

# Previous camera: turned 90 degrees about z (its x axis is the world's y), at world (2, 0, 0).
PREV_C2W = [0, -1, 0, 2,
            1, 0, 0, 0,
            0, 0, 1, 0,
            0, 0, 0, 1]
# Current camera: axis-aligned, at world (2, 1, 0).
CUR_C2W = [1, 0, 0, 2,
           0, 1, 0, 1,
           0, 0, 1, 0,
           0, 0, 0, 1]
# By hand: X_prev = R_prev^T (X_cur + (2, 1, 0) - (2, 0, 0)), R_prev^T = [[0, 1, 0], [-1, 0, 0], [0, 0, 1]],
# so the linear part is R_prev^T and the translation R_prev^T (0, 1, 0) = (1, 0, 0).
CUR_TO_PREV = [[0, 1, 0, 1],
               [-1, 0, 0, 0],
               [0, 0, 1, 0],
               [0, 0, 0, 1]]


def test_relative_pose_matches_a_hand_computation():
    assert np.allclose(relative_pose(PREV_C2W, CUR_C2W), CUR_TO_PREV, rtol=0, atol=1e-12)
    # the current camera's point (1, 0, 0) is world (3, 1, 0), i.e. (1, 1, 0) from the previous
    # camera's centre, which its rotated axes read as (1, -1, 0)
    assert np.allclose(relative_pose(PREV_C2W, CUR_C2W) @ [1, 0, 0, 1], [1, -1, 0, 1], rtol=0, atol=1e-12)
    assert np.allclose(relative_pose(CUR_C2W, CUR_C2W), np.eye(4), rtol=0, atol=1e-12)


def test_intrinsics_matrix():
    k = intrinsics_matrix([20.0, 21.0, 15.5, 7.5])
    assert k.dtype == torch.float64 and k.shape == (1, 3, 3)
    assert k[0].tolist() == [[20.0, 0.0, 15.5], [0.0, 21.0, 7.5], [0.0, 0.0, 1.0]]


def test_pose_tracker_makes_relative_poses_and_notices_gaps():
    tracker = PoseTracker()
    assert tracker.relative(PREV_C2W) is None and not tracker.broken(PREV_C2W)  # first frame: no previous pose
    tracker.commit(PREV_C2W)
    assert torch.allclose(tracker.relative(CUR_C2W), torch.tensor([CUR_TO_PREV], dtype=torch.float64), atol=1e-12)
    tracker.commit(CUR_C2W)
    assert torch.equal(tracker.relative(CUR_C2W), torch.eye(4, dtype=torch.float64)[None])
    tracker.commit(None)  # a frame without a pose
    assert tracker.broken(CUR_C2W) and tracker.relative(CUR_C2W) is None  # cannot relate: restart
    tracker.clear()
    assert not tracker.broken(CUR_C2W)


def test_used_inputs_follow_the_options():
    assert used_inputs(StreamConfig()) == ()
    assert used_inputs(StreamConfig(region_pixel=True)) == ("mask",)
    assert used_inputs(StreamConfig(history_warp="flow")) == ("flow",)
    assert used_inputs(StreamConfig(history_warp="depth", region_latent=True)) == ("mask", "depth", "intrinsics",
                                                                                  "pose")


def test_normalize_inputs_takes_renderer_forms():
    mask = np.full((H, W), 51, np.uint8)
    mask.setflags(write=False)  # a read-only buffer (e.g. a decoded message): no torch warning, a copy
    out = normalize_inputs({"mask": mask, "intrinsics": (20.0, 21.0, 15.5, 7.5), "depth": np.ones((H, W), np.float32),
                            "flow": np.zeros((H, W, 2), np.float32)}, H, W)
    assert out["mask"].dtype == torch.float32 and torch.equal(out["mask"], torch.full((1, 1, H, W), 0.2))
    assert out["intrinsics"][0].tolist() == [[20.0, 0.0, 15.5], [0.0, 21.0, 7.5], [0.0, 0.0, 1.0]]
    assert out["depth"].shape == (1, 1, H, W) and out["flow"].shape == (1, 2, H, W)
    assert torch.equal(normalize_inputs({"mask": torch.ones(H, W, dtype=torch.bool)}, H, W)["mask"],
                       torch.ones(1, 1, H, W))
    with pytest.raises(TypeError, match="unknown per-frame inputs"):
        normalize_inputs({"normals": np.zeros((H, W, 3))}, H, W)
    with pytest.raises(ValueError, match=r"\(fx, fy, cx, cy\)"):
        normalize_inputs({"intrinsics": (1.0, 2.0)}, H, W)
