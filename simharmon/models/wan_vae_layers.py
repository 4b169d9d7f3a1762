"""Building blocks of the Wan2.1 causal 3D VAE (COSMOS.md 3.3).

Module and attribute names mirror the original ``VAE_`` tree (``residual.0.gamma``,
``resample.1.weight``, ``time_conv``, ...) so that its state dict loads with strict key matching.

Streaming. Encode and decode run chunk by chunk along time. Every temporal (k_t = 3) causal
convolution keeps the last ``CACHE_T`` frames of its input in a :class:`FeatureCache`, so a chunk
sees the same history as a convolution over the whole clip with 2 frames of zero padding in front.
The two temporal resamplers have their own first-chunk rules (see :class:`Resample`).
Activations are ``[B, C, T, H, W]`` throughout.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CACHE_T",
    "FeatureCache",
    "CausalConv3d",
    "RMSNorm",
    "NearestUpsample2d",
    "ResidualBlock",
    "AttentionBlock",
    "Resample",
    "RESAMPLE_MODES",
]

# Frames of history a temporal 3x3x3 causal convolution needs (kernel 3 -> 2 past frames).
CACHE_T = 2
RESAMPLE_MODES = ("downsample2d", "downsample3d", "upsample2d", "upsample3d")

_Int3 = Union[int, Tuple[int, int, int]]


def _triple(value: _Int3) -> Tuple[int, int, int]:
    return (value, value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


class FeatureCache:
    """Per-module streaming state of one encode or decode call (the Wan "feature cache").

    Keys are the modules themselves, so no call-order bookkeeping is needed. A new cache means
    "this is the first chunk": every module then behaves as at the start of a clip.
    """

    def __init__(self) -> None:
        self._state: Dict[nn.Module, Any] = {}

    def get(self, module: nn.Module) -> Any:
        """The state stored by ``module`` on an earlier chunk, or None on the first chunk."""
        return self._state.get(module)

    def set(self, module: nn.Module, value: Any) -> None:
        """Store ``module``'s state for the next chunk."""
        self._state[module] = value

    def __len__(self) -> int:
        return len(self._state)


class CausalConv3d(nn.Conv3d):
    """Conv3d that pads time only in front (causal); space is padded symmetrically with zeros.

    The constructor's ``padding`` (pt, ph, pw) becomes an explicit zero pad of 2*pt past frames
    and (ph, pw) on each spatial side; the convolution itself has padding 0, as in Wan.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _Int3,
                 stride: _Int3 = 1, padding: _Int3 = 0) -> None:  # fmt: skip
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        pt, ph, pw = _triple(padding)
        self.time_pad = 2 * pt
        self.space_pad = (pw, pw, ph, ph)

    def forward(self, x: Tensor, cache: Optional[FeatureCache] = None) -> Tensor:
        """``x: [B, C_in, T, H, W]`` -> ``[B, C_out, T', H', W']``.

        With ``cache``, the frames kept from the previous chunk replace the front zero padding,
        and the last ``time_pad`` input frames are stored for the next chunk.
        """
        front = self.time_pad
        if cache is not None and front > 0:
            past = cache.get(self)
            if past is not None:
                x = torch.cat([past, x], dim=2)
                front -= past.shape[2]
            # Clone so the cache does not keep the whole chunk alive.
            cache.set(self, x[:, :, -self.time_pad:].clone())
        if (x.shape[2] == 1 and front == self.kernel_size[0] - 1 and self.stride[0] == 1 and self.dilation[0] == 1
                and self.weight.requires_grad and torch.is_grad_enabled()):
            # Training on one frame after all-zero causal padding: only the kernel's last time slice meets
            # data, so this is a 2-D convolution (the same sums less the zero terms), whose backward is much
            # faster on the CPU. Inference keeps the reference 3-D form (the optimized runtime folds it itself).
            x = F.pad(x[:, :, 0], self.space_pad)
            return F.conv2d(x, self.weight[:, :, -1], self.bias, self.stride[1:], 0, self.dilation[1:]).unsqueeze(2)
        x = F.pad(x, (*self.space_pad, front, 0))
        return self._conv_forward(x, self.weight, self.bias)


def normalize_channels(x: Tensor, eps: float = 1e-12) -> Tensor:
    """``F.normalize(x, dim=1)``: ``x / max(||x||_2 over channels, eps)``, equal up to rounding.

    Summing squares over dim 1 adds contiguous planes, which on the CPU is 3-12x faster than the
    strided ``vector_norm`` reduction that ``F.normalize`` runs (it was 45 % of a small tokenizer's
    time). Low-precision inputs sum their squares in float32 so that the norm cannot overflow.
    """
    squares = x.square() if x.dtype in (torch.float32, torch.float64) else x.float().square()
    return x / squares.sum(dim=1, keepdim=True).sqrt().clamp_min(eps).to(x.dtype)


class RMSNorm(nn.Module):
    """Wan ``RMS_norm`` over channels (dim 1): ``F.normalize(x, dim=1) * sqrt(dim) * gamma``.

    ``gamma`` is ``[dim, 1, 1, 1]`` for 5-D inputs (``images=False``) and ``[dim, 1, 1]`` for 4-D
    ones. No bias. The normalization runs in the input dtype, like the original.
    """

    def __init__(self, dim: int, images: bool = True) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1) if images else torch.ones(dim, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """``x: [B, dim, ...]`` (4-D or 5-D, matching ``images``) -> same shape."""
        return normalize_channels(x) * self.scale * self.gamma


class NearestUpsample2d(nn.Module):
    """2x nearest-exact spatial upsampling of ``[N, C, H, W]``, computed in float32 like Wan."""

    def forward(self, x: Tensor) -> Tensor:
        """``x: [N, C, H, W]`` -> ``[N, C, 2H, 2W]``."""
        return F.interpolate(x.float(), scale_factor=2.0, mode="nearest-exact").to(x.dtype)


class ResidualBlock(nn.Module):
    """``residual`` = [RMSNorm, SiLU, CausalConv3d 3x3x3, RMSNorm, SiLU, Dropout, CausalConv3d 3x3x3];
    ``shortcut`` = 1x1x1 CausalConv3d when the channel count changes, else identity."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.residual = nn.Sequential(
            RMSNorm(in_dim, images=False),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, images=False),
            nn.SiLU(),
            nn.Dropout(dropout),
            CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, cache: Optional[FeatureCache] = None) -> Tensor:
        """``x: [B, in_dim, T, H, W]`` -> ``[B, out_dim, T, H, W]``."""
        r = self.residual
        h = r[2](r[1](r[0](x)), cache)
        h = r[6](r[5](r[4](r[3](h))), cache)
        return h + self.shortcut(x)


