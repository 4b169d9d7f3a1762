"""Python client of the bridge: a DEALER socket, synchronous ``enhance`` and pipelined
``submit`` / ``results``. Every call is bounded by ``ClientConfig.timeout_s``.

With ``shared_memory=True`` (same-host servers), frames and results travel through slots of a
shared-memory segment the client creates and offers in ``hello``, and only headers cross the
socket (docs/PROTOCOL.md §9); when the server refuses, frames go inline as usual.

Replies are matched to requests by ``seq`` and by the client's random ``session`` nonce
(protocol version 2), so a late reply (to a request that already timed out, from before a server
restart, or to an earlier process that used the same routing id) is recognised and discarded. ZeroMQ reconnects by itself
after a server restart; with ``IMMEDIATE`` set, frames are never queued for a connection that
does not exist, so a restarted server does not receive a backlog of stale frames. Requests the
old server never answered end as timeouts.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import msgpack
import numpy as np
import zmq

from .config import ClientConfig
from .protocol import LAYERS, PIXEL_FORMATS, ErrorCode, pack_header, request_header
from .shm_client import ClientSegment, SlotUse, read_slot_result
from .shm_protocol import SHM_ALIGN, SHM_MAX_SLOTS, slot_layout

__all__ = ["BridgeClient", "BridgeError", "BridgeTimeout", "FrameDropped", "Reply", "infer_format"]


class BridgeError(RuntimeError):
    """The server answered with an error, or the reply could not be used."""

    def __init__(self, code: str, message: str, header: Optional[Dict[str, Any]] = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.header = header or {}


class BridgeTimeout(BridgeError):
    """No reply (or no way to send) within the timeout: the server is down, restarting or stuck."""

    def __init__(self, message: str):
        super().__init__("TIMEOUT", message)


class FrameDropped(BridgeError):
    """The server dropped the frame (``reason``: superseded, expired, reset, closed, shutdown)."""

    def __init__(self, reason: str, header: Dict[str, Any]):
        super().__init__("DROPPED", f"frame dropped by the server ({reason})", header)
        self.reason = reason


@dataclass(frozen=True)
class Reply:
    """One answer to a frame. ``kind``: "result", "dropped", "error" or "timeout" (local).

    image: for results, ``[H, W, C]`` in the reply's pixel format; a read-only view of the
    received buffer (copy it to modify it). Through shared memory: an array the caller owns, or
    with ``shm_result_views`` a read-only view of the slot, valid until :meth:`release`.
    """

    kind: str
    seq: int
    header: Dict[str, Any] = field(default_factory=dict)
    image: Optional[np.ndarray] = None
    round_trip_s: float = 0.0
    _release: Optional[Callable[[], None]] = field(default=None, repr=False, compare=False)

    def release(self) -> None:
        """Give a result view's shared-memory slot back (no-op otherwise; idempotent). The view
        must not be read afterwards: the slot takes a later frame."""
        if self._release is not None:
            self._release()

    @property
    def ok(self) -> bool:
        return self.kind == "result"

    @property
    def camera(self) -> Optional[str]:
        return self.header.get("camera")

    @property
    def frame_index(self) -> Optional[int]:
        return self.header.get("frame")

    @property
    def reason(self) -> Optional[str]:
        return self.header.get("reason")

    @property
    def code(self) -> Optional[str]:
        return self.header.get("code", "TIMEOUT" if self.kind == "timeout" else None)

    @property
    def passthrough(self) -> Optional[str]:
        """``"no_mask"`` when the frame came back unchanged because the model reads masks and none was sent."""
        return self.header.get("passthrough")

    @property
    def history_reset(self) -> bool:
        """True when the stream's history restarted before this frame (docs/PROTOCOL.md)."""
        return bool(self.header.get("history_reset", False))

    @property
    def message(self) -> Optional[str]:
        return self.header.get("message")

    def raise_for_kind(self) -> Reply:
        """Return self for a result; raise FrameDropped, BridgeError or BridgeTimeout otherwise."""
        if self.kind == "result":
            return self
        if self.kind == "dropped":
            raise FrameDropped(str(self.reason), self.header)
        if self.kind == "timeout":
            raise BridgeTimeout(f"no reply to frame seq {self.seq} within the timeout")
        raise BridgeError(str(self.code), str(self.message), self.header)


