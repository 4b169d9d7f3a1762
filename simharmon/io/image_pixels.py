"""Pixels of logged image messages (ROS 2 and Foxglove) <-> RGB uint8 ``[H, W, 3]``.

Every image message is first turned into neutral *image fields* (a dict) by its family's codec
(``simharmon.io.foxglove``, ``simharmon.io.ros2``):

* raw images: ``encoding`` (``RAW_ENCODINGS``), ``width``, ``height``, ``step`` (bytes per row),
  ``is_bigendian``, ``data`` (bytes);
* compressed images: ``format`` (``png``, ``jpeg``, ``webp``, or ROS image_transport strings such
  as ``"bgr8; jpeg compressed bgr8"``) and ``data``.

This module converts those fields to frames and back. Writing back keeps the message's own
encoding: 16-bit encodings scale 8-bit levels by 257 (so 8-bit content round-trips exactly), mono
encodings store the ITU-R BT.601 luma (exact for grey frames), alpha is kept from the input, and
compressed images keep their codec (JPEG at quality ``JPEG_QUALITY``, lossy by nature).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from .frame_sources import picture_to_rgb

__all__ = [
    "MessageError",
    "RawEncoding",
    "RAW_ENCODINGS",
    "COLOR_ENCODINGS",
    "DEPTH_ENCODINGS",
    "COMPRESSED_CODECS",
    "JPEG_QUALITY",
    "is_compressed",
    "compressed_codec",
    "fields_to_rgb",
    "fields_to_depth",
    "fields_to_mask",
    "replace_pixels",
]

JPEG_QUALITY = 95  # image_transport's default JPEG quality


class MessageError(ValueError):
    """A logged message cannot be decoded (or encoded) as what its schema says it is."""


@dataclass(frozen=True)
class RawEncoding:
    """A raw pixel encoding: channels per pixel, numpy base dtype, channel order, and what it holds."""

    name: str
    channels: int
    dtype: str  # "u1", "u2" or "f4" (byte order from the message's is_bigendian)
    order: str  # "rgb", "bgr", "rgba", "bgra", "mono"
    role: str  # "color" (a camera) or "depth" (metres after ``depth_scale``)
    depth_scale: float = 1.0


RAW_ENCODINGS: Dict[str, RawEncoding] = {
    e.name: e
    for e in (
        RawEncoding("rgb8", 3, "u1", "rgb", "color"),
        RawEncoding("bgr8", 3, "u1", "bgr", "color"),
        RawEncoding("rgba8", 4, "u1", "rgba", "color"),
        RawEncoding("bgra8", 4, "u1", "bgra", "color"),
        RawEncoding("mono8", 1, "u1", "mono", "color"),
        RawEncoding("8UC1", 1, "u1", "mono", "color"),
        RawEncoding("8UC3", 3, "u1", "bgr", "color"),  # OpenCV order
        RawEncoding("8UC4", 4, "u1", "bgra", "color"),
        RawEncoding("rgb16", 3, "u2", "rgb", "color"),
        RawEncoding("bgr16", 3, "u2", "bgr", "color"),
        RawEncoding("rgba16", 4, "u2", "rgba", "color"),
        RawEncoding("bgra16", 4, "u2", "bgra", "color"),
        RawEncoding("mono16", 1, "u2", "mono", "color"),
        RawEncoding("16UC1", 1, "u2", "mono", "depth", 0.001),  # millimetres (REP 118)
        RawEncoding("32FC1", 1, "f4", "mono", "depth"),  # metres (REP 118)
    )
}
COLOR_ENCODINGS = tuple(name for name, e in RAW_ENCODINGS.items() if e.role == "color")
DEPTH_ENCODINGS = tuple(name for name, e in RAW_ENCODINGS.items() if e.role == "depth")
COMPRESSED_CODECS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
_SNIFFED = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
_LUMA = np.array([299, 587, 114], np.int64)  # BT.601, sums to 1000


def is_compressed(fields: Dict[str, Any]) -> bool:
    return "format" in fields


def compressed_codec(fields: Dict[str, Any]) -> str:
    """The codec (``png``, ``jpeg``, ``webp``) a compressed image's ``format`` names, else its data's."""
    text = str(fields.get("format", "")).lower()
    if "compresseddepth" in text:
        raise MessageError(f"compressed depth images ({fields.get('format')!r}) are not supported")
    words = text.replace(";", " ").split()
    for word in reversed(words):  # "bgr8; jpeg compressed bgr8" names the codec before "compressed"
        if word in COMPRESSED_CODECS:
            return "jpeg" if word == "jpg" else word
    if words:
        raise MessageError(f"unsupported compressed image format {fields.get('format')!r}; "
                           f"supported: {', '.join(sorted(set(COMPRESSED_CODECS) - {'jpg'}))}")
    try:  # an empty format: name the codec after the data's signature
        with Image.open(io.BytesIO(fields["data"])) as picture:
            sniffed = _SNIFFED.get(picture.format or "")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MessageError(f"compressed image with no format and undecodable data: {exc}") from exc
    if sniffed is None:
        raise MessageError("compressed image with no format is neither PNG, JPEG nor WebP")
    return sniffed


def _raw_encoding(fields: Dict[str, Any]) -> RawEncoding:
    name = str(fields.get("encoding", ""))
    if name not in RAW_ENCODINGS:
        raise MessageError(f"unsupported image encoding {name!r}; supported: {', '.join(RAW_ENCODINGS)}")
    return RAW_ENCODINGS[name]


def _raw_array(fields: Dict[str, Any]) -> Tuple[np.ndarray, RawEncoding]:
    """The raw pixels as a read-only ``[H, W, channels]`` array of the encoding's dtype (native order)."""
    encoding = _raw_encoding(fields)
    width, height = int(fields.get("width", 0)), int(fields.get("height", 0))
    itemsize = np.dtype(encoding.dtype).itemsize
    row = width * encoding.channels * itemsize
    step = int(fields.get("step", 0)) or row
    data = fields.get("data", b"")
    if width < 1 or height < 1 or step < row or len(data) < step * (height - 1) + row:
        raise MessageError(f"{width}x{height} {encoding.name} image with step {step} does not fit {len(data)} bytes")
    rows = np.frombuffer(bytes(data[: step * height]).ljust(step * height, b"\0"), np.uint8).reshape(height, step)
    dtype = np.dtype(encoding.dtype).newbyteorder(">" if fields.get("is_bigendian") else "<")
    pixels = rows[:, :row].copy().view(dtype).reshape(height, width, encoding.channels)
    return pixels.astype(pixels.dtype.newbyteorder("=")), encoding


