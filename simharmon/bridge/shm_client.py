"""Client side of the shared-memory extension (docs/PROTOCOL.md §9): the segment a client creates,
offers to the server, and whose slots carry frames and their replies.

Slot rules that keep a pipelined client safe: a slot is taken for one frame and given back only
when that frame's reply has been read (or, with result views, released by the caller). The slot of
a frame that timed out is quarantined until its late reply arrives, because a server that is only
slow may still write its result there. The segment is unlinked on :meth:`ClientSegment.close`,
when it is garbage-collected, and at interpreter exit; if the process is killed, Python's
resource tracker unlinks it.
"""

from __future__ import annotations

import os
import secrets
import weakref
from collections import deque
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from .protocol import PIXEL_FORMATS, PixelFormat
from .shm_protocol import SHM_HEADER_BYTES, SHM_MAGIC, SHM_TOKEN_BYTES

__all__ = ["ClientSegment", "SlotUse", "read_slot_result"]

Layout = Tuple[Tuple[str, int, int], ...]


class _SharedMemory(shared_memory.SharedMemory):
    """SharedMemory whose close() tolerates result views that still point into the mapping."""

    def close(self) -> None:
        try:
            super().close()
        except BufferError:
            # Views handed to the caller still export the mapping; it is unmapped when the last
            # one is gone. The descriptor is not needed for that, so release it now.
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _destroy(shm: _SharedMemory) -> None:
    """Unlink (the name goes now; the memory when the last mapping does) and unmap."""
    try:
        shm.unlink()
    except FileNotFoundError:  # already gone (e.g. removed by hand)
        pass
    shm.close()


class ClientSegment:
    """A shared-memory segment of ``slots`` slots of ``slot_bytes`` bytes, owned by this process.

    Raises OSError when the segment cannot be created (e.g. /dev/shm is full).
    """

    def __init__(self, slots: int, slot_bytes: int):
        self.slots = slots
        self.slot_bytes = slot_bytes
        self.token = secrets.token_bytes(SHM_TOKEN_BYTES)
        self._shm = _SharedMemory(name=f"shb_{secrets.token_hex(8)}", create=True,
                                  size=SHM_HEADER_BYTES + slots * slot_bytes)
        self._shm.buf[:len(SHM_MAGIC)] = SHM_MAGIC
        self._shm.buf[len(SHM_MAGIC):len(SHM_MAGIC) + SHM_TOKEN_BYTES] = self.token
        self.name = self._shm.name.lstrip("/")
        self._free: Deque[int] = deque(range(slots))
        self._quarantined: Set[int] = set()
        self.retired = False  # replaced or refused: no new frames; closed once no slot is busy
        self._finalizer = weakref.finalize(self, _destroy, self._shm)

    def offer(self) -> Dict[str, Any]:
        """The ``hello`` request's ``shm`` map."""
        return {"name": self.name, "token": self.token.hex(), "slot_bytes": self.slot_bytes, "slots": self.slots}

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    @property
    def busy(self) -> int:
        """Slots holding a frame in flight or a result not yet released (quarantined ones excluded)."""
        return self.slots - len(self._free) - len(self._quarantined)

    def acquire(self) -> Optional[int]:
        """Take a free slot (None when all are in use)."""
        return self._free.popleft() if self._free and not self.retired and not self.closed else None

    def free(self, slot: int) -> None:
        """Give a slot back (its frame was answered, or its result released)."""
        self._quarantined.discard(slot)
        if slot not in self._free:
            self._free.append(slot)
        self._close_if_idle()

    def retire(self) -> None:
        """Take no new frames; close as soon as no slot holds a frame in flight or a result."""
        self.retired = True
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        # Quarantined slots do not count: whatever a slow server writes there no longer matters.
        if self.retired and self.busy == 0:
            self.close()

    def quarantine(self, slot: int) -> None:
        """Keep a timed-out frame's slot out of use until its late reply frees it."""
        self._quarantined.add(slot)

    def _bytes(self, slot: int, offset: int, nbytes: int) -> np.ndarray:
        start = SHM_HEADER_BYTES + slot * self.slot_bytes + offset
        return np.frombuffer(self._shm.buf, dtype=np.uint8, count=nbytes, offset=start)

    def write(self, slot: int, layout: Layout, arrays: Sequence[np.ndarray]) -> None:
        """Copy the frame and its layers into ``slot`` at the offsets of ``layout``."""
        for (_, offset, nbytes), array in zip(layout, arrays):
            np.copyto(self._bytes(slot, offset, nbytes), array.reshape(-1).view(np.uint8))

    def buffers(self, slot: int, layout: Layout) -> List[bytes]:
        """Copies of the buffers a frame put in ``slot`` (to resend it inline)."""
        return [self._bytes(slot, offset, nbytes).tobytes() for _, offset, nbytes in layout]

    def read(self, slot: int, fmt: PixelFormat, width: int, height: int, copy: bool = True) -> np.ndarray:
        """The reply in ``slot`` as ``[H, W, C]`` of ``fmt``: a new array, or a read-only view of the slot."""
        view = self._bytes(slot, 0, width * height * fmt.bytes_per_pixel).view(np.dtype(fmt.dtype))
        view = view.reshape(height, width, fmt.channels)
        if copy:
            return view.copy()
        view.flags.writeable = False
        return view

    def close(self) -> None:
        """Unlink and unmap the segment (idempotent); result views keep their memory until dropped."""
        self._finalizer()


@dataclass
class SlotUse:
    """A frame sent through a shared-memory slot."""

    segment: ClientSegment
    slot: int
    header: Dict[str, Any]  # its request header without "shm", to resend it inline
    layout: Layout
    resent: bool = False


def _releaser(segment: ClientSegment, slot: int) -> Callable[[], None]:
    done: List[bool] = []

    def release() -> None:
        if not done:
            done.append(True)
            segment.free(slot)

    return release


def read_slot_result(header: Dict[str, Any], use: SlotUse, views: bool = False
                     ) -> Tuple[Optional[np.ndarray], Optional[str], Optional[Callable[[], None]]]:
    """The image a ``result`` header's ``shm`` map points at: ``(image, None, release)``, or
    ``(None, problem, None)`` when the reply does not match the slot the frame used.

    views: return a read-only view of the slot and the function that gives the slot back, instead
    of a copy (``release`` is then None: the caller frees the slot at once).
    """
    ref, fmt = header["shm"], PIXEL_FORMATS.get(header.get("format"))
    width, height = header.get("width"), header.get("height")
    if fmt is None or not isinstance(width, int) or not isinstance(height, int) or width < 1 or height < 1:
        return None, "result reply lacks a valid format/size", None
    expected = width * height * fmt.bytes_per_pixel
    if (ref.get("name"), ref.get("slot"), ref.get("bytes")) != (use.segment.name, use.slot, expected) \
            or expected > use.segment.slot_bytes:
        return None, (f"result names shm {ref!r}; the frame used slot {use.slot} of {use.segment.name!r} and "
                      f"{expected} bytes were expected"), None
    if views:
        return use.segment.read(use.slot, fmt, width, height, copy=False), None, _releaser(use.segment, use.slot)
    return use.segment.read(use.slot, fmt, width, height), None, None
