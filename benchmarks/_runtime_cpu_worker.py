"""One (implementation, case) of benchmarks/runtime_cpu.py, in its own process; prints one JSON line.

Runs against whichever simharmon tree is first on PYTHONPATH: ``--impl new`` (this tree: the one
runtime) or ``--impl landed`` (a worktree of the landed commit: ``MultiStreamEnhancer``). Frames are
the bundled sample drive's (256x144, its actor masks), read with PIL so both trees read the same.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import simharmon

DRIVE = Path(simharmon.__file__).resolve().parent / "data" / "sample_drive"


def sample_frames(count: int = 24):
    """(rgb8 [H, W, 3], mask uint8 [H, W]) pairs of the sample drive's two cameras, interleaved."""
    items = []
    for t in range(count // 2):
        for camera in ("left", "right"):
            frame = np.asarray(Image.open(DRIVE / camera / "frames" / f"{t:06d}.png").convert("RGB"))
            mask = np.asarray(Image.open(DRIVE / camera / "masks" / f"{t:06d}.png").convert("L"))
            items.append((frame, mask))
    return items


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def in_process(impl: str, case: str, streams: int):
    """A function ``tick(items) -> outputs`` for the engine / hook cases."""
    if impl == "new":
        from simharmon.hooks import PostRenderHook
        from simharmon.runtime import RuntimeSpec, build_runtime

        engine = build_runtime(RuntimeSpec(device="cpu", backend="compile" if case == "engine-compile" else "eager"))
        if case in ("engine", "engine-compile"):
            def tick(items):
                frames = {i: torch.from_numpy(f) for i, (f, _) in enumerate(items)}
                return engine.step_many(frames, {i: {"mask": m} for i, (_, m) in enumerate(items)})
            return tick
        hook = PostRenderHook(engine)

        def tick(items):  # a renderer's float output with its depth and actor mask
            images = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f, _ in items])
            masks = torch.stack([torch.from_numpy(m)[None].float() / 255 for _, m in items])
            return hook((images, torch.ones(len(items), 1, *images.shape[2:]), masks))
        return tick
    from simharmon.bridge.engines import build_engine  # the landed tree's API

    engine = build_engine("model", device="cpu")

    def tick(items):  # what the landed hook wraps (it could not pass masks itself)
        frames = {i: torch.from_numpy(f).permute(2, 0, 1)[None].float() / 255 for i, (f, _) in enumerate(items)}
        masks = {i: {"mask": torch.from_numpy(m)[None, None].float() / 255} for i, (_, m) in enumerate(items)}
        return engine.multi.step_many(frames, masks)
    return tick


def served(case: str, threads: int):
    """Start ``simharmon serve`` (the tree's own, default model) and return (process, client factory)."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    server = subprocess.Popen([sys.executable, "-m", "simharmon", "serve", "--bind", endpoint, "--device", "cpu",
                               "--torch-threads", str(threads), "--stats-interval-s", "0", "--log-level", "warning"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    if "ready on" not in line:
        server.kill()
        raise RuntimeError(f"serve did not start: {line}{server.stderr.read()[-2000:]}")
    from simharmon.bridge.client import BridgeClient
    from simharmon.bridge.config import ClientConfig

    client = BridgeClient(ClientConfig(endpoint, sim="bench", timeout_s=60.0, shared_memory=case == "serve-shm"))
    client.hello()

    def tick(items):
        for i, (frame, mask) in enumerate(items):
            client.submit(frame, camera=f"cam{i}", mask=mask)
        replies = list(client.results())
        bad = [r for r in replies if not r.ok]
        if bad:
            raise RuntimeError(f"{bad[0].kind} {bad[0].code}: {bad[0].header}")
        return replies
    return server, client, tick


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=("new", "landed"), required=True)
    parser.add_argument("--case", required=True)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    items = sample_frames()
    began = time.perf_counter()
    server = client = None
    if args.case.startswith("serve"):
        server, client, tick = served(args.case, args.threads)
    else:
        tick = in_process(args.impl, args.case, args.streams)
    times = []
    build_s = None
    try:
        for i in range(args.warmup + args.frames):
            batch = [items[(i * args.streams + k) % len(items)] for k in range(args.streams)]
            start = time.perf_counter()
            with torch.inference_mode():
                tick(batch)
            elapsed = (time.perf_counter() - start) * 1000
            if build_s is None:
                build_s = time.perf_counter() - began
            if i >= args.warmup:
                times.append(elapsed)
    finally:
        if client is not None:
            client.close()
        if server is not None:
            server.terminate()
            server.wait(30)
    p50 = statistics.median(times)
    print(json.dumps({"impl": args.impl, "case": args.case, "streams": args.streams, "p50_ms": p50,
                      "p99_ms": float(np.percentile(times, 99)), "mean_ms": statistics.fmean(times),
                      "fps_per_stream": 1000.0 / p50, "build_s": build_s,
                      "version": re.sub(r"\s+", " ", getattr(simharmon, "__version__", "?"))}))


if __name__ == "__main__":
    main()
