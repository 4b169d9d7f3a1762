"""The bridge wire protocol, version 1 (specification: ``docs/PROTOCOL.md``).

A message is a ZeroMQ multipart message: part 0 is a msgpack map (the header), the following
parts are raw buffers whose sizes the header determines. This module turns received parts into a
validated :class:`Request` (or raises :class:`ProtocolError` carrying an error code) and builds
reply headers. It does no I/O and knows nothing about sockets, so both the server and the client
use it, and it is tested on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import msgpack

from ..io.pixels import LAYERS, PIXEL_FORMATS, LayerSpec, PixelFormat
from .shm_protocol import SHM_MAX_SLOTS, SHM_NAME_PATTERN, ShmRef, slot_layout

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_NAME_BYTES",
    "SUPPORTED_VERSIONS",
    "REQUEST_TYPES",
    "REPLY_TYPES",
    "DROP_REASONS",
    "PixelFormat",
    "PIXEL_FORMATS",
    "LayerSpec",
    "LAYERS",
    "OPTION_NAMES",
    "ErrorCode",
    "ProtocolError",
    "Limits",
    "StreamId",
    "FrameOptions",
    "Request",
    "decode_header",
    "decode_request",
    "pack_header",
    "reply_header",
    "error_header",
    "request_header",
    "part_size",
]

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS: Tuple[int, ...] = (1,)

REQUEST_TYPES: Tuple[str, ...] = ("hello", "frame", "reset", "stats", "heartbeat", "bye")
REPLY_TYPES: Tuple[str, ...] = ("welcome", "result", "dropped", "error", "ok", "stats", "heartbeat")
DROP_REASONS: Tuple[str, ...] = ("superseded", "expired", "reset", "closed", "shutdown")

UINT64_MAX = 2**64 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_NAME_BYTES = 64  # sim and camera names


OPTION_NAMES: Tuple[str, ...] = ("reply_format", "reset", "max_age_ms")


class ErrorCode:
    """Error codes of ``error`` replies (strings on the wire, see docs/PROTOCOL.md)."""

    MALFORMED = "MALFORMED"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    BAD_FIELD = "BAD_FIELD"
    BAD_PART_COUNT = "BAD_PART_COUNT"
    BAD_BUFFER_SIZE = "BAD_BUFFER_SIZE"
    TOO_LARGE = "TOO_LARGE"
    UNSUPPORTED_SIZE = "UNSUPPORTED_SIZE"
    STREAM_SIZE_CHANGED = "STREAM_SIZE_CHANGED"
    BAD_PIXELS = "BAD_PIXELS"
    TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
    ENGINE_ERROR = "ENGINE_ERROR"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    SHM_NOT_ATTACHED = "SHM_NOT_ATTACHED"

    ALL: Tuple[str, ...] = (
        "MALFORMED", "UNSUPPORTED_VERSION", "UNKNOWN_TYPE", "BAD_FIELD", "BAD_PART_COUNT", "BAD_BUFFER_SIZE",
        "TOO_LARGE", "UNSUPPORTED_SIZE", "STREAM_SIZE_CHANGED", "BAD_PIXELS", "TOO_MANY_STREAMS", "ENGINE_ERROR",
        "SHUTTING_DOWN", "INTERNAL_ERROR", "SHM_NOT_ATTACHED",
    )  # fmt: skip


class ProtocolError(Exception):
    """A request the server must refuse; becomes an ``error`` reply.

    Carries what could be read of the header (``echo``: seq, sim, camera, frame, timestamp_us) so
    the reply can still be matched to its request.
    """

    def __init__(self, code: str, message: str, echo: Optional[Mapping[str, Any]] = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.echo: Dict[str, Any] = dict(echo or {})


@dataclass(frozen=True)
class Limits:
    """Server-side bounds applied while decoding (all sizes in bytes)."""

    max_header_bytes: int = 64 * 1024
    max_message_bytes: int = 256 * 1024 * 1024
    max_width: int = 3840
    max_height: int = 2160

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_message_bytes", "max_width", "max_height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.max_header_bytes < 256:
            raise ValueError(f"max_header_bytes must be >= 256, got {self.max_header_bytes}")


@dataclass(frozen=True)
class StreamId:
    """A stream within one client: simulator name plus camera name."""

    sim: str
    camera: str


@dataclass(frozen=True)
class FrameOptions:
    """Per-frame options (header field ``options``)."""

    reply_format: Optional[str] = None  # None: same as the input format
    reset: bool = False  # start a new history with this frame
    max_age_ms: Optional[float] = None  # drop instead of enhancing if it waited longer than this


@dataclass(frozen=True)
class Request:
    """A validated request. ``buffers`` maps "frame" and each layer name to its raw part
    (empty when ``shm`` says the buffers are in a shared-memory slot)."""

    type: str
    seq: Optional[int]
    header: Dict[str, Any]
    stream: Optional[StreamId] = None
    frame_index: Optional[int] = None
    timestamp_us: Optional[int] = None
    width: int = 0
    height: int = 0
    format: Optional[PixelFormat] = None
    layers: Tuple[str, ...] = ()
    intrinsics: Optional[Tuple[float, ...]] = None
    pose: Optional[Tuple[float, ...]] = None
    options: FrameOptions = field(default_factory=FrameOptions)
    buffers: Dict[str, Any] = field(default_factory=dict)
    shm: Optional[ShmRef] = None

    def echo(self) -> Dict[str, Any]:
        """The fields every reply to this request repeats."""
        return _echo_fields(self.header)


# -- decoding -------------------------------------------------------------------------------------


def part_size(part: Any) -> int:
    """Byte length of a received part (bytes, memoryview, numpy array or ``zmq.Frame``)."""
    if isinstance(part, memoryview):
        return part.nbytes
    nbytes = getattr(part, "nbytes", None)
    return int(nbytes) if isinstance(nbytes, int) else len(part)


def _as_bytes(part: Any) -> bytes:
    raw = getattr(part, "bytes", None)  # zmq.Frame
    return raw if isinstance(raw, bytes) else bytes(part)


def decode_header(raw: bytes, max_header_bytes: int) -> Dict[str, Any]:
    """Parse part 0 into a dict; raises ProtocolError(MALFORMED) with the reason."""
    if len(raw) == 0:
        raise ProtocolError(ErrorCode.MALFORMED, "part 0 (the header) is empty; REQ sockets, which add an empty "
                                                 "delimiter part, are not supported: use DEALER")
    if len(raw) > max_header_bytes:
        raise ProtocolError(ErrorCode.MALFORMED, f"header is {len(raw)} bytes, over the {max_header_bytes}-byte limit")
    try:
        header = msgpack.unpackb(
            raw, raw=False, strict_map_key=True, use_list=True, max_str_len=max_header_bytes,
            max_bin_len=max_header_bytes, max_array_len=4096, max_map_len=256, max_ext_len=0,
        )
    except msgpack.ExtraData:
        raise ProtocolError(ErrorCode.MALFORMED, "header has bytes after its msgpack map") from None
    except Exception as exc:  # msgpack raises several types (ValueError, StackError, UnicodeDecodeError, ...)
        raise ProtocolError(ErrorCode.MALFORMED, f"header is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise ProtocolError(ErrorCode.MALFORMED, f"header must be a msgpack map, got {type(header).__name__}")
    return header


def _echo_fields(header: Mapping[str, Any]) -> Dict[str, Any]:
    """Matching fields copied from a header, only where they have the right type."""
    echo: Dict[str, Any] = {}
    seq = header.get("seq")
    if _is_int(seq) and 0 <= seq <= UINT64_MAX:
        echo["seq"] = seq
    for name in ("sim", "camera"):
        value = header.get(name)
        if isinstance(value, str) and len(value.encode()) <= MAX_NAME_BYTES:
            echo[name] = value
    frame = header.get("frame")
    if _is_int(frame) and 0 <= frame <= UINT64_MAX:
        echo["frame"] = frame
    stamp = header.get("timestamp_us")
    if _is_int(stamp) and INT64_MIN <= stamp <= INT64_MAX:
        echo["timestamp_us"] = stamp
    return echo


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Fields:
    """Typed field access that raises BAD_FIELD naming the field."""

    def __init__(self, header: Mapping[str, Any], echo: Mapping[str, Any]):
        self.header = header
        self.echo = echo

    def fail(self, name: str, problem: str) -> ProtocolError:
        return ProtocolError(ErrorCode.BAD_FIELD, f"field {name!r} {problem}", self.echo)

    def int(self, name: str, low: int, high: int, default: Any = ...) -> Any:
        if name not in self.header:
            if default is ...:
                raise self.fail(name, "is required")
            return default
        value = self.header[name]
        if not _is_int(value):
            raise self.fail(name, f"must be an integer, got {type(value).__name__}")
        if not low <= value <= high:
            raise self.fail(name, f"must be in [{low}, {high}], got {value}")
        return value

    def name(self, name: str, default: Any = ...) -> Any:
        if name not in self.header:
            if default is ...:
                raise self.fail(name, "is required")
            return default
        value = self.header[name]
        if not isinstance(value, str):
            raise self.fail(name, f"must be a string, got {type(value).__name__}")
        if not value or len(value.encode()) > MAX_NAME_BYTES or not value.isprintable():
            raise self.fail(name, f"must be 1 to {MAX_NAME_BYTES} bytes of printable UTF-8, got {value[:80]!r}")
        return value

    def floats(self, name: str, count: int) -> Optional[Tuple[float, ...]]:
        value = self.header.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or len(value) != count:
            got = f"{len(value)} items" if isinstance(value, list) else type(value).__name__
            raise self.fail(name, f"must be an array of {count} numbers, got {got}")
        out = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
                raise self.fail(name, f"must hold finite numbers, got {item!r}")
            out.append(float(item))
        return tuple(out)


def _options(fields: _Fields) -> FrameOptions:
    raw = fields.header.get("options")
    if raw is None:
        return FrameOptions()
    if not isinstance(raw, dict):
        raise fields.fail("options", f"must be a map, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in OPTION_NAMES)
    if unknown:
        raise fields.fail("options", f"has unknown option(s) {unknown}; known: {list(OPTION_NAMES)}")
    reply_format = raw.get("reply_format")
    if reply_format is not None and reply_format not in PIXEL_FORMATS:
        raise fields.fail("options.reply_format", f"must be one of {list(PIXEL_FORMATS)}, got {reply_format!r}")
    reset = raw.get("reset", False)
    if not isinstance(reset, bool):
        raise fields.fail("options.reset", f"must be a boolean, got {type(reset).__name__}")
    max_age = raw.get("max_age_ms")
    if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, (int, float))
                                or not math.isfinite(max_age) or max_age <= 0):
        raise fields.fail("options.max_age_ms", f"must be a positive number, got {max_age!r}")
    return FrameOptions(reply_format=reply_format, reset=reset,
                        max_age_ms=float(max_age) if max_age is not None else None)


def _check_parts(type_: str, parts: Sequence[Any], expected_names: Sequence[str], echo: Mapping[str, Any]) -> None:
    if len(parts) != len(expected_names):
        names = ", ".join(expected_names)
        raise ProtocolError(ErrorCode.BAD_PART_COUNT,
                            f"a {type_!r} message has {len(expected_names)} part(s) ({names}), got {len(parts)}", echo)


def decode_request(parts: Sequence[Any], limits: Limits) -> Request:
    """Validate a received message (without the ROUTER identity part) into a Request.

    parts: the message parts; part 0 is the msgpack header, the rest raw buffers.
    Raises ProtocolError whose ``code`` is one of :class:`ErrorCode` and whose message names the
    offending field or part. Checks run cheapest first; no buffer is copied.
    """
    if not parts:
        raise ProtocolError(ErrorCode.BAD_PART_COUNT, "a message needs at least a header part")
    total = sum(part_size(p) for p in parts)
    header = decode_header(_as_bytes(parts[0]), limits.max_header_bytes)
    echo = _echo_fields(header)
    if total > limits.max_message_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE,
                            f"message is {total} bytes, over the {limits.max_message_bytes}-byte limit", echo)
    fields = _Fields(header, echo)

    if "version" not in header:
        raise ProtocolError(ErrorCode.BAD_FIELD, "field 'version' is required", echo)
    version = header["version"]
    if not _is_int(version):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"field 'version' must be an integer, got {type(version).__name__}", echo)
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION,
                            f"protocol version {version} is not supported; this server speaks {list(SUPPORTED_VERSIONS)}",
                            echo)
    type_ = header.get("type")
    if not isinstance(type_, str):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"field 'type' must be a string, got {type(type_).__name__}", echo)
    if type_ not in REQUEST_TYPES:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE,
                            f"unknown message type {type_[:40]!r}; known: {list(REQUEST_TYPES)}", echo)
    seq = fields.int("seq", 0, UINT64_MAX, default=None)

    if type_ != "frame":
        _check_parts(type_, parts, ["header"], echo)
        stream = None
        if type_ in ("reset", "bye") and ("sim" in header or "camera" in header or type_ == "reset"):
            stream = StreamId(fields.name("sim"), fields.name("camera"))
        return Request(type=type_, seq=seq, header=header, stream=stream)

    stream = StreamId(fields.name("sim"), fields.name("camera"))
    frame_index = fields.int("frame", 0, UINT64_MAX)
    timestamp_us = fields.int("timestamp_us", INT64_MIN, INT64_MAX, default=0)
    width = fields.int("width", 1, 2**31 - 1)
    height = fields.int("height", 1, 2**31 - 1)
    if width > limits.max_width or height > limits.max_height:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"frame size {width}x{height} (WxH) exceeds this server's limit "
                                                 f"{limits.max_width}x{limits.max_height}", echo)
    fmt_name = header.get("format")
    if fmt_name not in PIXEL_FORMATS:
        raise fields.fail("format", f"must be one of {list(PIXEL_FORMATS)}, got {str(fmt_name)[:40]!r}")
    fmt = PIXEL_FORMATS[fmt_name]
    layers_raw = header.get("layers", [])
    if not isinstance(layers_raw, list) or not all(isinstance(x, str) for x in layers_raw):
        raise fields.fail("layers", "must be an array of layer names")
    unknown = [x[:40] for x in layers_raw if x not in LAYERS]
    if unknown or len(set(layers_raw)) != len(layers_raw):
        raise fields.fail("layers", f"must name distinct layers from {list(LAYERS)}, got {layers_raw[:8]}")
    layers = tuple(layers_raw)
    intrinsics = fields.floats("intrinsics", 4)
    pose = fields.floats("pose", 16)
    options = _options(fields)

    names = ["header", "frame", *layers]
    expected = {"frame": width * height * fmt.bytes_per_pixel}
    expected.update({name: LAYERS[name].nbytes(width, height) for name in layers})
    reply_bytes = width * height * PIXEL_FORMATS[options.reply_format or fmt.name].bytes_per_pixel
    shm = _shm_ref(fields, names[1:], expected, reply_bytes)
    if shm is not None:
        _check_parts("frame", parts, ["header"], echo)  # the buffers are in the slot
        return Request(type="frame", seq=seq, header=header, stream=stream, frame_index=frame_index,
                       timestamp_us=timestamp_us, width=width, height=height, format=fmt, layers=layers,
                       intrinsics=intrinsics, pose=pose, options=options, shm=shm)
    _check_parts("frame", parts, names, echo)
    buffers: Dict[str, Any] = {}
    for name, part in zip(names[1:], parts[1:]):
        got = part_size(part)
        if got != expected[name]:
            detail = (f"{width}x{height} {fmt.name} = {width}*{height}*{fmt.bytes_per_pixel}" if name == "frame"
                      else f"{width}x{height} {name} = {width}*{height}*{LAYERS[name].channels * LAYERS[name].bytes_per_channel}")  # fmt: skip
            raise ProtocolError(ErrorCode.BAD_BUFFER_SIZE,
                                f"part {names.index(name)} ({name}) is {got} bytes; the header says {detail} = "
                                f"{expected[name]} bytes", echo)
        buffers[name] = part
    return Request(type="frame", seq=seq, header=header, stream=stream, frame_index=frame_index,
                   timestamp_us=timestamp_us, width=width, height=height, format=fmt, layers=layers,
                   intrinsics=intrinsics, pose=pose, options=options, buffers=buffers)


def _shm_ref(fields: _Fields, names: Sequence[str], sizes: Mapping[str, int], reply_bytes: int) -> Optional[ShmRef]:
    """The frame's ``shm`` field (buffers in a slot), type-checked; the slot itself is checked by the server."""
    raw = fields.header.get("shm")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise fields.fail("shm", f"must be a map with 'name' and 'slot', got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in ("name", "slot"))
    if unknown:
        raise fields.fail("shm", f"has unknown key(s) {unknown[:8]}; known: ['name', 'slot']")
    name = raw.get("name")
    if not isinstance(name, str) or not SHM_NAME_PATTERN.match(name):
        raise fields.fail("shm.name", f"must be the offered segment's name (string), got {str(name)[:80]!r}")
    slot = raw.get("slot")
    if not _is_int(slot) or not 0 <= slot < SHM_MAX_SLOTS:
        raise fields.fail("shm.slot", f"must be an integer in [0, {SHM_MAX_SLOTS - 1}], got {str(slot)[:40]!r}")
    layout, end = slot_layout([(n, sizes[n]) for n in names])
    return ShmRef(name=name, slot=slot, layout=layout, request_bytes=end, reply_bytes=reply_bytes)


# -- encoding -------------------------------------------------------------------------------------


def pack_header(fields: Mapping[str, Any]) -> bytes:
    """msgpack-encode a header map (str keys; None values are left out)."""
    return msgpack.packb({k: v for k, v in fields.items() if v is not None}, use_bin_type=True)


def reply_header(type_: str, echo: Optional[Mapping[str, Any]] = None, **fields: Any) -> bytes:
    """A reply header of ``type_`` repeating the request's matching fields (``echo``)."""
    if type_ not in REPLY_TYPES:
        raise ValueError(f"unknown reply type {type_!r}")
    return pack_header({"version": PROTOCOL_VERSION, "type": type_, **(echo or {}), **fields})


def error_header(code: str, message: str, echo: Optional[Mapping[str, Any]] = None) -> bytes:
    """An ``error`` reply header."""
    if code not in ErrorCode.ALL:
        raise ValueError(f"unknown error code {code!r}")
    return reply_header("error", echo, code=code, message=message)


def request_header(type_: str, **fields: Any) -> Dict[str, Any]:
    """A request header map of ``type_`` (client side); None-valued fields are left out."""
    if type_ not in REQUEST_TYPES:
        raise ValueError(f"unknown request type {type_!r}; known: {list(REQUEST_TYPES)}")
    return {"version": PROTOCOL_VERSION, "type": type_, **{k: v for k, v in fields.items() if v is not None}}

