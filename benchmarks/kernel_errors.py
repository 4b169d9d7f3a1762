"""Worst measured error of each kernel against its float64 oracle, as a multiple of PyTorch's own error
in the same dtype (the ratio tests/ops/test_kernels.py bounds by 2), over many fresh random inputs.

    python benchmarks/kernel_errors.py --device cpu --repeats 30     # the host build (writes benchmarks/results/)
    python benchmarks/kernel_errors.py --device cuda --repeats 30    # on a GPU with cupy

Runs the tests' own cases (each with fresh seeds, every dtype, padding, band and layout) and prints
the worst ratio per kernel and dtype; these are the numbers written beside the tests' bounds.
Also: mean_shift's kernel against its CPU reference, in units of one rounding of the largest value
(the bound the host test uses; their sums run in different orders).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "ops")]

import kernel_cases  # noqa: E402  (tests/ops)
import test_kernels  # noqa: E402  (tests/ops)

from simharmon.ops import mean_shift  # noqa: E402
from simharmon.ops.fuse import launch_mean_shift  # noqa: E402


def run_cases(device: str, repeats: int) -> None:
    t = test_kernels
    for _ in range(repeats):
        for dtype in kernel_cases.DTYPES:
            for padding in ("zeros", "border"):
                t.test_warp(device, dtype, padding)
            t.test_reproject_warp(device, dtype)
            for band in (0, 3, 32):
                t.test_masked_blend(device, dtype, band)
            t.test_mean_shift(device, dtype)
            t.test_temporal_blend(device, dtype)
            for layout in ("rgb", "bgra"):
                t.test_pack(device, dtype, layout)
        t.test_reproject(device)


def mean_shift_vs_reference(device: str, repeats: int) -> dict:
    worst = defaultdict(float)
    shape = (kernel_cases.N, kernel_cases.C, kernel_cases.H, kernel_cases.W)
    for _ in range(repeats):
        for dtype in kernel_cases.DTYPES:
            seed = kernel_cases.new_seed()
            a, b, mask = kernel_cases.fuse_case(seed, dtype, device)
            out = kernel_cases.poisoned(shape, dtype, device)
            launch_mean_shift(a, b, mask, out)
            reference = mean_shift(a.cpu(), b.cpu(), mask.cpu()).to(device)  # the CPU reference path
            unit = torch.finfo(dtype).eps * float(out.double().abs().max())
            worst[str(dtype).replace("torch.", "")] = max(worst[str(dtype).replace("torch.", "")],
                                                           kernel_cases.max_err(reference, out) / unit)
    return dict(worst)


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=30, help="fresh seeds per case")
    parser.add_argument("--out", type=Path, help="JSON (default benchmarks/results/kernel-errors-<device>-<date>.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    test_kernels.MEASURED.clear()  # only this run's measurements
    run_cases(args.device, args.repeats)
    worst = defaultdict(float)
    for case in test_kernels.MEASURED:
        ratio = case["ratio"] if case["ratio"] is not None else (0.0 if case["kernel_err"] == 0 else float("inf"))
        key = f"{case['op']} {case['dtype'].replace('torch.', '')}"
        worst[key] = max(worst[key], ratio)
    report = {
        "benchmark": "benchmarks/kernel_errors.py", "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None, "torch": torch.__version__,
        "repeats": args.repeats, "date": datetime.date.today().isoformat(), "cases_run": len(test_kernels.MEASURED),
        "worst_ratio_vs_torch": dict(sorted(worst.items())),
        "mean_shift_vs_reference_in_roundings": mean_shift_vs_reference(args.device, args.repeats),
    }  # fmt: skip
    for key, value in report["worst_ratio_vs_torch"].items():
        print(f"{key:28s} {value:.4f}")
    print("mean_shift kernel vs reference (roundings):", report["mean_shift_vs_reference_in_roundings"])
    out = args.out or ROOT / "benchmarks" / "results" / f"kernel-errors-{args.device}-{report['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
