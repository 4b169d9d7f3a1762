"""Depth + pose reprojection into the previous view (``kernels/reproject.cu``) and torch references.

Conventions: pinhole intrinsics ``K: [N, 3, 3]`` in pixels with pixel centres at integer
coordinates (``u = fx X / Z + cx``, as kornia's ``project_points``); ``depth`` is the camera-space
``Z`` of each pixel (not the ray length); ``pose: [N, 4, 4]`` is the rigid transform from the
CURRENT camera's frame to the PREVIOUS camera's frame, ``X_prev = R X_cur + t`` (for world-to-camera
extrinsics ``E``: ``pose = E_prev @ inverse(E_cur)``).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _cuda
from ._checks import FLOAT_DTYPES, aux_dtype, check_tensor
from ._sampling import bilinear, inside_weight, pixel_grid
from .warp import PADDINGS

__all__ = ["projection_coefficients", "reproject", "reproject_reference", "reproject_warp", "reproject_warp_reference"]


def _check(op: str, depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol, sizes=None, device=None) -> None:
    sizes = {} if sizes is None else sizes
    check_tensor(op, "depth", depth, ["N", 1, "H", "W"], sizes, FLOAT_DTYPES, device)
    device = depth.device
    check_tensor(op, "intrinsics", intrinsics, ["N", 3, 3], sizes, FLOAT_DTYPES, device)
    check_tensor(op, "pose", pose, ["N", 4, 4], sizes, FLOAT_DTYPES, device)
    if prev_depth is not None:
        check_tensor(op, "prev_depth", prev_depth, ["N", 1, "H", "W"], sizes, FLOAT_DTYPES, device)
    if prev_intrinsics is not None:
        check_tensor(op, "prev_intrinsics", prev_intrinsics, ["N", 3, 3], sizes, FLOAT_DTYPES, device)
    if not isinstance(rel_tol, (int, float)) or not rel_tol >= 0:
        raise ValueError(f"{op}: rel_tol must be a non-negative number, got {rel_tol!r}")


def projection_coefficients(intrinsics: torch.Tensor, pose: torch.Tensor,
                            prev_intrinsics: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per batch item ``[M (3x3, row-major), t']: [N, 12]`` float64 with ``M = K_prev R K^-1``, ``t' = K_prev t``.

    A current pixel ``(x, y)`` at depth ``d`` lands at ``p = d * M [x, y, 1] + t'`` (homogeneous; ``p.z``
    is its depth in the previous camera). Computed on the tensors' device with no host sync.
    """
    k = intrinsics.to(torch.float64)
    k_prev = k if prev_intrinsics is None else prev_intrinsics.to(torch.float64)
    pose = pose.to(torch.float64)
    m = k_prev @ pose[:, :3, :3] @ _inverse3x3(k)
    t = (k_prev @ pose[:, :3, 3:]).squeeze(-1)
    return torch.cat([m.reshape(-1, 9), t], dim=1)


def _inverse3x3(m: torch.Tensor) -> torch.Tensor:
    """Batched 3x3 inverse by cofactors: elementwise torch ops only, so never a device sync."""
    a, b, c = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    d, e, f = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    g, h, i = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    cof = torch.stack([e * i - f * h, c * h - b * i, b * f - c * e,
                       f * g - d * i, a * i - c * g, c * d - a * f,
                       d * h - e * g, b * g - a * h, a * e - b * d], dim=1).view(-1, 3, 3)
    det = a * cof[:, 0, 0] + b * cof[:, 1, 0] + c * cof[:, 2, 0]
    return cof / det.view(-1, 1, 1)


def _landing(depth, intrinsics, pose, prev_intrinsics):
    """Landing positions ``(sx, sy)``, previous-camera depth ``pz`` and the ``ok`` mask, each ``[N, H, W]``."""
    compute = aux_dtype(depth.dtype)
    _, _, height, width = depth.shape
    coef = projection_coefficients(intrinsics, pose, prev_intrinsics).to(compute)
    c = [coef[:, i].view(-1, 1, 1) for i in range(12)]
    u, v = pixel_grid(height, width, compute, depth.device)
    d = depth[:, 0].to(compute)
    r = [c[3 * i] * u + c[3 * i + 1] * v + c[3 * i + 2] for i in range(3)]
    px, py, pz = d * r[0] + c[9], d * r[1] + c[10], d * r[2] + c[11]
    ok = (d > 0) & torch.isfinite(d) & (pz > 0) & torch.isfinite(pz)
    sx, sy = px / pz, py / pz
    ok = ok & torch.isfinite(sx) & torch.isfinite(sy)
    return torch.where(ok, sx, u), torch.where(ok, sy, v), pz, ok


def _validity(sx, sy, pz, ok, prev_depth, rel_tol):
    height, width = sx.shape[-2:]
    inside = inside_weight(sx, sy, height, width)
    keep = ok & (inside > 0)
    if prev_depth is not None:
        summed = bilinear(prev_depth.to(pz.dtype), sx, sy, border=False)[:, 0]
        dp = summed / torch.where(inside > 0, inside, 1.0)
        keep = keep & (dp > 0) & torch.isfinite(dp) & ((pz - dp).abs() <= rel_tol * dp)
    return torch.where(keep, inside, 0.0).unsqueeze(1).contiguous()


