"""Bilinear backward warp by a pixel flow field (``kernels/warp.cu``) and its torch reference."""

from __future__ import annotations

from typing import Tuple

import torch

from . import _cuda
from ._checks import FLOAT_DTYPES, aux_dtype, check_choice, check_tensor
from ._sampling import bilinear, inside_weight, pixel_grid

__all__ = ["PADDINGS", "warp", "warp_reference"]

PADDINGS = ("zeros", "border")


def _check(op: str, image, flow, padding) -> None:
    sizes = {}
    check_tensor(op, "image", image, ["N", "C", "H", "W"], sizes)
    check_tensor(op, "flow", flow, ["N", 2, "H", "W"], sizes, FLOAT_DTYPES, image.device)
    check_choice(op, "padding", padding, PADDINGS)


def _reference(image: torch.Tensor, flow: torch.Tensor, padding: str) -> Tuple[torch.Tensor, torch.Tensor]:
    compute = aux_dtype(image.dtype)
    _, _, height, width = image.shape
    xs, ys = pixel_grid(height, width, compute, image.device)
    flow = flow.to(compute)
    sx, sy = xs + flow[:, 0], ys + flow[:, 1]
    out = bilinear(image.to(compute), sx, sy, border=padding == "border")
    return out.to(image.dtype).contiguous(), inside_weight(sx, sy, height, width).unsqueeze(1).contiguous()


@torch.library.custom_op("simharmon::warp", mutates_args=())
def _warp_op(image: torch.Tensor, flow: torch.Tensor, padding: str) -> Tuple[torch.Tensor, torch.Tensor]:
    return _reference(image, flow, padding)


def launch_warp(image: torch.Tensor, flow: torch.Tensor, padding: str, out: torch.Tensor, valid: torch.Tensor) -> None:
    """Run the kernel into contiguous ``out`` / ``valid`` (for tests that poison them first)."""
    n, c, height, width = image.shape
    flow = flow.to(torch.float32).contiguous()
    _cuda.launch("warp", f"warp_{_cuda.DTYPE_SUFFIX[image.dtype]}", image.device,
                 (_cuda.blocks(n * height * width),), (256,),
                 (_cuda.ptr(image), *map(_cuda.i64, image.stride()), _cuda.ptr(flow), _cuda.ptr(out),
                  _cuda.ptr(valid), _cuda.i32(n), _cuda.i32(c), _cuda.i32(height), _cuda.i32(width),
                  _cuda.i32(padding == "border")))


@_warp_op.register_kernel("cuda")
def _warp_cuda(image: torch.Tensor, flow: torch.Tensor, padding: str) -> Tuple[torch.Tensor, torch.Tensor]:
    if not _cuda.use_kernels(image, flow, dtype=image.dtype):
        return _reference(image, flow, padding)
    n, c, height, width = image.shape
    out = torch.empty((n, c, height, width), dtype=image.dtype, device=image.device)
    valid = torch.empty((n, 1, height, width), dtype=torch.float32, device=image.device)
    launch_warp(image, flow, padding, out, valid)
    return out, valid


@_warp_op.register_fake
def _warp_fake(image: torch.Tensor, flow: torch.Tensor, padding: str) -> Tuple[torch.Tensor, torch.Tensor]:
    n, c, height, width = image.shape
    return image.new_empty((n, c, height, width)), image.new_empty((n, 1, height, width), dtype=aux_dtype(image.dtype))


def warp(image: torch.Tensor, flow: torch.Tensor, padding: str = "zeros") -> Tuple[torch.Tensor, torch.Tensor]:
    """Backward-warp ``image`` by ``flow``: ``out[n, :, y, x] = image[n, :, y + flow_y, x + flow_x]``.

    image: ``[N, C, H, W]`` float32 / float16 / bfloat16 (float64: reference only), any strides.
    flow: ``[N, 2, H, W]`` in pixels, channel 0 = x (columns), 1 = y (rows); any float dtype, used
        as float32 (float64 with a float64 image).
    padding: ``"zeros"`` (taps outside the image contribute 0) or ``"border"`` (the sample position
        is clamped into the image).

    Sampling is bilinear with pixel centres at integer coordinates, i.e. ``F.grid_sample`` with
    ``align_corners=True`` on the grid ``2 * (x + flow_x) / (W - 1) - 1`` (likewise for y).

    Returns ``(out [N, C, H, W]`` in image's dtype, contiguous; ``valid [N, 1, H, W]`` float32``)``:
    valid is the summed bilinear weight of the in-bounds taps at the sample position (the zeros-
    padded warp of an all-ones image), for either padding: 1 inside, falling to 0 over the last
    pixel outside. A non-finite flow gives ``out = 0`` and ``valid = 0``.
    On CUDA with cupy available this is one kernel launch; otherwise ``warp_reference``.
    """
    _check("warp", image, flow, padding)
    return _warp_op(image, flow, padding)


def warp_reference(image: torch.Tensor, flow: torch.Tensor, padding: str = "zeros") -> Tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch ``warp`` (same signature and results; computes in float32, or float64 for float64)."""
    _check("warp_reference", image, flow, padding)
    return _reference(image, flow, padding)
