"""The step module: the stages of ``stages.py`` composed once, for every driver.

:class:`StepCore` is a pure function of its tensors: frames, the gathered rings of the streams it
runs and their per-frame inputs in; output frames and the updated rings out. It has no state and no
host synchronization, so the same module runs eagerly with dynamic shapes (``StreamingEnhancer``)
and, with fixed shapes, through torch.compile, CUDA graphs or TensorRT (``Engine``).

A core is specialized on what changes its graph: the number of references (0 or K), whether the
slots hold history (history warping re-expresses it), and the frame kind: ``"uint8"`` (interleaved
RGB ``[N, H, W, 3]`` in and out, the renderer boundary) or ``"float"`` (``[N, 3, H, W]`` in [0, 1]
in, float32 on 8-bit levels out). Both kinds give the same 8-bit values (tested).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from ..config import StreamConfig
from ..io.pixels import frame_to_model, hwc_to_unit_frame, levels_to_hwc, uint8_hwc_to_frame
from ..ops import pack, unpack
from .history import RingState
from .inputs import FrameInputs
from .stages import (
    advance_motion,
    align_references,
    finish_output,
    gather_entries,
    history_capacity,
    identity_motion,
    model_forward,
    output_rounding,
    push_entries,
    ring_entry,
    ring_stride,
)

__all__ = ["FRAME_KINDS", "StepCore", "check_stream"]

FRAME_KINDS = ("uint8", "float")


def check_stream(model, stream: StreamConfig) -> None:
    """ValueError when ``stream`` changes what training fixed: how the network's output is read."""
    if stream.colour_transform != model.config.stream.colour_transform:
        raise ValueError(f"stream.colour_transform {stream.colour_transform!r} differs from the model's "
                         f"{model.config.stream.colour_transform!r}: it is how the network's output is read, "
                         "fixed by training")


