"""Execution backends for a :class:`StepCore`: eager, torch.compile, CUDA graph, TensorRT.

* eager: the module itself.
* compile: ``torch.compile`` (inductor, static shapes), with inductor freezing so weights are
  constants and constant expressions fold.
* cudagraph: the whole :meth:`StaticState.run` (gather references, step, output copy, ring
  update) captured once per bucket and replayed; over the compiled or the eager core.
* tensorrt: the core through torch-tensorrt's dynamo frontend, when torch-tensorrt is installed.
"""

from __future__ import annotations

import importlib.util
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from .compiled_step import CoreFn, StaticState, StepCore

__all__ = ["BackendUnavailable", "require_backend", "build_core", "EagerRunner", "GraphRunner"]

TENSORRT_INSTALL = (
    "install torch-tensorrt built for this torch and CUDA version, e.g. `pip install torch-tensorrt` "
    "(see https://pytorch.org/TensorRT/getting_started/installation.html), or use backend 'compile' or 'cudagraph'"
)


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (no CUDA device, or torch-tensorrt missing)."""


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


def _allow_recompiles(count: int = 64) -> None:
    # Every bucket's core is another module instance of the same forward code; dynamo's default
    # limit (8 per code object) would silently fall back to eager after 8 buckets.
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    if getattr(cfg, name) < count:
        setattr(cfg, name, count)


class _TensorRTAdapter(nn.Module):
    """Fixed-arity wrapper: TensorRT graphs take and return tensors only (no None)."""

    def __init__(self, core: StepCore, has_refs: bool) -> None:
        super().__init__()
        self.core, self.has_refs = core, has_refs

    def forward(self, frames: Tensor, *refs: Tensor):
        """frames uint8 [N, H, W, 3] (+ refs) -> (out,) or (out, ring entry)."""
        out, entry = self.core(frames, refs[0] if self.has_refs else None)
        return (out,) if entry is None else (out, entry)


def build_core(backend: str, core: StepCore, *, freezing: bool = True, compile_for_graph: bool = True,
               example: Optional[StaticState] = None, use_refs: bool = False) -> CoreFn:  # fmt: skip
    """The callable a runner applies to static buffers, for ``backend``.

    compile_for_graph: cudagraph backend: capture the compiled core (else the eager one).
    example / use_refs: tensorrt only: the static buffers whose shapes the engine is built for.
    """
    if backend == "eager" or (backend == "cudagraph" and not compile_for_graph):
        return core
    if backend in ("compile", "cudagraph"):
        _allow_recompiles()
        return torch.compile(core, dynamic=False, options={"freezing": freezing})
    if backend == "tensorrt":
        return _tensorrt_core(core, example, use_refs)
    raise ValueError(f"unknown backend {backend!r}")


def _tensorrt_core(core: StepCore, example: Optional[StaticState], use_refs: bool) -> CoreFn:
    if example is None:
        raise ValueError("the tensorrt backend needs example static buffers to build for")
    try:
        import torch_tensorrt
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise BackendUnavailable(f"could not import torch_tensorrt ({exc}): {TENSORRT_INSTALL}") from exc
    inputs = [example.frames]
    if use_refs:
        inputs.append(example.ring.index_select(1, example.ref_index))
    adapter = _TensorRTAdapter(core, use_refs).eval()
    try:
        engine = torch_tensorrt.compile(adapter, ir="dynamo", inputs=inputs, enabled_precisions={core.dtype},
                                        min_block_size=1)  # fmt: skip
    except Exception as exc:  # pragma: no cover - needs TensorRT
        raise BackendUnavailable(f"torch_tensorrt could not build the step ({type(exc).__name__}: {exc})") from exc

    def run(frames: Tensor, refs: Optional[Tensor]):
        """The StepCore interface over the TensorRT module."""
        outs = engine(frames, refs) if use_refs else engine(frames)
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        return outs[0], (outs[1] if len(outs) > 1 else None)

    return run


class EagerRunner:
    """Runs ``state.run(core)`` directly (eager, compile and tensorrt backends)."""

    def __init__(self, state: StaticState, core: CoreFn, use_refs: bool) -> None:
        self.state, self.core, self.use_refs = state, core, use_refs

    def __call__(self) -> None:
        self.state.run(self.core, self.use_refs)


class GraphRunner:
    """``state.run(core)`` captured as one CUDA graph on ``stream``; each call replays it.

    Capture happens at construction, after ``warmup`` eager runs (which compile, autotune and
    create library handles). The ring is restored after the warm-up, so history is unchanged;
    construct it after the current frames are in ``state.frames`` and before that step runs.
    """

    def __init__(self, state: StaticState, core: CoreFn, use_refs: bool, stream: torch.cuda.Stream,
                 pool=None, warmup: int = 2) -> None:  # fmt: skip
        self.state, self.stream = state, stream
        saved = state.ring.clone() if state.ring is not None else None
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                state.run(core, use_refs)
            if saved is not None:
                state.ring.copy_(saved)
        stream.synchronize()  # one-time, at capture: the graph must start from settled buffers
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool, stream=stream):
            state.run(core, use_refs)

    def __call__(self) -> None:
        # Launches on the current stream; the engine calls it inside ``torch.cuda.stream(stream)``.
        self.graph.replay()


Runner = Callable[[], None]
