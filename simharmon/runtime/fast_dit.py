"""Exact fast paths of the single-step denoiser: fixed timestep, checked null condition, frame-0 output.

Three switches of :class:`~simharmon.config.OptimizationConfig` act here:

* ``precompute_modulation``: the timestep never changes, so the AdaLN modulations of every block
  and of the final layer are computed once (batch 1) and broadcast over the batch.
* ``skip_null_cross_attention``: with an all-zero text condition and bias-free projections, the
  cross-attention output is exactly 0 (k = v = 0), so the sub-layer is an identity. The condition
  is CHECKED once in :meth:`FastDenoiser.prepare`; any non-zero condition runs it.
* ``last_block_current_only``: only latent frame 0's x0 is ever used, so the last block computes
  queries, cross-attention and MLP for frame 0's tokens only, and the final layer runs on them.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..config import OptimizationConfig
from ..models.denoiser import RectifiedFlowDenoiser, rectified_flow_coefficients
from ..models.dit import CosmosDiT
from ..models.dit_layers import BlockModulation, RopeTable

__all__ = ["FastDenoiser"]


class FastDenoiser(nn.Module):
    """x0 of a :class:`RectifiedFlowDenoiser`, with the exact optimizations that ``optimizations`` enables.

    ``forward(latent)`` takes ``[B, C, T, h, w]`` and returns float32 x0: ``[B, C, 1, h, w]`` (latent
    frame 0 only) when ``last_block_current_only`` is on and T > 1, else ``[B, C, T, h, w]``.
    Call :meth:`prepare` after moving or casting (it is also called lazily on first use).
    """

    def __init__(self, denoiser: RectifiedFlowDenoiser, optimizations: Optional[OptimizationConfig] = None) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.optimizations = optimizations if optimizations is not None else OptimizationConfig()
        # The text condition [1, L, C]: the denoiser's null text. Kept as a buffer so it follows .to().
        self.register_buffer("context", denoiser.null_context(1, denoiser.net.device), persistent=False)
        # [num_blocks, 3 sub-layers, 3 (shift, scale, gate), 1, 1, D] and [2 (shift, scale), 1, 1, D].
        self.register_buffer("block_modulation", torch.empty(0), persistent=False)
        self.register_buffer("final_modulation", torch.empty(0), persistent=False)
        self._prepared_for: Optional[Tuple[torch.dtype, torch.device]] = None
        self._cross_attention_identity = False
        self._context_is_null = True  # made by null_context (zeros); only trusted where data cannot be read (meta)

    @property
    def net(self) -> CosmosDiT:
        """The denoiser's DiT."""
        return self.denoiser.net

    def _apply(self, fn, *args, **kwargs):
        # A cast or move invalidates the precomputed values (they must be recomputed, not cast).
        self._prepared_for = None
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------ preparation

    def set_context(self, context: Tensor) -> None:
        """Use another text condition ``[1, L, crossattn_emb_channels]``; the zero check runs again."""
        c = self.net.config.crossattn_emb_channels
        if context.ndim != 3 or context.shape[0] != 1 or context.shape[2] != c:
            raise ValueError(f"context must be [1, L, {c}], got shape {tuple(context.shape)}")
        self.context = context.to(device=self.net.device, dtype=self.net.dtype)
        self._context_is_null = False
        self._prepared_for = None

    @torch.no_grad()
    def prepare(self) -> None:
        """Precompute the modulations (if enabled) and check whether cross-attention is an identity.

        Synchronizes with the device once (the zero check); never call it in a per-frame path.
        """
        net = self.net
        if self.context.dtype != net.dtype or self.context.device != net.device:
            self.context = self.context.to(device=net.device, dtype=net.dtype)
        timesteps = torch.full((1, 1), self._c_noise(), dtype=net.dtype, device=net.device)
        t_emb, adaln_lora = net.embed_time(timesteps)
        block_mods = [block.modulation(t_emb, adaln_lora) for block in net.blocks]
        if self.optimizations.precompute_modulation:
            self.block_modulation = torch.stack([torch.stack([torch.stack(sub) for sub in m]) for m in block_mods])
            self.final_modulation = torch.stack(net.final_layer.modulation(t_emb, adaln_lora))
        else:
            self.block_modulation = torch.empty(0, device=net.device)
            self.final_modulation = torch.empty(0, device=net.device)
        # Identity only if: zero condition, bias-free k/v/output projections, finite gates (0 * inf is NaN).
        bias_free = all(
            getattr(lin, "bias", None) is None
            for block in net.blocks
            for lin in (block.cross_attn.k_proj, block.cross_attn.v_proj, block.cross_attn.output_proj)
        )
        if self.context.device.type == "meta":
            # Shapes only (FLOP counting): values cannot be checked, so only the untouched null context counts.
            self._cross_attention_identity = bias_free and self._context_is_null
        else:
            finite_gates = all(bool(torch.isfinite(m.cross_attn[2]).all()) for m in block_mods)
            self._cross_attention_identity = bias_free and finite_gates and not bool(self.context.any())
        self._prepared_for = (net.dtype, net.device)

    @property
    def cross_attention_is_identity(self) -> bool:
        """True when the checked condition makes every cross-attention sub-layer an exact identity."""
        self._ensure_prepared()
        return self._cross_attention_identity

    @property
    def skips_cross_attention(self) -> bool:
        """Whether forward skips the cross-attention (switch on AND the check passed)."""
        return self.optimizations.skip_null_cross_attention and self.cross_attention_is_identity

    def _ensure_prepared(self) -> None:
        if self._prepared_for != (self.net.dtype, self.net.device):
            self.prepare()

    def _c_noise(self) -> float:
        return rectified_flow_coefficients(self.denoiser.sigma)[3]

    def _modulations(self, batch: int) -> Tuple[List[BlockModulation], Tuple[Tensor, Tensor]]:
        net = self.net
        if self.optimizations.precompute_modulation:
            mods = [BlockModulation(*(tuple(sub.unbind(0)) for sub in m.unbind(0))) for m in self.block_modulation]
            return mods, tuple(self.final_modulation.unbind(0))
        timesteps = torch.full((batch, 1), self._c_noise(), dtype=net.dtype, device=net.device)
        t_emb, adaln_lora = net.embed_time(timesteps)
        return [b.modulation(t_emb, adaln_lora) for b in net.blocks], net.final_layer.modulation(t_emb, adaln_lora)

    # ------------------------------------------------------------------ forward

    def forward(self, latent: Tensor, rope: Optional[RopeTable] = None,
                condition_mask: Optional[Tensor] = None) -> Tensor:
        """latent: [B, C, T, h, w] -> float32 x0 (see the class docstring for the frame count).

        rope: the (cos, sin) table of the patch grid, when the caller keeps it (compiled steps do).
        condition_mask: ``[B, 1, h, w]`` for the padding-mask channel (``stream.mask_condition``), or None.
        """
        net = self.net
        channels = net.config.in_channels
        if latent.ndim != 5 or latent.shape[1] != channels:
            raise ValueError(f"latent must be [B, {channels}, T, h, w], got shape {tuple(latent.shape)}")
        self._ensure_prepared()
        c_skip, c_out, c_in, _ = rectified_flow_coefficients(self.denoiser.sigma)
        b = latent.shape[0]
        x = latent.float()
        grid = net.check_input(x)
        tokens = net.embed_input((x * c_in).to(net.dtype), condition_mask)
        rope = net.rope(grid) if rope is None else rope
        block_mods, final_mod = self._modulations(b)
        context = None if self.skips_cross_attention else self.context.expand(b, -1, -1)
        partial = self.optimizations.last_block_current_only and grid[0] > 1
        frame_tokens = grid[1] * grid[2]  # tokens are in (t, h, w) order: frame 0 comes first
        last = len(net.blocks) - 1
        for index, block in enumerate(net.blocks):
            if partial and index == last:
                tokens = block.forward_queries(tokens, block_mods[index], context, rope, frame_tokens)
            else:
                tokens = block(tokens, block_mods[index], context, rope)
        out = net.final_layer(tokens, final_mod)
        out_grid = (1, grid[1], grid[2]) if partial else grid
        velocity = net.unpatchify(out, out_grid)
        return c_skip * x[:, :, : out_grid[0]] + c_out * velocity.float()
