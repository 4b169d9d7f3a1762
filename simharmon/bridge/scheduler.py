"""Per-stream state and bounded queues: latest frame wins, batches across streams.

The I/O thread offers frames and control events; the engine thread takes batches. Everything
here is bounded: at most ``max_streams`` streams, each with at most ``queue_depth`` waiting
frames, so at most ``max_streams * queue_depth`` frames are ever held. Frames pushed out of a
full queue, or cleared by a reset or a closed stream, are returned to the caller, which answers
them with a ``dropped`` reply; nothing is silently lost.

Each stream's history in the engine lives under an ``engine_key`` that is never reused: a reset
or a removal retires the key (the engine thread removes it before its next batch) and a new key
starts a fresh history. So control events need no ordering with in-flight batches.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, List, Optional, Tuple

from .protocol import ErrorCode, ProtocolError, Request, StreamId

__all__ = ["Pending", "StreamState", "Batch", "Scheduler"]

StreamKey = Tuple[bytes, str, str]  # (client routing id, sim, camera)


@dataclass
class Pending:
    """A received frame waiting for the engine."""

    identity: bytes
    request: Request
    received: float  # time.monotonic()
    engine_key: str = ""  # set when the engine thread takes it
    lease: Any = None  # shm_server.SlotLease when the frame's buffers are in a shared-memory slot


@dataclass
class StreamState:
    """One (client, sim, camera) stream."""

    key: StreamKey
    engine_key: str
    width: int
    height: int
    last_frame: float
    queue: Deque[Pending] = field(default_factory=deque)
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0

    def describe(self) -> Dict[str, object]:
        """A msgpack-friendly summary (the ``stats`` reply's per-stream entries)."""
        return {"sim": self.key[1], "camera": self.key[2], "width": self.width, "height": self.height,
                "frames_in": self.frames_in, "frames_out": self.frames_out, "dropped": self.dropped,
                "queued": len(self.queue)}


@dataclass
class Batch:
    """What the engine thread does next: retire keys, answer expired frames, run ``items``."""

    removals: List[str]
    items: List[Pending]
    expired: List[Pending]


Dropped = List[Tuple[Pending, str]]


class Scheduler:
    """Thread-safe stream table with bounded per-stream queues (see module docstring)."""

    def __init__(self, max_streams: int, queue_depth: int):
        self.max_streams = max_streams
        self.queue_depth = queue_depth
        self._streams: Dict[StreamKey, StreamState] = {}
        self._retired: List[str] = []
        self._serial = itertools.count(1)
        self._cond = threading.Condition()
        self._closed = False
        self.queued_high_water = 0  # most frames ever waiting at once, over all streams
        self.stream_high_water = 0  # most frames ever waiting in one stream

    # -- I/O thread ---------------------------------------------------------------------------
    def _new_key(self, stream: StreamId) -> str:
        return f"{stream.sim}/{stream.camera}#{next(self._serial)}"

    def offer(self, identity: bytes, request: Request, now: float, lease: Any = None) -> Dropped:
        """Queue a frame for its stream; returns frames pushed out (with the drop reason).

        lease: the frame's shared-memory slot lease, carried in its :class:`Pending`.

        Raises ProtocolError: TOO_MANY_STREAMS for a new stream over the bound,
        STREAM_SIZE_CHANGED when the size differs from the stream's without ``options.reset``,
        SHUTTING_DOWN after :meth:`close`.
        """
        stream_id = request.stream
        key = (identity, stream_id.sim, stream_id.camera)
        dropped: Dropped = []
        with self._cond:
            if self._closed:
                raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the server is shutting down", request.echo())
            state = self._streams.get(key)
            if state is None:
                if len(self._streams) >= self.max_streams:
                    raise ProtocolError(ErrorCode.TOO_MANY_STREAMS,
                                        f"the server holds its maximum of {self.max_streams} streams; send 'bye' for "
                                        "streams you no longer use, or wait for idle ones to expire", request.echo())
                state = StreamState(key, self._new_key(stream_id), request.width, request.height, now)
                self._streams[key] = state
            elif request.options.reset:
                dropped += self._restart(state, "reset")
                state.width, state.height = request.width, request.height
            elif (request.width, request.height) != (state.width, state.height):
                raise ProtocolError(ErrorCode.STREAM_SIZE_CHANGED,
                                    f"stream {stream_id.sim}/{stream_id.camera} started at {state.width}x{state.height}, "
                                    f"this frame is {request.width}x{request.height}; send it with options.reset = true "
                                    "to start a new history at the new size", request.echo())
            state.last_frame = now
            state.frames_in += 1
            if len(state.queue) >= self.queue_depth:
                dropped.append((state.queue.popleft(), "superseded"))
                state.dropped += 1
            state.queue.append(Pending(identity, request, now, lease=lease))
            self.stream_high_water = max(self.stream_high_water, len(state.queue))
            self.queued_high_water = max(self.queued_high_water, sum(len(s.queue) for s in self._streams.values()))
            self._cond.notify()
        return dropped

    def _restart(self, state: StreamState, reason: str) -> Dropped:
        """Drop the stream's queue and give it a fresh history (caller holds the lock)."""
        dropped = [(p, reason) for p in state.queue]
        state.dropped += len(dropped)
        state.queue.clear()
        self._retired.append(state.engine_key)
        state.engine_key = self._new_key(StreamId(state.key[1], state.key[2]))
        return dropped

    def reset(self, identity: bytes, stream: StreamId) -> Dropped:
        """Forget a stream's history (its waiting frames are dropped with reason "reset")."""
        with self._cond:
            state = self._streams.get((identity, stream.sim, stream.camera))
            return self._restart(state, "reset") if state is not None else []

    def remove(self, identity: bytes, stream: Optional[StreamId] = None, reason: str = "closed") -> Dropped:
        """Remove one stream of a client, or all of them when ``stream`` is None."""
        with self._cond:
            keys = [k for k in self._streams if k[0] == identity
                    and (stream is None or (k[1], k[2]) == (stream.sim, stream.camera))]
            return self._remove_keys(keys, reason)

    def _remove_keys(self, keys: List[StreamKey], reason: str) -> Dropped:
        dropped: Dropped = []
        for key in keys:
            state = self._streams.pop(key)
            dropped += [(p, reason) for p in state.queue]
            self._retired.append(state.engine_key)
        return dropped

    def expire(self, now: float, idle_s: float, client_seen: Dict[bytes, float]) -> Tuple[int, Dropped]:
        """Remove streams idle for ``idle_s`` (no frame, and their client silent as long)."""
        with self._cond:
            stale = [k for k, s in self._streams.items()
                     if now - max(s.last_frame, client_seen.get(k[0], 0.0)) > idle_s]
            return len(stale), self._remove_keys(stale, "closed")

    def close(self) -> Dropped:
        """Refuse new frames; return every waiting frame (reason "shutdown"); wake the engine."""
        with self._cond:
            self._closed = True
            dropped = [(p, "shutdown") for s in self._streams.values() for p in s.queue]
            for state in self._streams.values():
                state.queue.clear()
            self._cond.notify_all()
            return dropped

    # -- engine thread ------------------------------------------------------------------------
    def take_batch(self, max_batch: int, timeout_s: float) -> Optional[Batch]:
        """Wait up to ``timeout_s`` for work; return the head frame of up to ``max_batch`` streams
        (longest-waiting first), frames past their ``max_age_ms`` separately, and retired keys.
        Returns None on timeout with nothing to do, or once closed."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._closed and not self._retired and not any(s.queue for s in self._streams.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            if self._closed:
                return None
            removals, self._retired = self._retired, []
            now = time.monotonic()
            expired: List[Pending] = []
            ready = sorted((s for s in self._streams.values() if s.queue), key=lambda s: s.queue[0].received)
            items: List[Pending] = []
            for state in ready:
                while state.queue:
                    head = state.queue[0]
                    max_age = head.request.options.max_age_ms
                    if max_age is not None and (now - head.received) * 1000.0 > max_age:
                        expired.append(state.queue.popleft())
                        state.dropped += 1
                        continue
                    if len(items) < max_batch:
                        head.engine_key = state.engine_key
                        items.append(state.queue.popleft())
                        state.frames_out += 1
                    break
            return Batch(removals, items, expired)

    def retire(self, engine_key: str) -> None:
        """Give the stream owning ``engine_key`` a fresh history (after an engine failure left
        it in doubt); its waiting frames stay queued and will start the new history."""
        with self._cond:
            for state in self._streams.values():
                if state.engine_key == engine_key:
                    self._retired.append(state.engine_key)
                    state.engine_key = self._new_key(StreamId(state.key[1], state.key[2]))
                    return

    # -- inspection ---------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._cond:
            return len(self._streams)

    def queued(self) -> int:
        """Frames waiting over all streams."""
        with self._cond:
            return sum(len(s.queue) for s in self._streams.values())

    def describe(self, identity: Optional[bytes] = None) -> List[Dict[str, object]]:
        """Per-stream summaries (of one client when ``identity`` is given)."""
        with self._cond:
            return [s.describe() for k, s in self._streams.items() if identity is None or k[0] == identity]
