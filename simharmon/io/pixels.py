"""Pixel conversion, in one place: 8-bit and float frames, wire buffers, model space, quantization.

* Frames: ``[B, 3, H, W]`` float in [0, 1] (what ``StreamingEnhancer.step`` takes), or interleaved
  uint8 ``[B, H, W, C]`` in a channel ``LAYOUTS`` order (what renderers hand out).
* Model space is [-1, 1]: ToTensor then Normalize(0.5, 0.5), as the release does, in float32,
  then cast. Outputs are quantized the way the release writes them: clamp to [0, 1], then
  ``x * 255`` truncated to uint8 (torchvision's ToPILImage on float tensors). The release reloads
  those 8-bit files as its temporal references, so quantizing the same way is part of being exact.
* Wire buffers (``PIXEL_FORMATS``, ``LAYERS``: the bridge protocol's pixel formats and renderer
  layers, docs/PROTOCOL.md): decoding views the received buffer without copying, moves the raw 8-
  or 16-bit data to the target device first, and only then converts; 8-bit encoding rounds to the
  nearest level, so an 8-bit frame that passes through comes back bit-identical.

The fused CUDA versions of the uint8 <-> model-space conversions are ``simharmon.ops.pack`` /
``unpack`` (bit-identical to ``frame_to_model(uint8_hwc_to_frame(x))`` and to
``frame_to_uint8_hwc(model_to_frame(x))``, tested); this module is pure torch / numpy and imports
nothing else of simharmon.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

__all__ = [
    "LAYOUTS",
    "PixelFormat",
    "PIXEL_FORMATS",
    "LayerSpec",
    "LAYERS",
    "PixelError",
    "LayerError",
    "DecodedFrame",
    "check_frame",
    "check_uint8_frames",
    "uint8_hwc_to_frame",
    "frame_to_uint8_hwc",
    "quantize_like_release",
    "frame_to_model",
    "model_to_frame",
    "as_uint8_frames",
    "hwc_to_unit_frame",
    "levels_to_hwc",
    "decode_pixels",
    "encode_pixels",
    "decode_layer",
    "check_layer",
    "expected_array",
]

# layout -> (channels per pixel, the positions of R, G, B in a pixel, alpha position or -1)
LAYOUTS: Dict[str, Tuple[int, Tuple[int, int, int], int]] = {
    "rgb": (3, (0, 1, 2), -1),
    "bgr": (3, (2, 1, 0), -1),
    "rgba": (4, (0, 1, 2), 3),
    "bgra": (4, (2, 1, 0), 3),
}





@dataclass(frozen=True)
class PixelFormat:
    """A frame pixel format: interleaved, row-major, tightly packed ``[H, W, channels]``."""

    name: str
    channels: int
    dtype: str  # numpy dtype string, little-endian
    bytes_per_channel: int
    order: str  # channel order in memory, e.g. "rgb", "bgra"

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.bytes_per_channel

    @property
    def has_alpha(self) -> bool:
        return "a" in self.order

    @property
    def is_float(self) -> bool:
        return self.dtype.startswith("<f")


PIXEL_FORMATS: Dict[str, PixelFormat] = {
    f.name: f
    for f in (
        PixelFormat("rgb8", 3, "|u1", 1, "rgb"),
        PixelFormat("rgba8", 4, "|u1", 1, "rgba"),
        PixelFormat("bgra8", 4, "|u1", 1, "bgra"),
        PixelFormat("rgb16f", 3, "<f2", 2, "rgb"),
        PixelFormat("rgb32f", 3, "<f4", 4, "rgb"),
    )
}


@dataclass(frozen=True)
class LayerSpec:
    """An optional per-pixel buffer sent after the frame: ``[H, W, channels]`` of ``dtype``."""

    name: str
    channels: int
    dtype: str
    bytes_per_channel: int
    meaning: str

    def nbytes(self, width: int, height: int) -> int:
        return width * height * self.channels * self.bytes_per_channel


LAYERS: Dict[str, LayerSpec] = {
    spec.name: spec
    for spec in (
        LayerSpec("mask", 1, "|u1", 1, "actor mask: 0 = background, 1..255 = inserted actor id or weight"),
        LayerSpec("depth", 1, "<f4", 4, "depth along the camera z axis in metres; 0 or inf = no surface"),
        LayerSpec("flow", 2, "<f4", 4, "backward optical flow to the previous frame in pixels (dx, dy)"),
    )
}


def check_frame(frame: torch.Tensor, name: str = "frame") -> torch.Tensor:
    """Validate ``frame: [B, 3, H, W]`` (or ``[3, H, W]``) floating point; returns the 4-D view."""
    if not isinstance(frame, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(frame).__name__}")
    if frame.dim() == 3:
        frame = frame.unsqueeze(0)
    if frame.dim() != 4 or frame.shape[1] != 3:
        raise ValueError(f"{name} must have shape [B, 3, H, W] or [3, H, W], got {list(frame.shape)}")
    if not frame.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor in [0, 1], got dtype {frame.dtype}; "
            "convert uint8 images with simharmon.io.pixels.uint8_hwc_to_frame"
        )
    return frame


def uint8_hwc_to_frame(image, device: torch.device | str | None = None) -> torch.Tensor:
    """``image: [H, W, 3]`` or ``[B, H, W, 3]`` uint8 (numpy or torch) -> ``[B, 3, H, W]`` float32 in [0, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"image must be a numpy array or torch tensor, got {type(image).__name__}")
    if tensor.dtype != torch.uint8:
        raise TypeError(f"image must be uint8, got {tensor.dtype}")
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 4 or tensor.shape[-1] != 3:
        raise ValueError(f"image must have shape [H, W, 3] or [B, H, W, 3], got {list(tensor.shape)}")
    return tensor.to(device=device).permute(0, 3, 1, 2).float().div(255.0)