class AttentionBlock(nn.Module):
    """Single-head spatial self-attention, each frame on its own, plus the residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.proj.weight)  # as in Wan: the block starts as an identity

    def forward(self, x: Tensor) -> Tensor:
        """``x: [B, dim, T, H, W]`` -> same shape."""
        b, c, t, h, w = x.shape
        y = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        qkv = self.to_qkv(self.norm(y))  # [bt, 3c, h, w]; q, k, v are the channel thirds
        qkv = qkv.reshape(b * t, 1, 3 * c, h * w).transpose(-1, -2)
        q, k, v = qkv.chunk(3, dim=-1)  # each [bt, 1, hw, c]
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        y = self.proj(y)
        return y.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4) + x


class Resample(nn.Module):
    """Per-frame 2x spatial resampling, with a causal 2x temporal part for the "3d" modes.

    * ``downsample2d``: ``resample`` = [ZeroPad2d right/bottom, Conv2d 3x3 stride 2].
    * ``downsample3d``: the same, then ``time_conv`` (kernel 3, stride 2, no padding) over
      [last frame of the previous chunk, this chunk]. The first chunk is passed through unchanged
      (it only seeds the cache), so frame 0 keeps its own latent frame.
    * ``upsample2d``: ``resample`` = [2x nearest-exact, Conv2d 3x3 (dim -> dim // 2)].
    * ``upsample3d``: the same, preceded by ``time_conv`` (dim -> 2*dim, causal kernel 3) whose two
      channel halves are interleaved into 2x frames. It is skipped on the first chunk (one frame
      in, one out) and starts with zero history on the second, as Wan's "Rep" marker does.
    """

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        if mode not in RESAMPLE_MODES:
            raise ValueError(f"Resample mode must be one of {RESAMPLE_MODES}, got {mode!r}")
        self.dim, self.mode = dim, mode
        if mode.startswith("downsample"):
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        else:
            self.resample = nn.Sequential(NearestUpsample2d(), nn.Conv2d(dim, dim // 2, 3, padding=1))
        if mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), padding=0)
        elif mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))

    @property
    def out_channels(self) -> int:
        """Channels of the output (upsamplers halve them)."""
        return self.dim if self.mode.startswith("downsample") else self.dim // 2

    def _spatial(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        y = self.resample(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
        return y.reshape(b, t, *y.shape[1:]).permute(0, 2, 1, 3, 4)

    def forward(self, x: Tensor, cache: FeatureCache) -> Tensor:
        """``x: [B, dim, T, H, W]`` -> ``[B, C', T', H', W']`` (see the class docstring)."""
        if self.mode == "upsample3d":
            if cache.get(self) is None:
                cache.set(self, True)  # first chunk: no temporal upsampling
            else:
                b, c, t, h, w = x.shape
                y = self.time_conv(x, cache)  # [b, 2c, t, h, w]
                # Channel half 0 -> even frames, half 1 -> odd frames.
                x = y.reshape(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
        x = self._spatial(x)
        if self.mode == "downsample3d":
            past = cache.get(self)
            cache.set(self, x[:, :, -1:].clone())
            if past is not None:
                x = self.time_conv(torch.cat([past, x], dim=2))
        return x
