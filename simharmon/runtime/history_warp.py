"""Warping the history ring into the current view (``StreamConfig.history_warp``).

The ring keeps each entry in the view it was rendered in. Beside it, this keeps for every entry
the motion from the NEWEST frame's view to the entry's view, updated as frames arrive, so an entry
is resampled once when used and never accumulates blur:

* ``"flow"``: a cumulative backward flow and its validity, ``[B, 3, h, w]`` per entry. A new frame
  with flow f (to the previous frame) maps entry flows F to ``f + warp(F, f)`` and validities V to
  ``warp(V, f) * inside(f)``: composing flows means resampling the flow field, which is smooth.
* ``"depth"``: the pose from the newest camera to the entry's camera, composed exactly as
  ``A <- A @ pose`` in float64, plus the entry's own depth and intrinsics for the occlusion test.

An entry is aligned with ``warp`` / ``reproject_warp`` (border padding), and ``temporal_blend``
with alpha 1 replaces what has no valid source (disoccluded, off-screen) by the current content.
With zero flow or an identity pose and consistent depth, alignment returns the entry unchanged
(bit-exact for zero flow).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..ops import reproject_warp, temporal_blend, warp
from .inputs import FrameInputs
from .ring import TensorRing

__all__ = ["HistoryAligner"]


class HistoryAligner:
    """Per-entry motion for a ``TensorRing`` of the same capacity, pushed and cleared in step with it.

    mode: ``"flow"`` or ``"depth"``; rel_tol: the depth occlusion test's relative tolerance.
    Inputs are ``FrameInputs`` already at the ring's resolution (``FrameInputs.scaled``).
    """

    def __init__(self, mode: str, capacity: int, rel_tol: float):
        if mode not in ("flow", "depth"):
            raise ValueError(f"history warp mode must be 'flow' or 'depth', got {mode!r}")
        self.mode = mode
        self.rel_tol = rel_tol
        self._motion = TensorRing(capacity)  # flow: [B, 3, h, w] (flow, validity); depth: [B, 4, 4] float64
        self._depth = TensorRing(capacity)  # depth mode: [B, 1, h, w]
        self._intrinsics = TensorRing(capacity)  # depth mode: [B, 3, 3]

    def __len__(self) -> int:
        return len(self._motion)

    def clear(self) -> None:
        self._motion.clear()
        self._depth.clear()
        self._intrinsics.clear()

    def advance(self, inputs: FrameInputs) -> None:
        """A new frame arrived: re-express every entry's motion relative to its view."""
        for offset in range(1, len(self._motion) + 1):
            motion = self._motion.get(offset)
            if self.mode == "flow":
                moved, inside = warp(motion, inputs.flow, "border")
                motion[:, :2].copy_(inputs.flow + moved[:, :2])
                motion[:, 2:].copy_(moved[:, 2:] * inside)
            else:
                motion.copy_(motion @ inputs.pose)

    def push(self, inputs: FrameInputs, like: torch.Tensor) -> None:
        """The newest frame's entry was pushed to the ring: its motion is the identity.

        like: the ring entry ``[B, C, h, w]`` (gives batch, size and device).
        """
        batch, _, height, width = like.shape
        if self.mode == "flow":
            identity = torch.zeros((batch, 3, height, width), dtype=torch.float32, device=like.device)
            identity[:, 2] = 1.0
            self._motion.push(identity)
        else:
            self._motion.push(torch.eye(4, dtype=torch.float64, device=like.device).expand(batch, 4, 4))
            self._depth.push(inputs.depth)
            self._intrinsics.push(inputs.intrinsics)

    def align(self, entry: torch.Tensor, offset: int, current: torch.Tensor, inputs: Optional[FrameInputs]) -> torch.Tensor:
        """Ring ``entry`` (pushed ``offset`` frames ago) in the current view; ``current`` fills the gaps.

        entry, current: ``[B, C, h, w]`` in the same dtype. Returns ``[B, C, h, w]``.
        """
        motion = self._motion.get(offset)
        if self.mode == "flow":
            warped, inside = warp(entry, motion[:, :2], "border")
            valid = motion[:, 2:] * inside
        else:
            warped, valid = reproject_warp(entry, inputs.depth, inputs.intrinsics, motion, self._depth.get(offset),
                                           prev_intrinsics=self._intrinsics.get(offset), rel_tol=self.rel_tol,
                                           padding="border")
        return temporal_blend(current, warped, valid, 1.0)
