"""Cosmos-Predict2 text2image DiT (``MiniTrainDIT``), rebuilt from COSMOS.md section 1.

The state dict has exactly the official key names and shapes (COSMOS.md 1.2), including the
seven persistent buffers, and no ``_extra_state`` entries. For the 0.6B config: 407 parameter
tensors, 597,536,000 parameter elements, 414 state-dict keys.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simharmon.config import DiTConfig
from simharmon.models.dit_layers import (
    Block,
    FinalLayer,
    Patchify,
    RMSNorm,
    RopePosition3D,
    SinusoidalTimesteps,
    TimestepEmbedding,
)

__all__ = ["CosmosDiT", "PatchEmbed"]

Grid = Tuple[int, int, int]


class PatchEmbed(nn.Module):
    """Linear patch embedding; ``proj.0`` is the (parameter-free) patchify, ``proj.1`` the Linear."""

    def __init__(self, in_channels: int, dim: int, patch_temporal: int, patch_spatial: int) -> None:
        super().__init__()
        features = in_channels * patch_temporal * patch_spatial * patch_spatial
        self.proj = nn.Sequential(Patchify(patch_temporal, patch_spatial), nn.Linear(features, dim, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, T, H, W] -> [B, T/r, H/p, W/p, D]."""
        return self.proj(x)


