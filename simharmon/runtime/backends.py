"""Execution backends for a step module with static shapes: eager, torch.compile, CUDA graph, TensorRT.

Nothing above the engine knows which backend runs; nothing here knows what the module computes,
so the enhancer's step and the offline harmonizers' steps use the same functions:

* :func:`build_core` turns a module into the callable a runner calls: the module itself (eager),
  ``torch.compile`` (inductor, static shapes, frozen weights), or a torch-tensorrt engine;
* :class:`GraphRunner` captures a whole closure over static buffers (gather, step, write-back) as
  one CUDA graph and replays it (the ``cudagraph`` backend: over the compiled or the eager core).
* :func:`resolve_backend` gives ``auto`` its meaning: cudagraph on CUDA, eager on the CPU.
"""

from __future__ import annotations

import importlib.util
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = ["BackendUnavailable", "GraphRunner", "Runner", "build_core", "require_backend", "resolve_backend"]

TENSORRT_INSTALL = (
    "install torch-tensorrt built for this torch and CUDA version (`pip install 'simharmon[tensorrt]'`, see "
    "https://pytorch.org/TensorRT/getting_started/installation.html), or use backend 'compile' or 'cudagraph'"
)

Runner = Callable[[], None]


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (no CUDA device, or torch-tensorrt missing)."""


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """``"auto"`` -> ``"cudagraph"`` (over compile) on a CUDA device, ``"eager"`` on the CPU; others unchanged."""
    if backend != "auto":
        return backend
    return "cudagraph" if torch.device(device).type == "cuda" else "eager"


def require_backend(backend: str, device: torch.device) -> None:
    """Raise :class:`BackendUnavailable` with what to do when ``backend`` cannot run on ``device``."""
    if backend in ("cudagraph", "tensorrt"):
        if device.type != "cuda":
            raise BackendUnavailable(f"backend {backend!r} needs a CUDA device; got device {str(device)!r}")
        if not torch.cuda.is_available():
            raise BackendUnavailable(
                f"backend {backend!r} needs a CUDA device, but torch.cuda.is_available() is False "
                f"(torch {torch.__version__}); use backend 'eager' or 'compile' with device 'cpu'"
            )
    elif device.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(f"device {str(device)!r} requested but torch.cuda.is_available() is False; use device 'cpu'")
    if backend == "tensorrt" and importlib.util.find_spec("torch_tensorrt") is None:
        raise BackendUnavailable(f"backend 'tensorrt' needs the torch_tensorrt package, which is not installed: {TENSORRT_INSTALL}")


def _allow_recompiles(count: int = 256) -> None:
    # Every bucket's core is another module instance of the same forward code; dynamo's default
    # limit (8 per code object) would silently fall back to eager after 8 buckets.
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    if getattr(cfg, name) < count:
        setattr(cfg, name, count)


class _PositionalAdapter(nn.Module):
    """Fixed-arity wrapper: TensorRT graphs take and return tensors only (no None)."""

    def __init__(self, core: nn.Module, present: Sequence[bool]) -> None:
        super().__init__()
        self.core, self.present = core, list(present)

    def forward(self, *tensors: Tensor):
        """The present arguments, in order -> the outputs that are not None."""
        it = iter(tensors)
        args = [next(it) if here else None for here in self.present]
        return tuple(out for out in self.core(*args) if out is not None)


def build_core(backend: str, core: nn.Module, *, freezing: bool = True, compile_for_graph: bool = True,
               example: Optional[Sequence[Optional[Tensor]]] = None) -> Callable:
    """The callable a runner applies to its static buffers, for ``backend``.

    compile_for_graph: cudagraph backend: capture the compiled core (else the eager one).
    example: tensorrt only: the core's positional arguments (static buffers; None where absent).
    """
    if backend == "eager" or (backend == "cudagraph" and not compile_for_graph):
        return core
    if backend in ("compile", "cudagraph"):
        _allow_recompiles()
        return torch.compile(core, dynamic=False, options={"freezing": freezing})
    if backend == "tensorrt":
        return _tensorrt_core(core, example)
    raise ValueError(f"unknown backend {backend!r}")


def _tensorrt_core(core: nn.Module, example: Optional[Sequence[Optional[Tensor]]]) -> Callable:
    if example is None:
        raise ValueError("the tensorrt backend needs example static buffers to build for")
    try:
        import torch_tensorrt
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise BackendUnavailable(f"could not import torch_tensorrt ({exc}): {TENSORRT_INSTALL}") from exc
    present = [t is not None for t in example]
    adapter = _PositionalAdapter(core, present).eval()
    with torch.inference_mode():
        outputs = core(*example)  # which outputs exist (their positions are fixed per bucket)
    returned = [o is not None for o in outputs]
    dtype = getattr(core, "dtype", torch.float32)
    try:
        engine = torch_tensorrt.compile(adapter, ir="dynamo", inputs=[t for t in example if t is not None],
                                        enabled_precisions={dtype}, min_block_size=1)
    except Exception as exc:  # pragma: no cover - needs TensorRT
        raise BackendUnavailable(f"torch_tensorrt could not build the step ({type(exc).__name__}: {exc})") from exc

    def run(*args: Optional[Tensor]):
        """The core's interface over the TensorRT module."""
        outs = engine(*[a for a in args if a is not None])
        outs = iter(outs if isinstance(outs, (tuple, list)) else (outs,))
        return tuple(next(outs) if here else None for here in returned)

    return run


class GraphRunner:
    """``fn`` (a closure over static buffers) captured as one CUDA graph on ``stream``; each call replays it.

    Capture happens at construction, after ``warmup`` eager runs (which compile, autotune and
    create library handles). ``fn`` must be harmless to run then: the engine points the buffers'
    slot indices at a scratch slot before it builds a runner.
    """

    def __init__(self, fn: Runner, stream: torch.cuda.Stream, pool=None, warmup: int = 2) -> None:
        self.stream = stream
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn()
        stream.synchronize()  # one-time, at capture: the graph must start from settled buffers
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool, stream=stream):
            fn()

    def __call__(self) -> None:
        # Launches on the current stream; the engine calls it inside ``torch.cuda.stream(stream)``.
        self.graph.replay()