def _reproject_reference(depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol):
    sx, sy, pz, ok = _landing(depth, intrinsics, pose, prev_intrinsics)
    u, v = pixel_grid(sx.shape[-2], sx.shape[-1], sx.dtype, sx.device)
    flow = torch.stack([sx - u, sy - v], dim=1).contiguous()
    return flow, _validity(sx, sy, pz, ok, prev_depth, rel_tol)


def _reproject_warp_reference(source, depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol, padding):
    sx, sy, pz, ok = _landing(depth, intrinsics, pose, prev_intrinsics)
    compute = aux_dtype(source.dtype)
    out = bilinear(source.to(compute), sx.to(compute), sy.to(compute), border=padding == "border")
    return out.to(source.dtype).contiguous(), _validity(sx, sy, pz, ok, prev_depth, rel_tol).to(compute)


def _kernel_inputs(depth, intrinsics, pose, prev_depth, prev_intrinsics):
    coef = projection_coefficients(intrinsics, pose, prev_intrinsics).to(torch.float32).contiguous()
    depth32 = depth.to(torch.float32).contiguous()
    prev32 = None if prev_depth is None else prev_depth.to(torch.float32).contiguous()
    return depth32, coef, prev32


@torch.library.custom_op("simharmon::reproject", mutates_args=())
def _reproject_op(depth: torch.Tensor, intrinsics: torch.Tensor, pose: torch.Tensor, prev_depth: Optional[torch.Tensor],
                  prev_intrinsics: Optional[torch.Tensor], rel_tol: float) -> Tuple[torch.Tensor, torch.Tensor]:
    return _reproject_reference(depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol)


def launch_reproject(depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol, flow, valid) -> None:
    """Run the kernel into contiguous float32 ``flow`` / ``valid`` (for tests that poison them first)."""
    n, _, height, width = depth.shape
    depth32, coef, prev32 = _kernel_inputs(depth, intrinsics, pose, prev_depth, prev_intrinsics)
    _cuda.launch("reproject", "reproject_flow", depth.device, (_cuda.blocks(n * height * width),), (256,),
                 (_cuda.ptr(depth32), _cuda.ptr(coef), _cuda.ptr(prev32), _cuda.f32(rel_tol), _cuda.ptr(flow),
                  _cuda.ptr(valid), _cuda.i32(n), _cuda.i32(height), _cuda.i32(width)))


@_reproject_op.register_kernel("cuda")
def _reproject_cuda(depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol):
    if depth.dtype == torch.float64 or not _cuda.use_kernels(depth, intrinsics, pose, prev_depth, prev_intrinsics):
        return _reproject_reference(depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol)
    n, _, height, width = depth.shape
    flow = torch.empty((n, 2, height, width), dtype=torch.float32, device=depth.device)
    valid = torch.empty((n, 1, height, width), dtype=torch.float32, device=depth.device)
    launch_reproject(depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol, flow, valid)
    return flow, valid


@_reproject_op.register_fake
def _reproject_fake(depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol):
    n, _, height, width = depth.shape
    dtype = aux_dtype(depth.dtype)
    return depth.new_empty((n, 2, height, width), dtype=dtype), depth.new_empty((n, 1, height, width), dtype=dtype)


@torch.library.custom_op("simharmon::reproject_warp", mutates_args=())
def _reproject_warp_op(source: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor, pose: torch.Tensor,
                       prev_depth: Optional[torch.Tensor], prev_intrinsics: Optional[torch.Tensor], rel_tol: float,
                       padding: str) -> Tuple[torch.Tensor, torch.Tensor]:
    return _reproject_warp_reference(source, depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol, padding)


def launch_reproject_warp(source, depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol, padding, out,
                          valid) -> None:
    """Run the fused kernel into contiguous ``out`` / ``valid`` (for tests that poison them first)."""
    n, c, height, width = source.shape
    depth32, coef, prev32 = _kernel_inputs(depth, intrinsics, pose, prev_depth, prev_intrinsics)
    _cuda.launch("reproject", f"reproject_warp_{_cuda.DTYPE_SUFFIX[source.dtype]}", source.device,
                 (_cuda.blocks(n * height * width),), (256,),
                 (_cuda.ptr(source), *map(_cuda.i64, source.stride()), _cuda.ptr(depth32), _cuda.ptr(coef),
                  _cuda.ptr(prev32), _cuda.f32(rel_tol), _cuda.ptr(out), _cuda.ptr(valid), _cuda.i32(n),
                  _cuda.i32(c), _cuda.i32(height), _cuda.i32(width), _cuda.i32(padding == "border")))


