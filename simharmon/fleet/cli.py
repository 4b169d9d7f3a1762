"""``simharmon fleet``: engine replicas on Ray Serve behind the ZeroMQ ingress (registered in ``simharmon.cli``).

Ray is an optional dependency (``pip install 'simharmon[fleet]'``): the service module is imported
when the command runs, so ``simharmon`` works without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys

from ..argtypes import BACKENDS
from ..argtypes import positive_int as _positive_int
from .config import ENGINES, load_fleet_config

__all__ = ["HELP", "configure", "overrides", "run"]

HELP = "serve the enhancer from N engine replicas on Ray Serve, ZeroMQ ingress unchanged (docs/FLEET.md)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``fleet`` arguments to ``parser`` (they override the preset's fields)."""
    parser.add_argument("--preset", default="fleet-local", metavar="NAME_OR_YAML",
                        help="fleet config: a preset of configs/ (fleet-local, fleet-gpu) or a YAML file "
                             "(simharmon.fleet.FleetConfig); default fleet-local")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--local", action="store_true",
                       help="start a Ray cluster on this machine for this process (stopped with it)")
    where.add_argument("--address", default=None, metavar="ADDR",
                       help="join a running Ray cluster: auto, ray://HOST:10001 (default: RAY_ADDRESS, else the preset's)")
    parser.add_argument("--bind", action="append", default=None, metavar="ENDPOINT",
                        help="ingress endpoint, repeatable (default: the preset's, tcp://127.0.0.1:5556)")
    parser.add_argument("--allow-remote", action="store_true", help="allow non-loopback ingress binds")
    parser.add_argument("--replicas", type=_positive_int, default=None, metavar="N", help="engine replicas")
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help="model (default) or identity (STAND-IN: frames come back unchanged)")
    parser.add_argument("--weights", action="append", default=None, metavar="PATH", help="as for `simharmon serve`")
    parser.add_argument("--config", default=None, metavar="NAME_OR_YAML", help="enhancer preset or YAML, as for serve")
    parser.add_argument("--device", default=None, metavar="cpu|cuda", help="replicas' device (default: the preset's)")
    parser.add_argument("--backend", default=None, choices=BACKENDS)
    parser.add_argument("--gpus-per-replica", type=float, default=None, metavar="N")
    parser.add_argument("--cpus-per-replica", type=float, default=None, metavar="N")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def overrides(args: argparse.Namespace) -> dict:
    """The preset fields the command line sets."""
    fields = {"bind": args.bind, "replicas": args.replicas, "engine": args.engine, "weights": args.weights,
              "config": args.config, "device": args.device, "backend": args.backend, "address": args.address,
              "gpus_per_replica": args.gpus_per_replica, "cpus_per_replica": args.cpus_per_replica}
    changed = {name: value for name, value in fields.items() if value is not None}
    if args.allow_remote:
        changed["allow_remote"] = True
    return changed


def run(args: argparse.Namespace) -> int:
    """Start the fleet, serve until SIGINT / SIGTERM, tear it down, exit 0."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    config = dataclasses.replace(load_fleet_config(args.preset), **overrides(args))
    try:
        from .service import Fleet  # optional dependency: ray[serve]
    except ImportError as exc:
        raise ValueError(f"simharmon fleet needs Ray Serve (pip install 'simharmon[fleet]'): {exc}") from exc
    fleet = Fleet.start(config, local=args.local)

    def on_signal(signum, frame):
        print(f"simharmon fleet: {signal.Signals(signum).name}, shutting down", file=sys.stderr, flush=True)
        fleet.server.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        label = fleet.processor.name + (" (random weights: not meaningful enhancements)"
                                        if fleet.processor.untrained and not fleet.processor.stand_in else "")
        # One machine-readable line, as `simharmon serve` prints.
        print(f"simharmon fleet: ready on {' '.join(fleet.endpoints)} ({config.replicas} replicas; engine: {label})",
              flush=True)
        fleet.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        fleet.stop()
    print("simharmon fleet: stopped", flush=True)
    return 0
