"""Streaming enhancer: the eager reference, with dynamic shapes. One stream of frames in, enhanced frames out.

It runs the same :class:`~simharmon.runtime.step.StepCore` as the engine, eagerly, over a
:class:`~simharmon.runtime.history.HistoryPool` of B slots (a batch of B frames is B streams that
step together). Two temporal layouts (``StreamConfig``, HARMONIZER.md):

* ``release`` (the published Harmonizer checkpoint): the clip [current, refs...] is encoded on the
  VAE's time axis and only latent 0 is decoded (the causal decoder makes that the release's frame 0
  exactly). The ring holds enhanced FRAMES on 8-bit levels, exactly as the release re-reads them.
* ``per_frame`` (the paper's Eq. 2): each frame is encoded alone; the ring holds enhanced LATENTS.

Optional features (``StreamConfig``; all off by default, and the default path is exact to the
release): history warping into the current view, region-limited output in latent and/or pixel
space, the mask as a DiT condition and the guided output, fed by per-frame renderer inputs
(``inputs.py``). For a model that reads masks, a frame without a mask passes through unchanged
(``inputs.NO_MASK``; ``last_passthrough`` says so and it is logged once per stream).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Optional, Sequence, Tuple

import torch

from ..config import StreamConfig
from ..io.pixels import as_uint8_frames, check_frame, hwc_to_unit_frame, levels_to_hwc
from .history import HistoryPool
from .inputs import NO_MASK, NO_MASK_MESSAGE, FrameInputs, gather_inputs
from .step import StepCore, check_stream

__all__ = ["StreamingEnhancer", "check_frame_size"]

log = logging.getLogger("simharmon.runtime")


def check_frame_size(config, height: int, width: int) -> None:
    """ValueError unless ``height`` x ``width`` frames fit the model (multiple of ``pixel_multiple``, RoPE tables)."""
    multiple = config.pixel_multiple
    if height % multiple or width % multiple or height <= 0 or width <= 0:
        raise ValueError(
            f"frame size {width}x{height} (WxH) is not supported: width and height must be positive multiples of "
            f"{multiple} (the VAE's {config.tokenizer.spatial_compression}x downsampling times the DiT's "
            f"{config.dit.patch_spatial}x{config.dit.patch_spatial} patches); the nearest smaller size is "
            f"{width // multiple * multiple}x{height // multiple * multiple}")
    stride = config.tokenizer.spatial_compression
    max_h, max_w = config.dit.max_img_h * stride, config.dit.max_img_w * stride  # RoPE tables cover max_img latents
    if height > max_h or width > max_w:
        raise ValueError(f"frame size {width}x{height} exceeds the DiT's position tables ({max_w}x{max_h} max)")


class StreamingEnhancer:
    """Enhance a stream of frames of one size, keeping the temporal history on the model's device.

    model: a built ``EnhancerModel`` (``simharmon.models.build_enhancer``) or an ``OptimizedEnhancer``.
    stream: overrides ``model.config.stream`` when given.
    """

    def __init__(self, model, stream: Optional[StreamConfig] = None):
        self.model = model
        self.stream = stream if stream is not None else model.config.stream
        check_stream(model, self.stream)
        self._pool: Optional[HistoryPool] = None
        self._cores: Dict[Tuple[int, bool, str], StepCore] = {}
        self._frame_shape: Optional[Tuple[int, int, int]] = None
        self.frames_seen = 0
        self.last_passthrough: Optional[str] = None  # "no_mask" when the last step passed its frame through
        self._told_no_mask = False

    @property
    def history_length(self) -> int:
        """How many previous outputs ``prime`` wants (0 when the stream is non-temporal)."""
        return 0 if self.stream.history == "none" else self.stream.history_length

    @property
    def layout(self) -> str:
        return self.stream.layout

    def reset(self) -> None:
        """Start a new stream: forget the history and the frame size."""
        self._pool = None
        self._frame_shape = None
        self.frames_seen = 0

    def with_stream(self, **changes) -> StreamingEnhancer:
        """A fresh enhancer on the same model with some stream settings changed."""
        return StreamingEnhancer(self.model, dataclasses.replace(self.stream, **changes))

    # -- checks ---------------------------------------------------------------------------------
    def _check_size(self, batch: int, height: int, width: int) -> None:
        check_frame_size(self.model.config, height, width)
        shape = (batch, height, width)
        if self._frame_shape is None:
            self._frame_shape = shape
        elif shape != self._frame_shape:
            b0, h0, w0 = self._frame_shape
            raise ValueError(
                f"frame {self.frames_seen} has batch {batch} and size {width}x{height}, but this stream started with "
                f"batch {b0} and size {w0}x{h0}; mixed resolutions in one stream are not supported "
                "(call reset() to start a new stream)")

    def _has_history(self) -> bool:
        return self._pool is not None and self._pool.available(0) > 0

    def _inputs(self, batch: int, height: int, width: int, **given) -> FrameInputs:
        return gather_inputs(self.stream, batch, height, width, self.model.device, has_history=self._has_history(),
                             **given)

    def _pool_for(self, batch: int, height: int, width: int) -> HistoryPool:
        if self._pool is None:
            tok = self.model.config.tokenizer
            self._pool = HistoryPool(self.stream, batch, height, width, latent_channels=tok.z_dim,
                                     spatial_compression=tok.spatial_compression, dtype=self.model.dtype,
                                     device=self.model.device)
        return self._pool

    def _core(self, num_refs: int, has_history: bool, kind: str) -> StepCore:
        key = (num_refs, has_history and self.stream.history_warp != "off", kind)
        if key not in self._cores:
            self._cores[key] = StepCore(self.model, self.stream, num_refs, key[1], kind)
        return self._cores[key]

    # -- the step -------------------------------------------------------------------------------
    def _step(self, frames: torch.Tensor, kind: str, inputs: FrameInputs) -> torch.Tensor:
        batch = frames.shape[0]
        height, width = (frames.shape[1:3] if kind == "uint8" else frames.shape[2:])
        pool = self._pool_for(batch, height, width)
        positions = pool.positions(0)  # every slot of this stream has the same history length
        slots = torch.arange(batch, device=self.model.device)
        core = self._core(len(positions), self._has_history(), kind)
        index = torch.tensor([positions] * batch, dtype=torch.int64, device=self.model.device) if positions else None
        with torch.inference_mode():
            out, ring = core.run(frames, pool.gather(slots), index, inputs)
            pool.scatter(slots, ring)
        pool.stepped(range(batch))
        self.frames_seen += 1
        return out

    def _begin(self, batch: int, height: int, width: int, **given) -> Optional[FrameInputs]:
        """Check a step's size and inputs; None when the frame passes through (no mask for a mask-reading model)."""
        self._check_size(batch, height, width)
        inputs = self._inputs(batch, height, width, **given)
        self.last_passthrough = None
        if self.stream.uses_mask and inputs.mask is None:
            self._pass_through()
            return None
        return inputs

    def _pass_through(self) -> None:
        """A frame without a mask for a mask-reading model: flag it, restart the history, log once."""
        self.last_passthrough = NO_MASK
        if not self._told_no_mask:
            log.warning(NO_MASK_MESSAGE.format(name=self.model.config.name))
            self._told_no_mask = True
        if self._pool is not None:
            for slot in range(self._pool.slots):
                self._pool.clear(slot)
        self.frames_seen += 1

    def step(self, frame: torch.Tensor, *, flow: Optional[torch.Tensor] = None, depth: Optional[torch.Tensor] = None,
             pose: Optional[torch.Tensor] = None, intrinsics: Optional[torch.Tensor] = None,
             mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Enhance the next frame of the stream.

        frame: ``[B, 3, H, W]`` (or ``[3, H, W]``) float in [0, 1]; H and W multiples of
            ``model.config.pixel_multiple``; the same size for the whole stream.
        Per-frame renderer inputs, only for the options that use them (``inputs.FrameInputs`` gives
        the conventions; a given input that no option uses is an error):
            flow: ``[B, 2, H, W]`` pixels, backward flow to the previous frame (``history_warp="flow"``);
            depth ``[B, 1, H, W]``, intrinsics ``[B, 3, 3]`` (or ``[3, 3]``), pose ``[B, 4, 4]`` (or
            ``[4, 4]``) current -> previous camera (``history_warp="depth"``); flow / pose may be
            omitted while the history is empty;
            mask: ``[B, 1, H, W]`` in [0, 1], the inserted actor (``mask_condition`` / ``region_*``):
            without it a mask-reading model passes the frame through (``last_passthrough``).
        Returns ``[B, 3, H, W]`` float32 in [0, 1] on 8-bit levels (what the release writes), on the
        model's device; a passed-through frame comes back as given (float32).
        """
        squeeze = isinstance(frame, torch.Tensor) and frame.dim() == 3
        frame = check_frame(frame)
        batch, _, height, width = frame.shape
        inputs = self._begin(batch, height, width, flow=flow, depth=depth, pose=pose, intrinsics=intrinsics, mask=mask)
        frame = frame.to(self.model.device)
        out = frame.float() if inputs is None else self._step(frame, "float", inputs)
        return out[0] if squeeze else out

    def step_uint8(self, image, layout: str = "rgb", *, flow: Optional[torch.Tensor] = None,
                   depth: Optional[torch.Tensor] = None, pose: Optional[torch.Tensor] = None,
                   intrinsics: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``step`` for 8-bit frames: uint8 in, uint8 out (the engine's uint8 boundary: fused pack / unpack).

        image: uint8 ``[B, H, W, C]`` or ``[H, W, C]`` (numpy or torch, any strides), C = 3 for
            ``"rgb"`` / ``"bgr"``, 4 for ``"rgba"`` / ``"bgra"``; only uint8 crosses to the device.
        Other inputs as ``step``. Returns uint8 in the same layout (alpha 255), equal to
        ``frame_to_uint8_hwc(step(uint8_hwc_to_frame(image)))`` (tested); a passed-through frame
        comes back unchanged.
        """
        hwc, squeeze = as_uint8_frames(image, layout)
        batch, height, width, _ = hwc.shape
        inputs = self._begin(batch, height, width, flow=flow, depth=depth, pose=pose, intrinsics=intrinsics, mask=mask)
        hwc = hwc.to(self.model.device)
        if inputs is None:
            out = hwc.clone()
        elif layout == "rgb":
            out = self._step(hwc, "uint8", inputs)
        else:  # other channel orders: through the float boundary (the same 8-bit values)
            out = levels_to_hwc(self._step(hwc_to_unit_frame(hwc, layout), "float", inputs), layout)
        return out[0] if squeeze else out

    def prime(self, history: Sequence[torch.Tensor], inputs: Optional[Sequence[dict]] = None) -> None:
        """Seed the history with previous OUTPUT frames ``[B, 3, H, W]`` in [0, 1], oldest first.

        Used to resume a stream: after priming with the last ``history_length`` outputs, the next
        ``step`` continues exactly as the uninterrupted stream would (except for the approximate
        ``reference_latent="output"`` mode, whose output latents are not recoverable from frames).
        inputs: with ``history_warp``, one dict per frame of the keyword inputs its ``step`` got
            (``flow`` or ``depth`` / ``pose`` / ``intrinsics``; a mask is not needed).
        """
        if self.stream.history_warp != "off" and (inputs is None or len(inputs) != len(history)):
            raise ValueError("prime: history_warp needs the per-frame inputs of every primed frame (inputs=[...])")
        self.reset()
        for index, frame in enumerate(history):
            frame = check_frame(frame)
            batch, _, height, width = frame.shape
            self._check_size(batch, height, width)
            given = {} if inputs is None else {k: v for k, v in inputs[index].items() if k != "mask"}
            frame_inputs = self._inputs(batch, height, width, **given)
            pool = self._pool_for(batch, height, width)
            slots = torch.arange(batch, device=self.model.device)
            with torch.inference_mode():
                core = self._core(0, self._has_history(), "float")
                pool.scatter(slots, core.remember(frame.to(self.model.device).float(), pool.gather(slots),
                                                  frame_inputs))
            pool.stepped(range(batch))
            self.frames_seen += 1

