"""The runtime boundary (``kernels/pack.cu``): 8-bit interleaved frames <-> planar model tensors.

Model space is [-1, 1]: ``(u / 255 - 0.5) / 0.5``, exactly the release's ToTensor + Normalize(0.5,
0.5) (and ``frame_to_model(uint8_hwc_to_frame(x))`` on the CPU), each step an IEEE float32
operation. Back to 8 bits: ``q = clamp(v * 0.5 + 0.5, 0, 1) * 255`` (NaN -> 0), then truncation (the
release's ToPILImage; ``frame_to_uint8_hwc(model_to_frame(v))``) or round-half-to-even.
"""

from __future__ import annotations

import torch

from ..io.pixels import LAYOUTS
from . import _cuda
from ._checks import check_choice, check_tensor

__all__ = ["LAYOUTS", "ROUNDINGS", "pack", "pack_reference", "unpack", "unpack_reference"]

ROUNDINGS = ("truncate", "nearest")
PACK_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _check_pack(op: str, image, layout, dtype) -> torch.Tensor:
    check_choice(op, "layout", layout, tuple(LAYOUTS))
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{op}: image must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    channels = LAYOUTS[layout][0]
    check_tensor(op, "image", image, ["N", "H", "W", channels], {}, (torch.uint8,))
    check_choice(op, "dtype", dtype, PACK_DTYPES)
    return image


def _pack_reference(image, layout, dtype):
    _, order, _ = LAYOUTS[layout]
    planes = image[..., list(order)].permute(0, 3, 1, 2)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    return ((planes.to(compute).div(255.0) - 0.5) / 0.5).to(dtype).contiguous()


@torch.library.custom_op("simharmon::pack", mutates_args=())
def _pack_op(image: torch.Tensor, layout: str, dtype: torch.dtype) -> torch.Tensor:
    return _pack_reference(image, layout, dtype)


def launch_pack(image, layout, out) -> None:
    """Run the kernel into contiguous ``out [N, 3, H, W]`` (for tests that poison it first)."""
    n, height, width, channels = image.shape
    _, order, _ = LAYOUTS[layout]
    sn, sh, sw, sc = image.stride()
    # One 32-bit load per pixel when its 4 channels are contiguous and every pixel is 4-byte aligned.
    word = int(channels == 4 and sc == 1 and sw == 4 and sh % 4 == 0 and sn % 4 == 0 and image.data_ptr() % 4 == 0)
    _cuda.launch("pack", f"pack_{_cuda.DTYPE_SUFFIX[out.dtype]}", image.device, (_cuda.blocks(n * height * width),),
                 (256,), (_cuda.ptr(image), _cuda.i64(sn), _cuda.i64(sh), _cuda.i64(sw), _cuda.i64(sc),
                          *map(_cuda.i32, order), _cuda.i32(word), _cuda.ptr(out), _cuda.i32(n), _cuda.i32(height),
                          _cuda.i32(width)))


@_pack_op.register_kernel("cuda")
def _pack_cuda(image, layout, dtype):
    if not _cuda.use_kernels(image, dtype=dtype):
        return _pack_reference(image, layout, dtype)
    n, height, width, _ = image.shape
    out = torch.empty((n, 3, height, width), dtype=dtype, device=image.device)
    launch_pack(image, layout, out)
    return out


@_pack_op.register_fake
def _pack_fake(image, layout, dtype):
    n, height, width, _ = image.shape
    return image.new_empty((n, 3, height, width), dtype=dtype)


