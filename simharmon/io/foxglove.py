"""Foxglove ``CompressedImage`` / ``RawImage`` / ``CameraCalibration`` messages: decode and encode.

Field numbers and names follow Foxglove's published schemas (foxglove/schemas):

* ``foxglove.CompressedImage``: timestamp (1, google.protobuf.Timestamp), frame_id (4, string),
  data (2, bytes), format (3, string: ``png``, ``jpeg``, ``webp``);
* ``foxglove.RawImage``: timestamp (1), frame_id (7), width (2, fixed32), height (3, fixed32),
  encoding (4, string), step (5, fixed32, bytes per row), data (6, bytes);
* ``foxglove.CameraCalibration``: timestamp (1), frame_id (9), width (2), height (3),
  distortion_model (4, string), D (5), K (6), R (7), P (8) (repeated double);
* ``google.protobuf.Timestamp``: seconds (1, int64), nanos (2, int32).

In the JSON encoding (``jsonschema`` schemas), the timestamp is ``{"sec", "nsec"}`` and ``data``
is base64. Protobuf payloads are decoded with a small wire-format reader (the schemas' field
numbers are all it needs) and encoded with the Foxglove SDK's message classes; JSON both ways here.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from typing import Any, Dict, List, Tuple

import numpy as np
from foxglove.messages import CompressedImage, RawImage, Timestamp
from PIL import Image

from .image_pixels import MessageError, fields_to_rgb

__all__ = [
    "COMPRESSED_IMAGE",
    "RAW_IMAGE",
    "CAMERA_CALIBRATION",
    "IMAGE_SCHEMAS",
    "SCHEMAS",
    "JSON_SCHEMAS",
    "MessageError",
    "FoxgloveCodec",
    "decode_image_message",
    "encode_compressed_image_json",
    "encode_protobuf_fields",
    "decode_protobuf_fields",
]

COMPRESSED_IMAGE = "foxglove.CompressedImage"
RAW_IMAGE = "foxglove.RawImage"
CAMERA_CALIBRATION = "foxglove.CameraCalibration"
IMAGE_SCHEMAS = (COMPRESSED_IMAGE, RAW_IMAGE)
SCHEMAS = (COMPRESSED_IMAGE, RAW_IMAGE, CAMERA_CALIBRATION)
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


def _text(value: Any) -> str:
    return bytes(value).decode("utf-8", errors="replace")


def _doubles(values: List[Any]) -> List[float]:
    """A repeated double field: packed (one bytes value) or not (8-byte values), in order."""
    out: List[float] = []
    for value in values:
        if len(value) % 8:
            raise MessageError("truncated repeated double field")
        out.extend(float(x) for x in np.frombuffer(bytes(value), "<f8"))
    return out


def _protobuf_to_dict(schema: str, payload: bytes) -> Dict[str, Any]:
    fields = decode_protobuf_fields(payload)
    stamp = decode_protobuf_fields(_first(fields, 1, b""))
    seconds = _first(stamp, 1, 0)
    seconds = seconds - (1 << 64) if seconds >= 1 << 63 else seconds
    result: Dict[str, Any] = {"timestamp": {"sec": seconds, "nsec": _first(stamp, 2, 0)}}
    if schema == COMPRESSED_IMAGE:
        result.update(data=bytes(_first(fields, 2, b"")), format=_text(_first(fields, 3, b"")),
                      frame_id=_text(_first(fields, 4, b"")))
    elif schema == RAW_IMAGE:
        result.update(width=_fixed32(_first(fields, 2, 0)), height=_fixed32(_first(fields, 3, 0)),
                      encoding=_text(_first(fields, 4, b"")), step=_fixed32(_first(fields, 5, 0)),
                      data=bytes(_first(fields, 6, b"")), frame_id=_text(_first(fields, 7, b"")))
    else:
        result.update(width=_fixed32(_first(fields, 2, 0)), height=_fixed32(_first(fields, 3, 0)),
                      distortion_model=_text(_first(fields, 4, b"")), D=_doubles(fields.get(5, [])),
                      K=_doubles(fields.get(6, [])), R=_doubles(fields.get(7, [])), P=_doubles(fields.get(8, [])),
                      frame_id=_text(_first(fields, 9, b"")))
    return result


# -- codec --------------------------------------------------------------------------------------


def _stamp_ns(stamp: Any) -> int:
    if not isinstance(stamp, dict):
        return 0
    return int(stamp.get("sec", 0)) * 1_000_000_000 + int(stamp.get("nsec", stamp.get("nanosec", 0)))


class FoxgloveCodec:
    """Decode (JSON or protobuf) and encode the Foxglove images and camera calibrations of one channel.

    ``fields(payload)`` gives neutral fields (``simharmon.io.image_pixels``) plus ``stamp`` (ns) and
    ``frame_id``; for a calibration, ``width``, ``height``, ``K`` (9), ``P`` (12) and
    ``distortion_model``. ``encode(fields)`` writes image fields back as this channel's schema and
    encoding (protobuf through the Foxglove SDK's own message classes).
    """

    family = "foxglove"

    def __init__(self, schema: str, encoding: str):
        if schema not in SCHEMAS:
            raise MessageError(f"schema {schema!r} is not one of {SCHEMAS}")
        if encoding not in ("json", "protobuf"):
            raise MessageError(f"message encoding {encoding!r} is not supported for {schema} (json or protobuf)")
        self.schema, self.encoding = schema, encoding
        self.kind = "calibration" if schema == CAMERA_CALIBRATION else "image"

    def _message(self, payload: bytes) -> Dict[str, Any]:
        if self.encoding == "protobuf":
            return _protobuf_to_dict(self.schema, payload)
        try:
            message = json.loads(payload)
            if not isinstance(message, dict):
                raise ValueError("not a JSON object")
            if self.kind == "image":
                message["data"] = base64.b64decode(message.get("data", ""), validate=True)
        except (ValueError, TypeError, AttributeError) as exc:
            raise MessageError(f"invalid JSON {self.schema} message: {exc}") from exc
        return message

    def fields(self, payload: bytes) -> Dict[str, Any]:
        message = self._message(payload)
        try:
            fields: Dict[str, Any] = {"stamp": _stamp_ns(message.get("timestamp")),
                                      "frame_id": str(message.get("frame_id", ""))}
            if self.schema == COMPRESSED_IMAGE:
                fields.update(format=str(message.get("format", "")), data=message["data"])
            elif self.schema == RAW_IMAGE:
                fields.update({k: message.get(k, 0) for k in ("width", "height", "step")},
                              encoding=str(message.get("encoding", "")), data=message["data"], is_bigendian=False)
            else:
                fields.update(width=int(message.get("width", 0)), height=int(message.get("height", 0)),
                              distortion_model=str(message.get("distortion_model", "")),
                              K=[float(x) for x in message.get("K") or []], P=[float(x) for x in message.get("P") or []])
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"invalid {self.schema} message: {exc}") from exc
        return fields

    def encode(self, fields: Dict[str, Any]) -> bytes:
        """Image ``fields`` -> this channel's message bytes (header stamp and frame_id kept)."""
        if self.kind != "image":
            raise MessageError(f"cannot encode {self.schema} messages")
        stamp = int(fields["stamp"])
        if self.encoding == "protobuf":
            timestamp = Timestamp(stamp // 1_000_000_000, stamp % 1_000_000_000)
            if self.schema == COMPRESSED_IMAGE:
                return CompressedImage(timestamp=timestamp, frame_id=fields["frame_id"], data=bytes(fields["data"]),
                                       format=fields["format"]).encode()
            return RawImage(timestamp=timestamp, frame_id=fields["frame_id"], width=int(fields["width"]),
                            height=int(fields["height"]), encoding=fields["encoding"], step=int(fields["step"]),
                            data=bytes(fields["data"])).encode()
        message: Dict[str, Any] = {"timestamp": _stamp(stamp), "frame_id": fields["frame_id"],
                                   "data": base64.b64encode(bytes(fields["data"])).decode("ascii")}
        if self.schema == COMPRESSED_IMAGE:
            message["format"] = fields["format"]
        else:
            message.update(width=int(fields["width"]), height=int(fields["height"]), encoding=fields["encoding"],
                           step=int(fields["step"]))
        return json.dumps(message, separators=(",", ":")).encode("utf-8")


def decode_image_message(schema: str, encoding: str, payload: bytes) -> Tuple[np.ndarray, int]:
    """Decode a Foxglove image message -> (uint8 ``[H, W, 3]`` RGB, header timestamp in ns).

    schema: ``foxglove.CompressedImage`` or ``foxglove.RawImage``; encoding: the channel's message
    encoding, ``json`` or ``protobuf``.
    """
    if schema not in IMAGE_SCHEMAS:
        raise MessageError(f"schema {schema!r} is not a Foxglove image ({IMAGE_SCHEMAS})")
    fields = FoxgloveCodec(schema, encoding).fields(payload)
    return fields_to_rgb(fields), fields["stamp"]


def _stamp(nanoseconds: int) -> Dict[str, int]:
    return {"sec": int(nanoseconds // 1_000_000_000), "nsec": int(nanoseconds % 1_000_000_000)}


def encode_compressed_image_json(image: np.ndarray, timestamp_ns: int, frame_id: str = "") -> bytes:
    """A JSON ``foxglove.CompressedImage`` holding ``image`` (uint8 ``[H, W, 3]`` or ``[H, W]``) as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=6)
    message = {"timestamp": _stamp(timestamp_ns), "frame_id": frame_id,
               "data": base64.b64encode(buffer.getvalue()).decode("ascii"), "format": "png"}
    return json.dumps(message, separators=(",", ":")).encode("utf-8")
