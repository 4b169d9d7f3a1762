"""The stages of one enhancer step, each written once, as functions over tensors.

Every driver composes these same functions: :class:`~simharmon.runtime.step.StepCore` (the one
step module that :class:`~simharmon.runtime.stream.StreamingEnhancer` runs eagerly with dynamic
shapes and :class:`~simharmon.runtime.engine.Engine` runs over static buffers, compiled or captured)
and training's forward (:func:`model_forward`). No other module implements any part of a step.

Order of a step (HARMONIZER.md; the two temporal layouts are documented on ``StreamConfig``):

1. ``encode_current`` (per-frame layout: the current frame alone) or ``encode_clip`` (release
   layout: [current, references...] on the VAE's time axis);
2. history: ``reference_offsets`` (the one offset policy), ``gather_entries`` (the one ring
   layout: ``[N, capacity, ...]`` newest first), ``advance_motion`` / ``align_references``
   (``stream.history_warp``);
3. ``denoise`` with the optional condition mask (``stream.mask_condition``);
4. ``region_blend`` in latent space (``stream.region_latent``);
5. ``decode_current``: latent 0 only (the causal decoder makes that exact); or, for models that
   predict a colour transform of the input (``stream.colour_transform``), ``colour_output``: the
   transform read from x0 and applied to the input frame (nothing is decoded);
6. ``finish_output``: guided filter, pixel region, quantization (``stream.guided_output`` /
   ``region_pixel``; the release's 8-bit levels, or nearest levels for colour transforms);
7. ``ring_entry`` and ``push_entries``: what the history keeps of this step.

Shapes: ``N`` streams, ``K`` references, ``C`` latent channels, ``h, w`` = ``H, W`` / the VAE's
spatial compression. Model space is [-1, 1]; frames are [0, 1] (``simharmon.io.pixels``).
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from ..config import StreamConfig
from ..io.pixels import quantize_like_release
from ..models.denoiser import rectified_flow_coefficients
from ..ops import masked_blend, reproject_warp, temporal_blend, warp
from .colour import colour_transform_output, quantize_nearest
from .guided import guided_filter
from .inputs import FrameInputs, condition_mask, latent_mask

__all__ = [
    "history_capacity",
    "reference_offsets",
    "ring_stride",
    "encode_current",
    "encode_clip",
    "gather_entries",
    "advance_motion",
    "align_references",
    "denoise",
    "region_blend",
    "decode_current",
    "colour_output",
    "model_forward",
    "output_rounding",
    "finish_output",
    "ring_entry",
    "push_entries",
    "identity_motion",
]

Skips = Optional[list]
AlignFn = Callable[[Tensor, Tensor], Tensor]  # (references [N, K, ...], current [N, ...]) -> aligned references


# -- history policy ------------------------------------------------------------------------------


def history_capacity(stream: StreamConfig) -> int:
    """Entries a stream's ring holds: ``max(offsets)``, or 0 for ``history="none"``."""
    return 0 if stream.history == "none" else stream.history_length


def reference_offsets(stream: StreamConfig, available: int) -> Tuple[int, ...]:
    """Ring offsets (1 = previous output) to condition on, given ``available`` past outputs.

    ``full`` stays non-temporal until every offset exists (the release); ``partial`` conditions on
    what exists (a missing offset takes the oldest available output); ``none`` never conditions.
    Empty means a non-temporal step.
    """
    if stream.history == "none" or available <= 0:
        return ()
    if stream.history == "full":
        return tuple(stream.offsets) if available >= stream.history_length else ()
    return tuple(min(offset, available) for offset in stream.offsets)


def ring_stride(stream: StreamConfig, spatial_compression: int) -> int:
    """Pixels per ring element: frames (1) in the release layout, latents (s) in the per-frame layout."""
    return 1 if stream.layout == "release" else spatial_compression


# -- encode --------------------------------------------------------------------------------------


def encode_current(model, image: Tensor, with_skips: bool = False) -> Tuple[Tensor, Skips]:
    """Model-space ``image: [N, 3, H, W]`` alone -> (latent ``[N, C, h, w]``, decoder skips or None)."""
    if with_skips:
        latent, skips = model.encode(image.unsqueeze(2), return_skips=True)
        return latent[:, :, 0], skips
    return model.encode(image.unsqueeze(2))[:, :, 0], None


def encode_clip(model, image: Tensor, references: Optional[Tensor], with_skips: bool = False) -> Tuple[Tensor, Skips]:
    """Release layout: the clip [current, references...] on the VAE's time axis -> latents ``[N, C, T', h, w]``.

    references: model-space frames ``[N, K, 3, H, W]`` (K a multiple of the temporal compression), or None.
    """
    clip = image.unsqueeze(2)
    if references is not None:
        clip = torch.cat([clip, references.transpose(1, 2)], dim=2)
    if with_skips:
        if references is not None:
            raise ValueError("decoder skip connections need the current frame encoded alone; the release layout with "
                             "references encodes a clip (use stream.layout 'per_frame' with this checkpoint)")
        return model.encode(clip, return_skips=True)
    return model.encode(clip), None


