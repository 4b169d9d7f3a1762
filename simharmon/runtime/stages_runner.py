"""Any stage module (e.g. an offline harmonizer's UNet step, VAE encode and decode) through the runtime's
backends, one static shape per bucket: what ``runtime.factory.stage_runner`` gives a front door.

* auto: cudagraph (over compile) on a CUDA device, eager on the CPU (``backends.resolve_backend``);
* eager: the stage module itself;
* compile: ``runtime.backends.build_core('compile', ...)`` (inductor, static shapes, freezing);
* cudagraph: the compiled stage captured once per input shape over static buffers, then replayed
  (inputs are copied into the buffers, the output is cloned out);
* tensorrt: not offered for these stages yet (the runtime's TensorRT path is built for the
  enhancer's step's fixed argument list); asking for it raises :class:`BackendUnavailable` saying so.

A bucket is (stage name, input shapes and dtypes): a 512 and a 1024 run build separate entries.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
from torch import Tensor, nn

from .backends import BackendUnavailable, build_core, require_backend, resolve_backend

__all__ = ["BACKENDS", "StageRunner", "CapturedStage"]

BACKENDS = ("auto", "eager", "compile", "cudagraph", "tensorrt")
StageFn = Callable[..., Tensor]


class CapturedStage:
    """``fn`` over static input buffers captured as one CUDA graph (CUDA only); calls replay it."""

    def __init__(self, fn: StageFn, example: Tuple[Tensor, ...], warmup: int = 2) -> None:
        self.inputs = tuple(x.clone() for x in example)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):  # compiles, autotunes and creates library handles before capture
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(*self.inputs)

    def __call__(self, *inputs: Tensor) -> Tensor:
        for buffer, value in zip(self.inputs, inputs):
            buffer.copy_(value)
        self.graph.replay()
        return self.output.clone()


class StageRunner:
    """Runs stage modules on ``backend``, building each (stage, shapes) bucket once."""

    def __init__(self, backend: str = "eager", device: torch.device | str = "cpu") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.device = torch.device(device)
        backend = resolve_backend(backend, self.device)
        require_backend(backend, self.device)
        if backend == "tensorrt":
            raise BackendUnavailable("backend 'tensorrt' is not offered for the harmonizer stages yet; "
                                     "use 'compile' or 'cudagraph'")
        self.backend = backend
        self._built: Dict[tuple, StageFn] = {}

    def buckets(self):
        """The (stage, shapes) keys built so far."""
        return list(self._built)

    def __call__(self, name: str, module: nn.Module, *inputs: Tensor) -> Tensor:
        key = (name, tuple((tuple(x.shape), x.dtype) for x in inputs))
        fn = self._built.get(key)
        with torch.inference_mode():
            if fn is None:
                fn = self._built[key] = self._build(module, inputs)
            return fn(*inputs)

    def _build(self, module: nn.Module, inputs: Tuple[Tensor, ...]) -> StageFn:
        if self.backend == "eager":
            return module
        compiled = build_core("compile", module)
        if self.backend == "compile":
            return compiled
        return CapturedStage(compiled, inputs)
