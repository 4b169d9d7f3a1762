"""reproject / reproject_warp against kornia's unprojection and projection (the independent geometry)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from kornia.geometry import transform_points
from kornia.geometry.camera import project_points
from kornia.geometry.depth import depth_to_3d_v2

from simharmon.ops import (
    projection_coefficients,
    reproject,
    reproject_reference,
    reproject_warp,
    reproject_warp_reference,
    warp,
)

N, H, W = 2, 9, 14


def intrinsics(n=N, fx=12.0, fy=11.0, cx=6.3, cy=4.2, dtype=torch.float64):
    k = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)
    return k.repeat(n, 1, 1)


def rigid(yaw, translation, dtype=torch.float64):
    """[N, 4, 4] current -> previous camera transforms, one per (yaw, translation) pair."""
    poses = []
    for a, t in zip(yaw, translation):
        pose = torch.eye(4, dtype=dtype)
        pose[:3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]],
                                    dtype=dtype)
        pose[:3, 3] = torch.tensor(t, dtype=dtype)
        poses.append(pose)
    return torch.stack(poses)


def kornia_landing(depth, k, pose, k_prev=None):
    """Landing (u, v) [N, H, W, 2] and previous-camera depth [N, H, W], through kornia."""
    n, _, height, width = depth.shape
    points = depth_to_3d_v2(depth[:, 0], k)  # [N, H, W, 3] current-camera points
    moved = transform_points(pose, points.reshape(n, -1, 3))
    uv = project_points(moved, (k if k_prev is None else k_prev)[:, None])
    return uv.reshape(n, height, width, 2), moved[..., 2].reshape(n, height, width)


def pixel_grid(height, width, dtype=torch.float64):
    ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")
    return xs, ys


def sample_grid(uv, height, width):
    return torch.stack([2 * uv[..., 0] / (width - 1) - 1, 2 * uv[..., 1] / (height - 1) - 1], dim=-1)


def scene(seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    depth = (torch.rand(N, 1, H, W, generator=gen, dtype=dtype) * 4 + 3)
    return depth, intrinsics(dtype=dtype), rigid([0.04, -0.07], [[0.3, -0.1, 0.5], [-0.2, 0.15, -0.4]], dtype)


@pytest.mark.parametrize("fn", [reproject, reproject_reference])
def test_flow_matches_kornia(fn):
    depth, k, pose = scene()
    flow, valid = fn(depth, k, pose)
    uv, _ = kornia_landing(depth, k, pose)
    xs, ys = pixel_grid(H, W)
    torch.testing.assert_close(flow[:, 0], uv[..., 0] - xs, rtol=0, atol=1e-9)
    torch.testing.assert_close(flow[:, 1], uv[..., 1] - ys, rtol=0, atol=1e-9)
    # without prev_depth, valid is the in-bounds bilinear weight: grid_sample of ones
    ones = F.grid_sample(torch.ones(N, 1, H, W, dtype=depth.dtype), sample_grid(uv, H, W), align_corners=True)
    torch.testing.assert_close(valid, ones, rtol=0, atol=1e-9)
    assert (valid == 0).any() and (valid == 1).any()


def test_fp32_with_other_previous_intrinsics():
    depth, k, pose = scene(1)
    k_prev = intrinsics(fx=9.5, fy=10.5, cx=7.1, cy=3.9)
    flow, _ = reproject(depth.float(), k.float(), pose.float(), prev_intrinsics=k_prev.float())
    assert flow.dtype == torch.float32
    uv, _ = kornia_landing(depth, k, pose, k_prev)
    xs, ys = pixel_grid(H, W)
    torch.testing.assert_close(flow.double(), torch.stack([uv[..., 0] - xs, uv[..., 1] - ys], 1), rtol=0, atol=5e-5)


def test_occlusion_test_against_kornia_and_grid_sample():
    depth, k, pose = scene(2)
    uv, z_prev = kornia_landing(depth, k, pose)
    grid = sample_grid(uv, H, W)
    # A previous depth map that agrees with some landing points and not others (a nearer box).
    prev_depth = torch.full_like(depth, 5.0)
    prev_depth[:, :, 2:6, 3:8] = 2.0
    rel_tol = 0.3
    _, valid = reproject(depth, k, pose, prev_depth, rel_tol=rel_tol)
    inside = F.grid_sample(torch.ones_like(depth), grid, align_corners=True)
    sampled = F.grid_sample(prev_depth, grid, align_corners=True) / inside.clamp_min(1e-30)
    passes = (z_prev.unsqueeze(1) - sampled).abs() <= rel_tol * sampled
    expected = torch.where(passes & (inside > 0), inside, torch.zeros_like(inside))
    torch.testing.assert_close(valid, expected, rtol=0, atol=1e-9)
    assert ((inside > 0) & ~passes).any() and ((inside > 0) & passes).any()  # both outcomes occur


def test_static_camera_consistent_depth_is_valid_everywhere():
    depth, k, _ = scene(3)
    identity = torch.eye(4, dtype=depth.dtype).repeat(N, 1, 1)
    flow, valid = reproject(depth, k, identity, depth, rel_tol=1e-6)
    assert flow.abs().max() < 1e-9
    assert valid.min() > 1 - 1e-9  # in bounds and unoccluded (up to fp64 rounding at the last column)


def test_invalid_depths_and_points_behind_the_camera():
    depth, k, _ = scene(4)
    depth[0, 0, 0, 0] = 0.0
    depth[0, 0, 0, 1] = -1.0
    depth[0, 0, 0, 2] = float("inf")
    depth[0, 0, 0, 3] = float("nan")
    pose = rigid([0.0, 0.0], [[0.0, 0.0, -100.0], [0.0, 0.0, 0.0]])  # batch 0: previous camera far in front
    flow, valid = reproject(depth, k, pose)
    assert torch.equal(valid[0], torch.zeros_like(valid[0]))  # every point is behind the previous camera
    assert torch.equal(flow[0], torch.zeros_like(flow[0]))
    assert torch.isfinite(flow).all()
    assert valid[1].min() > 1 - 1e-9  # identity motion: everything valid (up to fp64 rounding at the edge)


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_fused_warp_equals_reproject_then_warp(padding):
    depth, k, pose = scene(5)
    gen = torch.Generator().manual_seed(5)
    source = torch.randn(N, 4, W, H, generator=gen, dtype=torch.float64).transpose(2, 3)  # non-contiguous
    prev_depth = depth.flip(-1) + 0.5
    out, valid = reproject_warp(source, depth, k, pose, prev_depth, rel_tol=0.2, padding=padding)
    flow, valid_flow = reproject(depth, k, pose, prev_depth, rel_tol=0.2)
    expected, _ = warp(source, flow, padding)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-9)
    assert torch.equal(valid, valid_flow)
    uv, _ = kornia_landing(depth, k, pose)
    direct = F.grid_sample(source, sample_grid(uv, H, W), padding_mode=padding, align_corners=True)
    torch.testing.assert_close(out, direct, rtol=0, atol=1e-9)
    ref_out, ref_valid = reproject_warp_reference(source, depth, k, pose, prev_depth, rel_tol=0.2, padding=padding)
    assert torch.equal(out, ref_out) and torch.equal(valid, ref_valid)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fused_warp_keeps_the_source_dtype(dtype):
    depth, k, pose = scene(6, torch.float32)
    source = torch.randn(N, 3, H, W).to(dtype)
    out, valid = reproject_warp(source, depth, k, pose)
    assert out.dtype == dtype and valid.dtype == torch.float32
    flow, _ = reproject(depth, k, pose)
    expected, _ = warp(source.double(), flow.double())
    tol = torch.finfo(dtype).eps * expected.abs() + 1e-4  # one rounding, plus the fp32 landing position
    assert ((out.double() - expected).abs() <= tol).all()


def test_projection_coefficients_fold_the_geometry():
    _, k, pose = scene(7)
    k_prev = intrinsics(fx=8.0)
    coef = projection_coefficients(k, pose, k_prev)
    m = coef[:, :9].view(N, 3, 3)
    torch.testing.assert_close(m, k_prev @ pose[:, :3, :3] @ torch.linalg.inv(k))
    torch.testing.assert_close(coef[:, 9:], (k_prev @ pose[:, :3, 3:])[..., 0])


def test_bad_arguments():
    depth, k, pose = scene(8, torch.float32)
    with pytest.raises(ValueError, match=r"intrinsics must have shape \[N, 3, 3\]"):
        reproject(depth, k[:, :2], pose)
    with pytest.raises(ValueError, match=r"pose must have shape \[N, 4, 4\] with N=2"):
        reproject(depth, k, pose[:1])
    with pytest.raises(ValueError, match=r"prev_depth must have shape \[N, 1, H, W\]"):
        reproject(depth, k, pose, depth[..., :-1])
    with pytest.raises(ValueError, match="rel_tol"):
        reproject(depth, k, pose, rel_tol=-0.1)
    with pytest.raises(TypeError, match="depth must have dtype"):
        reproject(depth.to(torch.int64), k, pose)
    with pytest.raises(ValueError, match=r"depth must have shape \[N, 1, H, W\] with N=2, C=3"):
        reproject_warp(torch.zeros(2, 3, H, W + 1), depth, k, pose)
    with pytest.raises(ValueError, match="padding"):
        reproject_warp(torch.zeros(2, 3, H, W), depth, k, pose, padding="mirror")
