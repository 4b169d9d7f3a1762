"""The fleet's ingress: the bridge server (docs/PROTOCOL.md, unchanged) in front of Ray Serve engine replicas.

:class:`FleetProcessor` has the bridge's ``FrameProcessor`` interface, so the unchanged
:class:`~simharmon.bridge.server.BridgeServer` runs on it: a client of ``simharmon serve`` talks to
the fleet with only the address changed. For each batch the server hands it, it sends every
stream's frame to that stream's replica (the stream key is Serve's multiplexed model id;
:class:`~simharmon.fleet.replica.StreamAffinityRouter` picks the replica), all at once, and
collects the results.

Failures: when a replica call fails (the replica died, timed out), the frame is sent again until
``failover_timeout_s``; Serve then routes it to a live replica, which holds no history for the
stream and starts an empty one, so the reply carries ``history_reset``. A frame that still finds
no replica is answered with an engine error. Either way every frame is answered.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Hashable, List, Mapping, Optional

import numpy as np
import torch

from ..runtime.engine import StepResult

__all__ = ["FleetProcessor"]

log = logging.getLogger("simharmon.fleet")

_RETRY_PAUSE_S = 0.2


def _host(value: Any) -> Any:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


class FleetProcessor:
    """A ``FrameProcessor`` whose engine is a Ray Serve deployment (``handle``: its DeploymentHandle).

    ``replica_of``: the replica that answered each stream's last frame; ``replica_counts``: frames
    per (stream, replica) since start, for affinity measurements; ``failovers``: frames sent again.
    """

    stand_in = False

    def __init__(self, handle, request_timeout_s: float = 30.0, failover_timeout_s: float = 30.0,
                 max_streams: int = 256) -> None:
        self.handle = handle
        self.request_timeout_s = request_timeout_s
        self.failover_timeout_s = failover_timeout_s
        self.max_streams = max_streams
        info = handle.info.remote().result(timeout_s=request_timeout_s)
        self.name = f"fleet of {info['name']}"
        self.untrained = info["untrained"]
        self.stand_in = info["stand_in"]
        self.used_inputs: List[str] = info["used_inputs"]
        self.pixel_multiple = info["pixel_multiple"]
        self.max_width, self.max_height = info["max_width"], info["max_height"]
        self.device = torch.device("cpu")
        self._seq: Dict[Hashable, int] = {}
        self.replica_of: Dict[Hashable, str] = {}
        self.replica_counts: Dict[Hashable, Dict[str, int]] = {}
        self.failovers = 0

    def check_size(self, width: int, height: int) -> None:
        """The engine's size rule (the same model on every replica)."""
        if width <= 0 or height <= 0 or width % self.pixel_multiple or height % self.pixel_multiple:
            raise ValueError(f"frame size {width}x{height} (WxH) is not supported: width and height must be positive "
                             f"multiples of {self.pixel_multiple}")
        if width > self.max_width or height > self.max_height:
            raise ValueError(f"frame size {width}x{height} exceeds the maximum {self.max_width}x{self.max_height}")

    def _send(self, key: Hashable, frame: np.ndarray, inputs: Dict[str, Any], seq: int):
        return self.handle.options(multiplexed_model_id=str(key)).step.remote(frame, inputs, seq)

    def step_many(self, frames: Mapping[Hashable, Any],
                  inputs: Optional[Mapping[Hashable, Mapping[str, Any]]] = None) -> Dict[Hashable, StepResult]:
        """One frame per stream through its replica; every key gets a ``StepResult``."""
        inputs = inputs or {}
        results: Dict[Hashable, StepResult] = {}
        work = {}
        for key, frame in frames.items():
            if key not in self._seq and len(self._seq) >= self.max_streams:
                results[key] = StepResult(error=f"too many streams ({self.max_streams}); remove idle streams first")
                continue
            seq = self._seq.get(key, -1) + 1
            self._seq[key] = seq
            given = {name: _host(v) for name, v in inputs.get(key, {}).items() if v is not None}
            work[key] = (_host(frame), given, seq)
        pending = {key: self._send(key, *args) for key, args in work.items()}
        for key, response in pending.items():
            results[key] = self._collect(key, response, work[key])
        return results

    def _collect(self, key: Hashable, response, args) -> StepResult:
        deadline = time.monotonic() + self.failover_timeout_s
        failed = None
        while True:
            try:
                reply = response.result(timeout_s=self.request_timeout_s)
                break
            except Exception as exc:  # a dead replica, a timeout: send the frame again (module docstring)
                failed = exc
                if time.monotonic() >= deadline:
                    log.error("stream %r: no replica answered within %.0fs: %s", key, self.failover_timeout_s, exc)
                    return StepResult(error=f"no engine replica answered ({type(exc).__name__}); the stream's history "
                                            "restarts", history_reset=True)
                log.warning("stream %r: replica call failed (%s: %s); sending the frame again", key,
                            type(exc).__name__, exc)
                self.failovers += 1
                time.sleep(_RETRY_PAUSE_S)
                response = self._send(key, *args)
        replica = reply["replica"]
        self.replica_of[key] = replica
        counts = self.replica_counts.setdefault(key, {})
        counts[replica] = counts.get(replica, 0) + 1
        output = reply["output"]
        if isinstance(output, np.ndarray):  # Ray hands back read-only views of its object store
            output = torch.from_numpy(output if output.flags.writeable else output.copy())
        return StepResult(output=output, passthrough=reply["passthrough"],
                          history_reset=bool(reply["history_reset"] or failed is not None), error=reply["error"])

    def remove(self, key: Hashable) -> None:
        """Forget a stream here and on its replica (fire and forget)."""
        if self._seq.pop(key, None) is not None:
            try:
                self.handle.options(multiplexed_model_id=str(key)).remove.remote()
            except Exception as exc:  # the replica may be gone; it took the stream with it
                log.debug("remove %r: %s", key, exc)
        self.replica_of.pop(key, None)

    def keys(self) -> List[Hashable]:
        """Streams with frames sent and not removed."""
        return list(self._seq)