def infer_format(image: np.ndarray, format: Optional[str] = None) -> str:
    """The pixel format of ``image`` ``[H, W, C]``: given, or uint8 3 -> rgb8, uint8 4 -> rgba8,
    float16 3 -> rgb16f, float32 3 -> rgb32f."""
    if format is not None:
        if format not in PIXEL_FORMATS:
            raise ValueError(f"format must be one of {list(PIXEL_FORMATS)}, got {format!r}")
        return format
    channels = image.shape[-1] if image.ndim == 3 else None
    guess = {("uint8", 3): "rgb8", ("uint8", 4): "rgba8", ("float16", 3): "rgb16f",
             ("float32", 3): "rgb32f"}.get((image.dtype.name, channels))
    if guess is None:
        raise ValueError(f"cannot infer a pixel format for an array of shape {image.shape} and dtype {image.dtype}; "
                         f"pass format= one of {list(PIXEL_FORMATS)}")
    return guess


def _frame_array(image: Any, fmt_name: str) -> np.ndarray:
    fmt = PIXEL_FORMATS[fmt_name]
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != fmt.channels:
        raise ValueError(f"a {fmt_name} frame must have shape [H, W, {fmt.channels}], got {list(array.shape)}")
    if array.dtype != np.dtype(fmt.dtype):
        raise ValueError(f"a {fmt_name} frame must have dtype {np.dtype(fmt.dtype).name}, got {array.dtype}")
    return np.ascontiguousarray(array)


def _layer_array(name: str, value: Any, height: int, width: int) -> np.ndarray:
    spec = LAYERS[name]
    array = np.ascontiguousarray(np.asarray(value), dtype=np.dtype(spec.dtype))
    if array.size != height * width * spec.channels or array.shape[:2] != (height, width):
        channels = f", {spec.channels}" if spec.channels > 1 else ""
        raise ValueError(f"layer {name!r} must have shape [{height}, {width}{channels}], got {list(array.shape)}")
    return array


@dataclass
class _InFlight:
    sent: float  # time.monotonic()
    camera: str
    frame: int
    slot: Optional[SlotUse] = None


