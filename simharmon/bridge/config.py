"""Frozen, validated settings of the bridge server and client."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

from .protocol import MAX_NAME_BYTES, Limits

__all__ = ["ServerConfig", "ClientConfig", "check_endpoint", "is_loopback_endpoint"]

_TCP = re.compile(r"^tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|\*|[A-Za-z0-9._-]+):(?P<port>\*|\d{1,5})$")
_IFF_LOOPBACK = 0x8  # linux/if.h


def _positive(name: str, value, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ValueError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value!r}")


def _loopback_interface(name: str) -> bool:
    """Whether ``name`` is a loopback network interface (Linux: IFF_LOOPBACK in /sys/class/net/NAME/flags;
    elsewhere interface names cannot be inspected and count as not loopback)."""
    try:
        return bool(int(Path("/sys/class/net", name, "flags").read_text(), 16) & _IFF_LOOPBACK)
    except (OSError, ValueError):
        return False


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ipc:// and inproc:// endpoints and tcp:// on a loopback host: ``localhost``, an
    address in 127.0.0.0/8 in any form ZeroMQ's resolver reads (``127.0.0.1``, ``127.1``,
    ``0x7f.1``), ``::1``, an IPv4-mapped ``::ffff:127.x.y.z``, or a loopback interface name
    (``lo``, Linux only). Other host names are not resolved and count as not loopback."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    match = _TCP.match(endpoint)
    if not match:
        return False
    host = match["host"].strip("[]")
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:  # BSD forms (127.1, 0x7f.1), which getaddrinfo, and so ZeroMQ, accept too
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:  # an interface or host name
            return _loopback_interface(host)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def check_endpoint(endpoint: str, allow_remote: bool = False) -> str:
    """Validate a ZeroMQ endpoint to bind; non-loopback tcp needs ``allow_remote``."""
    if not isinstance(endpoint, str) or not endpoint:
        raise ValueError(f"endpoint must be a non-empty string, got {endpoint!r}")
    if endpoint.startswith(("ipc://", "inproc://")):
        if len(endpoint.split("://", 1)[1]) == 0:
            raise ValueError(f"endpoint {endpoint!r} has no path")
        return endpoint
    match = _TCP.match(endpoint)
    if match is None:
        if allow_remote and endpoint.startswith("tcp://"):
            return endpoint  # let ZeroMQ parse interface forms such as tcp://eth0:5555
        raise ValueError(f"endpoint {endpoint!r} is not tcp://HOST:PORT (PORT may be *), ipc://PATH or inproc://NAME")
    if match["port"] != "*" and not 0 < int(match["port"]) < 65536:
        raise ValueError(f"endpoint {endpoint!r}: port must be 1..65535 or *")
    if not allow_remote and not is_loopback_endpoint(endpoint):
        raise ValueError(f"refusing to bind {endpoint!r}: it is not a loopback address (127.0.0.0/8 such as 127.0.0.1 "
                         "or 127.1, ::1, ::ffff:127.0.0.1, localhost, or a loopback interface such as lo) and the "
                         "bridge has no authentication; pass --allow-remote to bind it anyway")
    return endpoint


@dataclass(frozen=True)
class ServerConfig:
    """Settings of :class:`simharmon.bridge.server.BridgeServer`.

    bind: endpoints to bind; tcp ones must be loopback unless ``allow_remote``.
    max_streams: live streams over all clients (a stream = client + sim + camera).
    queue_depth: frames waiting per stream; a newer frame pushes out the oldest ("superseded").
    max_batch: streams per engine call.
    stream_idle_s: a stream with no frame for this long (and its client silent as long) expires.
    heartbeat_interval_s: advertised to clients; also ZeroMQ's transport heartbeat interval.
    stats_interval_s: log a stats line this often (0: never).
    rcvhwm, sndhwm: ZeroMQ high-water marks in messages, per peer (bounds queued memory).
    poll_interval_s: longest the I/O loop sleeps; bounds shutdown and expiry latency.
    shutdown_timeout_s: how long shutdown waits for the engine's current batch.
    latency_window: recent replies kept for latency percentiles.
    shared_memory: let same-host clients offer a shared-memory segment (docs/PROTOCOL.md §9); used
        only when every bind is loopback tcp, ipc or inproc.
    """

    bind: Tuple[str, ...] = ("tcp://127.0.0.1:5555",)
    allow_remote: bool = False
    limits: Limits = field(default_factory=Limits)
    max_streams: int = 64
    queue_depth: int = 1
    max_batch: int = 16
    stream_idle_s: float = 30.0
    heartbeat_interval_s: float = 1.0
    stats_interval_s: float = 10.0
    rcvhwm: int = 64
    sndhwm: int = 64
    poll_interval_s: float = 0.05
    shutdown_timeout_s: float = 5.0
    latency_window: int = 2048
    shared_memory: bool = True

    def __post_init__(self) -> None:
        bind = (self.bind,) if isinstance(self.bind, str) else tuple(self.bind)
        if not bind:
            raise ValueError("bind needs at least one endpoint")
        object.__setattr__(self, "bind", tuple(check_endpoint(e, self.allow_remote) for e in bind))
        if not isinstance(self.limits, Limits):
            raise ValueError(f"limits must be a Limits, got {type(self.limits).__name__}")
        for name in ("max_streams", "queue_depth", "max_batch", "rcvhwm", "sndhwm", "latency_window"):
            _positive(name, getattr(self, name), integer=True)
        for name in ("stream_idle_s", "heartbeat_interval_s", "poll_interval_s", "shutdown_timeout_s"):
            _positive(name, getattr(self, name))
        if isinstance(self.stats_interval_s, bool) or not isinstance(self.stats_interval_s, (int, float)) \
                or self.stats_interval_s < 0:
            raise ValueError(f"stats_interval_s must be >= 0, got {self.stats_interval_s!r}")
        if self.queue_depth > 64:
            raise ValueError(f"queue_depth above 64 only adds latency, got {self.queue_depth}")
        if not isinstance(self.shared_memory, bool):
            raise ValueError(f"shared_memory must be a bool, got {self.shared_memory!r}")


@dataclass(frozen=True)
class ClientConfig:
    """Settings of :class:`simharmon.bridge.client.BridgeClient`.

    endpoint: the server's endpoint (tcp://HOST:PORT or ipc://PATH).
    sim: this simulator's name (part of every stream id).
    timeout_s: bound on every blocking call (send, and waiting for a reply).
    max_in_flight: pipelined frames awaiting replies before ``submit`` refuses more.
    zero_copy: send frame arrays without copying them (do not modify an array until its reply).
    routing_id: the socket identity (random when None); reusing it after a reconnect keeps streams.
    reconnect_ivl_s, reconnect_ivl_max_s: ZeroMQ reconnect back-off after a lost connection.
    shared_memory: offer the server a shared-memory segment (same-host servers only, docs/PROTOCOL.md
        §9) so frames and results skip the socket; falls back to inline buffers when refused.
    shm_slot_bytes: slot size; default: sized for the first frame (a larger frame later offers a
        larger segment). ``max_in_flight`` slots (at most 64) are made.
    shm_result_views: results are read-only views of their slot, held until ``Reply.release()``,
        instead of copies the caller owns.
    """

    endpoint: str
    sim: str = "sim"
    timeout_s: float = 5.0
    max_in_flight: int = 8
    zero_copy: bool = True
    routing_id: Optional[bytes] = None
    sndhwm: int = 16
    rcvhwm: int = 64
    reconnect_ivl_s: float = 0.1
    reconnect_ivl_max_s: float = 1.0
    heartbeat_interval_s: float = 1.0
    shared_memory: bool = False
    shm_slot_bytes: Optional[int] = None
    shm_result_views: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.endpoint, str) or "://" not in self.endpoint:
            raise ValueError(f"endpoint must look like tcp://HOST:PORT or ipc://PATH, got {self.endpoint!r}")
        if not isinstance(self.sim, str) or not self.sim or len(self.sim.encode()) > MAX_NAME_BYTES:
            raise ValueError(f"sim must be 1 to {MAX_NAME_BYTES} bytes, got {self.sim!r}")
        for name in ("timeout_s", "reconnect_ivl_s", "reconnect_ivl_max_s", "heartbeat_interval_s"):
            _positive(name, getattr(self, name))
        for name in ("max_in_flight", "sndhwm", "rcvhwm"):
            _positive(name, getattr(self, name), integer=True)
        if self.routing_id is not None:
            if not isinstance(self.routing_id, bytes) or not 1 <= len(self.routing_id) <= 255 \
                    or self.routing_id[0] == 0:
                raise ValueError("routing_id must be 1..255 bytes not starting with a zero byte (ZeroMQ reserves those)")
        for name in ("shared_memory", "shm_result_views"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.shm_slot_bytes is not None:
            _positive("shm_slot_bytes", self.shm_slot_bytes, integer=True)
