"""Device timing for benchmarks: CUDA events (or the host clock on the CPU), percentiles, ceilings.

GPU work is asynchronous, so GPU time comes from CUDA events recorded on the stream, never from a
host timer around launches. The ceilings (matrix-product rate, copy bandwidth) are measured on the
machine itself, as METHOD.md asks, and give the floor that measured times are compared with.
"""

from __future__ import annotations

import statistics
import time
from typing import Dict, List

import numpy as np
import torch

__all__ = ["Clock", "percentiles", "measure_ceilings"]


class Clock:
    """CUDA events on the current stream (GPU work is asynchronous), else host time (the CPU is synchronous)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self):
        """A point in time: a recorded CUDA event, or the host clock."""
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def ms(self, start, end) -> float:
        """Milliseconds between two marks (waits for ``end`` on CUDA)."""
        if not self.cuda:
            return (end - start) * 1000.0
        end.synchronize()
        return start.elapsed_time(end)


def percentiles(values: List[float]) -> Dict[str, float]:
    """p50 / p90 / p99 / mean / min / max / count of a list of milliseconds."""
    arr = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)),
            "p99": float(np.percentile(arr, 99)), "mean": float(arr.mean()), "min": float(arr.min()),
            "max": float(arr.max()), "count": int(arr.size)}  # fmt: skip


def measure_ceilings(device: torch.device, dtype: torch.dtype, small: bool = False) -> Dict[str, float]:
    """Matrix-product rate (TFLOP/s) and device copy bandwidth (GB/s, read + write) measured here.

    small: a 512 matrix and 64 MiB copy (CPU smoke runs) instead of 8192 and 1 GiB.
    """
    clock = Clock(device)
    n = 512 if small else 8192
    mdtype = torch.float32 if device.type == "cpu" else dtype
    gen = torch.Generator(device=device).manual_seed(0)
    sets = [(torch.randn(n, n, device=device, dtype=mdtype, generator=gen),
             torch.randn(n, n, device=device, dtype=mdtype, generator=gen)) for _ in range(3)]  # fmt: skip
    times = []
    for i in range(5 + (5 if small else 30)):
        a, b = sets[i % 3]
        start = clock.mark()
        torch.mm(a, b)
        end = clock.mark()
        if i >= 5:
            times.append(clock.ms(start, end))
    matmul = 2 * n**3 / (statistics.median(times) / 1000) / 1e12
    size = (64 if small else 1024) * 2**20
    src = torch.randint(0, 255, (size,), dtype=torch.uint8, device=device, generator=gen)
    dst = torch.empty_like(src)
    times = []
    for i in range(13):
        start = clock.mark()
        dst.copy_(src)
        end = clock.mark()
        if i >= 3:
            times.append(clock.ms(start, end))
    copy = 2 * size / (statistics.median(times) / 1000) / 1e9
    return {"matmul_tflops": matmul, "matmul_dtype": str(mdtype).replace("torch.", ""), "matmul_size": n,
            "copy_gbps_read_plus_write": copy}  # fmt: skip
