"""Minimal out-of-process render loop against ``simharmon serve`` (Python client).

    simharmon serve --bind tcp://127.0.0.1:5555 &                     # the bundled default model
    python examples/bridge_client.py --endpoint tcp://127.0.0.1:5555

Renders a synthetic scene for two cameras per tick: a textured background and an inserted "actor"
(a box whose colours are off, as a mis-matched asset would be), sends each frame WITH its actor
mask (the bundled model harmonizes inserted actors and reads their masks; a frame sent without a
mask comes back unchanged, flagged ``passthrough: no_mask``), pipelined (submit both, then collect),
and prints what came back: how much the actor and the background changed. ``--no-mask`` shows the
passthrough; ``--save DIR`` writes input/output PNGs. Dropped, refused or timed-out frames are
reported with their message, never waited on forever.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from simharmon.bridge.client import BridgeClient
from simharmon.bridge.config import ClientConfig


def synthetic_frame(tick: int, camera: int, height: int, width: int):
    """A moving textured background with an off-colour box: (``[H, W, 3]`` uint8 frame, ``[H, W]`` uint8 mask)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    shift = tick * 3 + camera * 40
    base = np.stack([0.45 + 0.25 * np.sin((xs + shift) / 9.0) * np.cos(ys / 13.0),
                     0.50 + 0.20 * np.cos((xs + shift) / 17.0),
                     0.40 + 0.20 * np.sin(ys / 7.0 + (xs + shift) / 23.0)], axis=-1)
    mask = np.zeros((height, width), np.uint8)
    top, left = height // 3, (width // 4 + tick * 4) % (width - width // 4)
    mask[top:top + height // 3, left:left + width // 4] = 255
    actor = mask > 0
    base[actor] = np.clip(base[actor] * np.array([1.35, 0.9, 0.7]) + 0.08, 0.0, 1.0)  # a mis-matched asset
    return (base * 255).astype(np.uint8), mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555")
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--size", default="256x144", help="WxH, multiples of the server's pixel_multiple")
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--no-mask", action="store_true", help="send frames without masks (they pass through)")
    parser.add_argument("--save", type=Path, default=None, metavar="DIR", help="write input/output PNGs here")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)

    with BridgeClient(ClientConfig(args.endpoint, sim="example", timeout_s=args.timeout_s)) as client:
        welcome = client.hello()
        reads = welcome.get("inputs", [])
        print(f"connected: engine {welcome['engine']!r}, untrained={welcome['untrained']}, "
              f"pixel multiple {welcome['pixel_multiple']}, reads {reads or 'no per-frame inputs'}")
        for tick in range(args.ticks):
            sent = {}
            for cam in range(2):
                frame, mask = synthetic_frame(tick, cam, height, width)
                sent[f"cam{cam}"] = (frame, mask)
                extra = {"mask": mask} if "mask" in reads and not args.no_mask else {}
                client.submit(frame, camera=f"cam{cam}", frame_index=tick, timestamp_us=tick * 100_000, **extra)
            for reply in client.results():
                if reply.kind == "dropped":
                    print(f"tick {tick} {reply.camera}: dropped ({reply.reason})")
                    continue
                if not reply.ok:  # error or timeout: the code, and what the server (or the client) says about it
                    print(f"tick {tick} {reply.camera}: {reply.kind} {reply.code}: {reply.message or 'no reply'}")
                    continue
                frame, mask = sent[reply.camera]
                change = np.abs(reply.image.astype(np.int16) - frame.astype(np.int16)).mean(axis=-1)
                actor = mask > 0
                note = f" ({reply.passthrough}: unchanged)" if reply.passthrough else ""
                print(f"tick {tick} {reply.camera}: frame {reply.frame_index} in {reply.round_trip_s * 1000:.1f} ms; "
                      f"mean change: actor {change[actor].mean():.2f}, background {change[~actor].mean():.2f} "
                      f"levels{note}")
                if args.save is not None:
                    Image.fromarray(frame).save(args.save / f"{reply.camera}_{tick:03d}_in.png")
                    Image.fromarray(np.ascontiguousarray(reply.image[..., :3])).save(
                        args.save / f"{reply.camera}_{tick:03d}_out.png")
        stats = client.stats()
        print(f"server: {stats['counts'].get('frames_out', 0)} frames out, latency ms {stats['latency_ms']}")


if __name__ == "__main__":
    main()
