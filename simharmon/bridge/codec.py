"""Pixel buffers <-> model frames, shared by the bridge server and the in-process hooks.

Decoding views the received buffer without copying it (``torch.frombuffer``), moves the raw
8- or 16-bit data to the engine's device first (so a GPU engine converts to float on the GPU and
moves 4x fewer bytes than float32 would), and only then converts. Encoding converts on the
frame's device and moves the packed result to the host once.

8-bit output rounds to the nearest level (``floor(x * 255 + 0.5)``), so an 8-bit frame that
passes through unchanged comes back bit-identical, and the enhancer's outputs (already on 8-bit
levels) come back at exactly their levels.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from .protocol import PIXEL_FORMATS, LayerSpec, PixelFormat

__all__ = ["DecodedFrame", "PixelError", "decode_pixels", "encode_pixels", "decode_layer", "expected_array"]

_TORCH_DTYPES = {"|u1": torch.uint8, "<f2": torch.float16, "<f4": torch.float32}


class PixelError(ValueError):
    """Pixel data that decodes but cannot be used (e.g. non-finite floats)."""


@dataclass
class DecodedFrame:
    """A decoded frame: ``frame`` ``[1, 3, H, W]`` float32 in [0, 1] on the target device, and the
    input's alpha plane ``[H, W]`` uint8 (host, a view of the input) when its format had one."""

    frame: torch.Tensor
    alpha: Optional[torch.Tensor]


def _view(buffer: Any, dtype: torch.dtype, shape: tuple) -> torch.Tensor:
    """A tensor view of a read-only buffer (zmq frames, bytes) without copying it."""
    with warnings.catch_warnings():
        # Received buffers are read-only; torch warns because it cannot mark tensors read-only.
        # Nothing here writes to the view: every path below converts into a new tensor.
        warnings.simplefilter("ignore", UserWarning)
        memory = buffer.buffer if hasattr(buffer, "buffer") else buffer  # zmq.Frame -> memoryview
        return torch.frombuffer(memory, dtype=dtype).view(*shape)


def decode_pixels(buffer: Any, fmt: PixelFormat | str, width: int, height: int,
                  device: torch.device | str = "cpu") -> DecodedFrame:
    """Decode a packed ``[H, W, C]`` buffer of ``fmt`` into a model frame.

    buffer: bytes-like or ``zmq.Frame`` of exactly ``width * height * fmt.bytes_per_pixel`` bytes.
    Returns a :class:`DecodedFrame`; ``frame`` is ``[1, 3, H, W]`` float32 in [0, 1] on ``device``
    (its strides follow the input layout; nothing requires contiguity) and never shares memory with
    ``buffer``; ``alpha`` is a view of it. Float formats are clamped to [0, 1]; non-finite values
    raise :class:`PixelError`.
    """
    fmt = PIXEL_FORMATS[fmt] if isinstance(fmt, str) else fmt
    raw = _view(buffer, _TORCH_DTYPES[fmt.dtype], (height, width, fmt.channels))
    alpha = raw[..., fmt.order.index("a")] if fmt.has_alpha else None
    hwc = raw.to(device, non_blocking=False)
    chw = hwc.permute(2, 0, 1)
    if fmt.order.startswith("bgr"):
        chw = chw[[2, 1, 0]]
    else:
        chw = chw[:3]
    if fmt.is_float:
        frame = chw.float()
        if not bool(torch.isfinite(frame).all()):
            raise PixelError(f"{fmt.name} frame holds NaN or infinite values")
        # float32 on the host is still the caller's buffer (read-only, or a shared-memory slot
        # the reply will overwrite): clamp into a new tensor then.
        aliased = frame.untyped_storage().data_ptr() == raw.untyped_storage().data_ptr()
        frame = frame.clamp(0.0, 1.0) if aliased else frame.clamp_(0.0, 1.0)
    else:
        frame = chw.float().div_(255.0)
    return DecodedFrame(frame=frame.unsqueeze(0), alpha=alpha)


