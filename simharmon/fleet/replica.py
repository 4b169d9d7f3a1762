"""The fleet's Ray Serve side: the engine replica deployment and the per-stream router.

* :class:`EngineReplica` holds one engine built by the runtime factory (``build_runtime``; the
  bridge's identity STAND-IN with ``engine: identity``) and steps the frames routed to it. The
  stream key travels as Serve's multiplexed model id (``serve.get_multiplexed_model_id()``).
* :class:`StreamAffinityRouter` (a Serve ``RequestRouter``) sends every request of one stream key to
  the same live replica: rendezvous hashing of (replica id, stream key), so when a replica goes
  away only its own streams move, and when one is added only the streams it now wins move.
* Every frame carries its stream's sequence number. A replica that did not step the previous
  frame of the stream (the stream is new here, or was served elsewhere in between) drops what it
  holds for the stream and starts an empty history: the result says ``history_reset``.

Ray is an optional dependency: this module is imported by the fleet front door only.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from ray import serve
from ray.serve.config import RequestRouterConfig
from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from ..bridge.processor import IdentityStandIn
from ..runtime import RuntimeSpec, build_runtime, resolve_device
from .config import FleetConfig

__all__ = ["EngineReplica", "StreamAffinityRouter", "build_app", "deployment_options", "rendezvous"]


def rendezvous(key: str, replica_ids: List[str]) -> str:
    """The replica id with the highest hash of (replica id, key): stable while that replica lives."""
    return max(replica_ids, key=lambda rid: hashlib.blake2b(f"{rid}\x00{key}".encode(), digest_size=8).digest())


class StreamAffinityRouter(RequestRouter):
    """Routes a request whose multiplexed model id is a stream key to that key's rendezvous replica."""

    async def choose_replicas(self, candidate_replicas: List[RunningReplica],
                              pending_request: Optional[PendingRequest] = None) -> List[List[RunningReplica]]:
        key = pending_request.metadata.multiplexed_model_id if pending_request is not None else ""
        if not key or not candidate_replicas:
            return [candidate_replicas]
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        return [[by_id[rendezvous(key, sorted(by_id))]]]


def _to_numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def _to_torch(value: Any) -> Any:
    if not isinstance(value, np.ndarray):
        return value
    return torch.from_numpy(value if value.flags.writeable else value.copy())  # Ray's arrays are read-only views


class EngineReplica:
    """One replica: an engine and the sequence number each of its streams last stepped.

    Not a Serve deployment by itself: :func:`build_app` wraps it. Calls come from Serve's
    threads; the engine is used under one lock (it is not thread-safe).
    """

    def __init__(self, config: FleetConfig) -> None:
        if config.torch_threads is not None:
            torch.set_num_threads(config.torch_threads)
        if config.engine == "identity":
            self.engine = IdentityStandIn(max_streams=config.streams_per_replica, device=resolve_device(config.device))
        else:
            self.engine = build_runtime(RuntimeSpec(weights=tuple(config.weights), config=config.config,
                                                    device=config.device, backend=config.backend,
                                                    max_streams=config.streams_per_replica))
        self._last: Dict[str, int] = {}
        self._lock = threading.Lock()
        context = serve.get_replica_context()
        self.replica_id = context.replica_id.unique_id if context is not None else f"pid-{os.getpid()}"

    def info(self) -> dict:
        """What the ingress tells clients about the engine (the bridge's ``welcome``)."""
        engine = self.engine
        return {"name": engine.name, "untrained": bool(engine.untrained), "stand_in": bool(engine.stand_in),
                "used_inputs": list(engine.used_inputs), "pixel_multiple": int(engine.pixel_multiple),
                "max_width": int(engine.max_width), "max_height": int(engine.max_height), "replica": self.replica_id}

    def check_size(self, width: int, height: int) -> Optional[str]:
        try:
            self.engine.check_size(width, height)
        except ValueError as exc:
            return str(exc)
        return None

    def step(self, frame: np.ndarray, inputs: Dict[str, Any], seq: int) -> dict:
        """Step stream ``serve.get_multiplexed_model_id()``'s frame number ``seq`` (0 for its first)."""
        key = serve.get_multiplexed_model_id()
        with self._lock:
            last = self._last.get(key)
            reset = seq > 0 and last != seq - 1  # the history here is missing or stale: start again
            if reset and last is not None:
                self.engine.remove(key)
            self._last[key] = seq
            result = self.engine.step_many({key: _to_torch(frame)}, {key: {k: _to_torch(v) for k, v in inputs.items()}})[key]
        if result.error is not None:
            self._last.pop(key, None)
        return {"output": _to_numpy(result.output), "passthrough": result.passthrough,
                "history_reset": bool(result.history_reset or reset), "error": result.error, "replica": self.replica_id}

    def remove(self) -> bool:
        """Forget stream ``serve.get_multiplexed_model_id()`` (its client went away)."""
        key = serve.get_multiplexed_model_id()
        with self._lock:
            self._last.pop(key, None)
            self.engine.remove(key)
        return True

    def streams(self) -> List[str]:
        """The stream keys this replica holds (tests, stats)."""
        with self._lock:
            return list(self._last)

    def exit_for_fault_test(self) -> None:
        """Kill this replica's process at once (fault injection for tests and demos: Serve restarts it)."""
        os._exit(1)


def deployment_options(config: FleetConfig) -> dict:
    """``serve.deployment`` options of the engine replicas for ``config``."""
    options = {
        "name": "EngineReplica",
        "ray_actor_options": {"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica},
        "max_ongoing_requests": config.max_ongoing_requests,
        "request_router_config": RequestRouterConfig(request_router_class=StreamAffinityRouter),
        "health_check_period_s": 1.0,
        "health_check_timeout_s": 10.0,
        "graceful_shutdown_timeout_s": 2.0,
    }
    if config.autoscaling is not None:
        options["autoscaling_config"] = config.autoscaling
    else:
        options["num_replicas"] = config.replicas
    return options


def build_app(config: FleetConfig):
    """The Serve application: ``serve.run(build_app(config), name=config.app_name)``."""
    return serve.deployment(**deployment_options(config))(EngineReplica).bind(config)
