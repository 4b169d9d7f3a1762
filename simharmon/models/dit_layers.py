"""Building blocks of the Cosmos-Predict2 DiT (COSMOS.md 1.3-1.5).

Module and attribute names mirror the official ``MiniTrainDIT`` so that its state dict loads with
strict key matching. Tokens are kept flat as ``[B, L, D]`` with L = T * Hp * Wp in row-major
(t, h, w) order; per-sample modulation tensors are ``[B, 1, D]`` and broadcast over the tokens.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "RMSNorm",
    "SinusoidalTimesteps",
    "TimestepEmbedding",
    "RopePosition3D",
    "apply_rope",
    "Attention",
    "MLP",
    "Modulation",
    "BlockModulation",
    "Block",
    "FinalLayer",
    "Patchify",
    "adaln_modulation",
]

# (shift, scale, gate), each [B, 1, D].
Modulation = Tuple[Tensor, Tensor, Tensor]
RopeTable = Tuple[Tensor, Tensor]

_LN_EPS = 1e-6
_RMS_EPS = 1e-6


class RMSNorm(nn.Module):
    """RMSNorm over the last dimension, computed in float32 (like Transformer Engine's RMSNorm).

    y = x / sqrt(mean(x^2) + eps) * weight, returned in the input dtype.
    """

    def __init__(self, dim: int, eps: float = _RMS_EPS) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """x: [..., dim] -> [..., dim] (same dtype)."""
        y = F.rms_norm(x.float(), (self.dim,), self.weight.float(), self.eps)
        return y.to(x.dtype)


class SinusoidalTimesteps(nn.Module):
    """Sinusoidal timestep features, cos half first (COSMOS.md 1.3 step 4); no parameters."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        if num_channels % 2:
            raise ValueError(f"timestep embedding needs an even width, got {num_channels}")
        self.num_channels = num_channels

    def forward(self, timesteps: Tensor) -> Tensor:
        """timesteps: [B, 1] -> [B, 1, num_channels], computed in float32, returned in the input dtype."""
        half = self.num_channels // 2
        exponent = torch.arange(half, dtype=torch.float32, device=timesteps.device) * (-math.log(10000.0) / half)
        angles = timesteps.float().unsqueeze(-1) * torch.exp(exponent)
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).to(timesteps.dtype)