@_reproject_warp_op.register_kernel("cuda")
def _reproject_warp_cuda(source, depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol, padding):
    if not _cuda.use_kernels(source, depth, intrinsics, pose, prev_depth, prev_intrinsics, dtype=source.dtype):
        return _reproject_warp_reference(source, depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol, padding)
    n, c, height, width = source.shape
    out = torch.empty((n, c, height, width), dtype=source.dtype, device=source.device)
    valid = torch.empty((n, 1, height, width), dtype=torch.float32, device=source.device)
    launch_reproject_warp(source, depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol, padding, out, valid)
    return out, valid


@_reproject_warp_op.register_fake
def _reproject_warp_fake(source, depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol, padding):
    n, c, height, width = source.shape
    return source.new_empty((n, c, height, width)), source.new_empty((n, 1, height, width), dtype=aux_dtype(source.dtype))


def reproject(depth: torch.Tensor, intrinsics: torch.Tensor, pose: torch.Tensor, prev_depth: Optional[torch.Tensor] = None,
              *, prev_intrinsics: Optional[torch.Tensor] = None, rel_tol: float = 0.01) -> Tuple[torch.Tensor, torch.Tensor]:
    """Where each current pixel lands in the previous view, as a flow for ``warp``.

    depth: ``[N, 1, H, W]`` current camera-space Z (> 0; other values make the pixel invalid).
    intrinsics: ``[N, 3, 3]`` current camera; prev_intrinsics: the previous camera's (default: the same).
    pose: ``[N, 4, 4]`` current-camera -> previous-camera transform (module docstring).
    prev_depth: ``[N, 1, H, W]`` the previous view's depth, for the occlusion test; None skips it.
    rel_tol: a landing point is visible when ``|z_prev - d_prev| <= rel_tol * d_prev``, with
        ``z_prev`` its depth in the previous camera and ``d_prev`` prev_depth sampled bilinearly there
        (zero padding, renormalized by the in-bounds weight).

    Returns ``(flow [N, 2, H, W]`` float32 in pixels, ``valid [N, 1, H, W]`` float32``)``:
    ``warp(previous, flow)`` brings previous-view content into the current view. valid is the
    in-bounds bilinear weight at the landing point (as ``warp``'s) where the occlusion test passes,
    0 where it fails or the point is not in front of both cameras (there flow is 0). Computed in
    float32 (float64 for float64 depth) with ``projection_coefficients`` folded in float64.
    """
    _check("reproject", depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol)
    return _reproject_op(depth, intrinsics, pose, prev_depth, prev_intrinsics, float(rel_tol))


def reproject_reference(depth: torch.Tensor, intrinsics: torch.Tensor, pose: torch.Tensor,
                        prev_depth: Optional[torch.Tensor] = None, *, prev_intrinsics: Optional[torch.Tensor] = None,
                        rel_tol: float = 0.01) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch ``reproject`` (same signature and results)."""
    _check("reproject_reference", depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol)
    return _reproject_reference(depth, intrinsics, pose, prev_depth, prev_intrinsics, float(rel_tol))


def _check_warp(op, source, depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol, padding):
    sizes = {}
    check_tensor(op, "source", source, ["N", "C", "H", "W"], sizes)
    _check(op, depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol, sizes, source.device)
    if padding not in PADDINGS:
        raise ValueError(f"{op}: padding must be one of {PADDINGS}, got {padding!r}")


def reproject_warp(source: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor, pose: torch.Tensor,
                   prev_depth: Optional[torch.Tensor] = None, *, prev_intrinsics: Optional[torch.Tensor] = None,
                   rel_tol: float = 0.01, padding: str = "zeros") -> Tuple[torch.Tensor, torch.Tensor]:
    """``reproject`` and ``warp`` fused: sample ``source`` (previous view) at each pixel's landing point.

    source: ``[N, C, H, W]`` previous-view tensor (float32 / float16 / bfloat16; float64 reference
    only), any strides. Other arguments as ``reproject``; padding as ``warp``.
    Returns ``(out [N, C, H, W]`` in source's dtype, ``valid [N, 1, H, W]`` float32``)``, equal to
    ``warp(source, reproject(...)[0], padding)[0]`` and ``reproject(...)[1]`` up to the rounding of
    the landing position (the fused kernel samples at it directly instead of at ``x + flow``).
    """
    _check_warp("reproject_warp", source, depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol, padding)
    return _reproject_warp_op(source, depth, intrinsics, pose, prev_depth, prev_intrinsics, float(rel_tol), padding)


def reproject_warp_reference(source: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor, pose: torch.Tensor,
                             prev_depth: Optional[torch.Tensor] = None, *, prev_intrinsics: Optional[torch.Tensor] = None,
                             rel_tol: float = 0.01, padding: str = "zeros") -> Tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch ``reproject_warp`` (same signature and results)."""
    _check_warp("reproject_warp_reference", source, depth, intrinsics, pose, prev_depth, prev_intrinsics, rel_tol,
                padding)
    return _reproject_warp_reference(source, depth, intrinsics, pose, prev_depth, prev_intrinsics, float(rel_tol),
                                     padding)