def quantize_like_release(frame: torch.Tensor) -> torch.Tensor:
    """``frame: [B, 3, H, W]`` float -> the same float frame on 8-bit levels (clamp, then truncate)."""
    return frame.clamp(0.0, 1.0).mul(255.0).to(torch.uint8).to(frame.dtype).div(255.0)


def frame_to_uint8_hwc(frame: torch.Tensor) -> np.ndarray:
    """``frame: [B, 3, H, W]`` float in [0, 1] -> numpy ``[B, H, W, 3]`` uint8 (release quantization)."""
    frame = check_frame(frame)
    return frame.detach().clamp(0.0, 1.0).mul(255.0).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def frame_to_model(frame: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``frame: [B, 3, H, W]`` in [0, 1] -> model space [-1, 1] in ``dtype``."""
    # Normalize in float32, then cast: the release casts after torchvision's Normalize.
    return ((frame.float() - 0.5) / 0.5).to(dtype)


def model_to_frame(image: torch.Tensor) -> torch.Tensor:
    """Model space ``[B, 3, H, W]`` in [-1, 1] -> float32 frame in [0, 1], release-quantized."""
    return quantize_like_release(image.float() * 0.5 + 0.5)

def check_uint8_frames(frames: torch.Tensor, name: str = "frames") -> torch.Tensor:
    """Validate ``uint8 [N, H, W, 3]`` (or ``[H, W, 3]``, made 4-D)."""
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(frames).__name__}")
    if frames.dtype != torch.uint8:
        raise TypeError(f"{name} must be uint8 [N, H, W, 3], got dtype {frames.dtype}")
    if frames.dim() == 3:
        frames = frames.unsqueeze(0)
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name} must have shape [N, H, W, 3] or [H, W, 3], got {list(frames.shape)}")
    return frames


def as_uint8_frames(image, layout: str) -> Tuple[torch.Tensor, bool]:
    """``image``: uint8 ``[B, H, W, C]`` or ``[H, W, C]``, numpy or torch -> (4-D tensor, was 3-D)."""
    if layout not in LAYOUTS:
        raise ValueError(f"step_uint8: layout must be one of {tuple(LAYOUTS)}, got {layout!r}")
    tensor = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"step_uint8: image must be a numpy array or torch tensor, got {type(image).__name__}")
    if tensor.dtype != torch.uint8:
        raise TypeError(f"step_uint8: image must be uint8, got {tensor.dtype}")
    squeeze = tensor.dim() == 3
    if squeeze:
        tensor = tensor.unsqueeze(0)
    channels = LAYOUTS[layout][0]
    if tensor.dim() != 4 or tensor.shape[-1] != channels:
        raise ValueError(f"step_uint8: a {layout!r} image must have shape [B, H, W, {channels}] or "
                         f"[H, W, {channels}], got {list(image.shape)}")
    return tensor, squeeze


def hwc_to_unit_frame(image: torch.Tensor, layout: str) -> torch.Tensor:
    """uint8 ``[B, H, W, C]`` -> RGB ``[B, 3, H, W]`` float32 in [0, 1] (as ``uint8_hwc_to_frame``)."""
    _, order, _ = LAYOUTS[layout]
    return image[..., list(order)].permute(0, 3, 1, 2).float().div(255.0)


def levels_to_hwc(frame: torch.Tensor, layout: str) -> torch.Tensor:
    """``frame: [B, 3, H, W]`` float32 on 8-bit levels -> uint8 ``[B, H, W, C]`` in ``layout`` (alpha 255).

    ``x * 255`` truncated recovers every level ``k / 255`` exactly, so this is lossless.
    """
    channels, order, alpha = LAYOUTS[layout]
    levels = frame.clamp(0.0, 1.0).mul(255.0).to(torch.uint8).permute(0, 2, 3, 1)
    batch, height, width, _ = levels.shape
    out = torch.empty((batch, height, width, channels), dtype=torch.uint8, device=frame.device)
    out[..., list(order)] = levels
    if alpha >= 0:
        out[..., alpha] = 255
    return out


_TORCH_DTYPES = {"|u1": torch.uint8, "<f2": torch.float16, "<f4": torch.float32}


class PixelError(ValueError):
    """Pixel data that decodes but cannot be used (e.g. non-finite floats)."""


class LayerError(ValueError):
    """A renderer layer whose values the protocol refuses (docs/PROTOCOL.md §3.1; error code BAD_LAYER)."""


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


def check_layer(buffer: Any, spec: LayerSpec, width: int) -> None:
    """Refuse layer values no renderer means: depth NaN, negative or -inf (0 and +inf are "no
    surface"), flow NaN or infinite. Any mask value is valid. One pass over the host buffer
    (before any device copy, so a GPU engine never syncs for it); raises :class:`LayerError`
    naming the first offending pixel."""
    if spec.name == "mask":
        return
    values = np.frombuffer(buffer.buffer if hasattr(buffer, "buffer") else buffer, dtype=np.dtype(spec.dtype))
    ok = values >= 0 if spec.name == "depth" else np.isfinite(values)  # NaN >= 0 is False
    if ok.all():
        return
    bad = np.flatnonzero(~ok)
    pixel = int(bad[0]) // spec.channels
    rule = "NaN, negative or -inf; 0 or +inf mean no surface" if spec.name == "depth" else "NaN or infinite"
    raise LayerError(f"layer {spec.name!r} has {bad.size} invalid value(s) ({rule}), the first at pixel "
                     f"(x={pixel % width}, y={pixel // width}): {values[bad[0]]}")


def decode_layer(buffer: Any, spec: LayerSpec, width: int, height: int,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Decode an optional layer (mask, depth, flow) into ``[1, C, H, W]`` of its dtype on ``device``.

    Raises :class:`LayerError` for values :func:`check_layer` refuses."""
    check_layer(buffer, spec, width)
    hwc = _view(buffer, _TORCH_DTYPES[spec.dtype], (height, width, spec.channels))
    return hwc.to(device).permute(2, 0, 1).unsqueeze(0)


def expected_array(fmt: PixelFormat | str, width: int, height: int) -> tuple:
    """(numpy dtype, shape) of a frame array of ``fmt`` (used by clients to validate inputs)."""
    fmt = PIXEL_FORMATS[fmt] if isinstance(fmt, str) else fmt
    return np.dtype(fmt.dtype), (height, width, fmt.channels)
