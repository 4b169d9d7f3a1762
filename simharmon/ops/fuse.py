"""Latent fusion ops (``kernels/fuse.cu``), each one pass over memory, with torch references.

Masks and validity maps are ``[N, 1, H, W]`` weights broadcast over channels, read as
``clamp(m, 0, 1)`` with NaN counting as 0 (bool masks read as 0 / 1). Data tensors take any
strides; outputs are contiguous, in the data's dtype, computed in float32 (float64 for float64).
"""

from __future__ import annotations

import math

import torch

from . import _cuda
from ._checks import aux_dtype, check_mask, check_same_dtype, check_tensor, weight32

__all__ = ["MAX_BAND", "masked_blend", "masked_blend_reference", "mean_shift", "mean_shift_reference",
           "temporal_blend", "temporal_blend_reference"]

MAX_BAND = 32  # the kernel keeps a (32 + 2R) x (8 + 2R) mask tile in shared memory
_BLEND_BLOCK = (32, 8)  # BLEND_BX, BLEND_BY in fuse.cu
_SHIFT_THREADS = 1024  # SHIFT_THREADS in fuse.cu


def _check_pair(op: str, a, b, mask, names=("a", "b"), mask_name="mask") -> None:
    sizes = {}
    check_tensor(op, names[0], a, ["N", "C", "H", "W"], sizes)
    check_tensor(op, names[1], b, ["N", "C", "H", "W"], sizes, device=a.device)
    check_same_dtype(op, names, (a, b))
    check_mask(op, mask_name, mask, sizes, a.device)


def _weight(mask: torch.Tensor, compute: torch.dtype) -> torch.Tensor:
    return mask.to(torch.float32).nan_to_num(0.0).clamp(0.0, 1.0).to(compute)


def _band(mask: torch.Tensor, band: int) -> torch.Tensor:
    """The soft band weight of ``masked_blend`` (float32 ``[N, 1, H, W]``), by its definition."""
    m = _weight(mask, torch.float32)
    if band == 0:
        return m
    height, width = m.shape[-2:]
    padded = torch.nn.functional.pad(m, (band, band, band, band))
    w = torch.zeros_like(m)
    for dy in range(-band, band + 1):
        for dx in range(-band, band + 1):
            d2 = dx * dx + dy * dy
            if d2 > band * band:
                continue
            # As the kernel, in IEEE fp32: sqrtf is correctly rounded there, and so is a float64 sqrt
            # rounded to fp32; torch's CPU fp32 sqrt is not always (sqrt(37): 1 ulp low).
            fall = 1.0 - torch.tensor(math.sqrt(d2), dtype=torch.float32) / (band + 1)
            w = torch.maximum(w, padded[..., band + dy:band + dy + height, band + dx:band + dx + width] * fall)
    return w


def _blend_reference(a, b, mask, band):
    compute = aux_dtype(a.dtype)
    w = _band(mask, band).to(compute)
    return (w * a.to(compute) + (1.0 - w) * b.to(compute)).to(a.dtype).contiguous()


@torch.library.custom_op("simharmon::masked_blend", mutates_args=())
def _blend_op(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, band: int) -> torch.Tensor:
    return _blend_reference(a, b, mask, band)


def launch_blend(a, b, mask, band, out) -> None:
    """Run the kernel into contiguous ``out`` (for tests that poison it first)."""
    n, c, height, width = a.shape
    mask = weight32(mask)
    bx, by = _BLEND_BLOCK
    smem = 0 if band == 0 else 4 * ((bx + 2 * band) * (by + 2 * band) + (2 * band + 1) ** 2)
    _cuda.launch("fuse", f"blend_{_cuda.DTYPE_SUFFIX[a.dtype]}", a.device,
                 (_cuda.blocks(width, bx), _cuda.blocks(height, by), n), (bx, by),
                 (_cuda.ptr(a), *map(_cuda.i64, a.stride()), _cuda.ptr(b), *map(_cuda.i64, b.stride()),
                  _cuda.ptr(mask), _cuda.ptr(out), _cuda.i32(n), _cuda.i32(c), _cuda.i32(height), _cuda.i32(width),
                  _cuda.i32(band)), shared_mem=smem)


