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
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import torch

from ..config import StreamConfig
from ..models.enhancer import EnhancerModel
from .frames import check_frame, frame_to_model, model_to_frame
from .ring import TensorRing

__all__ = ["StreamingEnhancer", "run_model_step"]


def run_model_step(model: EnhancerModel, layout: str, image: torch.Tensor,
                   references: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """One enhancer forward: encode, denoise, decode latent 0 only.

    image: model-space current frame ``[B, 3, H, W]`` in [-1, 1], in the model's dtype.
    references: release layout: model-space frames ``[B, 3, H, W]``; per-frame layout: latents
        ``[B, 16, h, w]``. Empty means a non-temporal step.
    Returns (decoded frame 0 ``[B, 3, H, W]`` float32 unquantized, its x0 latent ``[B, 16, h, w]``).
    """
    if layout == "release":
        latents = model.encode(torch.stack([image, *references], dim=2))
    else:
        current = model.encode(image.unsqueeze(2))
        latents = torch.cat([current] + [ref.unsqueeze(2) for ref in references], dim=2)
    x0 = model.denoise(latents)
    current_x0 = x0[:, :, :1]
    decoded = model.decode(current_x0.to(model.dtype))
    return decoded[:, :, 0].float(), current_x0[:, :, 0]


class StreamingEnhancer:
    """Enhance a stream of frames of one size, keeping the temporal history on the model's device.

    model: a built EnhancerModel (see ``simharmon.models.build_enhancer``).
    stream: overrides ``model.config.stream`` when given.
    """

    def __init__(self, model: EnhancerModel, stream: Optional[StreamConfig] = None):
        self.model = model
        self.stream = stream if stream is not None else model.config.stream
        self._ring = TensorRing(max(self.stream.history_length, 1))
        self._frame_shape: Optional[Tuple[int, int, int]] = None
        self.frames_seen = 0

    @property
    def history_length(self) -> int:
        """How many previous outputs ``prime`` wants (0 when the stream is non-temporal)."""
        return 0 if self.stream.history == "none" else self.stream.history_length

    @property
    def layout(self) -> str:
        return self.stream.layout

    def reset(self) -> None:
        """Start a new stream: forget the history and the frame size."""
        self._ring.clear()
        self._frame_shape = None
        self.frames_seen = 0

    def with_stream(self, **changes) -> StreamingEnhancer:
        """A fresh enhancer on the same model with some stream settings changed."""
        return StreamingEnhancer(self.model, dataclasses.replace(self.stream, **changes))

    # -- input checks ---------------------------------------------------------------------------
    def _check_input(self, frame: torch.Tensor) -> torch.Tensor:
        frame = check_frame(frame)
        batch, _, height, width = frame.shape
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
        return frame.to(self.model.device)

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

    def _remember(self, output_frame: torch.Tensor, output_latent: Optional[torch.Tensor]) -> None:
        if self.history_length == 0:
            return
        image = frame_to_model(output_frame, self.model.dtype)
        if self.layout == "release":
            self._ring.push(image)
        elif self.stream.reference_latent == "output" and output_latent is not None:
            self._ring.push(output_latent.to(self.model.dtype))
        else:
            self._ring.push(self._encode_frames(image)[:, :, 0])

    def prime(self, history: Sequence[torch.Tensor]) -> None:
        """Seed the history with previous OUTPUT frames ``[B, 3, H, W]`` in [0, 1], oldest first.

        Used to resume a stream: after priming with the last ``history_length`` outputs, the next
        ``step`` continues exactly as the uninterrupted stream would (except for the approximate
        ``reference_latent="output"`` mode, whose output latents are not recoverable from frames).
        """
        self.reset()
        for frame in history:
            frame = self._check_input(frame)
            with torch.inference_mode():
                self._remember(frame.float(), None)
            self.frames_seen += 1

    # -- the step -------------------------------------------------------------------------------
    def references(self) -> List[torch.Tensor]:
        """The history entries to condition on now, newest offset first (empty = non-temporal).

        Release layout: model-space frames ``[B, 3, H, W]``; per-frame layout: latents ``[B, 16, h, w]``.
        """
        return [self._ring.get(offset) for offset in self._reference_offsets()]

    def enhance_model_space(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the model once on model-space ``image: [B, 3, H, W]`` with this stream's history.

        Returns (decoded frame 0 ``[B, 3, H, W]`` float32 unquantized, its x0 latent ``[B, 16, h, w]``).
        The history is read, not updated.
        """
        return run_model_step(self.model, self.layout, image, self.references())

    def remember(self, output_frame: torch.Tensor, output_latent: Optional[torch.Tensor]) -> None:
        """Push one output (``[B, 3, H, W]`` in [0, 1], and its x0 latent) into the history."""
        self._remember(output_frame, output_latent)
        self.frames_seen += 1

    def check_input(self, frame: torch.Tensor) -> torch.Tensor:
        """Validate a frame for this stream (shape, dtype, size, same size as before); on the model's device."""
        return self._check_input(frame)

    def step(self, frame: torch.Tensor) -> torch.Tensor:
        """Enhance the next frame of the stream.

        frame: ``[B, 3, H, W]`` (or ``[3, H, W]``) float in [0, 1]; H and W multiples of
            ``model.config.pixel_multiple``; the same size for the whole stream.
        Returns ``[B, 3, H, W]`` float32 in [0, 1] on 8-bit levels (what the release writes), on
        the model's device.
        """
        squeeze = frame.dim() == 3 if isinstance(frame, torch.Tensor) else False
        frame = self._check_input(frame)
        with torch.inference_mode():
            decoded, latent = self.enhance_model_space(frame_to_model(frame, self.model.dtype))
            output = model_to_frame(decoded)
            self.remember(output, latent)
        return output[0] if squeeze else output
