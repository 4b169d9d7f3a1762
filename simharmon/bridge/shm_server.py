"""Server side of the shared-memory extension (docs/PROTOCOL.md §9): map the segments clients
offer, and lease their slots to frames.

A frame that names a slot holds a :class:`SlotLease` from receipt until its reply is ready (the
engine thread wrote the enhanced frame into the slot, or the frame was dropped or refused). A
segment is detached on ``bye``, when its client expires, when the client offers another one, and
at shutdown; it is unmapped once no lease holds it, so a frame in the engine never loses its
memory. The server never unlinks a segment: the client owns it.
"""

from __future__ import annotations

import logging
import mmap
import os
import threading
from typing import Any, Dict, Optional, Set

import numpy as np

from .protocol import ErrorCode, PixelFormat, ProtocolError, Request
from .shm_protocol import SHM_MAGIC, SHM_TOKEN_BYTES, ShmOffer, ShmRef, parse_shm_offer

try:  # CPython's shm_open, the one multiprocessing.shared_memory uses on POSIX systems
    from _posixshmem import shm_open as _shm_open
except ImportError:  # no POSIX shared memory (Windows)
    _shm_open = None

__all__ = ["SHM_SUPPORTED", "open_segment", "SlotLease", "ShmRegistry"]

log = logging.getLogger("simharmon.bridge")

SHM_SUPPORTED = _shm_open is not None


def open_segment(offer: ShmOffer) -> mmap.mmap:
    """Map a client's segment read-write without taking ownership of it.

    Not ``multiprocessing.shared_memory.SharedMemory(name)``: before Python 3.13 attaching with it
    registers the segment with this process's resource tracker, which unlinks it when the server
    exits, and it unlinks the segment when mapping fails; the server must never unlink a client's
    segment. Raises OSError (cannot open or map) or ValueError (too small, not a simharmon segment,
    other token).
    """
    if _shm_open is None:
        raise ValueError("this platform has no POSIX shared memory")
    fd = _shm_open("/" + offer.name, os.O_RDWR, 0o600)
    try:
        size = os.fstat(fd).st_size
        if size < offer.segment_bytes:  # mapping past the end would fault (SIGBUS) on first access
            raise ValueError(f"segment {offer.name!r} is {size} bytes, less than the {offer.segment_bytes} the offer "
                             f"needs (64-byte header + {offer.slots} slots x {offer.slot_bytes} bytes)")
        mapped = mmap.mmap(fd, offer.segment_bytes)  # keeps its own descriptor
    finally:
        os.close(fd)
    head = mapped[:len(SHM_MAGIC) + SHM_TOKEN_BYTES]
    if head[:len(SHM_MAGIC)] != SHM_MAGIC or head[len(SHM_MAGIC):] != offer.token:
        mapped.close()
        what = (f"does not start with the magic {SHM_MAGIC!r}" if head[:len(SHM_MAGIC)] != SHM_MAGIC
                else "holds another token than the offer")
        raise ValueError(f"segment {offer.name!r} {what}: it was not made for this client's offer")
    return mapped


class _Attachment:
    """One client's mapped segment; ``users`` leases hold it."""

    def __init__(self, offer: ShmOffer, mapped: mmap.mmap):
        self.offer = offer
        self.map: Optional[mmap.mmap] = mapped
        self.users = 0
        self.leased: Set[int] = set()
        self.detached = False

    def array(self, slot: int, offset: int, nbytes: int, dtype: str = "|u1", shape=None) -> np.ndarray:
        """A writable numpy view of ``nbytes`` at ``offset`` in ``slot`` (only while a lease holds it)."""
        dtype_ = np.dtype(dtype)
        view = np.frombuffer(self.map, dtype=dtype_, count=nbytes // dtype_.itemsize,
                             offset=self.offer.slot_offset(slot) + offset)
        return view.reshape(shape) if shape is not None else view

    def unmap(self) -> None:
        mapped, self.map = self.map, None
        if mapped is not None:
            try:
                mapped.close()
            except BufferError:  # a view is still referenced somewhere: the mapping goes with the last one
                pass


class SlotLease:
    """A frame's hold on its slot, from receipt until its reply is ready. ``release`` is idempotent."""

    def __init__(self, registry: ShmRegistry, attachment: _Attachment, ref: ShmRef):
        self._registry = registry
        self.attachment = attachment
        self.ref = ref
        self.released = False

    def buffers(self) -> Dict[str, np.ndarray]:
        """The request's buffers ("frame", then its layers) as uint8 views of the slot."""
        return {name: self.attachment.array(self.ref.slot, offset, nbytes) for name, offset, nbytes in self.ref.layout}

    def reply_array(self, fmt: PixelFormat, width: int, height: int) -> np.ndarray:
        """The slot's start as a ``[H, W, C]`` array of ``fmt``, where the reply is written."""
        return self.attachment.array(self.ref.slot, 0, width * height * fmt.bytes_per_pixel, fmt.dtype,
                                     (height, width, fmt.channels))

    def reply_field(self) -> Dict[str, Any]:
        """The result header's ``shm`` map: where the enhanced frame is."""
        return {"name": self.ref.name, "slot": self.ref.slot, "bytes": self.ref.reply_bytes}

    def release(self) -> None:
        """The server is done with the slot (call once its reply is ready or the frame was refused)."""
        self._registry.release(self)


