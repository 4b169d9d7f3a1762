"""``simharmon serve``: run the bridge server until SIGINT or SIGTERM (registered in ``simharmon.cli``).

The model runs on the engine the runtime factory builds, as for every front door.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import torch

from ..argtypes import add_execution_arguments, add_model_arguments
from ..argtypes import positive_float as _positive_float
from ..argtypes import positive_int as _positive_int
from ..runtime import RuntimeSpec, build_runtime, resolve_device
from .config import ServerConfig
from .processor import FrameProcessor, IdentityStandIn
from .protocol import Limits
from .server import BridgeServer

__all__ = ["HELP", "configure", "run", "build_processor"]

HELP = "serve the enhancer to simulators over ZeroMQ (docs/PROTOCOL.md)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` arguments to ``parser``."""
    parser.add_argument("--bind", action="append", default=[], metavar="ENDPOINT",
                        help="endpoint to bind, repeatable: tcp://127.0.0.1:PORT (PORT may be * for any free "
                             "port), ipc:///path; default tcp://127.0.0.1:5555. Non-loopback tcp needs --allow-remote")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow binding non-loopback addresses (the protocol has no authentication)")
    parser.add_argument("--engine", choices=("model", "identity"), default="model",
                        help="model: the enhancer (default); identity: a STAND-IN that returns frames unchanged, "
                             "for transport tests and benchmarks")
    add_model_arguments(parser)
    add_execution_arguments(parser)
    parser.add_argument("--max-streams", type=_positive_int, default=64, metavar="N",
                        help="live streams over all clients (default 64)")
    parser.add_argument("--queue-depth", type=_positive_int, default=1, metavar="N",
                        help="frames waiting per stream before the oldest is dropped (default 1: latest frame wins)")
    parser.add_argument("--max-batch", type=_positive_int, default=16, metavar="N",
                        help="streams per engine call (default 16)")
    parser.add_argument("--stream-idle-s", type=_positive_float, default=30.0, metavar="S",
                        help="expire a stream after S seconds without frames or messages from its client (default 30)")
    parser.add_argument("--max-message-mb", type=_positive_float, default=256.0, metavar="MB",
                        help="largest accepted message in MiB (default 256)")
    parser.add_argument("--max-width", type=_positive_int, default=3840, metavar="PX")
    parser.add_argument("--max-height", type=_positive_int, default=2160, metavar="PX")
    parser.add_argument("--stats-interval-s", type=float, default=10.0, metavar="S",
                        help="log a stats line every S seconds (0: only at exit)")
    parser.add_argument("--identity-delay-ms", type=float, default=0.0, metavar="MS",
                        help="with --engine identity: sleep this long per engine call (simulates a slow model)")
    parser.add_argument("--torch-threads", type=_positive_int, default=None, metavar="N",
                        help="torch intra-op threads (default: torch's choice). 1 suits --engine identity and "
                             "small CPUs: pixel conversion is memory-bound and parallel regions stall when cores "
                             "are busy")
    parser.add_argument("--no-shared-memory", action="store_true",
                        help="refuse the shared-memory frame transport that same-host clients may offer "
                             "(docs/PROTOCOL.md §9; it is only ever offered on loopback tcp and ipc binds)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))


def build_processor(args: argparse.Namespace) -> FrameProcessor:
    """The engine from the runtime factory (``--engine model``), or the identity stand-in."""
    if args.engine == "identity":
        if args.weights or args.config:
            raise ValueError("--engine identity takes no --config or --weights")
        return IdentityStandIn(max_streams=args.max_streams, delay_s=args.identity_delay_ms / 1000.0,
                               device=resolve_device(args.device))
    return build_runtime(RuntimeSpec(weights=tuple(args.weights), config=args.config, device=args.device,
                                     backend=args.backend, max_streams=args.max_streams))


def run(args: argparse.Namespace) -> int:
    """``simharmon serve ...``: build the processor, bind, serve until SIGINT/SIGTERM, exit 0."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    limits = Limits(max_message_bytes=int(args.max_message_mb * 1024 * 1024), max_width=args.max_width,
                    max_height=args.max_height)
    config = ServerConfig(bind=tuple(args.bind) or ("tcp://127.0.0.1:5555",), allow_remote=args.allow_remote,
                          limits=limits, max_streams=args.max_streams, queue_depth=args.queue_depth,
                          max_batch=args.max_batch, stream_idle_s=args.stream_idle_s,
                          stats_interval_s=max(args.stats_interval_s, 0.0), shared_memory=not args.no_shared_memory)
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    engine = build_processor(args)
    server = BridgeServer(engine, config)

    def on_signal(signum, frame):
        print(f"simharmon serve: {signal.Signals(signum).name}, shutting down", file=sys.stderr, flush=True)
        server.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        label = engine.name
        if engine.stand_in:
            label += " -- frames come back unchanged"
        elif engine.untrained:
            label += " with random (untrained) weights: outputs are not meaningful enhancements"
        # One machine-readable line: tests and scripts wait for it and read the endpoints.
        print(f"simharmon serve: ready on {' '.join(server.endpoints)} (engine: {label})", flush=True)
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("simharmon serve: stopped", flush=True)
    return 0