def _to_rgb8(pixels: np.ndarray, order: str) -> np.ndarray:
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)  # exact inverse of x * 257
    if order == "mono":
        return np.repeat(pixels[:, :, :1], 3, axis=2)
    rgb = pixels[:, :, :3]
    return np.ascontiguousarray(rgb[:, :, ::-1] if order.startswith("bgr") else rgb)


def _decode_compressed(fields: Dict[str, Any]) -> Tuple[np.ndarray, bool]:
    compressed_codec(fields)  # rejects unknown formats by name
    try:
        with Image.open(io.BytesIO(fields["data"])) as picture:
            picture.load()
            grey = picture.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L")
            return picture_to_rgb(picture), grey
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MessageError(f"cannot decode compressed image ({fields.get('format')!r}): {exc}") from exc


def fields_to_rgb(fields: Dict[str, Any]) -> np.ndarray:
    """A camera image's fields -> uint8 ``[H, W, 3]`` RGB (a new, writable array)."""
    if is_compressed(fields):
        return _decode_compressed(fields)[0]
    pixels, encoding = _raw_array(fields)
    if encoding.role != "color":
        raise MessageError(f"image encoding {encoding.name!r} holds depth, not a camera image")
    return _to_rgb8(pixels, encoding.order)


def fields_to_depth(fields: Dict[str, Any]) -> np.ndarray:
    """A depth image's fields (``32FC1`` metres or ``16UC1`` millimetres) -> float32 ``[H, W]`` metres."""
    if is_compressed(fields):
        raise MessageError(f"depth must be a raw {' or '.join(DEPTH_ENCODINGS)} image, got a compressed one")
    pixels, encoding = _raw_array(fields)
    if encoding.role != "depth":
        raise MessageError(f"depth images must be {' or '.join(DEPTH_ENCODINGS)}, got {encoding.name!r}")
    return (pixels[:, :, 0].astype(np.float32) * np.float32(encoding.depth_scale)).astype(np.float32)


def fields_to_mask(fields: Dict[str, Any]) -> np.ndarray:
    """A mask image's fields (8/16-bit grey or colour; first channel) -> float32 ``[H, W]`` in [0, 1]."""
    return fields_to_rgb(fields)[:, :, 0].astype(np.float32) / 255.0


def _grey(rgb: np.ndarray) -> np.ndarray:
    return ((rgb.astype(np.int64) @ _LUMA + 500) // 1000).astype(np.uint8)


def _encode_raw(fields: Dict[str, Any], rgb: np.ndarray) -> Dict[str, Any]:
    pixels, encoding = _raw_array(fields)
    if pixels.shape[:2] != rgb.shape[:2]:
        raise MessageError(f"new image is {rgb.shape[1]}x{rgb.shape[0]} but the message's is "
                           f"{pixels.shape[1]}x{pixels.shape[0]}")
    if encoding.role != "color":
        raise MessageError(f"cannot write a camera image as {encoding.name!r}")
    if encoding.order == "mono":
        channels = [_grey(rgb)]
    else:
        ordered = rgb[:, :, ::-1] if encoding.order.startswith("bgr") else rgb
        channels = [ordered[:, :, i] for i in range(3)]
    levels = np.stack(channels, axis=2)
    if encoding.dtype == "u2":
        levels = levels.astype(np.uint16) * np.uint16(257)
    if encoding.channels == 4:
        levels = np.concatenate([levels, pixels[:, :, 3:].astype(levels.dtype)], axis=2)  # keep the input's alpha
    dtype = np.dtype(encoding.dtype).newbyteorder(">" if fields.get("is_bigendian") else "<")
    data = np.ascontiguousarray(levels.astype(dtype)).tobytes()
    return dict(fields, data=data, step=levels.shape[1] * encoding.channels * dtype.itemsize)


def _encode_compressed(fields: Dict[str, Any], rgb: np.ndarray) -> Dict[str, Any]:
    codec = compressed_codec(fields)
    _, grey = _decode_compressed(fields)
    picture = Image.fromarray(_grey(rgb) if grey else np.ascontiguousarray(rgb))
    buffer = io.BytesIO()
    if codec == "png":
        picture.save(buffer, format="PNG", compress_level=6)
    elif codec == "jpeg":
        picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        picture.save(buffer, format="WEBP", quality=JPEG_QUALITY)
    return dict(fields, data=buffer.getvalue())


def replace_pixels(fields: Dict[str, Any], rgb: np.ndarray) -> Dict[str, Any]:
    """The same image fields holding ``rgb`` (uint8 ``[H, W, 3]``) in the message's own encoding or codec."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise MessageError(f"new image must be uint8 [H, W, 3], got {getattr(rgb, 'dtype', type(rgb))} "
                           f"{list(getattr(rgb, 'shape', []))}")
    return _encode_compressed(fields, rgb) if is_compressed(fields) else _encode_raw(fields, rgb)
