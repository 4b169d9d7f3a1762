"""Foxglove ``CompressedImage`` / ``RawImage`` messages: decode (JSON or protobuf) and encode (JSON).

Field numbers and names follow Foxglove's published schemas (foxglove/schemas):

* ``foxglove.CompressedImage``: timestamp (1, google.protobuf.Timestamp), frame_id (4, string),
  data (2, bytes), format (3, string: ``png``, ``jpeg``, ``webp``);
* ``foxglove.RawImage``: timestamp (1), frame_id (7), width (2, fixed32), height (3, fixed32),
  encoding (4, string), step (5, fixed32, bytes per row), data (6, bytes);
* ``google.protobuf.Timestamp``: seconds (1, int64), nanos (2, int32).

In the JSON encoding (``jsonschema`` schemas), the timestamp is ``{"sec", "nsec"}`` and ``data``
is base64. Protobuf payloads are decoded with a small wire-format reader (the schemas' field
numbers are all it needs), so no protobuf package is required; writing uses JSON, which the MCAP
spec and Foxglove support without generated code.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from typing import Any, Dict, List, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "COMPRESSED_IMAGE",
    "RAW_IMAGE",
    "IMAGE_SCHEMAS",
    "JSON_SCHEMAS",
    "MessageError",
    "decode_image_message",
    "encode_compressed_image_json",
    "encode_raw_image_json",
    "encode_protobuf_fields",
    "decode_protobuf_fields",
]

COMPRESSED_IMAGE = "foxglove.CompressedImage"
RAW_IMAGE = "foxglove.RawImage"
IMAGE_SCHEMAS = (COMPRESSED_IMAGE, RAW_IMAGE)
_TIME = {"type": "object", "properties": {"sec": {"type": "integer", "minimum": 0},
                                           "nsec": {"type": "integer", "minimum": 0, "maximum": 999999999}}}
JSON_SCHEMAS: Dict[str, Dict[str, Any]] = {
    COMPRESSED_IMAGE: {
        "title": COMPRESSED_IMAGE, "description": "A compressed image", "type": "object",
        "properties": {"timestamp": _TIME, "frame_id": {"type": "string"},
                       "data": {"type": "string", "contentEncoding": "base64"}, "format": {"type": "string"}},
    },
    RAW_IMAGE: {
        "title": RAW_IMAGE, "description": "A raw image", "type": "object",
        "properties": {"timestamp": _TIME, "frame_id": {"type": "string"}, "width": {"type": "integer"},
                       "height": {"type": "integer"}, "encoding": {"type": "string"}, "step": {"type": "integer"},
                       "data": {"type": "string", "contentEncoding": "base64"}},
    },
}
# RawImage encodings read here: (channels, order); 8UC1/8UC3 follow the OpenCV convention (BGR).
_RAW_ENCODINGS = {"rgb8": (3, "rgb"), "bgr8": (3, "bgr"), "rgba8": (4, "rgb"), "bgra8": (4, "bgr"),
                  "mono8": (1, "mono"), "8UC1": (1, "mono"), "8UC3": (3, "bgr")}


class MessageError(ValueError):
    """A message cannot be decoded as a Foxglove image."""


# -- protobuf wire format -----------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> Tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise MessageError("truncated protobuf varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise MessageError("protobuf varint too long")


def decode_protobuf_fields(data: bytes) -> Dict[int, List[Any]]:
    """Field number -> values of a protobuf message (varints as int, fixed as raw bytes, others as bytes)."""
    fields: Dict[int, List[Any]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise MessageError(f"unsupported protobuf wire type {wire} (field {number})")
        if pos > len(data):
            raise MessageError("truncated protobuf message")
        fields.setdefault(number, []).append(value)
    return fields


def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 as two's complement, as protobuf does
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_protobuf_fields(fields: List[Tuple[int, str, Any]]) -> bytes:
    """Encode ``(number, kind, value)`` fields; kind is "varint", "fixed32" or "bytes" (also strings/messages)."""
    out = bytearray()
    for number, kind, value in fields:
        if kind == "varint":
            out += _encode_varint(number << 3 | 0) + _encode_varint(int(value))
        elif kind == "fixed32":
            out += _encode_varint(number << 3 | 5) + struct.pack("<I", int(value))
        elif kind == "bytes":
            raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            out += _encode_varint(number << 3 | 2) + _encode_varint(len(raw)) + raw
        else:
            raise ValueError(f"unknown field kind {kind!r}")
    return bytes(out)


def _first(fields: Dict[int, List[Any]], number: int, default: Any) -> Any:
    values = fields.get(number)
    return values[-1] if values else default  # protobuf: the last occurrence wins


def _fixed32(value: Any) -> int:
    return struct.unpack("<I", value)[0] if isinstance(value, (bytes, bytearray)) and len(value) == 4 else int(value)


def _protobuf_to_dict(schema: str, payload: bytes) -> Dict[str, Any]:
    fields = decode_protobuf_fields(payload)
    stamp = decode_protobuf_fields(_first(fields, 1, b""))
    seconds = _first(stamp, 1, 0)
    seconds = seconds - (1 << 64) if seconds >= 1 << 63 else seconds
    result: Dict[str, Any] = {"timestamp": {"sec": seconds, "nsec": _first(stamp, 2, 0)}}
    if schema == COMPRESSED_IMAGE:
        result.update(data=bytes(_first(fields, 2, b"")), format=bytes(_first(fields, 3, b"")).decode("utf-8"),
                      frame_id=bytes(_first(fields, 4, b"")).decode("utf-8"))
    else:
        result.update(width=_fixed32(_first(fields, 2, 0)), height=_fixed32(_first(fields, 3, 0)),
                      encoding=bytes(_first(fields, 4, b"")).decode("utf-8"), step=_fixed32(_first(fields, 5, 0)),
                      data=bytes(_first(fields, 6, b"")), frame_id=bytes(_first(fields, 7, b"")).decode("utf-8"))
    return result


# -- images -------------------------------------------------------------------------------------


def _raw_to_rgb(message: Dict[str, Any]) -> np.ndarray:
    encoding = message.get("encoding", "")
    if encoding not in _RAW_ENCODINGS:
        raise MessageError(f"unsupported RawImage encoding {encoding!r}; supported: {sorted(_RAW_ENCODINGS)}")
    channels, order = _RAW_ENCODINGS[encoding]
    width, height = int(message.get("width", 0)), int(message.get("height", 0))
    step = int(message.get("step", 0)) or width * channels
    data = message["data"]
    if width < 1 or height < 1 or step < width * channels or len(data) < step * (height - 1) + width * channels:
        raise MessageError(f"RawImage {width}x{height} {encoding} with step {step} does not fit {len(data)} bytes")
    rows = np.frombuffer(bytes(data[: step * height]).ljust(step * height, b"\0"), np.uint8).reshape(height, step)
    pixels = rows[:, : width * channels].reshape(height, width, channels)
    if order == "mono":
        return np.repeat(pixels, 3, axis=2)
    rgb = pixels[:, :, :3]
    return np.ascontiguousarray(rgb[:, :, ::-1] if order == "bgr" else rgb)


def _decode_compressed(message: Dict[str, Any]) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(message["data"])) as picture:
            picture.load()
            return np.asarray(picture.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MessageError(f"cannot decode CompressedImage ({message.get('format')!r}): {exc}") from exc


def decode_image_message(schema: str, encoding: str, payload: bytes) -> Tuple[np.ndarray, int]:
    """Decode a Foxglove image message -> (uint8 ``[H, W, 3]`` RGB, header timestamp in ns).

    schema: ``foxglove.CompressedImage`` or ``foxglove.RawImage``; encoding: the channel's message
    encoding, ``json`` or ``protobuf``.
    """
    if schema not in IMAGE_SCHEMAS:
        raise MessageError(f"schema {schema!r} is not a Foxglove image ({IMAGE_SCHEMAS})")
    if encoding == "json":
        try:
            message = json.loads(payload)
            message["data"] = base64.b64decode(message.get("data", ""), validate=True)
        except (ValueError, TypeError, AttributeError) as exc:
            raise MessageError(f"invalid JSON {schema} message: {exc}") from exc
    elif encoding == "protobuf":
        message = _protobuf_to_dict(schema, payload)
    else:
        raise MessageError(f"message encoding {encoding!r} is not supported for {schema} (json or protobuf)")
    stamp = message.get("timestamp") or {}
    nanoseconds = int(stamp.get("sec", 0)) * 1_000_000_000 + int(stamp.get("nsec", 0))
    image = _decode_compressed(message) if schema == COMPRESSED_IMAGE else _raw_to_rgb(message)
    return image, nanoseconds


def _stamp(nanoseconds: int) -> Dict[str, int]:
    return {"sec": int(nanoseconds // 1_000_000_000), "nsec": int(nanoseconds % 1_000_000_000)}


def encode_compressed_image_json(image: np.ndarray, timestamp_ns: int, frame_id: str = "") -> bytes:
    """A JSON ``foxglove.CompressedImage`` holding ``image`` (uint8 ``[H, W, 3]`` or ``[H, W]``) as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=6)
    message = {"timestamp": _stamp(timestamp_ns), "frame_id": frame_id,
               "data": base64.b64encode(buffer.getvalue()).decode("ascii"), "format": "png"}
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def encode_raw_image_json(image: np.ndarray, timestamp_ns: int, frame_id: str = "") -> bytes:
    """A JSON ``foxglove.RawImage`` (``rgb8``, or ``mono8`` for ``[H, W]``) holding ``image``."""
    image = np.ascontiguousarray(image)
    encoding = "mono8" if image.ndim == 2 else "rgb8"
    height, width = image.shape[:2]
    message = {"timestamp": _stamp(timestamp_ns), "frame_id": frame_id, "width": width, "height": height,
               "encoding": encoding, "step": width * (1 if image.ndim == 2 else 3),
               "data": base64.b64encode(image.tobytes()).decode("ascii")}
    return json.dumps(message, separators=(",", ":")).encode("utf-8")
