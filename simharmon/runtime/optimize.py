"""An enhancer model with the exact optimizations switched on, usable wherever an EnhancerModel is.

:class:`OptimizedEnhancer` has the interface the step stages use (``encode``, ``denoise``,
``decode``, ``dtype``, ``device``, ``config``), so every driver runs the optimized computation
unchanged; the engine always wraps its model in one::

    fast = OptimizedEnhancer(model)            # all optimizations on
    StreamingEnhancer(fast).step(frame)        # same outputs as StreamingEnhancer(model)

Its ``denoise`` returns x0 of latent frame 0 only when ``last_block_current_only`` is on (the
stages use frame 0 only). Move or cast this wrapper, not the inner model: the folded 2D
weights are copies that follow the wrapper (they are rebuilt when they no longer match).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from ..config import EnhancerConfig, OptimizationConfig
from ..models.dit import CosmosDiT
from ..models.enhancer import EnhancerModel
from .fast_dit import FastDenoiser
from .fast_vae import FoldedTokenizer

__all__ = ["OptimizedEnhancer"]


class OptimizedEnhancer(nn.Module):
    """Wraps an :class:`EnhancerModel` (sharing its weights) and applies ``optimizations``."""

    def __init__(self, model: EnhancerModel, optimizations: Optional[OptimizationConfig] = None) -> None:
        super().__init__()
        self.model = model
        self.optimizations = optimizations if optimizations is not None else OptimizationConfig()
        self.fast_denoiser = FastDenoiser(model.denoiser, self.optimizations)
        # A decoder with skip convolutions takes the encoder's activations: that tokenizer runs unfolded.
        fold = self.optimizations.fold_single_frame_convs and not model.config.tokenizer.skip_connections
        self.folded = FoldedTokenizer(model.tokenizer) if fold else None

    @property
    def config(self) -> EnhancerConfig:
        """The wrapped model's config."""
        return self.model.config

    @property
    def weights(self) -> list:
        """The files the wrapped model's weights were loaded from (empty: random weights)."""
        return self.model.weights

    @property
    def dit(self) -> CosmosDiT:
        """The wrapped model's DiT."""
        return self.model.dit

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype of the wrapped model."""
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        """Parameter device of the wrapped model."""
        return self.model.device

    def prepare(self) -> OptimizedEnhancer:
        """Precompute what the optimizations need (one device sync); call after moving or casting."""
        self._sync_folded()
        self.fast_denoiser.prepare()
        return self

    def _sync_folded(self) -> None:
        if self.folded is None:
            return
        ref = self.folded.quant.weight
        if ref.dtype != self.model.tokenizer.dtype or ref.device != self.model.device:
            self.folded = FoldedTokenizer(self.model.tokenizer)  # the inner model was moved on its own

    def encode(self, video: Tensor, return_skips: bool = False):
        """``video: [B, 3, T, H, W]`` in [-1, 1] -> normalized latents ``[B, 16, T', H/8, W/8]``.

        With ``return_skips`` (a tokenizer with decoder skip convolutions): ``(latents, skips)``, as
        :meth:`EnhancerModel.encode`.
        """
        if self.folded is None:
            return self.model.encode(video, return_skips=return_skips) if return_skips else self.model.encode(video)
        self._sync_folded()
        return self.folded.encode(video)

    def denoise(self, latents: Tensor, condition_mask: Optional[Tensor] = None) -> Tensor:
        """latents ``[B, 16, T, h, w]`` -> float32 x0, ``[B, 16, 1, h, w]`` if only frame 0 is computed.

        condition_mask: ``[B, 1, h, w]`` for the DiT's padding-mask channel, or None (zeros).
        """
        return self.fast_denoiser(latents, condition_mask=condition_mask)

    def decode(self, latents: Tensor, skips=None) -> Tensor:
        """Normalized latents ``[B, 16, T', h, w]`` -> video ``[B, 3, T, 8h, 8w]`` (``skips``: see ``encode``)."""
        if self.folded is None:
            return self.model.decode(latents, skips=skips)
        self._sync_folded()
        return self.folded.decode(latents)
