"""Typed access to msgpack header fields, and the error codes of the bridge protocol.

Every check names the field (``options.reply_format``, ``shm.slot``) and the msgpack type it got,
so a wrong-typed value of any msgpack type (nil, bool, int, float, str, bin, array, map, ext) is a
``BAD_FIELD`` error reply, never an exception the server did not expect. Used by
:mod:`.protocol`; no I/O.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import msgpack

__all__ = ["MAX_NAME_BYTES", "ErrorCode", "ProtocolError", "Fields", "type_name", "short", "is_int", "is_number",
           "without_nil"]

MAX_NAME_BYTES = 64  # sim and camera names


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
    BAD_LAYER = "BAD_LAYER"

    ALL: Tuple[str, ...] = (
        "MALFORMED", "UNSUPPORTED_VERSION", "UNKNOWN_TYPE", "BAD_FIELD", "BAD_PART_COUNT", "BAD_BUFFER_SIZE",
        "TOO_LARGE", "UNSUPPORTED_SIZE", "STREAM_SIZE_CHANGED", "BAD_PIXELS", "TOO_MANY_STREAMS", "ENGINE_ERROR",
        "SHUTTING_DOWN", "INTERNAL_ERROR", "SHM_NOT_ATTACHED", "BAD_LAYER",
    )  # fmt: skip


class ProtocolError(Exception):
    """A request the server must refuse; becomes an ``error`` reply.

    Carries what could be read of the header (``echo``: version, seq, session, sim, camera, frame,
    timestamp_us) so the reply can still be matched to its request.
    """

    def __init__(self, code: str, message: str, echo: Optional[Mapping[str, Any]] = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.echo: Dict[str, Any] = dict(echo or {})


def type_name(value: Any) -> str:
    """The msgpack type of a decoded value, for error messages."""
    if isinstance(value, msgpack.ExtType):
        return f"ext (type {value.code})"
    names = ((type(None), "nil"), (bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (bytes, "bin"),
             (list, "array"), (dict, "map"), (msgpack.Timestamp, "ext (timestamp)"))
    return next((name for kind, name in names if isinstance(value, kind)), type(value).__name__)


def short(value: Any) -> str:
    """``repr(value)``, cut to 40 characters (messages quote client input; keep them short)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def without_nil(header: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in header.items() if v is not None}  # nil means absent (docs/PROTOCOL.md §2)


class Fields:
    """Typed access to one map's fields (nil = absent) that raises BAD_FIELD naming the field."""

    def __init__(self, header: Mapping[str, Any], echo: Mapping[str, Any], prefix: str = ""):
        self.header = without_nil(header)
        self.echo = echo
        self.prefix = prefix

    def fail(self, name: str, problem: str) -> ProtocolError:
        return ProtocolError(ErrorCode.BAD_FIELD, f"field {self.prefix + name!r} {problem}", self.echo)

    def required(self, name: str) -> Any:
        return self._get(name, ...)

    def _get(self, name: str, default: Any) -> Any:
        if name not in self.header and default is ...:
            raise self.fail(name, "is required")
        return self.header.get(name, default)

    def int(self, name: str, low: int, high: int, default: Any = ...) -> Any:
        value = self._get(name, default)
        if name not in self.header:
            return value
        if not is_int(value):
            raise self.fail(name, f"must be an integer, got {type_name(value)}")
        if not low <= value <= high:
            raise self.fail(name, f"must be in [{low}, {high}], got {value}")
        return value

    def name(self, name: str, default: Any = ...) -> Any:
        value = self._get(name, default)
        if name not in self.header:
            return value
        if not isinstance(value, str):
            raise self.fail(name, f"must be a string, got {type_name(value)}")
        if not value or len(value.encode()) > MAX_NAME_BYTES or not value.isprintable():
            raise self.fail(name, f"must be 1 to {MAX_NAME_BYTES} bytes of printable UTF-8, got {value[:80]!r}")
        return value

    def choice(self, name: str, choices: Sequence[str], default: Any = ...) -> Any:
        value = self._get(name, default)
        if name not in self.header:
            return value
        if not isinstance(value, str) or value not in choices:
            got = short(value) if isinstance(value, str) else type_name(value)
            raise self.fail(name, f"must be one of {list(choices)}, got {got}")
        return value

    def bool(self, name: str, default: bool) -> bool:
        value = self.header.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"must be a boolean, got {type_name(value)}")
        return value

    def positive(self, name: str) -> Optional[float]:
        value = self.header.get(name)
        if value is not None and (not is_number(value) or value <= 0):
            got = short(value) if isinstance(value, (int, float)) else type_name(value)
            raise self.fail(name, f"must be a positive number, got {got}")
        return None if value is None else float(value)

    def floats(self, name: str, count: int) -> Optional[Tuple[float, ...]]:
        value = self.header.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or len(value) != count:
            got = f"{len(value)} items" if isinstance(value, list) else type_name(value)
            raise self.fail(name, f"must be an array of {count} numbers, got {got}")
        for item in value:
            if not is_number(item):
                raise self.fail(name, f"must hold finite numbers, got {short(item)}")
        return tuple(float(item) for item in value)

    def map(self, name: str) -> Optional[Fields]:
        value = self.header.get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(name, f"must be a map, got {type_name(value)}")
        return Fields(value, self.echo, f"{self.prefix}{name}.")

    def only(self, known: Sequence[str], what: str) -> None:
        """Refuse keys of this map other than ``known`` (``what`` names them in the message)."""
        unknown = sorted(k for k in self.header if k not in known)
        if unknown:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"field {self.prefix.rstrip('.')!r} has unknown {what} "
                                                     f"{unknown[:8]}; known: {list(known)}", self.echo)