def encode_pixels(frame: torch.Tensor, fmt: PixelFormat | str, alpha: Optional[torch.Tensor] = None,
                  out: Optional[np.ndarray] = None) -> np.ndarray:
    """Pack a model frame into ``fmt`` on the host.

    frame: ``[1, 3, H, W]`` (or ``[3, H, W]``) float in [0, 1], any device and strides.
    alpha: ``[H, W]`` uint8 written to the alpha channel of rgba8/bgra8 (default 255).
    out: a C-contiguous ``[H, W, C]`` array of the format's dtype to write into (e.g. a
        shared-memory slot); it must not overlap ``alpha``. Default: a new array.
    Returns the C-contiguous numpy array ``[H, W, C]`` of the format's dtype (``out`` when given).
    """
    fmt = PIXEL_FORMATS[fmt] if isinstance(fmt, str) else fmt
    chw = frame[0] if frame.dim() == 4 else frame
    if chw.dim() != 3 or chw.shape[0] != 3:
        raise ValueError(f"frame must be [1, 3, H, W] or [3, H, W], got {list(frame.shape)}")
    hwc = chw.permute(1, 2, 0)
    if fmt.is_float:
        hwc = hwc.clamp(0.0, 1.0)
    else:
        # +0.5 then truncation in the uint8 cast = round to nearest (clamped, so never negative).
        hwc = hwc.mul(255.0).add_(0.5).clamp_(0.0, 255.0)
    if out is not None:
        expected = (hwc.shape[0], hwc.shape[1], fmt.channels)
        if out.shape != expected or out.dtype != np.dtype(fmt.dtype) or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous {np.dtype(fmt.dtype).name} array of shape {list(expected)}, "
                             f"got {out.dtype.name} {list(out.shape)}")
    if hwc.device.type == "cpu":
        return _pack_host(hwc, fmt, alpha, out)
    packed = _pack_device(hwc, fmt, alpha)
    if out is None:
        return packed.cpu().numpy()
    torch.from_numpy(out).copy_(packed)  # one device-to-host copy, straight into ``out``
    return out


def _channel_map(fmt: PixelFormat) -> list:
    """Source channel (r=0, g=1, b=2) for each colour channel of ``fmt`` in memory order."""
    return ["rgb".index(c) for c in fmt.order if c != "a"]


def _pack_device(hwc: torch.Tensor, fmt: PixelFormat, alpha: Optional[torch.Tensor]) -> torch.Tensor:
    """Pack on the frame's device (GPU path): one kernel per channel, one host copy after."""
    height, width = hwc.shape[:2]
    out = torch.empty((height, width, fmt.channels), dtype=_TORCH_DTYPES[fmt.dtype], device=hwc.device)
    for dst, src in enumerate(_channel_map(fmt)):
        out[..., dst].copy_(hwc[..., src])
    if fmt.has_alpha:
        index = fmt.order.index("a")
        out[..., index].copy_(alpha) if alpha is not None else out[..., index].fill_(255)
    return out


def _pack_host(hwc: torch.Tensor, fmt: PixelFormat, alpha: Optional[torch.Tensor],
               out: Optional[np.ndarray] = None) -> np.ndarray:
    """Pack on the CPU with numpy, whose casting copies beat torch's here (benchmarks/bridge.py)."""
    height, width = hwc.shape[:2]
    if out is None:
        out = np.empty((height, width, fmt.channels), dtype=np.dtype(fmt.dtype))
    channels = _channel_map(fmt)
    if fmt.is_float:  # torch's float16 cast is vectorized, numpy's is not
        hwc = hwc.to(_TORCH_DTYPES[fmt.dtype])
    if hwc.is_contiguous():  # interleaved already (e.g. a frame decoded from a buffer): one strided cast
        source = hwc.numpy()
        np.copyto(out[..., :3], source if channels == [0, 1, 2] else source[..., ::-1], casting="unsafe")
    else:  # planar [3, H, W] storage: cast each plane contiguously, then interleave
        planes = hwc.permute(2, 0, 1).numpy().astype(out.dtype, copy=False)
        for dst, src in enumerate(channels):
            out[..., dst] = planes[src]
    if fmt.has_alpha:
        out[..., fmt.order.index("a")] = alpha.numpy() if alpha is not None else 255
    return out


def decode_layer(buffer: Any, spec: LayerSpec, width: int, height: int,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Decode an optional layer (mask, depth, flow) into ``[1, C, H, W]`` of its dtype on ``device``."""
    hwc = _view(buffer, _TORCH_DTYPES[spec.dtype], (height, width, spec.channels))
    return hwc.to(device).permute(2, 0, 1).unsqueeze(0)


def expected_array(fmt: PixelFormat | str, width: int, height: int) -> tuple:
    """(numpy dtype, shape) of a frame array of ``fmt`` (used by clients to validate inputs)."""
    fmt = PIXEL_FORMATS[fmt] if isinstance(fmt, str) else fmt
    return np.dtype(fmt.dtype), (height, width, fmt.channels)