def pack(image: torch.Tensor, layout: str = "rgb", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """8-bit frames -> model-space tensors in [-1, 1].

    image: uint8 ``[N, H, W, C]`` or ``[H, W, C]`` (any strides, e.g. a crop), C = 3 for ``"rgb"`` /
        ``"bgr"``, 4 for ``"rgba"`` / ``"bgra"`` (alpha is ignored).
    dtype: float32, bfloat16 or float16 (float64: reference only).
    Returns ``[N, 3, H, W]`` RGB planes in ``dtype``, contiguous: ``(u / 255 - 0.5) / 0.5`` in IEEE
    float32, then cast (round to nearest even), bit-identical to the runtime's float path on the CPU.
    """
    image = _check_pack("pack", image, layout, dtype)
    return _pack_op(image, layout, dtype)


def pack_reference(image: torch.Tensor, layout: str = "rgb", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pure-torch ``pack`` (same signature and results)."""
    image = _check_pack("pack_reference", image, layout, dtype)
    return _pack_reference(image, layout, dtype)


def _check_unpack(op: str, image, layout, rounding) -> None:
    check_tensor(op, "image", image, ["N", 3, "H", "W"], {})
    check_choice(op, "layout", layout, tuple(LAYOUTS))
    check_choice(op, "rounding", rounding, ROUNDINGS)


def _unpack_reference(image, layout, rounding):
    channels, order, alpha = LAYOUTS[layout]
    compute = torch.float64 if image.dtype == torch.float64 else torch.float32
    q = (image.to(compute) * 0.5 + 0.5).nan_to_num(0.0).clamp(0.0, 1.0) * 255.0
    if rounding == "nearest":
        q = q.round()
    levels = q.to(torch.uint8).permute(0, 2, 3, 1)  # float -> uint8 truncates (q >= 0)
    n, height, width, _ = levels.shape
    out = torch.empty((n, height, width, channels), dtype=torch.uint8, device=image.device)
    out[..., list(order)] = levels
    if alpha >= 0:
        out[..., alpha] = 255
    return out


@torch.library.custom_op("simharmon::unpack", mutates_args=())
def _unpack_op(image: torch.Tensor, layout: str, rounding: str) -> torch.Tensor:
    return _unpack_reference(image, layout, rounding)


def launch_unpack(image, layout, rounding, out) -> None:
    """Run the kernel into contiguous uint8 ``out [N, H, W, C]`` (for tests that poison it first)."""
    channels, order, alpha = LAYOUTS[layout]
    n, _, height, width = image.shape
    _cuda.launch("pack", f"unpack_{_cuda.DTYPE_SUFFIX[image.dtype]}", image.device,
                 (_cuda.blocks(n * height * width),), (256,),
                 (_cuda.ptr(image), *map(_cuda.i64, image.stride()), _cuda.ptr(out), _cuda.i32(channels),
                  *map(_cuda.i32, order), _cuda.i32(alpha), _cuda.i32(rounding == "nearest"), _cuda.i32(n),
                  _cuda.i32(height), _cuda.i32(width)))


@_unpack_op.register_kernel("cuda")
def _unpack_cuda(image, layout, rounding):
    if not _cuda.use_kernels(image, dtype=image.dtype):
        return _unpack_reference(image, layout, rounding)
    channels = LAYOUTS[layout][0]
    n, _, height, width = image.shape
    out = torch.empty((n, height, width, channels), dtype=torch.uint8, device=image.device)
    launch_unpack(image, layout, rounding, out)
    return out


@_unpack_op.register_fake
def _unpack_fake(image, layout, rounding):
    n, _, height, width = image.shape
    return image.new_empty((n, height, width, LAYOUTS[layout][0]), dtype=torch.uint8)


def unpack(image: torch.Tensor, layout: str = "rgb", rounding: str = "truncate") -> torch.Tensor:
    """Model-space ``[N, 3, H, W]`` (RGB planes, [-1, 1], any float dtype and strides) -> uint8 frames.

    Each value becomes ``q = clamp(v * 0.5 + 0.5, 0, 1) * 255`` in float32 (NaN -> 0), then
    ``rounding="truncate"`` (the release's quantization: ToPILImage on float tensors) or
    ``"nearest"`` (round half to even). Returns uint8 ``[N, H, W, C]`` contiguous in ``layout``;
    alpha, if any, is 255.
    """
    _check_unpack("unpack", image, layout, rounding)
    return _unpack_op(image, layout, rounding)


def unpack_reference(image: torch.Tensor, layout: str = "rgb", rounding: str = "truncate") -> torch.Tensor:
    """Pure-torch ``unpack`` (same signature and results)."""
    _check_unpack("unpack_reference", image, layout, rounding)
    return _unpack_reference(image, layout, rounding)