class CosmosDiT(nn.Module):
    """The Cosmos-Predict2 DiT, built from a :class:`DiTConfig`.

    ``forward`` is the full network. The pieces are also exposed separately (``embed_time``,
    ``embed_input``, ``rope``, ``Block.modulation``, ``unpatchify``) so that a runtime with a fixed
    timestep can precompute modulations once and call the blocks itself.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.model_channels
        # Counters of the official base class WeightTrainingStat; kept only for strict loading.
        self.register_buffer("accum_video_sample_counter", torch.zeros((), dtype=torch.int64))
        self.register_buffer("accum_image_sample_counter", torch.zeros((), dtype=torch.int64))
        self.register_buffer("accum_iteration", torch.zeros((), dtype=torch.int64))
        self.register_buffer("accum_train_in_hours", torch.zeros((), dtype=torch.float32))

        embed_in = config.in_channels + (1 if config.concat_padding_mask else 0)
        self.x_embedder = PatchEmbed(embed_in, d, config.patch_temporal, config.patch_spatial)
        self.pos_embedder = RopePosition3D(
            head_dim=config.head_dim,
            len_t=config.max_frames // config.patch_temporal,
            len_h=config.max_img_h // config.patch_spatial,
            len_w=config.max_img_w // config.patch_spatial,
            h_extrapolation_ratio=config.rope_h_extrapolation_ratio,
            w_extrapolation_ratio=config.rope_w_extrapolation_ratio,
            t_extrapolation_ratio=config.rope_t_extrapolation_ratio,
        )
        self.t_embedder = nn.Sequential(SinusoidalTimesteps(d), TimestepEmbedding(d))
        self.blocks = nn.ModuleList(
            Block(d, config.crossattn_emb_channels, config.num_heads, config.mlp_ratio, config.adaln_lora_dim)
            for _ in range(config.num_blocks)
        )
        out_features = config.patch_spatial * config.patch_spatial * config.patch_temporal * config.out_channels
        self.final_layer = FinalLayer(d, out_features, config.adaln_lora_dim)
        self.t_embedding_norm = RMSNorm(d)

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype; inputs are cast to it."""
        return self.x_embedder.proj[1].weight.dtype

    @property
    def device(self) -> torch.device:
        """Parameter device."""
        return self.x_embedder.proj[1].weight.device

    # ----------------------------------------------------------------- validation

    def check_input(self, x: Tensor) -> Grid:
        """Validate a latent x: [B, C_in, T, H, W]; return its patch grid (T/r, H/p, W/p)."""
        cfg = self.config
        if x.ndim != 5:
            raise ValueError(f"DiT input must be [B, C, T, H, W], got shape {tuple(x.shape)}")
        _, c, t, h, w = x.shape
        if c != cfg.in_channels:
            raise ValueError(f"DiT input has {c} channels, expected dit.in_channels={cfg.in_channels}")
        p, r = cfg.patch_spatial, cfg.patch_temporal
        if h % p or w % p or t % r:
            raise ValueError(
                f"latent size T={t}, H={h}, W={w} must be divisible by the patch size "
                f"(temporal {r}, spatial {p}); pad the frame to a multiple of the pixel stride"
            )
        grid = (t // r, h // p, w // p)
        self.pos_embedder.check_grid(*grid)
        return grid

    def _check_timesteps(self, timesteps: Tensor, batch: int) -> Tensor:
        if timesteps.ndim == 1 and timesteps.shape[0] == batch:
            return timesteps.unsqueeze(1)
        if timesteps.ndim == 2 and tuple(timesteps.shape) == (batch, 1):
            return timesteps
        raise ValueError(f"timesteps must be [B] or [B, 1] with B={batch}, got shape {tuple(timesteps.shape)}")

    def _check_context(self, context: Tensor, batch: int) -> None:
        c = self.config.crossattn_emb_channels
        if context.ndim != 3 or context.shape[0] != batch or context.shape[2] != c:
            raise ValueError(f"crossattn_emb must be [B={batch}, L, {c}], got shape {tuple(context.shape)}")

    # ----------------------------------------------------------------- pieces

    def embed_time(self, timesteps: Tensor) -> Tuple[Tensor, Tensor]:
        """timesteps: [B, 1] -> (t_emb [B, 1, D] (RMS-normalized sinusoid), adaln_lora [B, 1, 3D]).

        The timestep is cast to the parameter dtype first (the official pipeline feeds bf16 t).
        """
        sample, adaln_lora = self.t_embedder(timesteps.to(self.dtype))
        return self.t_embedding_norm(sample), adaln_lora

    def embed_input(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """x: [B, C_in, T, H, W], padding_mask: [B or 1, 1, Hm, Wm] or None (zeros) -> tokens [B, L, D].

        The mask is nearest-resized to (H, W) and appended as the last input channel.
        """
        x = x.to(self.dtype)
        if self.config.concat_padding_mask:
            b, _, t, h, w = x.shape
            if padding_mask is None:
                mask = x.new_zeros(b, 1, h, w)
            else:
                if padding_mask.ndim != 4 or padding_mask.shape[1] != 1 or padding_mask.shape[0] not in (1, b):
                    raise ValueError(
                        f"padding_mask must be [B={b} or 1, 1, H, W], got shape {tuple(padding_mask.shape)}"
                    )
                mask = padding_mask.to(self.dtype)
                if tuple(mask.shape[-2:]) != (h, w):
                    # Same as torchvision's NEAREST resize on tensors (legacy "nearest" rounding).
                    mask = F.interpolate(mask, size=(h, w), mode="nearest")
                mask = mask.expand(b, 1, h, w)
            x = torch.cat([x, mask.unsqueeze(2).expand(b, 1, t, h, w)], dim=1)
        tokens = self.x_embedder(x)
        return tokens.flatten(1, 3)

    def rope(self, grid: Grid) -> Tuple[Tensor, Tensor]:
        """(cos, sin) RoPE tables [T*Hp*Wp, head_dim] float32 for a patch grid, cached per grid and device."""
        return self.pos_embedder.cos_sin(*grid, device=self.device)

    def unpatchify(self, out: Tensor, grid: Grid) -> Tensor:
        """out: [B, L, p*p*r*C_out] (feature index (p1, p2, r, c), c fastest) -> [B, C_out, T, H, W]."""
        t, h, w = grid
        p, r, c = self.config.patch_spatial, self.config.patch_temporal, self.config.out_channels
        out = out.reshape(out.shape[0], t, h, w, p, p, r, c)
        out = out.permute(0, 7, 1, 6, 2, 4, 3, 5)
        return out.reshape(out.shape[0], c, t * r, h * p, w * p)

    # ----------------------------------------------------------------- forward

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        crossattn_emb: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Run the DiT.

        Args:
            x: latent [B, C_in, T, H, W]; H and W divisible by patch_spatial.
            timesteps: [B] or [B, 1], the flow time t in [0, 1) (not multiplied by 1000).
            crossattn_emb: text context [B, L, crossattn_emb_channels].
            padding_mask: [B or 1, 1, Hm, Wm], or None for zeros.

        Returns:
            [B, C_out, T, H, W] in the parameter dtype.
        """
        grid = self.check_input(x)
        b = x.shape[0]
        timesteps = self._check_timesteps(timesteps, b)
        self._check_context(crossattn_emb, b)

        tokens = self.embed_input(x, padding_mask)
        t_emb, adaln_lora = self.embed_time(timesteps)
        rope = self.rope(grid)
        context = crossattn_emb.to(self.dtype)
        for block in self.blocks:
            tokens = block(tokens, block.modulation(t_emb, adaln_lora), context, rope)
        out = self.final_layer(tokens, self.final_layer.modulation(t_emb, adaln_lora))
        return self.unpatchify(out, grid)
