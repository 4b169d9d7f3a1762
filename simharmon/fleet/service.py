"""Start and stop a fleet: a Ray cluster (new and local, or an existing one), the Serve application of
engine replicas, and the ZeroMQ ingress in this process.

    fleet = Fleet.start(load_fleet_config("fleet-local"), local=True)
    fleet.serve_forever()          # or fleet.server in a thread; fleet.stop() tears everything down

With ``local`` a Ray cluster is started on this machine for this process (``ray.init`` with the
machine's CPUs, no dashboard) and stopped with it; otherwise ``ray.init(address=config.address)``
joins a running cluster (``auto``, ``ray://HOST:10001``, or ``RAY_ADDRESS``), and ``stop`` deletes
only this fleet's Serve application. Serve's HTTP proxy is not started: the ingress is ZeroMQ.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Optional

import ray
from ray import serve

from ..bridge.config import ServerConfig
from ..bridge.server import BridgeServer
from .config import FleetConfig
from .ingress import FleetProcessor
from .replica import build_app

__all__ = ["Fleet"]

log = logging.getLogger("simharmon.fleet")

SOURCE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding the simharmon package


@dataclasses.dataclass
class Fleet:
    """A running fleet: ``handle`` (the Serve deployment), ``processor`` and ``server`` (the ingress)."""

    config: FleetConfig
    handle: object
    processor: FleetProcessor
    server: BridgeServer
    local: bool

    @classmethod
    def start(cls, config: FleetConfig, local: bool = False, num_cpus: Optional[int] = None) -> Fleet:
        """Connect to (or start) the cluster, deploy the replicas, wait for them, bind the ingress."""
        if not ray.is_initialized():
            # Workers import the same simharmon as this process (a source tree or an install).
            runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(
                p for p in (SOURCE_ROOT, os.environ.get("PYTHONPATH", "")) if p)}}
            if local:
                ray.init(num_cpus=num_cpus or max(os.cpu_count() or 1, 2), include_dashboard=False,
                         runtime_env=runtime_env, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(address=config.address, runtime_env=runtime_env, log_to_driver=False,
                         logging_level=logging.WARNING)
        try:
            serve.start(proxy_location="Disabled")
            handle = serve.run(build_app(config), name=config.app_name, route_prefix=None)
            processor = FleetProcessor(handle, request_timeout_s=config.request_timeout_s,
                                       failover_timeout_s=config.failover_timeout_s, max_streams=config.max_streams)
            server = BridgeServer(processor, ServerConfig(
                bind=tuple(config.bind), allow_remote=config.allow_remote, max_streams=config.max_streams,
                max_batch=config.max_batch, queue_depth=config.queue_depth, shared_memory=False))
        except BaseException:
            cls._teardown(config, local)
            raise
        return cls(config, handle, processor, server, local)

    @property
    def endpoints(self):
        return self.server.endpoints

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def stop(self) -> None:
        """Stop the ingress, delete the application; a local cluster is shut down too."""
        try:
            self.server.stop()
        finally:
            self._teardown(self.config, self.local)

    @staticmethod
    def _teardown(config: FleetConfig, local: bool) -> None:
        if not ray.is_initialized():
            return
        try:
            if local:
                serve.shutdown()
            else:
                serve.delete(config.app_name)
        finally:
            if local:
                ray.shutdown()