# -- history -------------------------------------------------------------------------------------


def gather_entries(state: Tensor, positions: Tensor) -> Tensor:
    """``state: [N, capacity, ...]`` (newest first), ``positions: [N, K]`` int64 -> ``[N, K, ...]``."""
    index = positions.reshape(*positions.shape, *([1] * (state.dim() - 2))).expand(-1, -1, *state.shape[2:])
    return torch.gather(state, 1, index)


def identity_motion(mode: str, like: Tensor) -> Tensor:
    """The motion of an entry seen from its own view: zero flow and validity 1, or the 4x4 identity.

    like: a ring entry ``[N, C, h, w]`` (flow mode: gives the size) or a ``[N, ...]`` camera tensor (depth mode).
    """
    if mode == "flow":
        n, _, h, w = like.shape
        return torch.cat([torch.zeros((n, 2, h, w), dtype=torch.float32, device=like.device),
                          torch.ones((n, 1, h, w), dtype=torch.float32, device=like.device)], dim=1)
    return torch.eye(4, dtype=torch.float64, device=like.device).expand(like.shape[0], 4, 4)


def advance_motion(mode: str, motion: Tensor, inputs: FrameInputs) -> Tensor:
    """A new frame arrived: re-express every entry's motion relative to the new view.

    motion: ``flow``: ``[N, capacity, 3, h, w]`` cumulative backward flow to the entry's view plus
    its validity; new = ``f + warp(F, f)`` and ``warp(V, f) * inside(f)`` (composing flows means
    resampling the smooth flow field). ``depth``: ``[N, capacity, 4, 4]`` float64 transforms from
    the newest camera to the entry's; new = ``A @ pose``. ``inputs`` at ring resolution.
    """
    if mode == "flow":
        n, capacity = motion.shape[:2]
        flow = inputs.flow.repeat_interleave(capacity, dim=0)
        moved, inside = warp(motion.flatten(0, 1), flow, "border")
        advanced = torch.cat([flow + moved[:, :2], moved[:, 2:] * inside], dim=1)
        return advanced.unflatten(0, (n, capacity))
    return motion @ inputs.pose.unsqueeze(1)


def align_references(mode: str, references: Tensor, motion: Tensor, current: Tensor, inputs: FrameInputs,
                     entry_depth: Optional[Tensor] = None, entry_intrinsics: Optional[Tensor] = None,
                     rel_tol: float = 0.02) -> Tensor:
    """References ``[N, K, C', h, w]`` resampled into the current view; ``current [N, C', h, w]`` fills the gaps.

    motion: the references' motions (``advance_motion``'s layout, ``[N, K, ...]``); depth mode also
    takes the references' own depth ``[N, K, 1, h, w]`` and intrinsics ``[N, K, 3, 3]`` for the
    occlusion test. Sampling uses border padding; what has no valid source (disoccluded,
    off-screen) takes the current content (``temporal_blend`` with alpha 1). Zero flow returns the
    references unchanged (bit-exact).
    """
    n, k = references.shape[:2]
    entries = references.flatten(0, 1)
    if mode == "flow":
        flat = motion.flatten(0, 1)
        warped, inside = warp(entries, flat[:, :2], "border")
        valid = flat[:, 2:] * inside
    else:
        warped, valid = reproject_warp(
            entries, inputs.depth.repeat_interleave(k, 0), inputs.intrinsics.repeat_interleave(k, 0),
            motion.flatten(0, 1), entry_depth.flatten(0, 1), prev_intrinsics=entry_intrinsics.flatten(0, 1),
            rel_tol=rel_tol, padding="border")
    aligned = temporal_blend(current.repeat_interleave(k, 0).to(warped.dtype), warped, valid, 1.0)
    return aligned.unflatten(0, (n, k))


def push_entries(state: Tensor, entry: Tensor) -> Tensor:
    """``state: [N, capacity, ...]`` newest first -> the same with ``entry: [N, ...]`` as newest (oldest dropped)."""
    return torch.cat([entry.unsqueeze(1).to(state.dtype), state[:, :-1]], dim=1)


# -- the model -----------------------------------------------------------------------------------


