"""What the bridge server runs frames through: the :class:`FrameProcessor` interface.

The runtime's :class:`~simharmon.runtime.engine.Engine` (built by the runtime factory, the same
engine every front door uses) satisfies it, and so does :class:`IdentityStandIn`, a clearly
labelled STAND-IN that returns its input, for transport tests and benchmarks. Processors are not
thread-safe; the server calls them from its single engine thread only.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Hashable, List, Mapping, Optional, Protocol, Union, runtime_checkable

import torch

from ..runtime.engine import StepResult

__all__ = ["FrameProcessor", "IdentityStandIn"]


@runtime_checkable
class FrameProcessor(Protocol):
    """The interface the server needs (``Engine`` has it).

    ``step_many`` enhances one frame per stream: ``frames`` maps a stream key to ``[1, 3, H, W]``
    float32 in [0, 1] (or uint8 ``[H, W, 3]``) on ``device``; ``inputs`` maps (some of) the same keys
    to their per-frame inputs (``mask``, ``flow``, ``depth``, ``intrinsics`` as (fx, fy, cx, cy),
    ``camera_to_world``); it returns a ``StepResult`` per key: the output of the frame's kind, or an
    error that names what was wrong, or a passthrough flag. Each key has its own history.
    """

    name: str
    untrained: bool
    stand_in: bool
    used_inputs: List[str]  # per-frame inputs read (the ``welcome`` reply's ``inputs``); others are ignored
    device: torch.device
    pixel_multiple: int
    max_width: int
    max_height: int

    def check_size(self, width: int, height: int) -> None: ...

    def step_many(self, frames: Mapping[Hashable, Any],
                  inputs: Optional[Mapping[Hashable, Mapping[str, Any]]] = None) -> Dict[Hashable, StepResult]: ...

    def remove(self, key: Hashable) -> None: ...

    def keys(self) -> List[Hashable]: ...


class IdentityStandIn:
    """STAND-IN processor for tests and transport benchmarks: returns each frame unchanged.

    It is not an enhancer. It has the real engine's interface and bookkeeping (per-stream keys,
    a stream bound, the same size rule), so the serving layer can be exercised and timed without a
    model. ``delay_s`` simulates a slow model (per call, not per frame, like a batched forward).
    """

    stand_in = True
    untrained = True  # it enhances nothing: no trained weights are behind its outputs
    used_inputs: List[str] = []

    def __init__(self, max_streams: int = 64, pixel_multiple: int = 16, max_width: int = 4096,
                 max_height: int = 4096, delay_s: float = 0.0, device: Union[str, torch.device] = "cpu"):
        if max_streams < 1 or pixel_multiple < 1 or delay_s < 0:
            raise ValueError("max_streams and pixel_multiple must be >= 1 and delay_s >= 0")
        self.name = "identity (stand-in, not an enhancer)"
        self.device = torch.device(device)
        self.pixel_multiple = pixel_multiple
        self.max_width, self.max_height = max_width, max_height
        self.max_streams = max_streams
        self.delay_s = delay_s
        self._frames_seen: Dict[Hashable, int] = {}
        self.calls = 0
        self.batch_sizes: List[int] = []

    def check_size(self, width: int, height: int) -> None:
        """Raise ValueError for sizes the real model would refuse (same multiple rule)."""
        if width % self.pixel_multiple or height % self.pixel_multiple or width <= 0 or height <= 0:
            raise ValueError(f"frame size {width}x{height} (WxH) is not supported: width and height must be positive "
                             f"multiples of {self.pixel_multiple}")
        if width > self.max_width or height > self.max_height:
            raise ValueError(f"frame size {width}x{height} exceeds the maximum {self.max_width}x{self.max_height}")

    def step_many(self, frames: Mapping[Hashable, Any],
                  inputs: Optional[Mapping[Hashable, Mapping[str, Any]]] = None) -> Dict[Hashable, StepResult]:
        """Return ``frames`` unchanged (the same tensor objects), after ``delay_s``."""
        results: Dict[Hashable, StepResult] = {}
        for key, frame in frames.items():
            if key not in self._frames_seen and len(self._frames_seen) >= self.max_streams:
                results[key] = StepResult(error=f"too many streams ({self.max_streams}); remove idle streams first")
                continue
            if not isinstance(frame, torch.Tensor) or frame.dim() not in (3, 4):
                results[key] = StepResult(error=f"frame must be a tensor [1, 3, H, W] or [H, W, 3], got "
                                                f"{getattr(frame, 'shape', type(frame).__name__)}")
                continue
            self._frames_seen[key] = self._frames_seen.get(key, 0) + 1
            results[key] = StepResult(output=frame)
        self.calls += 1
        self.batch_sizes.append(len(frames))
        del self.batch_sizes[:-1000]  # bounded record for tests
        if self.delay_s:
            time.sleep(self.delay_s)
        return results

    def remove(self, key: Hashable) -> None:
        """Forget a stream (unknown keys are ignored)."""
        self._frames_seen.pop(key, None)

    def keys(self) -> List[Hashable]:
        """Keys of the streams seen and not removed."""
        return list(self._frames_seen)
