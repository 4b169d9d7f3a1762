"""SensorsimService proxy overhead: ``render_rgb`` through the proxy against the bare renderer, on loopback.

    python benchmarks/sensorsim_proxy.py                    # identity STAND-IN engine, 300 paired calls
    python benchmarks/sensorsim_proxy.py --engine bundled   # the bundled model on this device, 30 calls
    python benchmarks/sensorsim_proxy.py --smoke            # a few calls, prints the JSON, writes nothing

The renderer is the FAKE one of ``simharmon.sensorsim.testing`` serving the sample drive's "left"
camera (256x144) in the chosen ``--format``; each iteration calls it directly and through the proxy,
alternately (paired, so both see the same machine load). ``overhead_*`` = proxy - direct. With
``--engine identity`` (a stand-in that returns frames unchanged) the overhead is the proxy itself:
gRPC hop, decode, engine bookkeeping, re-encode (and, with ``--masks render-diff``, the second
render). With ``--engine bundled`` it includes the model. Results go to
``benchmarks/results/sensorsim-proxy-<engine>-<device>-<yyyymmdd>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from simharmon.bridge.processor import IdentityStandIn  # noqa: E402
from simharmon.runtime import RuntimeSpec, build_runtime, resolve_device  # noqa: E402
from simharmon.sensorsim.images import ENHANCED_FORMATS  # noqa: E402
from simharmon.sensorsim.protos import sensorsim_pb2_grpc  # noqa: E402
from simharmon.sensorsim.proxy import ProxyConfig, SensorsimProxy  # noqa: E402
from simharmon.sensorsim.testing import FakeRenderer, render_request  # noqa: E402

DRIVE = REPO / "simharmon" / "data" / "sample_drive" / "left"
FORMATS = {name: value for value, name in ENHANCED_FORMATS.items()}


def _stats(values):
    ms = np.asarray(values) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3), "n": int(ms.size)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("identity", "bundled"), default="identity")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--format", choices=sorted(FORMATS), default="PNG")
    parser.add_argument("--masks", choices=("auto", "render-diff", "none"), default="auto")
    parser.add_argument("--iterations", type=int, default=None, help="paired calls (default 300 identity, 30 bundled)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="5 calls, print the JSON, write nothing")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)
    iterations = 5 if args.smoke else args.iterations or (300 if args.engine == "identity" else 30)

    names = sorted(p.name for p in (DRIVE / "frames").glob("*.png"))
    frames = [np.asarray(Image.open(DRIVE / "frames" / n).convert("RGB")) for n in names]
    masks = [np.where(np.asarray(Image.open(DRIVE / "masks" / n).convert("L")) > 0, 255, 0).astype(np.uint8)
             for n in names]
    height, width = frames[0].shape[:2]
    device = resolve_device(args.device)
    if args.engine == "identity":
        engine, label = IdentityStandIn(device=device), "identity stand-in (returns frames unchanged)"
    else:
        engine = build_runtime(RuntimeSpec(device=device))
        label = engine.describe()
    renderer = FakeRenderer({"left": frames}, {"left": masks})
    upstream = renderer.start()
    proxy = SensorsimProxy(ProxyConfig(listen="127.0.0.1:0", upstream=upstream, masks=args.masks), engine)
    proxy.start()
    direct_ch, proxy_ch = grpc.insecure_channel(upstream), grpc.insecure_channel(proxy.address)
    direct = sensorsim_pb2_grpc.SensorsimServiceStub(direct_ch).render_rgb
    proxied = sensorsim_pb2_grpc.SensorsimServiceStub(proxy_ch).render_rgb
    fmt = FORMATS[args.format]
    times = {"direct": [], "proxy": []}
    try:
        for i in range(args.warmup + iterations):
            request = render_request("bench", "left", i, fmt=fmt, height=height, width=width, quality=90)
            for name, call in (("direct", direct), ("proxy", proxied)):
                began = time.perf_counter()
                call(request, timeout=300)
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - began)
    finally:
        direct_ch.close()
        proxy_ch.close()
        proxy.stop(0)
        renderer.stop()
    direct_s, proxy_s = _stats(times["direct"]), _stats(times["proxy"])
    result = {
        "benchmark": "sensorsim-proxy",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join(["benchmarks/sensorsim_proxy.py", *sys.argv[1:]]),
        "engine": label, "device": device, "format": args.format, "size": f"{width}x{height}",
        "masks": "render-diff" if proxy.use_masks else "none",
        "iterations": iterations, "torch_threads": args.torch_threads,
        "host": {"python": platform.python_version(), "torch": torch.__version__, "grpc": grpc.__version__,
                 "machine": platform.machine(), "cpus": os.cpu_count()},
        "direct": direct_s, "proxy": proxy_s,
        "overhead_p50_ms": round(proxy_s["p50_ms"] - direct_s["p50_ms"], 3),
        "overhead_p99_ms": round(proxy_s["p99_ms"] - direct_s["p99_ms"], 3),
        "overhead_paired_median_ms": round(float(np.median(np.subtract(times["proxy"], times["direct"]))) * 1000, 3),
        "proxy_stats": vars(proxy.enhancer.stats),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if not args.smoke:
        out = REPO / "benchmarks" / "results" / (f"sensorsim-proxy-{args.engine}-{device.split(':')[0]}-"
                                                 f"{dt.date.today():%Y%m%d}.json")
        out.write_text(text + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