class ShmRegistry:
    """Segments attached per client (routing id).

    refusal: why this server offers no shared memory at all (None: it does), e.g. a non-local bind.
    The I/O thread offers, leases and detaches; either thread releases leases.
    """

    def __init__(self, refusal: Optional[str], max_message_bytes: int, stats):
        self.refusal = refusal
        self._max_message_bytes = max_message_bytes
        self._stats = stats
        self._lock = threading.Lock()
        self._clients: Dict[bytes, _Attachment] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)

    def segment_name(self, identity: bytes) -> Optional[str]:
        """Name of the segment attached for ``identity``, if any."""
        with self._lock:
            attachment = self._clients.get(identity)
            return attachment.offer.name if attachment is not None else None

    def offer(self, identity: bytes, raw: Any) -> Dict[str, Any]:
        """Attach the segment a ``hello`` offers, replacing the client's previous one.

        Returns the ``welcome``'s ``shm`` map: ``accepted`` and, when refused, ``reason``.
        """
        self.detach(identity)
        offer: Optional[ShmOffer] = None
        try:
            if self.refusal is not None:
                raise ValueError(self.refusal)
            offer = parse_shm_offer(raw, self._max_message_bytes)
            mapped = open_segment(offer)
        except (OSError, ValueError) as exc:
            reason = str(exc)
            if isinstance(exc, OSError):
                reason = f"cannot open shared-memory segment {offer.name!r}: {exc.strerror or exc}"
            self._stats.add("shm_refused")
            log.debug("shared memory refused for %s: %s", identity.hex(), reason)
            return {"accepted": False, "reason": reason}
        with self._lock:
            self._clients[identity] = _Attachment(offer, mapped)
        self._stats.add("shm_attached")
        return {"accepted": True, "name": offer.name, "slots": offer.slots, "slot_bytes": offer.slot_bytes}

    def lease(self, identity: bytes, request: Request) -> SlotLease:
        """Check a frame's slot reference against the client's segment and hold the slot.

        Raises ProtocolError: SHM_NOT_ATTACHED (no segment of that name for this client),
        BAD_FIELD (slot out of range, or still held by an unanswered frame), TOO_LARGE (the
        frame's buffers or its reply do not fit in a slot).
        """
        ref, echo = request.shm, request.echo()
        with self._lock:
            attachment = self._clients.get(identity)
            if attachment is None or attachment.offer.name != ref.name:
                held = f" (its segment is {attachment.offer.name!r})" if attachment is not None else ""
                raise ProtocolError(ErrorCode.SHM_NOT_ATTACHED,
                                    f"shared-memory segment {ref.name!r} is not attached for this client{held}: offer "
                                    "it in 'hello' first (the server may have restarted, or released it after 'bye' "
                                    "or idleness), or send the frame inline", echo)
            offer = attachment.offer
            if ref.slot >= offer.slots:
                raise ProtocolError(ErrorCode.BAD_FIELD, f"field 'shm.slot' must be in [0, {offer.slots - 1}] "
                                                         f"(segment {offer.name!r} has {offer.slots} slots), got {ref.slot}",
                                    echo)
            if ref.request_bytes > offer.slot_bytes:
                layout = ", ".join(f"{name} {nbytes} at {offset}" for name, offset, nbytes in ref.layout)
                raise ProtocolError(ErrorCode.TOO_LARGE, f"the frame's buffers need {ref.request_bytes} bytes of the slot "
                                                         f"({layout}); slots are {offer.slot_bytes} bytes", echo)
            if ref.reply_bytes > offer.slot_bytes:
                raise ProtocolError(ErrorCode.TOO_LARGE, f"the reply ({request.width}x{request.height} "
                                                         f"{request.options.reply_format or request.format.name}) needs "
                                                         f"{ref.reply_bytes} bytes; slots are {offer.slot_bytes} bytes",
                                    echo)
            if ref.slot in attachment.leased:
                raise ProtocolError(ErrorCode.BAD_FIELD, f"field 'shm.slot': slot {ref.slot} still belongs to an earlier "
                                                         "frame whose reply has not been sent; reuse a slot only after "
                                                         "reading its reply", echo)
            attachment.users += 1
            attachment.leased.add(ref.slot)
        return SlotLease(self, attachment, ref)

    def release(self, lease: SlotLease) -> None:
        """End a lease; unmaps a detached segment once its last lease is gone."""
        with self._lock:
            if lease.released:
                return
            lease.released = True
            attachment = lease.attachment
            attachment.users -= 1
            attachment.leased.discard(lease.ref.slot)
            unmap = attachment.detached and attachment.users == 0
        if unmap:
            attachment.unmap()

    def detach(self, identity: bytes) -> bool:
        """Forget the client's segment (unmapped now, or when its last lease ends); True if it had one."""
        with self._lock:
            attachment = self._clients.pop(identity, None)
            if attachment is None:
                return False
            attachment.detached = True
            unmap = attachment.users == 0
        if unmap:
            attachment.unmap()
        self._stats.add("shm_detached")
        return True

    def detach_all(self) -> None:
        """Detach every client's segment (shutdown)."""
        with self._lock:
            identities = list(self._clients)
        for identity in identities:
            self.detach(identity)
