"""``simharmon fleet``: N engine replicas on Ray Serve, per-stream affinity, the ZeroMQ ingress unchanged.

docs/FLEET.md. Ray is optional: this package imports without it (:mod:`.config`); :mod:`.replica`,
:mod:`.ingress` users and :mod:`.service` need ``ray[serve]`` (``pip install 'simharmon[fleet]'``).
"""

from .config import FleetConfig, load_fleet_config

__all__ = ["FleetConfig", "load_fleet_config"]
