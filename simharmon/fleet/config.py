"""The fleet's settings: a frozen dataclass, validated on construction; YAML (``configs/fleet-*.yaml``) only
serializes it (OmegaConf structured config, unknown keys refused).

    config = load_fleet_config("fleet-local")            # a preset in configs/, or a YAML path
    config = dataclasses.replace(config, replicas=4)     # command-line overrides
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

from ..config import ConfigError, build_structured, preset_path, read_yaml_mapping

__all__ = ["ENGINES", "FleetConfig", "load_fleet_config"]

ENGINES = ("model", "identity")


@dataclasses.dataclass(frozen=True)
class FleetConfig:
    """A Ray Serve application of engine replicas behind one ZeroMQ ingress.

    Engine (each replica builds it with the runtime factory): ``weights`` / ``config`` / ``device``
    / ``backend`` as for ``simharmon serve``; ``engine: identity`` is the bridge's STAND-IN.
    Replicas: ``replicas`` to start with; ``min_replicas`` / ``max_replicas`` turn on Serve's
    autoscaling between them (``target_ongoing_requests`` per replica); ``streams_per_replica``
    bounds each replica's streams (its engine's ``max_streams``); ``gpus_per_replica`` (1 on GPU
    nodes) and ``cpus_per_replica`` are the Ray resources one replica reserves;
    ``torch_threads`` its intra-op threads. ``max_ongoing_requests``: frames one replica holds at
    once. Ingress: ``bind`` (ZeroMQ endpoints, loopback unless ``allow_remote``), ``max_streams``
    over all clients, ``max_batch`` streams per dispatch, ``queue_depth`` as for ``serve``.
    Failures: a frame whose replica fails is sent again (to another replica, with an empty
    history) for up to ``failover_timeout_s``; ``request_timeout_s`` bounds one replica call.
    Cluster: ``address`` (None: ``RAY_ADDRESS`` or a new local cluster; ``auto``; ``ray://HOST:10001``),
    ``app_name`` of the Serve application.
    """

    weights: List[str] = dataclasses.field(default_factory=list)
    config: Optional[str] = None
    device: str = "auto"
    backend: str = "auto"
    engine: str = "model"
    replicas: int = 2
    min_replicas: Optional[int] = None
    max_replicas: Optional[int] = None
    target_ongoing_requests: float = 4.0
    streams_per_replica: int = 32
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    torch_threads: Optional[int] = None
    max_ongoing_requests: int = 64
    bind: List[str] = dataclasses.field(default_factory=lambda: ["tcp://127.0.0.1:5556"])
    allow_remote: bool = False
    max_streams: int = 256
    max_batch: int = 16
    queue_depth: int = 1
    request_timeout_s: float = 30.0
    failover_timeout_s: float = 30.0
    address: Optional[str] = None
    app_name: str = "simharmon-fleet"

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", [str(w) for w in self.weights])
        object.__setattr__(self, "bind", [self.bind] if isinstance(self.bind, str) else [str(b) for b in self.bind])
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.engine == "identity" and (self.weights or self.config):
            raise ValueError("engine 'identity' takes no weights or config")
        for name in ("replicas", "streams_per_replica", "max_ongoing_requests", "max_streams", "max_batch",
                     "queue_depth"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("request_timeout_s", "failover_timeout_s", "target_ongoing_requests"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.gpus_per_replica < 0 or self.cpus_per_replica < 0:
            raise ValueError("gpus_per_replica and cpus_per_replica must be >= 0")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("give both min_replicas and max_replicas (autoscaling) or neither")
        if self.min_replicas is not None and not 0 <= self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(f"need 0 <= min_replicas <= replicas <= max_replicas, got {self.min_replicas}, "
                             f"{self.replicas}, {self.max_replicas}")
        if not self.bind:
            raise ValueError("bind needs at least one endpoint")

    @property
    def autoscaling(self) -> Optional[dict]:
        """Serve's ``autoscaling_config``, or None for a fixed replica count."""
        if self.min_replicas is None:
            return None
        return {"min_replicas": self.min_replicas, "initial_replicas": self.replicas,
                "max_replicas": self.max_replicas, "target_ongoing_requests": self.target_ongoing_requests}


def load_fleet_config(path_or_name: str | Path) -> FleetConfig:
    """A fleet YAML file, or a preset of ``configs/`` by name (``fleet-local``, ``fleet-gpu``)."""
    path = Path(path_or_name)
    if not path.exists() and path.suffix not in (".yaml", ".yml") and len(path.parts) == 1:
        path = preset_path(str(path_or_name))
    try:
        return build_structured(FleetConfig, read_yaml_mapping(path), what=f"fleet config {path}")
    except ValueError as exc:
        raise ConfigError(f"invalid fleet config {path}: {exc}") from exc
