"""Streaming execution: the step stages, the history pool, the engine and the factory every front door uses."""

from .engine import Engine, StepResult
from .factory import RuntimeSpec, build_runtime, resolve_device
from .optimize import OptimizedEnhancer
from .rig import FrameResult, StreamGroup
from .stream import StreamingEnhancer

__all__ = [
    "Engine",
    "FrameResult",
    "OptimizedEnhancer",
    "RuntimeSpec",
    "StepResult",
    "StreamGroup",
    "StreamingEnhancer",
    "build_runtime",
    "resolve_device",
]
