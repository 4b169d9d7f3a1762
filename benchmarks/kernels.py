"""Benchmark the fused kernels against the equivalent torch eager compositions (their references).

Shapes (issue 4): frames 1024x576, latents 128x72x16, batch 5, in bfloat16 (the model dtype).
For each case: time per call of the kernel and of the eager composition, achieved GB/s of the
kernel (the bytes it must move at least: every input read once, every output written once) and
that as a percentage of the measured device-to-device copy bandwidth (target >= 70 %).

Kernel GB/s come from CUDA-graph replays of back-to-back calls (GPU time, no Python launch
overhead; capturing them also checks that the ops are graph-safe). The speedup compares both sides
as launched from Python (``kernel_launched_ms`` vs ``eager_ms``), which is what eager code pays.

    python benchmarks/kernels.py                    # on a CUDA machine with cupy: JSON to benchmarks/results/
    python benchmarks/kernels.py --out results.json
    python benchmarks/kernels.py --smoke            # tiny sizes on the CPU: the reference path only (CI-able)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simharmon import ops  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 0.70


@dataclasses.dataclass
class Case:
    name: str
    kernel: Callable[[], object]
    eager: Callable[[], object]
    bytes_moved: int
    shape: str


def nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def flatten(result) -> List[torch.Tensor]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def build_cases(device: str, dtype: torch.dtype, batch: int, frame_hw, latent_hw, channels: int,
                pixel_band: int, latent_band: int) -> List[Case]:
    gen = torch.Generator(device=device).manual_seed(0)
    fh, fw = frame_hw
    lh, lw = latent_hw

    def randn(*shape, scale=1.0, dt=dtype):
        return (torch.randn(shape, generator=gen, device=device) * scale).to(dt)

    def box_mask(h, w):
        mask = torch.zeros(batch, 1, h, w, device=device)
        mask[..., h // 3:h // 3 + h // 4, w // 2:w // 2 + w // 5] = 1.0  # an actor covering ~5 %
        return mask

    hwc = torch.randint(0, 256, (batch, fh, fw, 4), generator=gen, device=device, dtype=torch.uint8)
    frame, frame2 = randn(batch, 3, fh, fw, scale=0.5), randn(batch, 3, fh, fw, scale=0.5)
    latent, latent2 = randn(batch, channels, lh, lw), randn(batch, channels, lh, lw)
    f32 = torch.float32
    flow_f, flow_l = randn(batch, 2, fh, fw, scale=3.0, dt=f32), randn(batch, 2, lh, lw, scale=0.5, dt=f32)
    valid_f = torch.rand(batch, 1, fh, fw, generator=gen, device=device)
    valid_l = torch.rand(batch, 1, lh, lw, generator=gen, device=device)
    mask_f, mask_l = box_mask(fh, fw), box_mask(lh, lw)
    k = torch.tensor([[0.8 * fw, 0, fw / 2 - 0.5], [0, 0.8 * fw, fh / 2 - 0.5], [0, 0, 1]], device=device)
    k = k.repeat(batch, 1, 1)
    k_l = k.clone()
    k_l[:, :2] /= fw / lw
    k_l[:, :2, 2] -= 0.5 * (fw / lw - 1) / (fw / lw)  # latent cell centres (runtime/inputs.py)
    pose = torch.eye(4, device=device).repeat(batch, 1, 1)
    pose[:, 0, 3], pose[:, 2, 3] = 0.2, 0.5
    depth_f = torch.rand(batch, 1, fh, fw, generator=gen, device=device) * 20 + 5
    depth_l = -torch.nn.functional.max_pool2d(-depth_f, fw // lw)
    u8 = torch.uint8
    meta = dict(device="meta")  # output sizes only
    frame_out = torch.empty(batch, 3, fh, fw, dtype=dtype, **meta)
    latent_out = torch.empty(batch, channels, lh, lw, dtype=dtype, **meta)
    fvalid = torch.empty(batch, 1, fh, fw, dtype=f32, **meta)
    lvalid = torch.empty(batch, 1, lh, lw, dtype=f32, **meta)
    fs, ls = f"{batch}x3x{fh}x{fw}", f"{batch}x{channels}x{lh}x{lw}"

    return [
        Case("pack bgra->model", lambda: ops.pack(hwc, "bgra", dtype), lambda: ops.pack_reference(hwc, "bgra", dtype),
             nbytes(hwc, frame_out), f"{batch}x{fh}x{fw}x4"),
        Case("unpack model->rgb (truncate)", lambda: ops.unpack(frame, "rgb"), lambda: ops.unpack_reference(frame, "rgb"),
             nbytes(frame, torch.empty(batch, fh, fw, 3, dtype=u8, **meta)), fs),
        Case("warp frames", lambda: ops.warp(frame, flow_f), lambda: ops.warp_reference(frame, flow_f),
             nbytes(frame, flow_f, frame_out, fvalid), fs),
        Case("warp latents", lambda: ops.warp(latent, flow_l), lambda: ops.warp_reference(latent, flow_l),
             nbytes(latent, flow_l, latent_out, lvalid), ls),
        Case("reproject frames (flow + valid)", lambda: ops.reproject(depth_f, k, pose, depth_f),
             lambda: ops.reproject_reference(depth_f, k, pose, depth_f),
             nbytes(depth_f, depth_f, flow_f, fvalid), f"{batch}x1x{fh}x{fw}"),
        Case("reproject_warp frames", lambda: ops.reproject_warp(frame, depth_f, k, pose, depth_f),
             lambda: ops.reproject_warp_reference(frame, depth_f, k, pose, depth_f),
             nbytes(frame, depth_f, depth_f, frame_out, fvalid), fs),
        Case("reproject_warp latents", lambda: ops.reproject_warp(latent, depth_l, k_l, pose, depth_l),
             lambda: ops.reproject_warp_reference(latent, depth_l, k_l, pose, depth_l),
             nbytes(latent, depth_l, depth_l, latent_out, lvalid), ls),
        Case(f"masked_blend frames (band {pixel_band})", lambda: ops.masked_blend(frame, frame2, mask_f, pixel_band),
             lambda: ops.masked_blend_reference(frame, frame2, mask_f, pixel_band),
             nbytes(frame, frame2, mask_f, frame_out), fs),
        Case(f"masked_blend latents (band {latent_band})", lambda: ops.masked_blend(latent, latent2, mask_l, latent_band),
             lambda: ops.masked_blend_reference(latent, latent2, mask_l, latent_band),
             nbytes(latent, latent2, mask_l, latent_out), ls),
        Case("mean_shift latents", lambda: ops.mean_shift(latent, latent2, mask_l),
             lambda: ops.mean_shift_reference(latent, latent2, mask_l), nbytes(latent, latent2, mask_l, latent_out), ls),
        Case("temporal_blend frames", lambda: ops.temporal_blend(frame, frame2, valid_f, 0.9),
             lambda: ops.temporal_blend_reference(frame, frame2, valid_f, 0.9),
             nbytes(frame, frame2, valid_f, frame_out), fs),
        Case("temporal_blend latents", lambda: ops.temporal_blend(latent, latent2, valid_l, 0.9),
             lambda: ops.temporal_blend_reference(latent, latent2, valid_l, 0.9),
             nbytes(latent, latent2, valid_l, latent_out), ls),
    ]


def time_cuda(fn: Callable[[], object], iters: int, graph: bool, reps: int = 10) -> Dict[str, object]:
    """Milliseconds per call, median of ``iters`` samples of ``reps`` back-to-back calls.

    graph: replay a CUDA graph of the calls (GPU time, no Python launch overhead); the eager
    compositions are timed as launched from Python (``"stream"``), which is what eager code costs.
    """
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            fn()
        torch.cuda.current_stream().wait_stream(side)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            for _ in range(reps):
                fn()
        run_once = cuda_graph.replay
    else:
        def run_once():
            for _ in range(reps):
                fn()
    run_once()
    torch.cuda.synchronize()
    samples = []
    for _ in range(iters):
        start.record()
        run_once()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / reps)
    return {"ms": statistics.median(samples), "timing": "graph" if graph else "stream"}


def time_cpu(fn: Callable[[], object], iters: int, graph: bool = False) -> Dict[str, object]:
    fn()
    samples = []
    for _ in range(iters):
        begin = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - begin) * 1e3)
    return {"ms": statistics.median(samples), "timing": "cpu"}


def copy_bandwidth(device: str, size_bytes: int, timer) -> float:
    """Measured device copy bandwidth in GB/s (bytes read + bytes written per second)."""
    src = torch.empty(size_bytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src), 20, graph=True)["ms"]
    return 2 * size_bytes / (ms * 1e-3) / 1e9


def max_diff(a, b) -> float:
    return max(float((x.double() - y.double()).abs().max()) for x, y in zip(flatten(a), flatten(b)))


def run(args: argparse.Namespace) -> dict:
    cuda = torch.cuda.is_available() and not args.smoke
    if args.smoke:
        device, sizes = "cpu", dict(batch=2, frame_hw=(36, 64), latent_hw=(9, 16), channels=16)
        timer, copy_bytes, iters = time_cpu, 1 << 20, 2
    elif cuda:
        device, sizes = "cuda", dict(batch=5, frame_hw=(576, 1024), latent_hw=(72, 128), channels=16)
        timer, copy_bytes, iters = time_cuda, 1 << 30, args.iters
    else:
        raise SystemExit("no CUDA device: run with --smoke for the CPU reference path")
    dtype = getattr(torch, args.dtype)
    cases = build_cases(device, dtype, pixel_band=args.pixel_band, latent_band=args.latent_band, **sizes)
    copy_gbps = copy_bandwidth(device, copy_bytes, timer)
    rows = []
    for case in cases:
        if args.only and not any(word in case.name for word in args.only):
            continue
        kernel, eager = timer(case.kernel, iters, graph=True), timer(case.eager, iters, graph=False)
        kernel_stream = timer(case.kernel, iters, graph=False)
        gbps = case.bytes_moved / (kernel["ms"] * 1e-3) / 1e9
        row = {"name": case.name, "shape": case.shape, "dtype": args.dtype, "bytes": case.bytes_moved,
               "kernel_ms": kernel["ms"], "kernel_timing": kernel["timing"],
               "kernel_launched_ms": kernel_stream["ms"], "eager_ms": eager["ms"], "eager_timing": eager["timing"],
               "speedup": eager["ms"] / kernel_stream["ms"], "kernel_gbps": gbps,
               "pct_of_copy": 100 * gbps / copy_gbps, "meets_target": gbps >= TARGET * copy_gbps,
               "max_abs_diff_vs_eager": max_diff(case.kernel(), case.eager())}
        rows.append(row)
        print(f"{case.name:38s} {case.shape:18s} kernel {kernel['ms']:8.4f} ms  eager {eager['ms']:8.4f} ms  "
              f"x{row['speedup']:6.1f}  {gbps:8.1f} GB/s  {row['pct_of_copy']:5.1f} % of copy  "
              f"diff {row['max_abs_diff_vs_eager']:.2g}", flush=True)
    return {
        "benchmark": "benchmarks/kernels.py", "smoke": bool(args.smoke), "device": torch.cuda.get_device_name()
        if cuda else platform.processor() or "cpu", "torch": torch.__version__, "cupy": _cupy_version(),
        "kernels_used": bool(cuda and ops.kernels_available()), "copy_gbps": copy_gbps, "target_pct": 100 * TARGET,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cases": rows,
    }


def _cupy_version() -> Optional[str]:
    try:
        import cupy
    except Exception:
        return None
    return cupy.__version__


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (reference path); no JSON unless --out")
    parser.add_argument("--out", type=Path, help="results JSON (default on CUDA: benchmarks/results/kernels-<gpu>.json)")
    parser.add_argument("--iters", type=int, default=50, help="timed samples per case (median reported)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--pixel-band", type=int, default=8, help="masked_blend band on frames (pixels)")
    parser.add_argument("--latent-band", type=int, default=1, help="masked_blend band on latents (cells)")
    parser.add_argument("--only", nargs="*", help="run only cases whose name contains one of these words")
    args = parser.parse_args(argv)
    report = run(args)
    print(f"device copy bandwidth: {report['copy_gbps']:.1f} GB/s; kernels used: {report['kernels_used']}")
    out = args.out
    if out is None and not args.smoke:
        slug = "".join(ch if ch.isalnum() else "-" for ch in report["device"].lower()).strip("-")
        out = RESULTS / f"kernels-{slug}.json"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
