"""The bridge server: a ROUTER socket in front of a :class:`~simharmon.bridge.processor.FrameProcessor`
(the runtime's engine, or the identity stand-in).

Two threads. The I/O thread owns the sockets: it drains the ROUTER, validates every message
(:func:`~simharmon.bridge.protocol.decode_request`), answers control messages and bad input at
once, queues frames in the :class:`~simharmon.bridge.scheduler.Scheduler`, sends replies, and
expires idle streams. The engine thread takes batches, decodes pixels, runs the engine, encodes
replies and hands them back through a queue plus an inproc wake-up socket (ZeroMQ sockets are
not thread-safe, so only the I/O thread touches the ROUTER).

Same-host clients may offer a shared-memory segment in ``hello`` (docs/PROTOCOL.md §9); their
frames then arrive as slot references, are decoded straight from the slot, and the reply is
written back into it (:mod:`.shm_server`).

Nothing blocks on a peer: every send is non-blocking (a reply a peer cannot take is counted and
discarded), receives are polled with a timeout, and message sizes are capped both by ZeroMQ
(``MAXMSGSIZE``: a larger part drops the connection before it is buffered) and by the protocol.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import stat
import threading
import time
from typing import Any, Dict, Hashable, List, Optional, Tuple

import zmq

from ..io.pixels import LayerError, PixelError, decode_layer, decode_pixels, encode_pixels
from ..runtime.engine import StepResult
from .config import ServerConfig, is_loopback_endpoint
from .processor import FrameProcessor
from .protocol import (
    DROP_REASONS,
    LAYERS,
    OPTION_NAMES,
    PIXEL_FORMATS,
    SUPPORTED_VERSIONS,
    ErrorCode,
    ProtocolError,
    Request,
    decode_request,
    error_header,
    header_echo,
    reply_header,
)
from .scheduler import Pending, Scheduler
from .shm_server import SHM_SUPPORTED, ShmRegistry
from .stats import ServerStats

__all__ = ["BridgeServer"]

log = logging.getLogger("simharmon.bridge")

Message = List[Any]  # [identity, header, *buffers]


class BridgeServer:
    """Serve ``engine`` (a :class:`FrameProcessor`) on the endpoints of ``config`` (see docs/PROTOCOL.md).

    Sockets are bound in the constructor, so ``endpoints`` (with ``*`` ports resolved) is known
    before serving. Run :meth:`serve_forever` in the thread that should own the sockets, or
    :meth:`start` for a background thread; :meth:`stop` (any thread, or a signal handler) ends it.
    """

    def __init__(self, engine: FrameProcessor, config: Optional[ServerConfig] = None,
                 context: Optional[zmq.Context] = None):
        config = config if config is not None else ServerConfig()
        self.engine = engine
        self.config = config
        self.stats = ServerStats(config.latency_window)
        self.scheduler = Scheduler(config.max_streams, config.queue_depth)
        self._own_context = context is None
        self._context = context or zmq.Context()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._outbound: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self._clients: Dict[bytes, float] = {}  # routing id -> last message time
        self._thread: Optional[threading.Thread] = None
        self._logged_messages = 0
        self._engine_thread: Optional[threading.Thread] = None
        self._wake_endpoint = f"inproc://simharmon-wake-{id(self)}-{os.getpid()}"
        self.endpoints: List[str] = []
        self._ipc_files: Dict[str, int] = {}  # socket path -> inode, removed at a clean stop
        self._router = self._context.socket(zmq.ROUTER)
        try:
            self._configure_router()
            for endpoint in config.bind:
                self._router.bind(endpoint)
                self.endpoints.append(self._router.getsockopt_string(zmq.LAST_ENDPOINT))
                self._check_bound(endpoint, self.endpoints[-1])
            self._wake = self._context.socket(zmq.PULL)
            self._wake.bind(self._wake_endpoint)
        except Exception:
            self._router.close(linger=0)
            if self._own_context:
                self._context.term()
            raise
        self._shm = ShmRegistry(self._shm_refusal(), config.limits.max_message_bytes, self.stats)

    def _check_bound(self, asked: str, bound: str) -> None:
        """Refuse (and record, for removal at stop) what ZeroMQ actually bound.

        check_endpoint accepts host names it cannot resolve the way ZeroMQ does (an interface it
        cannot inspect): the resolved address decides. ipc socket files are recorded so a clean
        stop removes them (ZeroMQ leaves them behind).
        """
        if not self.config.allow_remote and not is_loopback_endpoint(bound):
            self._router.unbind(bound)
            raise ValueError(f"refusing to serve on {bound} (asked for {asked}): it is not a loopback address and "
                             "the bridge has no authentication; pass --allow-remote to bind it anyway")
        if bound.startswith("ipc://") and not bound.startswith("ipc://@"):  # "@": Linux abstract namespace, no file
            path = bound[len("ipc://"):]
            with contextlib.suppress(OSError):
                self._ipc_files[os.path.abspath(path)] = os.stat(path).st_ino

    def _shm_refusal(self) -> Optional[str]:
        """Why no client may use shared memory here (None: same-host clients may)."""
        if not self.config.shared_memory:
            return "shared memory is disabled on this server (ServerConfig.shared_memory, --no-shared-memory)"
        if not SHM_SUPPORTED:
            return "this platform has no POSIX shared memory"
        remote = [e for e in self.endpoints if not is_loopback_endpoint(e)]
        if remote:
            return (f"the server is bound to {remote[0]}, which is not a same-host endpoint; shared memory is offered "
                    "only when every bind is loopback tcp, ipc or inproc")
        return None

    def _configure_router(self) -> None:
        router, cfg = self._router, self.config
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a vanished peer raises instead of queueing silently
        router.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a client reconnecting with its routing id takes over
        router.setsockopt(zmq.SNDHWM, cfg.sndhwm)
        router.setsockopt(zmq.RCVHWM, cfg.rcvhwm)
        router.setsockopt(zmq.MAXMSGSIZE, cfg.limits.max_message_bytes)
        router.setsockopt(zmq.LINGER, 0)
        interval_ms = int(cfg.heartbeat_interval_s * 1000)
        router.setsockopt(zmq.HEARTBEAT_IVL, interval_ms)
        router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3 * interval_ms)
        router.setsockopt(zmq.HEARTBEAT_TTL, 3 * interval_ms)
        if any(e.startswith("tcp://[") for e in cfg.bind):
            router.setsockopt(zmq.IPV6, 1)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> BridgeServer:
        """Serve in a background thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        self._thread = threading.Thread(target=self.serve_forever, name="simharmon-bridge-io", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: Optional[float] = None) -> None:
        """Ask the server to shut down; with ``timeout_s``, also wait for a background thread."""
        self._stop.set()
        if timeout_s is not None and self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def stopped(self) -> bool:
        """True once the server has shut down and closed its sockets."""
        return self._done.is_set()

    def __enter__(self) -> BridgeServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(timeout_s=self.config.shutdown_timeout_s + 5.0)

    def serve_forever(self) -> None:
        """Run the I/O loop in this thread until :meth:`stop`; then shut down gracefully."""
        self._engine_thread = threading.Thread(target=self._engine_loop, name="simharmon-bridge-engine", daemon=True)
        self._engine_thread.start()
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._wake, zmq.POLLIN)
        cfg = self.config
        next_housekeeping = time.monotonic()
        next_stats_log = time.monotonic() + cfg.stats_interval_s if cfg.stats_interval_s else float("inf")
        log.info("serving %s on %s (protocol versions %s)", self.engine.name, ", ".join(self.endpoints),
                 list(SUPPORTED_VERSIONS))
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(int(cfg.poll_interval_s * 1000)))
                if self._wake in events:
                    self._drain_wake()
                if self._router in events:
                    self._drain_router()
                self._send_outbound()
                now = time.monotonic()
                if now >= next_housekeeping:
                    self._expire(now)
                    next_housekeeping = now + min(cfg.stream_idle_s / 4, 1.0)
                if now >= next_stats_log:
                    self._log_stats()
                    next_stats_log = now + cfg.stats_interval_s
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._stop.set()
        for pending, reason in self.scheduler.close():
            self._reply_dropped(pending, reason)
        engine_busy = False
        if self._engine_thread is not None:
            self._engine_thread.join(self.config.shutdown_timeout_s)
            engine_busy = self._engine_thread.is_alive()
            if engine_busy:
                log.warning("engine thread still busy after %.1fs; leaving it", self.config.shutdown_timeout_s)
        # Requests that arrived while shutting down still get an answer (frames: SHUTTING_DOWN).
        self._drain_router()
        self._send_outbound()
        self._shm.detach_all()  # a still-busy engine keeps its slot mapped until its lease ends
        # Replies sent just before close() were lost in about 1 shutdown in 3 despite LINGER
        # (measured: tests/bridge/test_resilience.py SIGINT test); give the I/O thread time to write them.
        time.sleep(min(self.config.shutdown_timeout_s, 0.5))
        self._log_stats(final=True)
        self._router.close(linger=int(self.config.shutdown_timeout_s * 1000))  # flush final replies (bounded)
        self._wake.close(linger=0)
        if self._own_context and not engine_busy:  # term() would wait for the busy thread's socket
            self._context.term()
        self._remove_ipc_files()
        self._done.set()

    def _remove_ipc_files(self) -> None:
        """Delete the ipc socket files this server created; one replaced since (same path, another
        inode: a newer server bound it) is left alone."""
        for path, inode in self._ipc_files.items():
            with contextlib.suppress(OSError):
                status = os.stat(path)
                if stat.S_ISSOCK(status.st_mode) and status.st_ino == inode:
                    os.unlink(path)

    # -- I/O thread: receiving ------------------------------------------------------------------
    def _drain_wake(self) -> None:
        while True:
            try:
                self._wake.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def _drain_router(self, budget: int = 256) -> None:
        """Handle up to ``budget`` waiting messages (then let replies and housekeeping run)."""
        for _ in range(budget):
            try:
                parts = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            identity = parts[0].bytes
            self.stats.add("messages_in")
            self.stats.add("bytes_in", sum(len(p) for p in parts[1:]))
            try:
                self._handle(identity, parts[1:], time.monotonic())
            except ProtocolError as exc:
                self._reply_error(identity, exc.code, exc.message, exc.echo)
            except Exception as exc:  # a bug must cost one reply, not the server
                log.exception("internal error handling a message")
                self._reply_error(identity, ErrorCode.INTERNAL_ERROR, f"internal server error: {type(exc).__name__}",
                                  header_echo(parts[1], self.config.limits.max_header_bytes) if len(parts) > 1 else {})

    def _handle(self, identity: bytes, parts: List[Any], now: float) -> None:
        request = decode_request(parts, self.config.limits)
        if request.type == "frame":
            return self._on_frame(identity, request, now)
        echo = request.echo()
        if identity in self._clients or (request.type == "hello" and len(self._clients) < 4 * self.config.max_streams):
            self._clients[identity] = now  # bounded: capped here, and entries expire with their streams
        if request.type == "hello":
            welcome = self._welcome(identity)
            if request.header.get("shm") is not None:
                welcome["shm"] = (self._shm.offer(identity, request.header["shm"]) if identity in self._clients else
                                  {"accepted": False, "reason": "the server is serving its maximum number of clients"})
            self._send([identity, reply_header("welcome", echo, **welcome)])
        elif request.type == "heartbeat":
            self._send([identity, reply_header("heartbeat", echo, server_time_us=time.time_ns() // 1000)])
        elif request.type == "stats":
            body = {**self.stats.snapshot(), **self._live_stats(), "client": self.scheduler.describe(identity)}
            self._send([identity, reply_header("stats", echo, stats=body)])
        elif request.type == "reset":
            self._send_drops(self.scheduler.reset(identity, request.stream))
            self._send([identity, reply_header("ok", echo, request="reset")])
        elif request.type == "bye":
            self._send_drops(self.scheduler.remove(identity, request.stream))
            if request.stream is None:
                self._clients.pop(identity, None)
                self._shm.detach(identity)
            self._send([identity, reply_header("ok", echo, request="bye")])

    def _on_frame(self, identity: bytes, request: Request, now: float) -> None:
        try:
            self.engine.check_size(request.width, request.height)
        except ValueError as exc:
            raise ProtocolError(ErrorCode.UNSUPPORTED_SIZE, str(exc), request.echo()) from None
        lease = self._shm.lease(identity, request) if request.shm is not None else None
        try:
            dropped = self.scheduler.offer(identity, request, now, lease=lease)
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        self._clients[identity] = now
        self.stats.add("frames_in")
        if lease is not None:
            self.stats.add("shm_frames_in")
        self._send_drops(dropped)

    def _welcome(self, identity: bytes) -> Dict[str, Any]:
        cfg, limits = self.config, self.config.limits
        return {
            "server": "simharmon", "protocol_versions": list(SUPPORTED_VERSIONS), "client_id": identity.hex(),
            "engine": self.engine.name, "stand_in": bool(self.engine.stand_in), "untrained": bool(self.engine.untrained),
            "formats": list(PIXEL_FORMATS), "layers": list(LAYERS), "options": list(OPTION_NAMES),
            "inputs": list(getattr(self.engine, "used_inputs", ())),
            "pixel_multiple": self.engine.pixel_multiple,
            "max_width": min(limits.max_width, self.engine.max_width),
            "max_height": min(limits.max_height, self.engine.max_height),
            "max_message_bytes": limits.max_message_bytes, "max_header_bytes": limits.max_header_bytes,
            "max_streams": cfg.max_streams, "queue_depth": cfg.queue_depth, "max_batch": cfg.max_batch,
            "heartbeat_interval_ms": int(cfg.heartbeat_interval_s * 1000),
            "stream_idle_timeout_ms": int(cfg.stream_idle_s * 1000),
        }

    def _live_stats(self) -> Dict[str, Any]:
        return {"streams": len(self.scheduler), "clients": len(self._clients), "queued": self.scheduler.queued(),
                "queued_max": self.scheduler.queued_high_water, "stream_queued_max": self.scheduler.stream_high_water,
                "queue_depth": self.config.queue_depth, "max_streams": self.config.max_streams,
                "engine": self.engine.name, "stand_in": bool(self.engine.stand_in), "shm_segments": len(self._shm)}

    def _expire(self, now: float) -> None:
        count, dropped = self.scheduler.expire(now, self.config.stream_idle_s, self._clients)
        if count:
            log.info("expired %d idle stream(s)", count)
            self.stats.add("streams_expired", count)
        self._send_drops(dropped)
        for identity, seen in list(self._clients.items()):
            if now - seen > self.config.stream_idle_s and not self.scheduler.describe(identity):
                del self._clients[identity]
                self._shm.detach(identity)

    def _log_stats(self, final: bool = False) -> None:
        snap = {**self.stats.snapshot(), **self._live_stats()}
        counts = snap["counts"]
        if not final and counts.get("messages_in", 0) == self._logged_messages:
            return  # nothing happened since the last line
        self._logged_messages = counts.get("messages_in", 0)
        log.info(
            "%sstats: %d streams, frames in %d out %d, dropped %s, errors %s, latency ms %s, engine ms %s, "
            "%.1f fps", "final " if final else "", snap["streams"], counts.get("frames_in", 0),
            counts.get("frames_out", 0), snap["dropped"] or 0, snap["errors"] or 0, snap["latency_ms"] or "-",
            snap["engine_ms"] or "-", snap["fps_out_recent"],
        )
        self.stats.mark_logged()

    # -- I/O thread: sending --------------------------------------------------------------------
    def _send(self, message: Message) -> None:
        """Send without blocking; a reply its peer cannot take now is counted and discarded."""
        try:
            self._router.send_multipart(message, zmq.NOBLOCK, copy=False)
            self.stats.add("messages_out")
        except zmq.Again:  # the peer's queue is at its high-water mark: it is not reading
            self.stats.add("undeliverable")
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:  # EHOSTUNREACH: the peer is gone
                log.warning("send failed: %s", exc)
            self.stats.add("undeliverable")

    def _send_outbound(self) -> None:
        while True:
            try:
                message = self._outbound.get_nowait()
            except queue.Empty:
                return
            self._send(message)

    def _reply_error(self, identity: bytes, code: str, message: str, echo: Optional[Dict[str, Any]] = None) -> None:
        self.stats.error(code)
        log.debug("error reply %s: %s", code, message)
        self._send([identity, error_header(code, message, echo)])

    def _reply_dropped(self, pending: Pending, reason: str, via_queue: bool = False) -> None:
        assert reason in DROP_REASONS
        if pending.lease is not None:
            pending.lease.release()
        self.stats.drop(reason)
        message = [pending.identity, reply_header("dropped", pending.request.echo(), reason=reason)]
        self._outbound.put(message) if via_queue else self._send(message)

    def _send_drops(self, dropped: List[Tuple[Pending, str]]) -> None:
        for pending, reason in dropped:
            self._reply_dropped(pending, reason)

    # -- engine thread --------------------------------------------------------------------------
    def _engine_loop(self) -> None:
        wake = self._context.socket(zmq.PUSH)
        wake.setsockopt(zmq.LINGER, 0)
        wake.setsockopt(zmq.SNDHWM, 1)  # one pending wake-up is enough
        wake.connect(self._wake_endpoint)
        try:
            while not self._stop.is_set():
                batch = self.scheduler.take_batch(self.config.max_batch, self.config.poll_interval_s)
                if batch is None:
                    continue
                for key in batch.removals:
                    self.engine.remove(key)
                for pending in batch.expired:
                    self._reply_dropped(pending, "expired", via_queue=True)
                if batch.items:
                    try:
                        self._run_batch(batch.items)
                    except Exception:  # keep serving; the items get an error reply
                        log.exception("engine batch failed")
                        for pending in batch.items:
                            self._queue_error(pending, ErrorCode.INTERNAL_ERROR, "internal error while enhancing")
                try:
                    wake.send(b"", zmq.NOBLOCK)
                except zmq.Again:  # a wake-up is already pending
                    pass
        finally:
            wake.close(linger=0)

    def _queue_error(self, pending: Pending, code: str, message: str) -> None:
        if pending.lease is not None:
            pending.lease.release()
        self.stats.error(code)
        self._outbound.put([pending.identity, error_header(code, message, pending.request.echo())])

    def _run_batch(self, items: List[Pending]) -> None:
        device = self.engine.device
        frames: Dict[Hashable, Any] = {}
        inputs: Dict[Hashable, Dict[str, Any]] = {}
        alphas: Dict[Hashable, Any] = {}
        ready: List[Pending] = []
        started = time.monotonic()
        for pending in items:
            req, lease = pending.request, pending.lease
            buffers = lease.buffers() if lease is not None else req.buffers  # slot views, or the received parts
            try:
                decoded = decode_pixels(buffers["frame"], req.format, req.width, req.height, device)
                layers = {name: decode_layer(buffers[name], LAYERS[name], req.width, req.height, device)
                          for name in req.layers}
            except (PixelError, LayerError) as exc:
                self._queue_error(pending, ErrorCode.BAD_LAYER if isinstance(exc, LayerError) else ErrorCode.BAD_PIXELS,
                                  str(exc))
                continue
            alpha = decoded.alpha
            if lease is not None:
                # The reply overwrites the slot and the client reuses it, while the engine may keep
                # inputs as history: own what still views the slot (decode_pixels' frame never does).
                alpha = alpha.clone() if alpha is not None else None
                layers = {name: t.clone() if t.device.type == "cpu" else t for name, t in layers.items()}
            frames[pending.engine_key] = decoded.frame
            alphas[pending.engine_key] = alpha
            inputs[pending.engine_key] = {**layers, "intrinsics": req.intrinsics, "camera_to_world": req.pose}
            ready.append(pending)
        if not ready:
            return
        results = self._step(frames, inputs)
        engine_ms = (time.monotonic() - started) * 1000.0
        latencies = []
        for pending in ready:
            key = pending.engine_key
            result = results[key]
            if result.error is not None:
                self._queue_error(pending, ErrorCode.ENGINE_ERROR, f"the engine refused this frame: {result.error}")
                continue
            req, lease = pending.request, pending.lease
            reply_format = PIXEL_FORMATS[req.options.reply_format or req.format.name]
            if lease is not None:  # straight into the slot; the header says where
                encode_pixels(result.output, reply_format, alphas[key],
                              out=lease.reply_array(reply_format, req.width, req.height))
                parts, shm = [], lease.reply_field()
            else:
                parts, shm = [encode_pixels(result.output, reply_format, alphas[key])], None
            total_ms = (time.monotonic() - pending.received) * 1000.0
            latencies.append(total_ms)
            flags = {}
            if result.passthrough is not None:
                flags["passthrough"] = result.passthrough
                self.stats.add("frames_passthrough")
            if result.history_reset:
                flags["history_reset"] = True
            header = reply_header(
                "result", req.echo(), width=req.width, height=req.height, format=reply_format.name,
                batch=len(ready), queue_us=int((started - pending.received) * 1e6), engine_us=int(engine_ms * 1000),
                server_us=int(total_ms * 1000), shm=shm, **flags,
            )
            if lease is not None:
                lease.release()  # written: the slot is the client's again once it reads this reply
                self.stats.add("shm_frames_out")
            self._outbound.put([pending.identity, header, *parts])
            self.stats.add("bytes_out", sum(p.nbytes for p in parts))
        self.stats.batch(len(latencies), engine_ms, latencies)

    def _step(self, frames: Dict[Hashable, Any], inputs: Dict[Hashable, Dict[str, Any]]) -> Dict[Hashable, StepResult]:
        """Run the processor; per-stream refusals come back as results. An unexpected failure fails the
        batch, and each of its streams restarts its history (it may be half-updated)."""
        try:
            return self.engine.step_many(frames, inputs)
        except Exception as exc:
            log.exception("engine failure")
            for key in frames:
                self.scheduler.retire(key)
            message = f"engine failure ({type(exc).__name__}: {exc}); this stream's history restarts"
            return {key: StepResult(error=message) for key in frames}
