"""Minimal out-of-process render loop against ``simharmon serve`` (Python client).

    simharmon serve --config tiny --bind tcp://127.0.0.1:5555 &      # or --engine identity
    python examples/bridge_client.py --endpoint tcp://127.0.0.1:5555

Sends synthetic rgb8 frames for two cameras per tick, pipelined (submit both, then collect),
and prints what comes back. A dropped or timed-out frame is reported, never waited on forever.
"""

from __future__ import annotations

import argparse

import numpy as np

from simharmon.bridge.client import BridgeClient
from simharmon.bridge.config import ClientConfig


def synthetic_frame(tick: int, camera: int, height: int, width: int) -> np.ndarray:
    """A moving gradient, ``[H, W, 3]`` uint8."""
    ys, xs = np.mgrid[0:height, 0:width]
    frame = np.stack([(xs * 4 + tick * 8 + camera * 60) % 256, ys * 255 // max(height - 1, 1),
                      np.full_like(xs, (tick * 16) % 256)], axis=-1)
    return frame.astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--size", default="64x48", help="WxH, multiples of 16")
    parser.add_argument("--timeout-s", type=float, default=10.0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    with BridgeClient(ClientConfig(args.endpoint, sim="example", timeout_s=args.timeout_s)) as client:
        welcome = client.hello()
        print(f"connected: engine {welcome['engine']!r}, untrained={welcome['untrained']}, "
              f"pixel multiple {welcome['pixel_multiple']}")
        for tick in range(args.ticks):
            for cam in range(2):
                client.submit(synthetic_frame(tick, cam, height, width), camera=f"cam{cam}", frame_index=tick,
                              timestamp_us=tick * 100_000)
            for reply in client.results():
                if reply.ok:
                    print(f"tick {tick} {reply.camera}: frame {reply.frame_index} {reply.image.shape} "
                          f"in {reply.round_trip_s * 1000:.1f} ms")
                elif reply.kind == "dropped":
                    print(f"tick {tick} {reply.camera}: dropped ({reply.reason})")
                else:  # error or timeout: the code, and what the server (or the client) says about it
                    print(f"tick {tick} {reply.camera}: {reply.kind} {reply.code}: {reply.message or 'no reply'}")
        stats = client.stats()
        print(f"server: {stats['counts'].get('frames_out', 0)} frames out, latency ms {stats['latency_ms']}")


if __name__ == "__main__":
    main()