@_blend_op.register_kernel("cuda")
def _blend_cuda(a, b, mask, band):
    if not _cuda.use_kernels(a, b, mask, dtype=a.dtype):
        return _blend_reference(a, b, mask, band)
    out = torch.empty(a.shape, dtype=a.dtype, device=a.device)
    launch_blend(a, b, mask, band, out)
    return out


@_blend_op.register_fake
def _blend_fake(a, b, mask, band):
    return a.new_empty(a.shape)


def _check_band(op: str, band) -> None:
    if isinstance(band, bool) or not isinstance(band, int) or not 0 <= band <= MAX_BAND:
        raise ValueError(f"{op}: band must be an int in [0, {MAX_BAND}] (pixels of this tensor), got {band!r}")


def masked_blend(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, band: int = 0) -> torch.Tensor:
    """``out = w * a + (1 - w) * b`` with ``w`` the mask widened by a soft band.

    a, b: ``[N, C, H, W]``, same dtype (float32 / float16 / bfloat16; float64 reference only).
    mask: ``[N, 1, H, W]`` in [0, 1], 1 where ``a`` should win (e.g. the inserted actor).
    band: radius R in pixels of these tensors, 0..``MAX_BAND``. The weight is
        ``w(p) = max over q with |q - p| <= R of m(q) * (1 - |q - p| / (R + 1))`` (Euclidean
        distance): ``w = m`` for R = 0; otherwise 1 on the mask, falling linearly to 0 at R + 1
        pixels from it, so pixels farther than R from every mask pixel get exactly ``b``.
    Returns ``[N, C, H, W]`` in a's dtype. ``w = 0`` gives ``b`` and ``w = 1`` gives ``a`` bit-exactly
    (for finite values).
    """
    _check_pair("masked_blend", a, b, mask)
    _check_band("masked_blend", band)
    return _blend_op(a, b, mask, band)


def masked_blend_reference(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, band: int = 0) -> torch.Tensor:
    """Pure-torch ``masked_blend`` (same signature and results)."""
    _check_pair("masked_blend_reference", a, b, mask)
    _check_band("masked_blend_reference", band)
    return _blend_reference(a, b, mask, band)


def _shift_reference(a, b, mask):
    m = _weight(mask, torch.float64)
    fg, bg = m.sum((2, 3)), (1.0 - m).sum((2, 3))
    mean_fg = (m * a.to(torch.float64)).sum((2, 3)) / fg.clamp_min(1e-300)
    mean_bg = ((1.0 - m) * b.to(torch.float64)).sum((2, 3)) / bg.clamp_min(1e-300)
    shift = torch.where((fg > 0) & (bg > 0), mean_bg - mean_fg, 0.0)
    compute = aux_dtype(a.dtype)
    return (a.to(compute) + shift.to(compute)[:, :, None, None]).to(a.dtype).contiguous()


