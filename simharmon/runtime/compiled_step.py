"""The per-frame step of one shape bucket, over static buffers, in a form backends can compile or capture.

* :class:`StepCore` is the pure computation: ``uint8 [N, H, W, 3]`` frames and the gathered
  references in, ``uint8 [N, H, W, 3]`` enhanced frames and the new ring entries out. It has no
  state, no host synchronization and fixed shapes, so torch.compile, CUDA graphs and TensorRT can
  all take it.
* :class:`StaticState` owns one stream group's device buffers (input, output, ring of history
  entries newest first, reference index) and :meth:`StaticState.run` does one step over them,
  ring update included, with only in-place writes to those buffers: that whole call is what the
  cudagraph backend captures.

The result equals ``run_model_step`` + ``StreamingEnhancer.remember`` of the plain model (see
tests/runtime/test_engine.py).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .fused_io import pack_frames, plain_pack, plain_unpack, unpack_frames
from .optimize import OptimizedEnhancer

__all__ = ["StepCore", "StaticState", "latent_grid"]

CoreFn = Callable[[Tensor, Optional[Tensor]], Tuple[Tensor, Optional[Tensor]]]


def latent_grid(model: OptimizedEnhancer, layout: str, num_refs: int, height: int, width: int) -> Tuple[int, int, int]:
    """Latent frames and size (T', h, w) that the DiT sees for a bucket."""
    tok = model.config.tokenizer
    s = tok.spatial_compression
    frames = 1 + num_refs // tok.temporal_compression if layout == "release" else 1 + num_refs
    return frames, height // s, width // s


class StepCore(nn.Module):
    """One bucket's stateless step (layout, number of references K, frame size are fixed).

    forward(frames ``uint8 [N, H, W, 3]``, refs) -> (``uint8 [N, H, W, 3]``, entry), where refs is
    ``[N, K, 3, H, W]`` model-space frames (release layout) or ``[N, K, 16, h, w]`` latents
    (per-frame layout), or None when K = 0; entry is what the history ring stores for this frame
    (same per-stream shape as a ref), or None when ``keep_history`` is False.
    """

    def __init__(self, model: OptimizedEnhancer, layout: str, num_refs: int, height: int, width: int,
                 reference_latent: str = "reencode", keep_history: bool = True) -> None:  # fmt: skip
        super().__init__()
        if layout not in ("release", "per_frame"):
            raise ValueError(f"layout must be 'release' or 'per_frame', got {layout!r}")
        if layout == "release" and num_refs % model.config.tokenizer.temporal_compression:
            raise ValueError(f"release layout needs a multiple of the temporal compression references, got {num_refs}")
        self.model = model
        self.layout, self.num_refs, self.height, self.width = layout, num_refs, height, width
        self.reference_latent, self.keep_history = reference_latent, keep_history
        self.grid = latent_grid(model, layout, num_refs, height, width)
        p = model.config.dit.patch_spatial
        cos, sin = model.dit.rope((self.grid[0], self.grid[1] // p, self.grid[2] // p))
        # The DiT's RoPE table for this grid, made once here (outside any compiled or captured region).
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        """The model's compute dtype."""
        return self.model.dtype

    # -- stages (also timed one by one by the benchmark) ---------------------------------------------
    def pre(self, frames: Tensor) -> Tensor:
        """uint8 ``[N, H, W, 3]`` -> model space ``[N, 3, H, W]``."""
        if self.model.optimizations.fused_io:
            return pack_frames(frames, self.dtype)
        return plain_pack(frames, self.dtype)

    def encode(self, image: Tensor, refs: Optional[Tensor]) -> Tensor:
        """Current image ``[N, 3, H, W]`` + refs -> latents ``[N, 16, T', h, w]`` for the DiT."""
        current = image.unsqueeze(2)
        if self.layout == "release":
            clip = current if refs is None else torch.cat([current, refs.transpose(1, 2)], dim=2)
            return self.model.encode(clip)
        latent = self.model.encode(current)
        return latent if refs is None else torch.cat([latent, refs.transpose(1, 2)], dim=2)

    def denoise(self, latents: Tensor) -> Tensor:
        """latents -> float32 x0 of the frames the decoder needs (``[N, 16, 1 or T', h, w]``)."""
        return self.model.fast_denoiser(latents, (self.rope_cos, self.rope_sin))

    def decode(self, x0: Tensor) -> Tensor:
        """x0 -> decoded frame 0, float32 ``[N, 3, H, W]`` (not quantized)."""
        if self.model.optimizations.decode_latent0_only:
            x0 = x0[:, :, :1]
        return self.model.decode(x0.to(self.dtype))[:, :, 0].float()

    def post(self, decoded: Tensor, x0: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """decoded frame 0 -> (uint8 ``[N, H, W, 3]``, ring entry or None)."""
        if self.model.optimizations.fused_io:
            out = unpack_frames(decoded)
            image = pack_frames(out, self.dtype) if self.keep_history else None
        else:
            out, image = plain_unpack(decoded, self.dtype)
        if not self.keep_history:
            return out, None
        return out, self.entry_from_image(image, x0)

    def entry_from_image(self, image: Tensor, x0: Optional[Tensor] = None) -> Tensor:
        """The ring entry of an output: model-space frame (release) or its latent (per-frame layout)."""
        if self.layout == "release":
            return image
        if self.reference_latent == "output" and x0 is not None:
            return x0[:, :, 0].to(self.dtype)
        return self.model.encode(image.unsqueeze(2))[:, :, 0]

    def forward(self, frames: Tensor, refs: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
        """One frame per stream; see the class docstring."""
        x0 = self.denoise(self.encode(self.pre(frames), refs))
        return self.post(self.decode(x0), x0)


class StaticState:
    """Device buffers of a group of N same-size streams stepping together, each with its own ring.

    frames / output: ``uint8 [N, H, W, 3]``; ring: ``[N, capacity, *entry]`` newest first (None if
    the stream keeps no history); ref_index: int64 ``[K]`` positions in the ring to condition on.
    """

    def __init__(self, num_streams: int, height: int, width: int, entry_shape: Sequence[int], capacity: int,
                 num_refs: int, dtype: torch.dtype, device: torch.device) -> None:  # fmt: skip
        self.frames = torch.zeros(num_streams, height, width, 3, dtype=torch.uint8, device=device)
        self.output = torch.zeros_like(self.frames)
        self.ring = torch.zeros(num_streams, capacity, *entry_shape, dtype=dtype, device=device) if capacity else None
        self.ref_index = torch.zeros(num_refs, dtype=torch.int64, device=device)
        self._index_values: Optional[Tuple[int, ...]] = None
        self._index_cache: Dict[Tuple[int, ...], Tensor] = {}

    def set_ref_index(self, positions: Sequence[int]) -> None:
        """Ring positions (0 = newest) of the K references; a device-to-device copy, only on change."""
        key = tuple(positions)
        if key == self._index_values:
            return
        if len(key) != self.ref_index.numel():
            raise ValueError(f"expected {self.ref_index.numel()} reference positions, got {len(key)}")
        src = self._index_cache.get(key)
        if src is None:
            src = self._index_cache[key] = torch.tensor(key, dtype=torch.int64).to(self.ref_index.device)
        self.ref_index.copy_(src, non_blocking=True)
        self._index_values = key

    def push(self, entry: Tensor) -> None:
        """Make ``entry: [N, *entry]`` the newest ring item (in place: capture-safe)."""
        if self.ring is None:
            return
        if self.ring.shape[1] > 1:
            self.ring.copy_(torch.roll(self.ring, 1, dims=1))
        self.ring[:, 0].copy_(entry)

    def run(self, core: CoreFn, use_refs: bool) -> None:
        """One step: read frames (and refs when ``use_refs``), write output, push the ring entry."""
        refs = self.ring.index_select(1, self.ref_index) if use_refs else None
        out, entry = core(self.frames, refs)
        self.output.copy_(out)
        if entry is not None:
            self.push(entry)
