"""Streaming execution: the per-frame step, the history ring, frame conversions."""

from .ring import TensorRing
from .multistream import MultiStreamEnhancer
from .stream import StreamingEnhancer, run_model_step

__all__ = ["MultiStreamEnhancer", "StreamingEnhancer", "TensorRing", "run_model_step"]