@torch.library.custom_op("simharmon::mean_shift", mutates_args=())
def _shift_op(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return _shift_reference(a, b, mask)


def launch_mean_shift(a, b, mask, out) -> None:
    """Run the kernel into contiguous ``out`` (for tests that poison it first)."""
    n, c, height, width = a.shape
    mask = weight32(mask)
    _cuda.launch("fuse", f"mean_shift_{_cuda.DTYPE_SUFFIX[a.dtype]}", a.device, (c, n), (_SHIFT_THREADS,),
                 (_cuda.ptr(a), *map(_cuda.i64, a.stride()), _cuda.ptr(b), *map(_cuda.i64, b.stride()),
                  _cuda.ptr(mask), _cuda.ptr(out), _cuda.i32(n), _cuda.i32(c), _cuda.i32(height), _cuda.i32(width)))


@_shift_op.register_kernel("cuda")
def _shift_cuda(a, b, mask):
    if not _cuda.use_kernels(a, b, mask, dtype=a.dtype):
        return _shift_reference(a, b, mask)
    out = torch.empty(a.shape, dtype=a.dtype, device=a.device)
    launch_mean_shift(a, b, mask, out)
    return out


@_shift_op.register_fake
def _shift_fake(a, b, mask):
    return a.new_empty(a.shape)


def mean_shift(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-channel masked mean shift (HarmoniDiff-RS's Latent Mean Shift, with soft masks).

    For each batch item n and channel c, with ``m = mask[n, 0]``:
        ``mean_fg(a) = sum(m * a[n, c]) / sum(m)``, ``mean_bg(b) = sum((1 - m) * b[n, c]) / sum(1 - m)``,
        ``out[n, c] = a[n, c] + (mean_bg(b) - mean_fg(a))`` over the whole plane,
    so the foreground of ``a`` gets the background statistics of ``b``; paste it with
    ``masked_blend``. The shift is 0 when either region is empty (sum of its weights is 0).
    Sums run in float64. a, b: ``[N, C, H, W]`` same dtype; mask ``[N, 1, H, W]``.
    On CUDA: one block per (n, c) plane, reducing then shifting in the same launch.
    """
    _check_pair("mean_shift", a, b, mask)
    return _shift_op(a, b, mask)


def mean_shift_reference(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pure-torch ``mean_shift`` (same signature and results up to summation order)."""
    _check_pair("mean_shift_reference", a, b, mask)
    return _shift_reference(a, b, mask)


def _temporal_reference(current, history, valid, alpha):
    compute = aux_dtype(current.dtype)
    w = (alpha * _weight(valid, torch.float32)).to(compute)
    return ((1.0 - w) * current.to(compute) + w * history.to(compute)).to(current.dtype).contiguous()


@torch.library.custom_op("simharmon::temporal_blend", mutates_args=())
def _temporal_op(current: torch.Tensor, history: torch.Tensor, valid: torch.Tensor, alpha: float) -> torch.Tensor:
    return _temporal_reference(current, history, valid, alpha)


def launch_temporal_blend(current, history, valid, alpha, out) -> None:
    """Run the kernel into contiguous ``out`` (for tests that poison it first)."""
    n, c, height, width = current.shape
    valid = weight32(valid)
    _cuda.launch("fuse", f"temporal_blend_{_cuda.DTYPE_SUFFIX[current.dtype]}", current.device,
                 (_cuda.blocks(n * height * width),), (256,),
                 (_cuda.ptr(current), *map(_cuda.i64, current.stride()), _cuda.ptr(history),
                  *map(_cuda.i64, history.stride()), _cuda.ptr(valid), _cuda.f32(alpha), _cuda.ptr(out),
                  _cuda.i32(n), _cuda.i32(c), _cuda.i32(height), _cuda.i32(width)))


@_temporal_op.register_kernel("cuda")
def _temporal_cuda(current, history, valid, alpha):
    if not _cuda.use_kernels(current, history, valid, dtype=current.dtype):
        return _temporal_reference(current, history, valid, alpha)
    out = torch.empty(current.shape, dtype=current.dtype, device=current.device)
    launch_temporal_blend(current, history, valid, alpha, out)
    return out


@_temporal_op.register_fake
def _temporal_fake(current, history, valid, alpha):
    return current.new_empty(current.shape)


def _check_alpha(op: str, alpha) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{op}: alpha must be a number in [0, 1], got {alpha!r}")


def temporal_blend(current: torch.Tensor, history: torch.Tensor, valid: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Validity-weighted temporal blend: ``out = (1 - w) * current + w * history``, ``w = alpha * valid``.

    current, history: ``[N, C, H, W]`` same dtype (history already warped into the current view);
    valid: ``[N, 1, H, W]`` in [0, 1] (e.g. ``warp``'s or ``reproject``'s validity); alpha in [0, 1].
    With alpha = 1 this fills the invalid (disoccluded, off-screen) parts of a warped history with
    the current content and keeps the history elsewhere; ``w = 0`` / ``w = 1`` are bit-exact.
    """
    _check_pair("temporal_blend", current, history, valid, ("current", "history"), "valid")
    _check_alpha("temporal_blend", alpha)
    return _temporal_op(current, history, valid, float(alpha))


def temporal_blend_reference(current: torch.Tensor, history: torch.Tensor, valid: torch.Tensor,
                             alpha: float = 1.0) -> torch.Tensor:
    """Pure-torch ``temporal_blend`` (same signature and results)."""
    _check_pair("temporal_blend_reference", current, history, valid, ("current", "history"), "valid")
    _check_alpha("temporal_blend_reference", alpha)
    return _temporal_reference(current, history, valid, float(alpha))
