"""Streaming execution: the per-frame step, the history ring, the optimized engine."""

from .engine import Engine, StreamGroup
from .multistream import MultiStreamEnhancer
from .optimize import OptimizedEnhancer
from .ring import TensorRing
from .stream import StreamingEnhancer, run_model_step

__all__ = [
    "Engine",
    "MultiStreamEnhancer",
    "OptimizedEnhancer",
    "StreamGroup",
    "StreamingEnhancer",
    "TensorRing",
    "run_model_step",
]
