"""Streaming execution: the per-frame step, the history ring, frame conversions."""

from .ring import TensorRing
from .stream import StreamingEnhancer

__all__ = ["StreamingEnhancer", "TensorRing"]