class StepCore(nn.Module):
    """One step of N streams: see the module docstring.

    model: an ``EnhancerModel`` or ``OptimizedEnhancer`` (its ``optimizations.fused_io`` selects the
        fused pack / unpack ops at the uint8 boundary).
    stream: the temporal and output options.
    num_refs: references per stream in this step (0: non-temporal, else ``len(stream.offsets)``).
    has_history: the slots hold earlier entries whose motion must be advanced (history warping).
    kind: ``"uint8"`` or ``"float"`` frames.
    """

    def __init__(self, model, stream: StreamConfig, num_refs: int = 0, has_history: bool = False,
                 kind: str = "float") -> None:
        super().__init__()
        if kind not in FRAME_KINDS:
            raise ValueError(f"frame kind must be one of {FRAME_KINDS}, got {kind!r}")
        if num_refs not in (0, stream.num_refs):
            raise ValueError(f"num_refs must be 0 or {stream.num_refs} (len(stream.offsets)), got {num_refs}")
        check_stream(model, stream)
        self.model, self.stream = model, stream
        self.num_refs, self.has_history, self.kind = num_refs, has_history, kind
        self.capacity = history_capacity(stream)
        self.warp = stream.history_warp if self.capacity else "off"
        self.stride = ring_stride(stream, model.config.tokenizer.spatial_compression)
        optimizations = getattr(model, "optimizations", None)
        self.fused_io = bool(optimizations is not None and optimizations.fused_io)
        self.finishes = stream.guided_output or stream.region_pixel
        self.rounding = output_rounding(stream)

    @property
    def dtype(self) -> torch.dtype:
        """The model's compute dtype."""
        return self.model.dtype

    # -- frame boundary ------------------------------------------------------------------------
    def pre(self, frames: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """Frames -> (model-space image ``[N, 3, H, W]``, the [0, 1] frame when the output stage needs it)."""
        if self.kind == "float":
            return frame_to_model(frames, self.dtype), frames
        image = pack(frames, "rgb", self.dtype) if self.fused_io else frame_to_model(uint8_hwc_to_frame(frames),
                                                                                     self.dtype)
        return image, (hwc_to_unit_frame(frames, "rgb") if self.finishes else None)

    def post(self, decoded: Tensor, frame: Optional[Tensor], mask: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
        """Decoded -> (output frames of this core's kind, the output in model space for the ring or None)."""
        keep = self.capacity > 0
        if self.kind == "uint8" and self.fused_io and not self.finishes:
            out = unpack(decoded, "rgb", self.rounding)  # one pass; equals levels_to_hwc(finish_output(...))
            return out, (pack(out, "rgb", self.dtype) if keep else None)
        levels = finish_output(self.stream, decoded, frame, mask)
        image = frame_to_model(levels, self.dtype) if keep else None
        return (levels if self.kind == "float" else levels_to_hwc(levels, "rgb")), image

    # -- the step ------------------------------------------------------------------------------
    def forward(self, frames: Tensor, positions: Optional[Tensor] = None, entries: Optional[Tensor] = None,
                motion: Optional[Tensor] = None, entry_depth: Optional[Tensor] = None,
                entry_intrinsics: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                flow: Optional[Tensor] = None, depth: Optional[Tensor] = None, intrinsics: Optional[Tensor] = None,
                pose: Optional[Tensor] = None):
        """One step for N streams.

        frames: uint8 ``[N, H, W, 3]`` or float ``[N, 3, H, W]`` in [0, 1] (this core's kind).
        positions: int64 ``[N, K]`` ring positions (0 = newest) of each stream's references (K > 0).
        entries / motion / entry_depth / entry_intrinsics: the streams' rings, ``[N, capacity, ...]``
            (``history.RingState``); None where the options keep none.
        mask / flow / depth / intrinsics / pose: per-frame inputs (``inputs.FrameInputs``), ``[N, ...]``.
        Returns (output frames, updated entries, motion, entry_depth, entry_intrinsics).
        """
        image, frame = self.pre(frames)
        ring_inputs = None
        if self.warp != "off":
            ring_inputs = FrameInputs(flow, depth, intrinsics, pose, mask).scaled(self.stride)
            if self.has_history:
                motion = advance_motion(self.warp, motion, ring_inputs)
        references, align = None, None
        if self.num_refs:
            references = gather_entries(entries, positions)
            if self.warp != "off":
                align = self._aligner(positions, motion, entry_depth, entry_intrinsics, ring_inputs)
        decoded, x0 = model_forward(self.model, self.stream, image, references, mask=mask, align=align)
        out, out_image = self.post(decoded, frame, mask)
        return (out, *self._push(RingState(entries, motion, entry_depth, entry_intrinsics), out_image, x0, ring_inputs))

    def remember(self, frames: Tensor, state: RingState, inputs: FrameInputs) -> RingState:
        """Push given OUTPUT frames (this core's kind) into the rings, as if a step had produced them.

        Resuming a stream: after remembering its last outputs, the next step continues exactly as the
        uninterrupted stream would (except ``reference_latent="output"``, whose x0 latents are not
        recoverable from frames: they are re-encoded). Inputs as ``forward``'s (the mask is unused).
        """
        image = self.pre(frames)[0]
        ring_inputs = None
        if self.warp != "off":
            ring_inputs = inputs.scaled(self.stride)
            if self.has_history:
                state = state._replace(motion=advance_motion(self.warp, state.motion, ring_inputs))
        return self._push(state, image, None, ring_inputs)

    def _push(self, state: RingState, out_image: Optional[Tensor], x0: Optional[Tensor],
              ring_inputs: Optional[FrameInputs]) -> RingState:
        """The rings with this step's output pushed as the newest entry (unchanged without history)."""
        if not self.capacity:
            return state
        entries, motion, entry_depth, entry_intrinsics = state
        entry = ring_entry(self.model, self.stream, out_image, x0)
        entries = push_entries(entries, entry)
        if self.warp == "flow":
            motion = push_entries(motion, identity_motion("flow", entry))
        elif self.warp == "depth":
            motion = push_entries(motion, identity_motion("depth", ring_inputs.intrinsics))
            entry_depth = push_entries(entry_depth, ring_inputs.depth)
            entry_intrinsics = push_entries(entry_intrinsics, ring_inputs.intrinsics)
        return RingState(entries, motion, entry_depth, entry_intrinsics)

    def _aligner(self, positions: Tensor, motion: Tensor, entry_depth: Optional[Tensor],
                 entry_intrinsics: Optional[Tensor], ring_inputs: FrameInputs):
        ref_motion = gather_entries(motion, positions)
        ref_depth = None if entry_depth is None else gather_entries(entry_depth, positions)
        ref_intrinsics = None if entry_intrinsics is None else gather_entries(entry_intrinsics, positions)

        def align(references: Tensor, current: Tensor) -> Tensor:
            return align_references(self.warp, references, ref_motion, current, ring_inputs, ref_depth,
                                    ref_intrinsics, self.stream.depth_tolerance)

        return align

    def run(self, frames: Tensor, state: RingState, positions: Optional[Tensor],
            inputs: FrameInputs) -> Tuple[Tensor, RingState]:
        """``forward`` with the ring as a :class:`RingState` and the inputs as a ``FrameInputs``."""
        out, *ring = self(frames, positions, *state, inputs.mask, inputs.flow, inputs.depth, inputs.intrinsics,
                          inputs.pose)
        return out, RingState(*ring)