class TimestepEmbedding(nn.Module):
    """AdaLN-LoRA time MLP. Returns the raw sinusoid unchanged plus the LoRA term (COSMOS.md 1.3)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(dim, dim, bias=False)
        self.activation = nn.SiLU()
        self.linear_2 = nn.Linear(dim, 3 * dim, bias=False)

    def forward(self, sample: Tensor) -> Tuple[Tensor, Tensor]:
        """sample: [B, 1, D] -> (sample [B, 1, D], adaln_lora [B, 1, 3D])."""
        return sample, self.linear_2(self.activation(self.linear_1(sample)))


class RopePosition3D(nn.Module):
    """3D rotary position table with NTK-scaled bases (COSMOS.md 1.5), ``VideoRopePosition3DEmb`` names.

    The three buffers exist for strict state-dict compatibility only. The table itself is derived
    from the constructor arguments in float64 and stored as float32, so it is independent of the
    module dtype. Note: the official bf16 pipeline casts these buffers to bf16 and builds the table
    in bf16 (COSMOS.md 1.9), which gives small phase differences growing with position.
    """

    _CACHE_SIZE = 8

    def __init__(
        self,
        head_dim: int,
        len_t: int,
        len_h: int,
        len_w: int,
        h_extrapolation_ratio: float = 1.0,
        w_extrapolation_ratio: float = 1.0,
        t_extrapolation_ratio: float = 1.0,
    ) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.dim_h = self.dim_w = (head_dim // 6) * 2
        self.dim_t = head_dim - 2 * self.dim_h
        if self.dim_t <= 0 or self.dim_t % 2 or self.dim_h <= 2:
            raise ValueError(f"head_dim {head_dim} cannot be split into t/h/w rotary parts")
        self.len_t, self.len_h, self.len_w = len_t, len_h, len_w
        self.ratios = (t_extrapolation_ratio, h_extrapolation_ratio, w_extrapolation_ratio)
        seq_len = max(len_t, len_h, len_w)
        self.register_buffer("seq", torch.arange(seq_len, dtype=torch.float32))
        self.register_buffer(
            "dim_spatial_range", torch.arange(0, self.dim_h, 2, dtype=torch.float32)[: self.dim_h // 2] / self.dim_h
        )
        self.register_buffer(
            "dim_temporal_range", torch.arange(0, self.dim_t, 2, dtype=torch.float32)[: self.dim_t // 2] / self.dim_t
        )
        self._cache: dict = {}

    def _apply(self, fn, *args, **kwargs):
        # A device or dtype move invalidates cached tables.
        self._cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def frequencies(self) -> Tuple[Tensor, Tensor, Tensor]:
        """Per-axis inverse frequencies, float64 on CPU: (freq_t [dim_t/2], freq_h [dim_h/2], freq_w [dim_w/2])."""
        out = []
        for dim, ratio in zip((self.dim_t, self.dim_h, self.dim_w), self.ratios):
            theta = 10000.0 * ratio ** (dim / (dim - 2))
            out.append(theta ** (-torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim))
        return out[0], out[1], out[2]

    def check_grid(self, t: int, h: int, w: int) -> None:
        """Raise ValueError if a (T, Hp, Wp) patch grid exceeds the configured table sizes."""
        for name, size, limit in (
            ("frames", t, self.len_t),
            ("patch rows", h, self.len_h),
            ("patch columns", w, self.len_w),
        ):
            if not 1 <= size <= limit:
                raise ValueError(
                    f"latent grid has {size} {name}, outside the RoPE table range 1..{limit} "
                    "(raise dit.max_frames / max_img_h / max_img_w)"
                )

    def angles(self, t: int, h: int, w: int) -> Tensor:
        """Rotation angles for a (T, Hp, Wp) grid: [T*Hp*Wp, head_dim] float64 on CPU.

        Layout per token: [t-part, h-part, w-part] twice, positions are integer indices from 0.
        """
        self.check_grid(t, h, w)
        freq_t, freq_h, freq_w = self.frequencies()
        pos = [torch.arange(n, dtype=torch.float64) for n in (t, h, w)]
        ang_t = torch.outer(pos[0], freq_t)[:, None, None, :].expand(t, h, w, -1)
        ang_h = torch.outer(pos[1], freq_h)[None, :, None, :].expand(t, h, w, -1)
        ang_w = torch.outer(pos[2], freq_w)[None, None, :, :].expand(t, h, w, -1)
        half = torch.cat([ang_t, ang_h, ang_w], dim=-1).reshape(t * h * w, -1)
        return torch.cat([half, half], dim=-1)

    def cos_sin(self, t: int, h: int, w: int, device: torch.device) -> RopeTable:
        """(cos, sin) tables, each [T*Hp*Wp, head_dim] float32 on ``device``; cached per (T, Hp, Wp, device)."""
        key = (t, h, w, torch.device(device))
        table = self._cache.get(key)
        if table is None:
            ang = self.angles(t, h, w)
            table = (torch.cos(ang).float().to(device), torch.sin(ang).float().to(device))
            if len(self._cache) >= self._CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = table
        return table


def apply_rope(x: Tensor, rope: RopeTable) -> Tensor:
    """Rotate q or k: x: [B, L, heads, head_dim], rope: (cos, sin) [L, head_dim] -> [B, L, heads, head_dim].

    Non-interleaved pairing (dim i with i + head_dim/2), computed in float32.
    """
    cos, sin = rope[0][:, None, :], rope[1][:, None, :]
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    """Multi-head attention with per-head RMSNorm on q and k (COSMOS.md 1.4).

    Self-attention (``context_dim is None``) applies RoPE to q and k; cross-attention does not.
    """

    def __init__(self, query_dim: int, context_dim: int | None, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.is_selfattn = context_dim is None
        context_dim = query_dim if context_dim is None else context_dim
        inner = num_heads * head_dim
        self.num_heads, self.head_dim = num_heads, head_dim
        self.q_proj = nn.Linear(query_dim, inner, bias=False)
        self.q_norm = RMSNorm(head_dim)
        self.k_proj = nn.Linear(context_dim, inner, bias=False)
        self.k_norm = RMSNorm(head_dim)
        self.v_proj = nn.Linear(context_dim, inner, bias=False)
        self.v_norm = nn.Identity()
        self.output_proj = nn.Linear(inner, query_dim, bias=False)
        self.output_dropout = nn.Identity()

    def forward(self, x: Tensor, context: Tensor | None = None, rope: RopeTable | None = None) -> Tensor:
        """x: [B, L, D]; context: [B, S, C] (None: self-attention); rope: (cos, sin) [L, head_dim] -> [B, L, D]."""
        ctx = x if context is None else context
        b = x.shape[0]
        q = self.q_norm(self.q_proj(x).view(b, -1, self.num_heads, self.head_dim))
        k = self.k_norm(self.k_proj(ctx).view(b, -1, self.num_heads, self.head_dim))
        v = self.v_norm(self.v_proj(ctx).view(b, -1, self.num_heads, self.head_dim))
        if self.is_selfattn and rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).reshape(b, -1, self.num_heads * self.head_dim)
        return self.output_dropout(self.output_proj(out))

    def forward_queries(self, x: Tensor, num_queries: int, rope: RopeTable) -> Tensor:
        """Self-attention output of the first ``num_queries`` tokens only; keys and values use all tokens.

        x: [B, L, D]; rope: (cos, sin) [L, head_dim] -> [B, num_queries, D]. Row for row the same
        computation as :meth:`forward` (each query row attends independently).
        """
        if not self.is_selfattn:
            raise ValueError("forward_queries is for self-attention only")
        b, n = x.shape[0], num_queries
        q = self.q_norm(self.q_proj(x[:, :n]).view(b, n, self.num_heads, self.head_dim))
        k = self.k_norm(self.k_proj(x).view(b, -1, self.num_heads, self.head_dim))
        v = self.v_norm(self.v_proj(x).view(b, -1, self.num_heads, self.head_dim))
        q, k = apply_rope(q, (rope[0][:n], rope[1][:n])), apply_rope(k, rope)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.output_dropout(self.output_proj(out))


class MLP(nn.Module):
    """Linear -> GELU (exact erf) -> Linear, bias-free."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layer1 = nn.Linear(dim, hidden, bias=False)
        self.activation = nn.GELU()
        self.layer2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, L, D] -> [B, L, D]."""
        return self.layer2(self.activation(self.layer1(x)))


def adaln_modulation(dim: int, lora_dim: int, chunks: int) -> nn.Sequential:
    """SiLU -> Linear(dim, lora_dim) -> Linear(lora_dim, chunks * dim), the ``adaln_modulation*`` layout."""
    return nn.Sequential(nn.SiLU(), nn.Linear(dim, lora_dim, bias=False), nn.Linear(lora_dim, chunks * dim, bias=False))


def _modulate(x: Tensor, norm: nn.Module, shift: Tensor, scale: Tensor) -> Tensor:
    return norm(x) * (1 + scale) + shift


class BlockModulation(NamedTuple):
    """Per-block AdaLN modulation, independent of the tokens; each entry is (shift, scale, gate) [B, 1, D]."""

    self_attn: Modulation
    cross_attn: Modulation
    mlp: Modulation


class Block(nn.Module):
    """DiT block: gated self-attention, cross-attention and MLP with AdaLN-LoRA (COSMOS.md 1.4).

    ``modulation`` depends only on the time embedding, so a runtime with a fixed timestep can
    compute it once and pass it to ``forward`` on every call.
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int, mlp_ratio: float, lora_dim: int) -> None:
        super().__init__()
        head_dim = dim // num_heads
        self.self_attn = Attention(dim, None, num_heads, head_dim)
        self.cross_attn = Attention(dim, context_dim, num_heads, head_dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.layer_norm_self_attn = nn.LayerNorm(dim, elementwise_affine=False, eps=_LN_EPS)
        self.layer_norm_cross_attn = nn.LayerNorm(dim, elementwise_affine=False, eps=_LN_EPS)
        self.layer_norm_mlp = nn.LayerNorm(dim, elementwise_affine=False, eps=_LN_EPS)
        self.adaln_modulation_self_attn = adaln_modulation(dim, lora_dim, 3)
        self.adaln_modulation_cross_attn = adaln_modulation(dim, lora_dim, 3)
        self.adaln_modulation_mlp = adaln_modulation(dim, lora_dim, 3)

    def modulation(self, t_emb: Tensor, adaln_lora: Tensor) -> BlockModulation:
        """t_emb: [B, 1, D], adaln_lora: [B, 1, 3D] -> BlockModulation of (shift, scale, gate) [B, 1, D].

        The full adaln_lora is added to each of the three sub-layer modulations.
        """
        return BlockModulation(
            *(
                tuple((mod(t_emb) + adaln_lora).chunk(3, dim=-1))
                for mod in (
                    self.adaln_modulation_self_attn,
                    self.adaln_modulation_cross_attn,
                    self.adaln_modulation_mlp,
                )
            )
        )

    def forward(self, x: Tensor, modulation: BlockModulation, context: Tensor | None, rope: RopeTable) -> Tensor:
        """x: [B, L, D]; context: [B, S, C]; rope: (cos, sin) [L, head_dim] -> [B, L, D].

        ``context=None`` skips the cross-attention sub-layer. That equals passing an all-zero context
        exactly (bias-free projections give k = v = 0, so the attention output is 0).
        """
        shift, scale, gate = modulation.self_attn
        x = x + gate * self.self_attn(_modulate(x, self.layer_norm_self_attn, shift, scale), rope=rope)
        if context is not None:
            shift, scale, gate = modulation.cross_attn
            x = x + gate * self.cross_attn(_modulate(x, self.layer_norm_cross_attn, shift, scale), context)
        shift, scale, gate = modulation.mlp
        return x + gate * self.mlp(_modulate(x, self.layer_norm_mlp, shift, scale))

    def forward_queries(
        self, x: Tensor, modulation: BlockModulation, context: Tensor | None, rope: RopeTable, num_queries: int
    ) -> Tensor:
        """The block's output for the first ``num_queries`` tokens only: [B, L, D] -> [B, num_queries, D].

        Keys and values of the self-attention still come from all L tokens; the queries, the
        cross-attention and the MLP run on the first ``num_queries`` tokens. Used on the last block
        when only latent frame 0 (the first tokens in (t, h, w) order) is needed.
        """
        shift, scale, gate = modulation.self_attn
        normed = _modulate(x, self.layer_norm_self_attn, shift, scale)
        x = x[:, :num_queries] + gate * self.self_attn.forward_queries(normed, num_queries, rope)
        if context is not None:
            shift, scale, gate = modulation.cross_attn
            x = x + gate * self.cross_attn(_modulate(x, self.layer_norm_cross_attn, shift, scale), context)
        shift, scale, gate = modulation.mlp
        return x + gate * self.mlp(_modulate(x, self.layer_norm_mlp, shift, scale))


class FinalLayer(nn.Module):
    """AdaLN (shift, scale) + LayerNorm + Linear to patch features."""

    def __init__(self, dim: int, out_features: int, lora_dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.layer_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=_LN_EPS)
        self.linear = nn.Linear(dim, out_features, bias=False)
        self.adaln_modulation = adaln_modulation(dim, lora_dim, 2)

    def modulation(self, t_emb: Tensor, adaln_lora: Tensor) -> Tuple[Tensor, Tensor]:
        """t_emb: [B, 1, D], adaln_lora: [B, 1, 3D] -> (shift, scale), each [B, 1, D]."""
        shift, scale = (self.adaln_modulation(t_emb) + adaln_lora[..., : 2 * self.dim]).chunk(2, dim=-1)
        return shift, scale

    def forward(self, x: Tensor, modulation: Tuple[Tensor, Tensor]) -> Tensor:
        """x: [B, L, D] -> [B, L, out_features]."""
        shift, scale = modulation
        return self.linear(_modulate(x, self.layer_norm, shift, scale))


class Patchify(nn.Module):
    """[B, C, T, H, W] -> [B, T/r, H/m, W/n, C*r*m*n], feature index (c, r, m, n) with c slowest; no parameters."""

    def __init__(self, patch_temporal: int, patch_spatial: int) -> None:
        super().__init__()
        self.r, self.p = patch_temporal, patch_spatial

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, T, H, W] with T % r == 0 and H, W % p == 0 -> [B, T/r, H/p, W/p, C*r*p*p]."""
        b, c, t, h, w = x.shape
        r, p = self.r, self.p
        x = x.reshape(b, c, t // r, r, h // p, p, w // p, p)
        return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, t // r, h // p, w // p, c * r * p * p)
