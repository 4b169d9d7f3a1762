"""The bridge wire protocol, versions 1 and 2 (specification: ``docs/PROTOCOL.md``).

A message is a ZeroMQ multipart message: part 0 is a msgpack map (the header), the following
parts are raw buffers whose sizes the header determines. This module turns received parts into a
validated :class:`Request` (or raises :class:`ProtocolError` carrying an error code) and builds
reply headers. It does no I/O and knows nothing about sockets, so both the server and the client
use it, and it is tested on its own.

Version 2 is version 1 plus a required ``session`` (a client-chosen random uint64 echoed in every
reply), so that a client restarted with a fixed routing id never takes the dead process's late
replies for its own. The server speaks both and answers each request in its own version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import msgpack

from ..io.pixels import LAYERS, PIXEL_FORMATS, LayerSpec, PixelFormat
from .fields import MAX_NAME_BYTES, ErrorCode, Fields, ProtocolError, is_int, short, type_name, without_nil
from .shm_protocol import SHM_MAX_SLOTS, SHM_NAME_PATTERN, ShmRef, slot_layout

__all__ = [
    "PROTOCOL_VERSION",
    "SESSION_VERSION",
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
    "header_echo",
    "part_size",
]

PROTOCOL_VERSION = 2  # what the reference clients speak; the newest the server speaks
SUPPORTED_VERSIONS: Tuple[int, ...] = (1, 2)
SESSION_VERSION = 2  # from this version on every request carries ``session``

REQUEST_TYPES: Tuple[str, ...] = ("hello", "frame", "reset", "stats", "heartbeat", "bye")
REPLY_TYPES: Tuple[str, ...] = ("welcome", "result", "dropped", "error", "ok", "stats", "heartbeat")
DROP_REASONS: Tuple[str, ...] = ("superseded", "expired", "reset", "closed", "shutdown")

UINT64_MAX = 2**64 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
POSE_MIN_DET = 1e-6  # |det| of a pose's 3x3 block below this is not a camera transform
MAX_DIMENSION = 2**31 - 1  # width/height beyond this are BAD_FIELD; beyond the server's limits TOO_LARGE


OPTION_NAMES: Tuple[str, ...] = ("reply_format", "reset", "max_age_ms")


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
    header: Dict[str, Any]  # as received, nil-valued entries removed (nil means absent)
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


def _non_string_key(value: Any) -> Optional[str]:
    """Where a map, at any depth, has a key that is not a msgpack str (None: nowhere)."""
    stack = [(value, "header")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    return f"{where} has a {type_name(key)} key {short(key)}"
                stack.append((sub, f"{where}.{key}"))
        elif isinstance(item, list):
            stack.extend((sub, f"{where}[{i}]") for i, sub in enumerate(item))
    return None


def decode_header(raw: bytes, max_header_bytes: int) -> Dict[str, Any]:
    """Parse part 0 into a dict; raises ProtocolError(MALFORMED) with the reason (and, when the
    header did decode as a map, its matching fields, so even this error can be matched)."""
    if len(raw) == 0:
        raise ProtocolError(ErrorCode.MALFORMED, "part 0 (the header) is empty; REQ sockets, which add an empty "
                                                 "delimiter part, are not supported: use DEALER")
    if len(raw) > max_header_bytes:
        raise ProtocolError(ErrorCode.MALFORMED, f"header is {len(raw)} bytes, over the {max_header_bytes}-byte limit")
    try:
        # Non-string keys are decoded (not refused by msgpack) so the error can name them and echo seq.
        header = msgpack.unpackb(
            raw, raw=False, strict_map_key=False, use_list=True, max_str_len=max_header_bytes,
            max_bin_len=max_header_bytes, max_array_len=4096, max_map_len=256, max_ext_len=max_header_bytes,
        )
    except msgpack.ExtraData as exc:
        echo = _echo_fields(exc.unpacked) if isinstance(exc.unpacked, dict) else {}
        raise ProtocolError(ErrorCode.MALFORMED, "header has bytes after its msgpack map", echo) from None
    except Exception as exc:  # msgpack raises several types (ValueError, StackError, TypeError for array keys, ...)
        raise ProtocolError(ErrorCode.MALFORMED, f"header is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise ProtocolError(ErrorCode.MALFORMED, f"header must be a msgpack map, got {type_name(header)}")
    where = _non_string_key(header)
    if where is not None:
        raise ProtocolError(ErrorCode.MALFORMED, f"map keys must be msgpack strings: {where}", _echo_fields(header))
    return header


def header_echo(part: Any, max_header_bytes: int) -> Dict[str, Any]:
    """The matching fields of a message's header part, or {} when it is not a msgpack map
    (for replies to requests that failed after decoding, e.g. INTERNAL_ERROR)."""
    try:
        return _echo_fields(decode_header(_as_bytes(part), max_header_bytes))
    except ProtocolError as exc:
        return exc.echo


def _echo_fields(header: Mapping[Any, Any]) -> Dict[str, Any]:
    """Matching fields copied from a header, only where they have the right type."""
    echo: Dict[str, Any] = {}
    version = header.get("version")
    if is_int(version) and version in SUPPORTED_VERSIONS:
        echo["version"] = version  # replies are in the request's version
    for name in ("seq", "session", "frame"):
        value = header.get(name)
        if is_int(value) and 0 <= value <= UINT64_MAX:
            echo[name] = value
    for name in ("sim", "camera"):
        value = header.get(name)
        if isinstance(value, str) and len(value.encode()) <= MAX_NAME_BYTES:
            echo[name] = value
    stamp = header.get("timestamp_us")
    if is_int(stamp) and INT64_MIN <= stamp <= INT64_MAX:
        echo["timestamp_us"] = stamp
    return echo


def _intrinsics(fields: Fields) -> Optional[Tuple[float, ...]]:
    """``[fx, fy, cx, cy]``: finite, focal lengths positive (pixels; the principal point may lie anywhere)."""
    values = fields.floats("intrinsics", 4)
    if values is not None and not (values[0] > 0 and values[1] > 0):
        raise fields.fail("intrinsics", f"must have focal lengths fx, fy > 0 pixels, got fx={values[0]:g}, "
                                        f"fy={values[1]:g}")
    return values


def _pose(fields: Fields) -> Optional[Tuple[float, ...]]:
    """A 4x4 row-major camera-to-world transform: finite, last row [0, 0, 0, 1], invertible 3x3 block."""
    m = fields.floats("pose", 16)
    if m is None:
        return None
    if any(abs(a - b) > 1e-6 for a, b in zip(m[12:], (0.0, 0.0, 0.0, 1.0))):
        raise fields.fail("pose", f"must be a 4x4 row-major transform whose last row is [0, 0, 0, 1], "
                                  f"got {[round(v, 6) for v in m[12:]]}")
    det = (m[0] * (m[5] * m[10] - m[6] * m[9]) - m[1] * (m[4] * m[10] - m[6] * m[8])
           + m[2] * (m[4] * m[9] - m[5] * m[8]))
    if not abs(det) > POSE_MIN_DET:
        raise fields.fail("pose", f"must be invertible: its 3x3 rotation block has determinant {det:g} (a rigid "
                                  f"transform has +-1; an all-zero pose is not a camera)")
    return m


def _options(fields: Fields) -> FrameOptions:
    options = fields.map("options")
    if options is None:
        return FrameOptions()
    options.only(OPTION_NAMES, "option(s)")
    return FrameOptions(reply_format=options.choice("reply_format", list(PIXEL_FORMATS), default=None),
                        reset=options.bool("reset", False), max_age_ms=options.positive("max_age_ms"))


def _layers(fields: Fields) -> Tuple[str, ...]:
    value = fields.header.get("layers", [])
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        got = type_name(value) if not isinstance(value, list) else "an array holding non-strings"
        raise fields.fail("layers", f"must be an array of layer names, got {got}")
    if any(x not in LAYERS for x in value) or len(set(value)) != len(value):
        raise fields.fail("layers", f"must name distinct layers from {list(LAYERS)}, got {[x[:40] for x in value[:8]]}")
    return tuple(value)


def _check_parts(type_: str, parts: Sequence[Any], expected_names: Sequence[str], echo: Mapping[str, Any]) -> None:
    if len(parts) != len(expected_names):
        names = ", ".join(expected_names)
        raise ProtocolError(ErrorCode.BAD_PART_COUNT,
                            f"a {type_!r} message has {len(expected_names)} part(s) ({names}), got {len(parts)}", echo)


def decode_request(parts: Sequence[Any], limits: Limits) -> Request:
    """Validate a received message (without the ROUTER identity part) into a Request.

    parts: the message parts; part 0 is the msgpack header, the rest raw buffers.
    Raises ProtocolError whose ``code`` is one of :class:`ErrorCode` and whose message names the
    offending field or part. Checks run cheapest first; no buffer is copied. A nil field is
    treated as absent (refused only where the field is required).
    """
    if not parts:
        raise ProtocolError(ErrorCode.BAD_PART_COUNT, "a message needs at least a header part")
    total = sum(part_size(p) for p in parts)
    header = without_nil(decode_header(_as_bytes(parts[0]), limits.max_header_bytes))
    echo = _echo_fields(header)
    if total > limits.max_message_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE,
                            f"message is {total} bytes, over the {limits.max_message_bytes}-byte limit", echo)
    fields = Fields(header, echo)

    version = fields.int("version", INT64_MIN, UINT64_MAX)
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION,
                            f"protocol version {version} is not supported; this server speaks {list(SUPPORTED_VERSIONS)}",
                            echo)
    type_ = fields.required("type")
    if not isinstance(type_, str):
        raise fields.fail("type", f"must be a string, got {type_name(type_)}")
    if type_ not in REQUEST_TYPES:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE,
                            f"unknown message type {type_[:40]!r}; known: {list(REQUEST_TYPES)}", echo)
    seq = fields.int("seq", 0, UINT64_MAX, default=None)
    if version >= SESSION_VERSION:
        fields.int("session", 0, UINT64_MAX)

    if type_ != "frame":
        _check_parts(type_, parts, ["header"], echo)
        stream = None
        if type_ == "reset" or (type_ == "bye" and ("sim" in header or "camera" in header)):
            stream = StreamId(fields.name("sim"), fields.name("camera"))
        return Request(type=type_, seq=seq, header=header, stream=stream)

    stream = StreamId(fields.name("sim"), fields.name("camera"))
    frame_index = fields.int("frame", 0, UINT64_MAX)
    timestamp_us = fields.int("timestamp_us", INT64_MIN, INT64_MAX, default=0)
    width = fields.int("width", 1, MAX_DIMENSION)
    height = fields.int("height", 1, MAX_DIMENSION)
    if width > limits.max_width or height > limits.max_height:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"frame size {width}x{height} (WxH) exceeds this server's limit "
                                                 f"{limits.max_width}x{limits.max_height}", echo)
    fmt = PIXEL_FORMATS[fields.choice("format", list(PIXEL_FORMATS))]
    layers = _layers(fields)
    intrinsics = _intrinsics(fields)
    pose = _pose(fields)
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


def _shm_ref(fields: Fields, names: Sequence[str], sizes: Mapping[str, int], reply_bytes: int) -> Optional[ShmRef]:
    """The frame's ``shm`` field (buffers in a slot), type-checked; the slot itself is checked by the server."""
    shm = fields.map("shm")
    if shm is None:
        return None
    shm.only(("name", "slot"), "key(s)")
    name = shm.header.get("name")
    if not isinstance(name, str) or not SHM_NAME_PATTERN.match(name):
        got = short(name) if isinstance(name, str) else type_name(name)
        raise shm.fail("name", f"must be the offered segment's name (a string), got {got}")
    slot = shm.int("slot", 0, SHM_MAX_SLOTS - 1)
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


def request_header(type_: str, session: Optional[int] = None, version: int = PROTOCOL_VERSION,
                   **fields: Any) -> Dict[str, Any]:
    """A request header map of ``type_`` (client side); None-valued fields are left out.

    session: the client's session nonce, required from version 2 on (a random uint64 per client,
    docs/PROTOCOL.md §4).
    """
    if type_ not in REQUEST_TYPES:
        raise ValueError(f"unknown request type {type_!r}; known: {list(REQUEST_TYPES)}")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"version must be one of {list(SUPPORTED_VERSIONS)}, got {version!r}")
    if version >= SESSION_VERSION and not (is_int(session) and 0 <= session <= UINT64_MAX):
        raise ValueError(f"a version {version} request needs a session nonce (uint64), got {session!r}")
    header = {"version": version, "type": type_, "session": session, **fields}
    return {k: v for k, v in header.items() if v is not None}