def denoise(model, latents: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """latents ``[N, C, T, h, w]`` -> float32 x0 of latent frame 0 ``[N, C, h, w]``.

    mask: the DiT's padding-mask input ``[N, 1, h, w]`` (``stream.mask_condition``), or None (zeros).
    """
    x0 = model.denoise(latents) if mask is None else model.denoise(latents, condition_mask=mask)
    return x0[:, :, 0]


def region_blend(x0: Tensor, input_latent: Tensor, mask: Tensor, band: int) -> Tensor:
    """Outside the latent-resolution ``mask [N, 1, h, w]`` plus ``band`` cells, x0 is the input latent."""
    return masked_blend(x0, input_latent.to(x0.dtype), mask, band)


def decode_current(model, x0: Tensor, skips: Skips = None) -> Tensor:
    """x0 of latent 0 ``[N, C, h, w]`` -> decoded frame ``[N, 3, H, W]`` float32 in about [-1, 1], unquantized."""
    latent = x0.unsqueeze(2).to(model.dtype)
    decoded = model.decode(latent) if skips is None else model.decode(latent, skips=skips)
    return decoded[:, :, 0].float()


def colour_output(model, stream: StreamConfig, image: Tensor, x0: Tensor, current: Tensor) -> Tensor:
    """``stream.colour_transform``: the coefficients x0 carries (less the denoiser's skip path of the
    current latent ``current``) applied to ``image`` (``[N, 3, H, W]`` in [-1, 1]) -> float32 model space."""
    c_skip = rectified_flow_coefficients(model.config.denoiser.sigma)[0]
    return colour_transform_output(image, x0, current, c_skip, stream.colour_transform)


def model_forward(model, stream: StreamConfig, image: Tensor, references: Optional[Tensor], *,
                  mask: Optional[Tensor] = None, align: Optional[AlignFn] = None) -> Tuple[Tensor, Tensor]:
    """Encode, (align), denoise, region blend, decode: the differentiable part of a step.

    image: model-space current frame ``[N, 3, H, W]`` in the model's dtype.
    references: per-frame layout: latents ``[N, K, C, h, w]``; release layout: model-space frames
        ``[N, K, 3, H, W]``; None for a non-temporal step.
    mask: the actor mask ``[N, 1, H, W]`` in [0, 1] (``stream.mask_condition`` / ``region_latent``).
    align: ``(references, current) -> references`` (history warping), where current is the
        current latent (per-frame layout) or image (release layout).
    Returns (decoded frame ``[N, 3, H, W]`` float32 unquantized, its x0 latent ``[N, C, h, w]``); with
    ``stream.colour_transform`` the "decoded" frame is ``colour_output`` (nothing is decoded).
    Training calls this with gradients; inference through :class:`~simharmon.runtime.step.StepCore`.
    """
    with_skips = model.config.tokenizer.skip_connections
    stride = model.config.tokenizer.spatial_compression
    if stream.layout == "release":
        if references is not None and align is not None:
            references = align(references, image)
        latents, skips = encode_clip(model, image, references, with_skips)
        current = latents[:, :, 0]
    else:
        current, skips = encode_current(model, image, with_skips)
        latents = current.unsqueeze(2)
        if references is not None:
            if align is not None:
                references = align(references, current)
            latents = torch.cat([latents, references.transpose(1, 2).to(latents.dtype)], dim=2)
    x0 = denoise(model, latents, condition_mask(stream, mask, stride))
    if stream.region_latent:
        x0 = region_blend(x0, current, latent_mask(mask, stride), stream.region_band)
    if stream.colour_transform != "off":
        return colour_output(model, stream, image, x0, current), x0
    return decode_current(model, x0, skips), x0


# -- output --------------------------------------------------------------------------------------


def finish_output(stream: StreamConfig, decoded: Tensor, frame: Optional[Tensor] = None,
                  mask: Optional[Tensor] = None) -> Tensor:
    """Decoded model space ``[N, 3, H, W]`` -> output frame ``[N, 3, H, W]`` float32 on 8-bit levels.

    With ``stream.guided_output`` the decoded frame is first guided-filtered with ``frame`` (the
    input, ``[N, 3, H, W]`` in [0, 1]) as the guide; with ``stream.region_pixel``, outside ``mask``
    (``[N, 1, H, W]`` in [0, 1]) plus the pixel band the output is ``frame``. Without either option
    ``frame`` and ``mask`` are unused. Quantization is the release's (clamp, ``x * 255`` truncated), or
    to the nearest level for a colour transform (``output_rounding``).
    """
    quantize = quantize_nearest if output_rounding(stream) == "nearest" else quantize_like_release
    output = decoded.float() * 0.5 + 0.5
    if not (stream.region_pixel or stream.guided_output):
        return quantize(output)
    frame = frame.float()
    if stream.guided_output:
        output = guided_filter(frame, output, stream.guided_radius, stream.guided_eps)
    if stream.region_pixel:
        output = masked_blend(output, frame, mask, stream.region_pixel_band)
    return quantize(output)


def output_rounding(stream: StreamConfig) -> str:
    """How outputs reach 8-bit levels: ``"truncate"`` (the release's ToPILImage) or ``"nearest"`` (a colour
    transform: a zero transform then returns the 8-bit input exactly)."""
    return "nearest" if stream.colour_transform != "off" else "truncate"


def ring_entry(model, stream: StreamConfig, output_image: Tensor, x0: Optional[Tensor]) -> Tensor:
    """What the history keeps of this step's output.

    output_image: the output in model space ``[N, 3, H, W]`` (the model's dtype), i.e. exactly the
    8-bit output re-read, as the release re-reads its PNGs. Release layout: that frame; per-frame
    layout: its latent (``reference_latent="reencode"``, exact) or the denoiser's x0 (``"output"``).
    """
    if stream.layout == "release":
        return output_image
    if stream.reference_latent == "output" and x0 is not None:
        return x0.to(model.dtype)
    return encode_current(model, output_image)[0]

