"""The CUDA side of the ops: compile ``kernels/*.cu`` with cupy on first use, launch on torch's stream.

cupy is imported lazily and is optional: without it (or without CUDA tensors) every op runs its
torch reference. Kernels are compiled by NVRTC through ``cupy.RawModule`` once per process and
device (cupy also caches the binary on disk), then launched with ``cuLaunchKernel`` on
``torch.cuda.current_stream()``: no host synchronization, no cupy allocation, so the launches can
be captured in a CUDA graph once each kernel has run once (compilation and module loading cannot
happen during a capture).

Launches on CPU tensors run the same kernel text on the CPU (``_host``: the host build, for tests).

Set ``SIMHARMON_NO_KERNELS=1`` to force the references everywhere (debugging, A/B checks).
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from . import _host
from ._sources import kernel_names, kernel_source, kernels_dir

__all__ = ["kernels_available", "kernels_dir", "kernel_source", "kernel_names", "use_kernels", "launch", "ptr", "i32", "i64",
           "f32", "blocks", "DTYPE_SUFFIX", "COMPILE_OPTIONS"]

DTYPE_SUFFIX = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
COMPILE_OPTIONS: Tuple[str, ...] = ("-std=c++17",)

_lock = threading.Lock()
_modules: Dict[Tuple[str, int], Any] = {}
_functions: Dict[Tuple[str, str, int], Any] = {}
_streams: Dict[Tuple[int, int], Any] = {}


@functools.cache
def _cupy():
    try:
        import cupy
    except Exception:  # not installed, or installed without a usable CUDA runtime
        return None
    return cupy


def kernels_available() -> bool:
    """True when CUDA tensors would run the custom kernels (cupy importable, CUDA up, not disabled)."""
    if os.environ.get("SIMHARMON_NO_KERNELS", "") not in ("", "0"):
        return False
    return torch.cuda.is_available() and _cupy() is not None


def use_kernels(*tensors: Optional[torch.Tensor], dtype: Optional[torch.dtype] = None) -> bool:
    """Whether an op on these tensors takes the kernel path (all on CUDA, supported dtype, cupy present)."""
    if dtype is not None and dtype not in DTYPE_SUFFIX:
        return False
    if not all(t is None or t.is_cuda for t in tensors):
        return False
    return kernels_available()


def _function(module: str, name: str, device: int):
    key = (module, name, device)
    fn = _functions.get(key)
    if fn is None:
        cupy = _cupy()
        with _lock:
            mod = _modules.get((module, device))
            if mod is None:
                mod = cupy.RawModule(code=kernel_source(module), options=COMPILE_OPTIONS)
                _modules[(module, device)] = mod
            fn = mod.get_function(name)
            _functions[key] = fn
    return fn


def _external_stream(handle: int, device: int):
    stream = _streams.get((handle, device))
    if stream is None:
        cupy = _cupy()
        try:
            stream = cupy.cuda.ExternalStream(handle, device)
        except TypeError:  # cupy versions without the device argument
            stream = cupy.cuda.ExternalStream(handle)
        _streams[(handle, device)] = stream
    return stream


def launch(module: str, name: str, device: torch.device, grid: Sequence[int], block: Sequence[int],
           args: Sequence[Any], shared_mem: int = 0) -> None:
    """Launch ``name`` from ``kernels/<module>.cu`` on the current torch stream of ``device``.

    On a CPU device the host build runs it (``_host.launch``: same grid, block and arguments).
    """
    if any(g < 1 for g in grid):
        return  # nothing to do; a zero-sized grid is a launch error
    if device.type == "cpu":
        _host.launch(module, name, grid, block, args, shared_mem)
        return
    cupy = _cupy()
    index = device.index if device.index is not None else torch.cuda.current_device()
    handle = torch.cuda.current_stream(index).cuda_stream
    with cupy.cuda.Device(index):
        fn = _function(module, name, index)
        with _external_stream(handle, index):
            fn(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)


def ptr(t: Optional[torch.Tensor]) -> np.uint64:
    """A tensor's device address as a kernel pointer argument (None -> null)."""
    return np.uint64(0 if t is None else t.data_ptr())


def i32(v: int) -> np.int32:
    return np.int32(v)


def i64(v: int) -> np.int64:
    return np.int64(v)


def f32(v: float) -> np.float32:
    return np.float32(v)


def blocks(total: int, threads: int = 256) -> int:
    """Number of ``threads``-wide blocks covering ``total`` items."""
    return (total + threads - 1) // threads
