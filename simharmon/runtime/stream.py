"""Streaming enhancer: one rendered frame in, one enhanced frame out, with temporal history.

Two temporal layouts (HARMONIZER.md):

* ``release`` (the published Harmonizer checkpoint): the clip [current, refs...] is encoded on the
  VAE's time axis; the DiT runs on the resulting latent frames; only latent 0 is decoded (decoding
  latent 0 alone gives the release's frame 0 exactly, the decoder being causal). The ring holds
  enhanced FRAMES, on 8-bit levels exactly as the release writes and re-reads them, because the
  reference latent is re-encoded together with each new current frame.
* ``per_frame`` (the paper's Eq. 2): each frame is encoded alone; the ring holds enhanced LATENTS,
  so no reference is re-encoded; the DiT runs on 1 + K latent frames. The reference latent is the
  encoding of the decoded, quantized output (``reference_latent="reencode"``, exact) or the
  denoiser's output latent itself (``"output"``, one encode fewer, approximate).

History policies: ``full`` stays non-temporal until every offset exists (the release), ``partial``
conditions on what exists (missing offsets take the oldest frame available), ``none`` is
non-temporal throughout.

Optional features (``StreamConfig``, all off by default; the default path is unchanged and exact to
the release): history warping into the current view (``history_warp``, ``history_warp.py``),
region-limited output in latent and/or pixel space (``region_latent`` / ``region_pixel``), both fed
by per-frame renderer inputs (``inputs.py``); and ``step_uint8``, uint8 frames in and out through the
fused pack / unpack ops.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import torch

from ..config import StreamConfig
from ..io.pixels import (
    as_uint8_frames,
    check_frame,
    frame_to_model,
    hwc_to_unit_frame,
    levels_to_hwc,
    quantize_like_release,
)
from ..models.denoiser import rectified_flow_coefficients
from ..models.enhancer import EnhancerModel
from ..ops import masked_blend, pack, unpack
from .colour import colour_transform_output, quantize_nearest
from .guided import guided_filter
from .history_warp import HistoryAligner
from .inputs import FrameInputs, condition_mask, gather_inputs, latent_mask
from .ring import TensorRing

__all__ = ["StepPlan", "StreamingEnhancer", "finish_output", "run_model_step"]


def run_model_step(model: EnhancerModel, layout: str, image: torch.Tensor, references: Sequence[torch.Tensor], *,
                   current_latent: Optional[torch.Tensor] = None, region_mask: Optional[torch.Tensor] = None,
                   region_band: int = 0, condition_mask: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """One enhancer forward: encode, denoise, decode latent 0 only.

    image: model-space current frame ``[B, 3, H, W]`` in [-1, 1], in the model's dtype.
    references: release layout: model-space frames ``[B, 3, H, W]``; per-frame layout: latents
        ``[B, 16, h, w]``. Empty means a non-temporal step.
    current_latent: per-frame layout: the current frame's latent ``[B, 16, h, w]`` when already
        encoded (history warping needs it first); None encodes ``image``.
    region_mask: ``[B, 1, h, w]`` latent-resolution actor mask: outside it plus ``region_band`` cells,
        the output latent is the input latent (``masked_blend``); None keeps the whole output.
    condition_mask: ``[B, 1, h, w]`` latent-resolution actor mask for the DiT's padding-mask channel
        (``stream.mask_condition``); None feeds zeros, as Cosmos does.
    Returns (decoded frame 0 ``[B, 3, H, W]`` float32 unquantized, its x0 latent ``[B, 16, h, w]``).
    With ``model.config.stream.colour_transform`` nothing is decoded: the "decoded" frame is ``image``
    transformed by the coefficients the x0 latent carries (``simharmon.runtime.colour``).
    """
    # A decoder with skip convolutions needs the encoder's activations (Harmonizer): never drop them.
    with_skips = model.config.tokenizer.skip_connections
    skips = None
    if layout == "release":
        clip = torch.stack([image, *references], dim=2)
        latents = model.encode(clip, return_skips=True) if with_skips else model.encode(clip)
        if with_skips:
            latents, skips = latents
    else:
        if current_latent is None or with_skips:
            encoded = model.encode(image.unsqueeze(2), return_skips=with_skips)
            current, skips = encoded if with_skips else (encoded, None)
        if current_latent is not None:
            current = current_latent.unsqueeze(2)
        latents = torch.cat([current] + [ref.unsqueeze(2) for ref in references], dim=2)
    # Only pass the mask when there is one: the compiled runtime's denoise takes none (it refuses the option).
    x0 = model.denoise(latents) if condition_mask is None else model.denoise(latents, condition_mask=condition_mask)
    current_x0 = x0[:, :, :1]
    if region_mask is not None:
        # latent 0 is the current frame encoded alone in both layouts (causal VAE): the input latent
        kept = masked_blend(current_x0[:, :, 0], latents[:, :, 0].to(current_x0.dtype), region_mask, region_band)
        current_x0 = kept.unsqueeze(2)
    if model.config.stream.colour_transform != "off":
        c_skip = rectified_flow_coefficients(model.config.denoiser.sigma)[0]
        decoded = colour_transform_output(image, current_x0[:, :, 0], latents[:, :, 0], c_skip,
                                          model.config.stream.colour_transform)
        return decoded, current_x0[:, :, 0]
    if skips is None:
        decoded = model.decode(current_x0.to(model.dtype))
    else:
        decoded = model.decode(current_x0.to(model.dtype), skips=skips)
    return decoded[:, :, 0].float(), current_x0[:, :, 0]


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """What one step feeds ``run_model_step`` besides the image (``StreamingEnhancer.plan_step``).

    references: newest offset first; release layout ``[B, 3, H, W]`` model-space frames, per-frame
        layout ``[B, 16, h, w]`` latents, aligned to the current view with ``history_warp``.
    current_latent: per-frame layout with ``history_warp`` and references: the current frame's
        latent ``[B, 16, h, w]`` (encoded to fill the alignment's gaps); else None.
    region_mask: ``region_latent``: the latent-resolution mask ``[B, 1, h, w]``; else None.
    condition_mask: ``mask_condition`` with a mask given: the same latent-resolution mask, for the
        DiT's padding-mask channel; else None (zeros).
    """

    references: List[torch.Tensor]
    current_latent: Optional[torch.Tensor] = None
    region_mask: Optional[torch.Tensor] = None
    condition_mask: Optional[torch.Tensor] = None


def finish_output(stream: StreamConfig, decoded: torch.Tensor, frame: Optional[torch.Tensor],
                  mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Decoded model space ``[B, 3, H, W]`` -> output frame ``[B, 3, H, W]`` float32 on 8-bit levels.

    With ``stream.guided_output``, the decoded frame is first guided-filtered with ``frame`` (the
    input, ``[B, 3, H, W]`` in [0, 1]) as the guide. With ``stream.region_pixel``, outside ``mask``
    (``[B, 1, H, W]`` in [0, 1]) plus the pixel band the output is ``frame``. Without either option
    ``frame`` and ``mask`` are unused. With ``stream.colour_transform`` levels are rounded to nearest
    (``colour.quantize_nearest``) instead of truncated as the release does.
    """
    quantize = quantize_nearest if stream.colour_transform != "off" else quantize_like_release
    if not (stream.region_pixel or stream.guided_output):
        return quantize(decoded.float() * 0.5 + 0.5)
    output, frame = decoded.float() * 0.5 + 0.5, frame.float()
    if stream.guided_output:
        output = guided_filter(frame, output, stream.guided_radius, stream.guided_eps)
    if stream.region_pixel:
        output = masked_blend(output, frame, mask, stream.region_pixel_band)
    return quantize(output)


class StreamingEnhancer:
    """Enhance a stream of frames of one size, keeping the temporal history on the model's device.

    model: a built EnhancerModel (see ``simharmon.models.build_enhancer``).
    stream: overrides ``model.config.stream`` when given.
    """

    def __init__(self, model: EnhancerModel, stream: Optional[StreamConfig] = None):
        self.model = model
        self.stream = stream if stream is not None else model.config.stream
        if self.stream.colour_transform != model.config.stream.colour_transform:
            raise ValueError(f"stream.colour_transform {self.stream.colour_transform!r} differs from the model's "
                             f"{model.config.stream.colour_transform!r}: it is how the network's output is read, "
                             "fixed by training")
        capacity = max(self.stream.history_length, 1)
        self._ring = TensorRing(capacity)
        self._aligner = (HistoryAligner(self.stream.history_warp, capacity, self.stream.depth_tolerance)
                         if self.stream.history_warp != "off" else None)
        self._frame_shape: Optional[Tuple[int, int, int]] = None
        self.frames_seen = 0

    @property
    def history_length(self) -> int:
        """How many previous outputs ``prime`` wants (0 when the stream is non-temporal)."""
        return 0 if self.stream.history == "none" else self.stream.history_length

    @property
    def layout(self) -> str:
        return self.stream.layout

    @property
    def _latent_stride(self) -> int:
        return self.model.config.tokenizer.spatial_compression

    @property
    def _ring_stride(self) -> int:
        """Pixels per ring element: frames in the release layout, latents in the per-frame layout."""
        return 1 if self.layout == "release" else self._latent_stride

    def reset(self) -> None:
        """Start a new stream: forget the history and the frame size."""
        self._ring.clear()
        if self._aligner is not None:
            self._aligner.clear()
        self._frame_shape = None
        self.frames_seen = 0

    def with_stream(self, **changes) -> StreamingEnhancer:
        """A fresh enhancer on the same model with some stream settings changed."""
        return StreamingEnhancer(self.model, dataclasses.replace(self.stream, **changes))

    # -- input checks ---------------------------------------------------------------------------
    def _check_size(self, batch: int, height: int, width: int) -> None:
        multiple = self.model.config.pixel_multiple
        if height % multiple or width % multiple:
            raise ValueError(
                f"frame size {width}x{height} (WxH) is not supported: width and height must be multiples of "
                f"{multiple} (the VAE's {self.model.config.tokenizer.spatial_compression}x downsampling times the "
                f"DiT's {self.model.config.dit.patch_spatial}x{self.model.config.dit.patch_spatial} patches); "
                f"the nearest smaller size is {width // multiple * multiple}x{height // multiple * multiple}"
            )
        dit, stride = self.model.config.dit, self.model.config.tokenizer.spatial_compression
        max_h, max_w = dit.max_img_h * stride, dit.max_img_w * stride  # RoPE tables cover max_img latents
        if height > max_h or width > max_w:
            raise ValueError(f"frame size {width}x{height} exceeds the DiT's position tables ({max_w}x{max_h} max)")
        shape = (batch, height, width)
        if self._frame_shape is None:
            self._frame_shape = shape
        elif shape != self._frame_shape:
            b0, h0, w0 = self._frame_shape
            raise ValueError(
                f"frame {self.frames_seen} has batch {batch} and size {width}x{height}, but this stream started with "
                f"batch {b0} and size {w0}x{h0}; mixed resolutions in one stream are not supported "
                "(call reset() to start a new stream)"
            )

    def _check_input(self, frame: torch.Tensor) -> torch.Tensor:
        frame = check_frame(frame)
        batch, _, height, width = frame.shape
        self._check_size(batch, height, width)
        return frame.to(self.model.device)

    def _inputs(self, batch: int, height: int, width: int, need_mask: bool = True, **given) -> FrameInputs:
        if not self.stream.needs_frame_inputs and all(v is None for v in given.values()):
            return FrameInputs()
        return gather_inputs(self.stream, batch, height, width, self.model.device,
                             has_history=len(self._ring) > 0, need_mask=need_mask, **given)

    # -- history --------------------------------------------------------------------------------
    def _reference_offsets(self) -> List[int]:
        """Ring offsets to condition on now (empty = non-temporal step)."""
        available = len(self._ring)
        if self.stream.history == "none" or available == 0:
            return []
        if self.stream.history == "full":
            return list(self.stream.offsets) if available >= self.stream.history_length else []
        return [min(offset, available) for offset in self.stream.offsets]

    def _encode_frames(self, image: torch.Tensor) -> torch.Tensor:
        """Model-space ``[B, 3, H, W]`` -> one latent frame ``[B, 16, 1, h, w]``."""
        return self.model.encode(image.unsqueeze(2))

    def _remember_image(self, image: torch.Tensor, output_latent: Optional[torch.Tensor],
                        inputs: Optional[FrameInputs]) -> None:
        """Push an output given in model space (``[B, 3, H, W]``, the model's dtype)."""
        if self.layout == "release":
            self._ring.push(image)
        elif self.stream.reference_latent == "output" and output_latent is not None:
            self._ring.push(output_latent.to(self.model.dtype))
        else:
            self._ring.push(self._encode_frames(image)[:, :, 0])
        if self._aligner is not None:
            if inputs is None:
                raise ValueError("history_warp needs the per-frame inputs of every remembered frame")
            self._aligner.push(inputs.scaled(self._ring_stride), like=self._ring.get(1))

    def _remember(self, output_frame: torch.Tensor, output_latent: Optional[torch.Tensor],
                  inputs: Optional[FrameInputs] = None) -> None:
        if self.history_length == 0:
            return
        self._remember_image(frame_to_model(output_frame, self.model.dtype), output_latent, inputs)

    def prime(self, history: Sequence[torch.Tensor], inputs: Optional[Sequence[dict]] = None) -> None:
        """Seed the history with previous OUTPUT frames ``[B, 3, H, W]`` in [0, 1], oldest first.

        Used to resume a stream: after priming with the last ``history_length`` outputs, the next
        ``step`` continues exactly as the uninterrupted stream would (except for the approximate
        ``reference_latent="output"`` mode, whose output latents are not recoverable from frames).
        inputs: with ``history_warp``, one dict per frame of the keyword inputs its ``step`` got
            (``flow`` or ``depth`` / ``pose`` / ``intrinsics``; a mask is not needed).
        """
        if self._aligner is not None and (inputs is None or len(inputs) != len(history)):
            raise ValueError("prime: history_warp needs the per-frame inputs of every primed frame (inputs=[...])")
        self.reset()
        for index, frame in enumerate(history):
            frame = self._check_input(frame)
            given = {} if inputs is None else dict(inputs[index])
            frame_inputs = self._inputs(frame.shape[0], frame.shape[2], frame.shape[3], need_mask=False,
                                        **{k: given.get(k) for k in ("flow", "depth", "pose", "intrinsics", "mask")})
            with torch.inference_mode():
                if self._aligner is not None:
                    self._aligner.advance(frame_inputs.scaled(self._ring_stride))
                self._remember(frame.float(), None, frame_inputs)
            self.frames_seen += 1

    # -- the step -------------------------------------------------------------------------------
    def references(self) -> List[torch.Tensor]:
        """The history entries to condition on now, newest offset first (empty = non-temporal).

        Release layout: model-space frames ``[B, 3, H, W]``; per-frame layout: latents ``[B, 16, h, w]``.
        Not available with ``history_warp`` (the entries are only meaningful once aligned by ``step``).
        """
        if self._aligner is not None:
            raise ValueError("references() are not aligned to a view: with history_warp, use step(...)")
        return [self._ring.get(offset) for offset in self._reference_offsets()]

    def enhance_model_space(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the model once on model-space ``image: [B, 3, H, W]`` with this stream's history.

        Returns (decoded frame 0 ``[B, 3, H, W]`` float32 unquantized, its x0 latent ``[B, 16, h, w]``).
        The history is read, not updated. Options that need per-frame inputs are not applied here.
        """
        return run_model_step(self.model, self.layout, image, self.references())

    def remember(self, output_frame: torch.Tensor, output_latent: Optional[torch.Tensor],
                 inputs: Optional[FrameInputs] = None) -> None:
        """Push one output (``[B, 3, H, W]`` in [0, 1], and its x0 latent) into the history."""
        self._remember(output_frame, output_latent, inputs)
        self.frames_seen += 1

    def check_input(self, frame: torch.Tensor) -> torch.Tensor:
        """Validate a frame for this stream (shape, dtype, size, same size as before); on the model's device.

        For callers that drive ``references`` / ``remember`` themselves without per-frame inputs:
        streams whose options need them are refused here (``check_step`` takes the inputs).
        """
        if self.stream.needs_frame_inputs:
            raise ValueError("stream options history_warp / region_latent / region_pixel / mask_condition need "
                             "per-frame inputs, which only StreamingEnhancer.step / step_uint8 take")
        return self._check_input(frame)

    def check_step(self, frame: torch.Tensor, **given) -> Tuple[torch.Tensor, FrameInputs]:
        """Validate a frame and its per-frame inputs (``step``'s keywords) without running anything.

        Returns (frame ``[B, 3, H, W]`` on the model's device, the validated ``FrameInputs``). For
        callers that drive ``plan_step`` / ``finish`` / ``remember`` themselves (``MultiStreamEnhancer``).
        Raises ValueError / TypeError like ``step``; the history is not touched (a first frame fixes the
        stream's frame size, as in ``step``).
        """
        frame = self._check_input(frame)
        batch, _, height, width = frame.shape
        return frame, self._inputs(batch, height, width, **given)

    def plan_step(self, image: torch.Tensor, inputs: FrameInputs) -> StepPlan:
        """The references (aligned with ``history_warp``) and region mask for model-space ``image``.

        image: ``[B, 3, H, W]`` in [-1, 1], the model's dtype; inputs: from ``check_step``.
        With ``history_warp`` this advances the aligner to the current view, so it must be followed by
        ``remember`` of this step's output (``step`` does both). Call under ``torch.inference_mode``.
        """
        current_latent, region_mask = None, None
        if self._aligner is None:
            references = self.references()
        else:
            ring_inputs = inputs.scaled(self._ring_stride)
            self._aligner.advance(ring_inputs)
            offsets = self._reference_offsets()
            if offsets and self.layout == "per_frame":
                current_latent = self._encode_frames(image)[:, :, 0]
            current = image if self.layout == "release" else current_latent
            references = [self._aligner.align(self._ring.get(o), o, current, ring_inputs) for o in offsets]
        if self.stream.region_latent:
            region_mask = latent_mask(inputs.mask, self._latent_stride)
        return StepPlan(references, current_latent, region_mask,
                        condition_mask(self.stream, inputs.mask, self._latent_stride))

    def _run(self, image: torch.Tensor, inputs: FrameInputs) -> Tuple[torch.Tensor, torch.Tensor]:
        """The model on ``image`` with this step's options: (decoded ``[B, 3, H, W]`` float32, x0 latent)."""
        plan = self.plan_step(image, inputs)
        return run_model_step(self.model, self.layout, image, plan.references, current_latent=plan.current_latent,
                              region_mask=plan.region_mask, region_band=self.stream.region_band,
                              condition_mask=plan.condition_mask)

    def finish(self, decoded: torch.Tensor, frame: Optional[torch.Tensor], inputs: FrameInputs) -> torch.Tensor:
        """Decoded model space -> output frame ``[B, 3, H, W]`` float32 on 8-bit levels (``finish_output``)."""
        return finish_output(self.stream, decoded, frame, inputs.mask)

    def step(self, frame: torch.Tensor, *, flow: Optional[torch.Tensor] = None, depth: Optional[torch.Tensor] = None,
             pose: Optional[torch.Tensor] = None, intrinsics: Optional[torch.Tensor] = None,
             mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Enhance the next frame of the stream.

        frame: ``[B, 3, H, W]`` (or ``[3, H, W]``) float in [0, 1]; H and W multiples of
            ``model.config.pixel_multiple``; the same size for the whole stream.
        Per-frame renderer inputs, only for the options that use them (``FrameInputs`` documents the
        conventions; a given input that no option uses is an error):
            flow: ``[B, 2, H, W]`` pixels, backward flow to the previous frame (``history_warp="flow"``);
            depth ``[B, 1, H, W]``, intrinsics ``[B, 3, 3]`` (or ``[3, 3]``), pose ``[B, 4, 4]`` (or
            ``[4, 4]``) current -> previous camera (``history_warp="depth"``); flow / pose may be
            omitted on the stream's first frame;
            mask: ``[B, 1, H, W]`` in [0, 1], the inserted actor (``region_latent`` / ``region_pixel``).
        Returns ``[B, 3, H, W]`` float32 in [0, 1] on 8-bit levels (what the release writes), on
        the model's device.
        """
        squeeze = frame.dim() == 3 if isinstance(frame, torch.Tensor) else False
        frame, inputs = self.check_step(frame, flow=flow, depth=depth, pose=pose, intrinsics=intrinsics, mask=mask)
        with torch.inference_mode():
            decoded, latent = self._run(frame_to_model(frame, self.model.dtype), inputs)
            output = self.finish(decoded, frame, inputs)
            self.remember(output, latent, inputs)
        return output[0] if squeeze else output

    def step_uint8(self, image, layout: str = "rgb", *, flow: Optional[torch.Tensor] = None,
                   depth: Optional[torch.Tensor] = None, pose: Optional[torch.Tensor] = None,
                   intrinsics: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``step`` for 8-bit frames: uint8 in, uint8 out, converted by the fused pack / unpack ops.

        image: uint8 ``[B, H, W, C]`` or ``[H, W, C]`` (numpy or torch, any strides), C = 3 for
            ``"rgb"`` / ``"bgr"``, 4 for ``"rgba"`` / ``"bgra"``; only uint8 crosses to the device.
        Other inputs as ``step``. Returns uint8 ``[B, H, W, C]`` (or ``[H, W, C]``) in the same layout
        (alpha 255) on the model's device: on the CPU bit-identical to
        ``frame_to_uint8_hwc(step(uint8_hwc_to_frame(image)))``, history included (tested). On CUDA
        the conversions use IEEE division like the release's CPU ToTensor.
        """
        hwc, squeeze = as_uint8_frames(image, layout)
        batch, height, width, _ = hwc.shape
        self._check_size(batch, height, width)
        hwc = hwc.to(self.model.device)
        inputs = self._inputs(batch, height, width, flow=flow, depth=depth, pose=pose, intrinsics=intrinsics, mask=mask)
        with torch.inference_mode():
            decoded, latent = self._run(pack(hwc, layout, self.model.dtype), inputs)
            if self.stream.region_pixel:
                out = levels_to_hwc(self.finish(decoded, hwc_to_unit_frame(hwc, layout), inputs), layout)
            else:
                out = unpack(decoded, layout, "nearest" if self.stream.colour_transform != "off" else "truncate")
            if self.history_length:
                self._remember_image(pack(out, layout, self.model.dtype), latent, inputs)
            self.frames_seen += 1
        return out[0] if squeeze else out
