"""DiffHarmony's UNet step (SD-1.5-inpainting shape, 9 input channels) per backend, at 512 and 1024.

    python benchmarks/harmonize_unet_step.py                # CUDA: eager, compile, cudagraph at 512 and 1024, bf16
    python benchmarks/harmonize_unet_step.py --smoke        # CPU, tiny config, eager only, prints

Writes benchmarks/results/harmonize-unet-step-<gpu>-<yyyymmdd>.json (not with --smoke). Weights are
random (timing only); each backend's output is compared with eager's (max abs difference).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[0] = str(REPO)  # not benchmarks/: benchmarks/kernels.py would shadow the `kernels` package

import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402

from simharmon.harmonize.models.presets import sd15_inpaint_unet, tiny_unet  # noqa: E402
from simharmon.harmonize.stages import UNetStep  # noqa: E402
from simharmon.runtime.stages_runner import StageRunner  # noqa: E402


def _time(fn, inputs, warmup: int, iters: int, cuda: bool) -> list:
    for _ in range(warmup):
        fn(*inputs)
    times = []
    for _ in range(iters):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(*inputs)
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--resolutions", default="512,1024")
    p.add_argument("--backends", default="eager,compile,cudagraph")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--iters", type=int, default=20)
    args = p.parse_args()
    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    config, dtype = (sd15_inpaint_unet(), getattr(torch, args.dtype)) if cuda else (tiny_unet(), torch.float32)
    backends = args.backends.split(",") if cuda else ["eager"]
    resolutions = [int(r) for r in args.resolutions.split(",")] if cuda else [64]
    unet = UNet2DConditionModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    step = UNetStep(unet.to(device, dtype).eval(), torch.randn(1, 77, config["cross_attention_dim"]).to(device, dtype))
    rows = []
    for res in resolutions:
        h = res // 8
        inputs = (torch.randn(1, 4, h, h, device=device, dtype=dtype), torch.ones(1, 1, h, h, device=device, dtype=dtype),
                  torch.randn(1, 4, h, h, device=device, dtype=dtype), torch.tensor([500.0], device=device))
        reference = None
        for backend in backends:
            runner = StageRunner(backend, device)
            start = time.perf_counter()
            out = runner("unet", step, *inputs)
            build_s = time.perf_counter() - start
            reference = out if reference is None else reference
            times = _time(lambda *x, r=runner: r("unet", step, *x), inputs, 3, args.iters, cuda)
            rows.append({"resolution": res, "backend": backend, "build_s": round(build_s, 2),
                         "p50_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
                         "max_abs_vs_eager": float((out.float() - reference.float()).abs().max())})
            print(rows[-1])
    if args.smoke:
        return 0
    name = torch.cuda.get_device_name(0).replace(" ", "-") if cuda else "cpu"
    result = {"command": "python " + " ".join(sys.argv), "device": name, "dtype": str(dtype), "torch": torch.__version__,
              "unet": "sd15-inpaint shape, random weights" if cuda else "tiny", "rows": rows}
    path = REPO / "benchmarks" / "results" / f"harmonize-unet-step-{name}-{dt.date.today():%Y%m%d}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
