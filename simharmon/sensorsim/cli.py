"""``simharmon proxy sensorsim --listen HOST:PORT --upstream HOST:PORT``: the enhancing SensorsimService proxy.

Registered in ``simharmon.cli``. gRPC is an optional dependency (``pip install simharmon[sensorsim]``):
the proxy module is imported when the command runs, so ``simharmon`` works without it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from ..argtypes import add_execution_arguments, add_model_arguments
from ..argtypes import positive_int as _positive_int
from ..runtime import RuntimeSpec, build_runtime

__all__ = ["HELP", "configure", "run"]

HELP = "proxies in front of renderers: `proxy sensorsim` enhances an AlpaSim / NuRec SensorsimService (gRPC)"
MASK_CHOICES = ("auto", "render-diff", "none")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``proxy sensorsim`` and its arguments to ``parser``."""
    kinds = parser.add_subparsers(dest="proxy_kind", metavar="KIND", required=True)
    sub = kinds.add_parser("sensorsim", help="SensorsimService (nre.grpc.protos.sensorsim) proxy, docs/SENSORSIM_PROXY.md")
    sub.add_argument("--listen", default="127.0.0.1:50052", metavar="HOST:PORT",
                     help="address the proxy serves on (default 127.0.0.1:50052); point AlpaSim's sensorsim here")
    sub.add_argument("--upstream", required=True, metavar="HOST:PORT", help="the renderer's SensorsimService")
    sub.add_argument("--strict", action="store_true",
                     help="fail a render when the enhancer fails (default: return the renderer's image, log the error)")
    sub.add_argument("--masks", choices=MASK_CHOICES, default="auto",
                     help="render-diff: a second render without dynamic objects gives the inserted actors' mask; "
                          "none: no masks (a mask-reading model then passes frames through); auto (default): "
                          "render-diff if the model reads masks")
    sub.add_argument("--mask-threshold", type=int, default=8, metavar="LEVELS",
                     help="levels of difference to the background render that mark an actor (default 8)")
    sub.add_argument("--workers", type=_positive_int, default=8, metavar="N", help="gRPC worker threads (default 8)")
    add_model_arguments(sub)
    add_execution_arguments(sub)
    sub.add_argument("--max-streams", type=_positive_int, default=64, metavar="N",
                     help="live (scene, camera) streams (default 64)")
    sub.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def run(args: argparse.Namespace) -> int:
    """Build the engine with the runtime factory, serve until SIGINT / SIGTERM, exit 0."""
    try:
        from .proxy import ProxyConfig, SensorsimProxy  # optional dependency: grpcio
    except ImportError as exc:
        raise ValueError(f"the sensorsim proxy needs grpcio and protobuf (pip install 'simharmon[sensorsim]'): {exc}") from exc
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    config = ProxyConfig(listen=args.listen, upstream=args.upstream, strict=args.strict, masks=args.masks,
                         mask_threshold=args.mask_threshold, workers=args.workers)
    engine = build_runtime(RuntimeSpec(weights=tuple(args.weights), config=args.config, device=args.device,
                                       backend=args.backend, max_streams=args.max_streams))
    proxy = SensorsimProxy(config, engine)
    proxy.start()

    def on_signal(signum, frame):
        print(f"simharmon proxy sensorsim: {signal.Signals(signum).name}, shutting down", file=sys.stderr, flush=True)
        proxy.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    label = engine.describe() + (" (random weights: not meaningful enhancements)" if engine.untrained else "")
    masks = "render-diff" if proxy.use_masks else "none"
    # One machine-readable line: tests and scripts wait for it.
    print(f"simharmon proxy sensorsim: ready on {proxy.address} -> {args.upstream} (masks: {masks}; engine: {label})",
          flush=True)
    try:
        proxy.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stats = proxy.enhancer.stats
    print(f"simharmon proxy sensorsim: stopped ({stats.enhanced} enhanced, {stats.passthrough} passed through, "
          f"{stats.errors} errors)", flush=True)
    return 0
