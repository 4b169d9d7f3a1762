"""Wire-level definitions of the shared-memory extension (docs/PROTOCOL.md §9), shared by the
server (:mod:`.shm_server`) and the Python client (:mod:`.shm_client`).

A same-host client creates a POSIX shared-memory segment and offers it in ``hello``; frames then
name a slot of it instead of carrying their buffers, and the server writes the enhanced frame back
into the same slot. The segment starts with a 64-byte header (magic, then the offer's token, so
the server only ever writes into segments made for it); slot ``i`` follows at
``SHM_HEADER_BYTES + i * slot_bytes``. No I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence, Tuple

__all__ = [
    "SHM_MAGIC", "SHM_TOKEN_BYTES", "SHM_HEADER_BYTES", "SHM_ALIGN", "SHM_MAX_SLOTS", "SHM_NAME_PATTERN",
    "ShmOffer", "ShmRef", "parse_shm_offer", "slot_layout",
]

SHM_MAGIC = b"SIMHSHM1"  # bytes 0..7 of a segment
SHM_TOKEN_BYTES = 16  # bytes 8..23: the token, hex in the offer
SHM_HEADER_BYTES = 64
SHM_ALIGN = 64  # slot sizes and buffer offsets inside a slot are multiples of this
SHM_MAX_SLOTS = 64  # the server's per-peer queue bound: more frames in flight could not be answered anyway
SHM_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}$")  # shm_open name without its leading "/"


@dataclass(frozen=True)
class ShmOffer:
    """A client's shared-memory segment, offered in ``hello``."""

    name: str  # POSIX shm name without the leading "/"
    token: bytes  # SHM_TOKEN_BYTES, also stored in the segment's header
    slot_bytes: int
    slots: int

    @property
    def segment_bytes(self) -> int:
        """Bytes the segment must have at least: header plus all slots."""
        return SHM_HEADER_BYTES + self.slots * self.slot_bytes

    def slot_offset(self, slot: int) -> int:
        """Byte offset of ``slot`` from the start of the segment."""
        return SHM_HEADER_BYTES + slot * self.slot_bytes


@dataclass(frozen=True)
class ShmRef:
    """A frame whose buffers are in a slot of the client's segment instead of message parts.

    layout: ``(buffer name, offset in the slot, byte count)`` for the frame, then each layer;
    request_bytes: end of the last buffer; reply_bytes: size of the enhanced frame written back.
    """

    name: str
    slot: int
    layout: Tuple[Tuple[str, int, int], ...]
    request_bytes: int
    reply_bytes: int


def slot_layout(sizes: Sequence[Tuple[str, int]]) -> Tuple[Tuple[Tuple[str, int, int], ...], int]:
    """Place buffers in a slot: each starts at the next multiple of SHM_ALIGN after the previous one.

    sizes: ``(name, byte count)`` in wire order (frame, then layers). Returns the layout
    ``((name, offset, byte count), ...)`` and the end of the last buffer.
    """
    layout, end = [], 0
    for name, nbytes in sizes:
        offset = -(-end // SHM_ALIGN) * SHM_ALIGN
        layout.append((name, offset, nbytes))
        end = offset + nbytes
    return tuple(layout), end


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_shm_offer(raw: Any, max_message_bytes: int) -> ShmOffer:
    """Validate a ``hello``'s ``shm`` offer; raises ValueError saying why it cannot be used.

    Bounds: 1 to SHM_MAX_SLOTS slots; ``slot_bytes`` a multiple of SHM_ALIGN and at most the
    server's message size limit (a slot holds what one message could).
    """
    if not isinstance(raw, dict):
        raise ValueError(f"'shm' must be a map, got {type(raw).__name__}")
    missing = [k for k in ("name", "token", "slot_bytes", "slots") if k not in raw]
    if missing:
        raise ValueError(f"'shm' lacks {missing}")
    name, token, slot_bytes, slots = raw["name"], raw["token"], raw["slot_bytes"], raw["slots"]
    if not isinstance(name, str) or not SHM_NAME_PATTERN.match(name):
        raise ValueError(f"'shm.name' must be 1 to 200 characters of [A-Za-z0-9_.-] (no leading '/' or '.'), "
                         f"got {str(name)[:80]!r}")
    if not isinstance(token, str) or len(token) != 2 * SHM_TOKEN_BYTES \
            or any(c not in "0123456789abcdef" for c in token):
        raise ValueError(f"'shm.token' must be {2 * SHM_TOKEN_BYTES} lowercase hex digits, got {str(token)[:80]!r}")
    if not _is_int(slots) or not 1 <= slots <= SHM_MAX_SLOTS:
        raise ValueError(f"'shm.slots' must be an integer in [1, {SHM_MAX_SLOTS}], got {str(slots)[:40]}")
    if not _is_int(slot_bytes) or not SHM_ALIGN <= slot_bytes <= max_message_bytes or slot_bytes % SHM_ALIGN:
        raise ValueError(f"'shm.slot_bytes' must be a multiple of {SHM_ALIGN} in [{SHM_ALIGN}, {max_message_bytes}] "
                         f"(this server's message size limit), got {str(slot_bytes)[:40]}")
    return ShmOffer(name=name, token=bytes.fromhex(token), slot_bytes=slot_bytes, slots=slots)
