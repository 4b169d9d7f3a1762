"""ROS 2 messages in MCAP logs (``ros2msg`` schemas, CDR encoding), decoded and encoded with ``mcap-ros2-support``.

Types read (``Ros2Codec.kind``):

* images: ``sensor_msgs/msg/Image`` (``header``, ``height``, ``width``, ``encoding``,
  ``is_bigendian``, ``step``, ``data``), ``sensor_msgs/msg/CompressedImage`` (``header``,
  ``format``, ``data``), and Foxglove's ROS 2 types ``foxglove_msgs/msg/RawImage`` /
  ``CompressedImage`` (``timestamp`` and ``frame_id`` instead of ``header``);
* calibrations: ``sensor_msgs/msg/CameraInfo`` (``k``, ``p``, ``binning_x/y``, ``roi``) and
  ``foxglove_msgs/msg/CameraCalibration``;
* transforms: ``tf2_msgs/msg/TFMessage`` (``geometry_msgs/TransformStamped[] transforms``).

``fields(payload)`` gives the neutral fields of ``simharmon.io.image_pixels`` plus ``stamp`` (ns)
and ``frame_id``; ``encode(fields)`` writes image fields back as the same type with every other
field of the original message unchanged (its header included), using the schema stored in the log.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from mcap.records import Schema
from mcap_ros2._dynamic import serialize_dynamic  # the encoder mcap_ros2.writer.Writer itself uses
from mcap_ros2.decoder import DecoderFactory

from .image_pixels import MessageError

__all__ = [
    "IMAGE_TYPES",
    "CALIBRATION_TYPES",
    "TF_TYPE",
    "ROS2_SCHEMA_ENCODING",
    "Ros2Codec",
    "normalize_type",
    "intrinsics_values",
]

ROS2_SCHEMA_ENCODING = "ros2msg"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", "foxglove_msgs/msg/RawImage",
               "foxglove_msgs/msg/CompressedImage")
CALIBRATION_TYPES = ("sensor_msgs/msg/CameraInfo", "foxglove_msgs/msg/CameraCalibration")
TF_TYPE = "tf2_msgs/msg/TFMessage"
_COMPRESSED = ("sensor_msgs/msg/CompressedImage", "foxglove_msgs/msg/CompressedImage")
_IMAGE_FIELDS = ("width", "height", "encoding", "step", "is_bigendian", "format", "data")


def normalize_type(name: str) -> str:
    """``pkg/Type`` or ``pkg/msg/Type`` -> ``pkg/msg/Type``."""
    parts = name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else name


def _get(message: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if hasattr(message, name):
            return getattr(message, name)
    return default


def _stamp_ns(stamp: Any) -> int:
    return int(_get(stamp, "sec", default=0)) * 1_000_000_000 + int(_get(stamp, "nanosec", "nsec", default=0))


def _header(message: Any) -> tuple:
    header = _get(message, "header")
    if header is not None:
        return _stamp_ns(header.stamp), str(header.frame_id)
    return _stamp_ns(_get(message, "timestamp")), str(_get(message, "frame_id", default=""))


def _as_dict(message: Any) -> Dict[str, Any]:
    return {name: getattr(message, name) for name in message.__slots__}


def intrinsics_values(fields: Dict[str, Any], rectified: bool) -> Optional[tuple]:
    """``(fx, fy, cx, cy)`` of calibration fields (``P`` for rectified images, else ``K``), or None if uncalibrated."""
    matrix = fields.get("P") if rectified else fields.get("K")
    if rectified and (not matrix or len(matrix) != 12):
        raise MessageError(f"calibration P must have 12 values, got {len(matrix or [])}")
    if not rectified and (not matrix or len(matrix) != 9):
        raise MessageError(f"calibration K must have 9 values, got {len(matrix or [])}")
    columns = 4 if rectified else 3
    fx, cx, fy, cy = matrix[0], matrix[2], matrix[columns + 1], matrix[columns + 2]
    if fx == 0.0:
        return None  # ROS: K[0] == 0 means an uncalibrated camera
    return fx, fy, cx, cy


class Ros2Codec:
    """Decode and encode one ``ros2msg`` schema's messages (see the module docstring)."""

    family = "ros2"

    def __init__(self, schema: Schema, message_encoding: str):
        if schema.encoding != ROS2_SCHEMA_ENCODING:
            raise MessageError(f"schema encoding {schema.encoding!r} of {schema.name} is not supported "
                               f"(only {ROS2_SCHEMA_ENCODING!r})")
        if message_encoding != "cdr":
            raise MessageError(f"message encoding {message_encoding!r} of {schema.name} is not supported (only 'cdr')")
        self.schema = schema
        self.type = normalize_type(schema.name)
        if self.type in IMAGE_TYPES:
            self.kind = "image"
        elif self.type in CALIBRATION_TYPES:
            self.kind = "calibration"
        elif self.type == TF_TYPE:
            self.kind = "tf"
        else:
            raise MessageError(f"{schema.name} is not an image, calibration or transform type")
        try:
            self._decoder = DecoderFactory().decoder_for("cdr", schema)
        except Exception as exc:  # the schema text comes from the log: any parse failure is the log's
            raise MessageError(f"cannot parse the {schema.name} schema stored in the log: {exc}") from exc
        self._encoder: Optional[Callable[[Any], bytes]] = None

    def decode(self, payload: bytes) -> Any:
        try:
            return self._decoder(payload)
        except Exception as exc:  # truncated or mistyped CDR raises struct/index/value errors
            raise MessageError(f"cannot decode a {self.schema.name} message ({len(payload)} bytes): {exc}") from exc

    def fields(self, payload: bytes) -> Dict[str, Any]:
        message = self.decode(payload)
        try:
            stamp, frame_id = _header(message)
            fields: Dict[str, Any] = {"stamp": stamp, "frame_id": frame_id, "message": message}
            if self.kind == "image":
                if self.type in _COMPRESSED:
                    fields.update(format=str(message.format), data=bytes(message.data))
                else:
                    fields.update(width=int(message.width), height=int(message.height), step=int(message.step),
                                  encoding=str(message.encoding), data=bytes(message.data),
                                  is_bigendian=bool(_get(message, "is_bigendian", default=0)))
            elif self.kind == "calibration":
                fields.update(self._calibration(message))
            else:
                fields["transforms"] = [self._transform(t) for t in message.transforms]
        except (AttributeError, TypeError, ValueError) as exc:
            raise MessageError(f"{self.schema.name} message lacks the expected fields: {exc}") from exc
        return fields

    @staticmethod
    def _calibration(message: Any) -> Dict[str, Any]:
        width, height = int(message.width), int(message.height)
        k = [float(x) for x in _get(message, "k", "K", default=[])]
        p = [float(x) for x in _get(message, "p", "P", default=[])]
        # sensor_msgs/CameraInfo: binning and a region of interest shrink the published image.
        bx, by = max(int(_get(message, "binning_x", default=0)), 1), max(int(_get(message, "binning_y", default=0)), 1)
        roi = _get(message, "roi")
        dx = dy = 0.0
        if roi is not None and int(roi.width) and int(roi.height):
            dx, dy, width, height = float(roi.x_offset), float(roi.y_offset), int(roi.width), int(roi.height)
        if bx > 1 or by > 1 or dx or dy:
            for matrix, columns in ((k, 3), (p, 4)):
                if len(matrix) == 3 * columns:
                    matrix[0], matrix[2] = matrix[0] / bx, (matrix[2] - dx) / bx
                    matrix[columns + 1], matrix[columns + 2] = matrix[columns + 1] / by, (matrix[columns + 2] - dy) / by
            width, height = width // bx, height // by
        return {"width": width, "height": height, "K": k, "P": p,
                "distortion_model": str(_get(message, "distortion_model", default=""))}

    @staticmethod
    def _transform(stamped: Any) -> Dict[str, Any]:
        t, q = stamped.transform.translation, stamped.transform.rotation
        return {"stamp": _stamp_ns(stamped.header.stamp), "parent": str(stamped.header.frame_id),
                "child": str(stamped.child_frame_id), "translation": (float(t.x), float(t.y), float(t.z)),
                "rotation": (float(q.x), float(q.y), float(q.z), float(q.w))}

    def encode(self, fields: Dict[str, Any]) -> bytes:
        """Image ``fields`` (from :meth:`fields`, pixels replaced) -> CDR bytes of the same message type."""
        if self.kind != "image":
            raise MessageError(f"cannot encode {self.schema.name} messages")
        if self._encoder is None:
            try:
                self._encoder = serialize_dynamic(self.schema.name, self.schema.data.decode())[self.schema.name]
            except Exception as exc:
                raise MessageError(f"cannot build an encoder for {self.schema.name}: {exc}") from exc
        message = _as_dict(fields["message"])
        for name in _IMAGE_FIELDS:
            if name in message and name in fields:
                message[name] = fields[name]
        if "is_bigendian" in message:
            message["is_bigendian"] = int(bool(message["is_bigendian"]))
        try:
            return self._encoder(message)
        except Exception as exc:
            raise MessageError(f"cannot encode a {self.schema.name} message: {exc}") from exc