class BridgeClient:
    """A connection to a bridge server (see docs/PROTOCOL.md). Not thread-safe: one per thread.

    config: a ClientConfig or just the endpoint string.
    shared_memory: overrides ``config.shared_memory`` (frames through a shared-memory segment when
        the server is on this host and accepts it; see :attr:`shm`).
    """

    def __init__(self, config: Union[ClientConfig, str], context: Optional[zmq.Context] = None, *,
                 shared_memory: Optional[bool] = None):
        config = ClientConfig(config) if isinstance(config, str) else config
        if shared_memory is not None:
            config = dataclasses.replace(config, shared_memory=shared_memory)
        self.config = config
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._routing_id = self.config.routing_id or b"sh-" + os.urandom(12)
        self._seq = itertools.count(1)
        # Every request carries it and every reply echoes it: replies to another process that used
        # this routing id (a restarted simulator, or another live socket) are never taken as ours.
        self.session = int.from_bytes(os.urandom(8), "little")
        self._frame_counters: Dict[str, itertools.count] = {}
        self._pending: OrderedDict[int, _InFlight] = OrderedDict()
        self._ready: Dict[int, Reply] = {}  # replies to pending frames, not yet handed out
        self._order: Deque[int] = deque()  # arrival order of _ready
        self._control: Dict[int, Dict[str, Any]] = {}  # replies to control requests being waited on
        self.late_replies = 0
        self.foreign_replies = 0  # replies with another session: to an earlier process with this routing id
        # Shared memory: the segment frames go to, every segment not yet closed (a replaced one
        # lives until its slots are answered), and the slots of timed-out frames by their seq.
        self._segment: Optional[ClientSegment] = None
        self._segments: List[ClientSegment] = []
        self._quarantine: Dict[int, Tuple[ClientSegment, int]] = {}
        self._shm_state = "new" if self.config.shared_memory else "off"
        self._shm_reason: Optional[str] = None if self.config.shared_memory else "not requested"
        self._shm_counts = {"frames_shm": 0, "frames_inline": 0, "resent_inline": 0}
        self._socket = self._connect()

    def _connect(self) -> zmq.Socket:
        cfg = self.config
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, self._routing_id)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing for a server that is not connected
        sock.setsockopt(zmq.SNDHWM, cfg.sndhwm)
        sock.setsockopt(zmq.RCVHWM, cfg.rcvhwm)
        sock.setsockopt(zmq.SNDTIMEO, int(cfg.timeout_s * 1000))
        sock.setsockopt(zmq.RECONNECT_IVL, int(cfg.reconnect_ivl_s * 1000))
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, int(cfg.reconnect_ivl_max_s * 1000))
        interval_ms = int(cfg.heartbeat_interval_s * 1000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, interval_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * interval_ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, 3 * interval_ms)
        if cfg.endpoint.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        sock.connect(cfg.endpoint)
        return sock

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self, bye: bool = True) -> None:
        """Say bye (best effort, short timeout) and close the socket."""
        if self._socket.closed:
            return
        if bye:
            try:
                self._socket.send(pack_header(request_header("bye", session=self.session, seq=next(self._seq))), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        self._socket.close(linger=100 if bye else 0)
        for segment in self._segments:  # the server only detaches; unlinking is ours
            segment.close()
        self._segments, self._segment = [], None
        if self._own_context:
            self._context.term()

    def __enter__(self) -> BridgeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def in_flight(self) -> int:
        """Submitted frames whose reply has not been handed out yet."""
        return len(self._pending) + len(self._ready)

    @property
    def shm(self) -> Dict[str, Any]:
        """The shared-memory transport's status.

        ``state``: "off" (not requested), "new" (not negotiated yet: the first frame, or a larger
        one, offers a segment), "active", or "refused" (inline from now on; ``reason`` says why);
        ``name``, ``slots``, ``slot_bytes`` of the current segment; ``frames_shm``,
        ``frames_inline`` (frames sent inline although shared memory was requested) and
        ``resent_inline`` (frames resent inline because the server had lost the segment).
        """
        segment = self._segment
        return {"state": self._shm_state, "reason": self._shm_reason, "name": segment and segment.name,
                "slots": segment and segment.slots, "slot_bytes": segment and segment.slot_bytes, **self._shm_counts}

    # -- control requests ---------------------------------------------------------------------
    def hello(self, timeout_s: Optional[float] = None) -> Dict[str, Any]:
        """Introduce this client; returns the server's ``welcome`` header (limits, formats, ...).

        With ``shared_memory`` not negotiated yet and a slot size known (``shm_slot_bytes``, or a
        segment made for a frame), the segment is offered too: ``welcome["shm"]`` says whether
        the server uses it, and :attr:`shm` follows.
        """
        segment = self._segment_to_offer()
        fields = {"shm": segment.offer()} if segment is not None else {}
        header = self._control_request("hello", timeout_s, **fields)
        if segment is not None and segment is self._segment:
            answer = header.get("shm")
            if isinstance(answer, dict) and answer.get("accepted") is True:
                self._shm_state, self._shm_reason = "active", None
            else:
                reason = answer.get("reason") if isinstance(answer, dict) else None
                self._refuse_shm(str(reason or "the server does not support the shared-memory extension"))
        return header

    def heartbeat(self, timeout_s: Optional[float] = None) -> float:
        """Check the server is alive (and keep this client's streams from expiring); returns the
        round-trip time in seconds. Raises BridgeTimeout when there is no answer."""
        start = time.monotonic()
        self._control_request("heartbeat", timeout_s)
        return time.monotonic() - start

    def stats(self, timeout_s: Optional[float] = None) -> Dict[str, Any]:
        """The server's statistics (global, plus this client's streams under "client")."""
        return self._control_request("stats", timeout_s)["stats"]

    def reset(self, camera: str, timeout_s: Optional[float] = None) -> None:
        """Start a new history for ``camera`` (e.g. after a teleport or a new episode)."""
        self._control_request("reset", timeout_s, sim=self.config.sim, camera=camera)
        self._frame_counters.pop(camera, None)

    def bye(self, camera: Optional[str] = None, timeout_s: Optional[float] = None) -> None:
        """Release one camera's stream on the server, or all of this client's streams."""
        fields = {"sim": self.config.sim, "camera": camera} if camera is not None else {}
        self._control_request("bye", timeout_s, **fields)

    def _control_request(self, type_: str, timeout_s: Optional[float], **fields: Any) -> Dict[str, Any]:
        seq = next(self._seq)
        self._control[seq] = {}
        try:
            self._send([pack_header(request_header(type_, session=self.session, seq=seq, **fields))])
            self._wait_for(lambda: bool(self._control.get(seq)), timeout_s, f"{type_} reply")
            header = self._control[seq]
        finally:
            self._control.pop(seq, None)
        if header.get("type") == "error":
            raise BridgeError(str(header.get("code")), str(header.get("message")), header)
        return header

    # -- frames -------------------------------------------------------------------------------
    def enhance(self, image: Any, camera: str = "cam0", timeout_s: Optional[float] = None, **fields: Any) -> Reply:
        """Send one frame and wait for its enhanced version.

        image: ``[H, W, C]`` numpy array matching ``format`` (see :meth:`submit` for all fields).
        Returns the result Reply (``reply.image`` is ``[H, W, C]`` in the reply format).
        Raises FrameDropped, BridgeError (an error reply) or BridgeTimeout; never waits longer than
        ``timeout_s`` (default ``config.timeout_s``).
        """
        deadline = time.monotonic() + (timeout_s or self.config.timeout_s)
        seq = self.submit(image, camera=camera, **fields)
        try:
            self._wait_for(lambda: seq in self._ready, deadline - time.monotonic(), f"reply to frame seq {seq}")
        except BridgeTimeout:
            record = self._pending.pop(seq, None)
            if record is not None:
                self._abandon(seq, record)
            raise
        reply = self._ready.pop(seq)
        self._order.remove(seq)
        return reply.raise_for_kind()

    def submit(self, image: Any, camera: str = "cam0", *, frame_index: Optional[int] = None,
               timestamp_us: Optional[int] = None, format: Optional[str] = None, reply_format: Optional[str] = None,
               mask: Any = None, depth: Any = None, flow: Any = None, intrinsics: Optional[Sequence[float]] = None,
               pose: Optional[Sequence[float]] = None, reset: bool = False, max_age_ms: Optional[float] = None) -> int:
        """Send a frame without waiting; returns its ``seq`` (replies come from :meth:`results`).

        image: ``[H, W, C]`` array: uint8 for rgb8/rgba8/bgra8 (C = 3/4), float16 for rgb16f,
            float32 for rgb32f (values in [0, 1]). Sent zero-copy unless ``config.zero_copy`` is
            False: do not modify it until its reply arrives (through shared memory it is copied
            into the slot at once). With shared memory not negotiated yet, the first frame (or a
            larger one) first offers a segment: one ``hello`` round trip.
        frame_index: default: a per-camera counter from 0. timestamp_us: simulation time in µs.
        mask: ``[H, W]`` uint8; depth: ``[H, W]`` float32 metres; flow: ``[H, W, 2]`` float32 pixels.
        intrinsics: (fx, fy, cx, cy) pixels; pose: 16 floats, row-major 4x4 camera-to-world.
        reset: start a new history with this frame; max_age_ms: let the server drop it when stale.
        Raises ValueError for a bad array, BridgeError when ``max_in_flight`` frames are already
        waiting, BridgeTimeout when it cannot be sent within the timeout.
        """
        if len(self._pending) + len(self._ready) >= self.config.max_in_flight:
            raise BridgeError("BUSY", f"{self.config.max_in_flight} frames already in flight; collect results() first")
        fmt = infer_format(np.asarray(image), format)
        array = _frame_array(image, fmt)
        height, width = array.shape[:2]
        layers, buffers = [], [array]
        for name, value in (("mask", mask), ("depth", depth), ("flow", flow)):
            if value is not None:
                layers.append(name)
                buffers.append(_layer_array(name, value, height, width))
        reply_fmt = PIXEL_FORMATS.get(reply_format or fmt)
        layout, end = slot_layout([("frame", array.nbytes), *((n, b.nbytes) for n, b in zip(layers, buffers[1:]))])
        taken = self._take_slot(max(end, width * height * reply_fmt.bytes_per_pixel)) if reply_fmt else None
        if frame_index is None:
            frame_index = next(self._frame_counters.setdefault(camera, itertools.count()))
        options = {k: v for k, v in (("reply_format", reply_format), ("reset", reset or None),
                                     ("max_age_ms", max_age_ms)) if v is not None}
        seq = next(self._seq)
        header = request_header(
            "frame", session=self.session, seq=seq, sim=self.config.sim, camera=camera, frame=int(frame_index),
            timestamp_us=int(timestamp_us) if timestamp_us is not None else None, width=width, height=height,
            format=fmt, layers=layers or None, intrinsics=[float(x) for x in intrinsics] if intrinsics is not None else None,
            pose=[float(x) for x in np.asarray(pose, dtype=np.float64).reshape(-1)] if pose is not None else None,
            options=options or None,
        )
        use = None
        if taken is not None:
            segment, slot = taken
            segment.write(slot, layout, buffers)
            use = SlotUse(segment, slot, header, layout)
            try:
                self._send([pack_header({**header, "shm": {"name": segment.name, "slot": slot}})])
            except BridgeTimeout:
                segment.free(slot)
                raise
            self._shm_counts["frames_shm"] += 1
        else:
            self._send([pack_header(header), *(memoryview(b).cast("B") for b in buffers)])
            if self._shm_state != "off":
                self._shm_counts["frames_inline"] += 1
        self._pending[seq] = _InFlight(time.monotonic(), camera, int(frame_index), use)
        return seq

    def results(self, timeout_s: Optional[float] = None) -> Iterator[Reply]:
        """Yield replies to submitted frames as they arrive, in arrival order.

        Stops when nothing is in flight, or when ``timeout_s`` passes (default: ``config.timeout_s``;
        0 = only what has already arrived). A frame unanswered for ``config.timeout_s`` is yielded
        as a ``timeout`` Reply, so this never waits forever and in-flight frames never leak.
        """
        deadline = time.monotonic() + (self.config.timeout_s if timeout_s is None else timeout_s)
        while True:
            self._receive(0.0)
            self._expire_pending()
            while self._order:
                seq = self._order.popleft()
                yield self._ready.pop(seq)
            if not self._pending:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            oldest = next(iter(self._pending.values())).sent
            self._receive(min(remaining, max(0.0, oldest + self.config.timeout_s - time.monotonic()) + 1e-3))

    # -- shared memory ------------------------------------------------------------------------
    def _segment_to_offer(self, need: int = 0) -> Optional[ClientSegment]:
        """The segment to offer in ``hello`` (created if needed), or None."""
        if self._shm_state != "new":
            return None
        if self._segment is None:
            slot_bytes = max(need, self.config.shm_slot_bytes or 0)
            if slot_bytes == 0:
                return None  # sized by the first frame
            try:
                self._segment = ClientSegment(min(self.config.max_in_flight, SHM_MAX_SLOTS),
                                              -(-slot_bytes // SHM_ALIGN) * SHM_ALIGN)
            except OSError as exc:
                self._refuse_shm(f"could not create a shared-memory segment: {exc}")
                return None
            self._segments = [s for s in self._segments if not s.closed] + [self._segment]
        return self._segment

    def _take_slot(self, need: int) -> Optional[Tuple[ClientSegment, int]]:
        """A free slot of at least ``need`` bytes, negotiating a segment first if needed; None: send inline."""
        if self._shm_state in ("off", "refused"):
            return None
        if self._segment is not None and self._segment.slot_bytes < need:
            self._retire_segment()  # a larger frame: offer a larger segment
        if self._shm_state == "new":
            if self._segment_to_offer(need) is None:
                return None
            self.hello()
        if self._shm_state != "active" or self._segment is None:
            return None
        slot = self._segment.acquire()
        return (self._segment, slot) if slot is not None else None  # all slots busy (or held by views): inline

    def _retire_segment(self) -> None:
        """Stop using the current segment (it closes once its slots are answered); offer a new one next."""
        segment, self._segment = self._segment, None
        if self._shm_state == "active":
            self._shm_state = "new"
        if segment is not None:
            self._quarantine = {k: v for k, v in self._quarantine.items() if v[0] is not segment}
            segment.retire()

    def _refuse_shm(self, reason: str) -> None:
        self._retire_segment()
        self._shm_state, self._shm_reason = "refused", reason

    def _abandon(self, seq: int, record: _InFlight) -> None:
        """A frame timed out: a slow server may still write its slot, so keep the slot out of use."""
        if record.slot is not None:
            record.slot.segment.quarantine(record.slot.slot)
            self._quarantine[seq] = (record.slot.segment, record.slot.slot)

    def _resend_inline(self, use: SlotUse) -> bool:
        """The server no longer has the frame's segment (restart, expiry): resend it inline, same seq."""
        if use.segment is self._segment:
            self._retire_segment()
        try:
            parts = [pack_header(use.header), *use.segment.buffers(use.slot, use.layout)]
            self._socket.send_multipart(parts, zmq.NOBLOCK)
        except zmq.ZMQError:
            return False  # cannot resend now: report the error
        use.resent = True
        self._shm_counts["resent_inline"] += 1
        return True

    # -- internals ----------------------------------------------------------------------------
    def _send(self, parts: list) -> None:
        try:
            self._socket.send_multipart(parts, copy=not self.config.zero_copy)
        except zmq.Again:
            raise BridgeTimeout(f"could not send to {self.config.endpoint} within {self.config.timeout_s}s "
                                "(server not running, restarting, or not reading)") from None

    def _expire_pending(self) -> None:
        limit = time.monotonic() - self.config.timeout_s
        while self._pending:
            seq, record = next(iter(self._pending.items()))
            if record.sent > limit:
                return
            del self._pending[seq]
            self._abandon(seq, record)
            header = {"type": "timeout", "seq": seq, "sim": self.config.sim, "camera": record.camera,
                      "frame": record.frame}
            self._ready[seq] = Reply("timeout", seq, header, None, time.monotonic() - record.sent)
            self._order.append(seq)

    def _wait_for(self, done, timeout_s: Optional[float], what: str) -> None:
        deadline = time.monotonic() + (self.config.timeout_s if timeout_s is None else timeout_s)
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BridgeTimeout(f"no {what} from {self.config.endpoint} within the timeout")
            self._receive(remaining)

    def _receive(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for one message, then take everything already waiting."""
        if not self._socket.poll(int(max(timeout_s, 0.0) * 1000), zmq.POLLIN):
            return
        while True:
            try:
                parts = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._accept(parts)

    def _accept(self, parts: list) -> None:
        try:
            header = msgpack.unpackb(parts[0].bytes, raw=False)
            seq = header.get("seq") if isinstance(header, dict) else None
        except Exception:
            self.late_replies += 1  # unreadable: nothing to match it to
            return
        if header.get("session") != self.session and not _version_refusal(header):
            self.foreign_replies += 1  # to another process (or socket) with our routing id: not ours to match
            return
        if seq in self._control:
            self._control[seq] = header
            return
        record = self._pending.get(seq)
        if record is None:
            self.late_replies += 1  # answer to a request that already timed out
            held = self._quarantine.pop(seq, None)
            if held is not None:  # the server is done with that slot now
                held[0].free(held[1])
            return
        kind, use = header.get("type"), record.slot
        if use is not None and kind == "error" and header.get("code") == ErrorCode.SHM_NOT_ATTACHED \
                and not use.resent and self._resend_inline(use):
            return  # still pending, now inline
        del self._pending[seq]
        image, release = None, None
        if kind == "result":
            if use is not None and isinstance(header.get("shm"), dict):
                image, problem, release = read_slot_result(header, use, views=self.config.shm_result_views)
            else:
                image, problem = _result_image(header, parts)
            if problem:
                kind, header = "error", {**header, "type": "error", "code": "BAD_REPLY", "message": problem}
        elif kind not in ("dropped", "error"):
            kind, header = "error", {**header, "code": "BAD_REPLY", "message": f"unexpected reply type {kind!r}"}
        if use is not None and release is None:
            use.segment.free(use.slot)  # read (copied) or not written: the slot takes the next frame
        self._ready[seq] = Reply(kind, seq, header, image, time.monotonic() - record.sent, release)
        self._order.append(seq)


def _version_refusal(header: Dict[str, Any]) -> bool:
    """A server that speaks only version 1 refuses our version 2 requests without echoing the
    session (it does not know the field): such a refusal is matched by seq alone, so it surfaces."""
    return header.get("type") == "error" and header.get("code") == ErrorCode.UNSUPPORTED_VERSION \
        and "session" not in header


def _result_image(header: Dict[str, Any], parts: list) -> Tuple[Optional[np.ndarray], Optional[str]]:
    fmt = PIXEL_FORMATS.get(header.get("format"))
    width, height = header.get("width"), header.get("height")
    if fmt is None or not isinstance(width, int) or not isinstance(height, int) or len(parts) != 2:
        return None, f"result reply lacks a valid format/size or has {len(parts)} parts"
    expected = width * height * fmt.bytes_per_pixel
    if len(parts[1]) != expected:
        return None, f"result image is {len(parts[1])} bytes, expected {expected}"
    return np.frombuffer(parts[1].buffer, dtype=np.dtype(fmt.dtype)).reshape(height, width, fmt.channels), None
