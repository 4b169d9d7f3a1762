"""Single-frame chunks of the Wan tokenizer as 2D convolutions (exact).

On a clip's first chunk (one frame) every temporal causal convolution sees two frames of zero
padding in front of the real frame, so its output is a 2D convolution with the kernel slice that
sees the real frame, ``weight[:, :, -1]``, plus the bias: a third of the work. ``time_conv`` is not
used on a first chunk (the resamplers skip it). Everything else in the first chunk is already
per-frame. Which single-frame chunks exist (COSMOS.md 3.5):

* encode: frame 0, the current frame (the whole encode when T = 1);
* decode: latent 0, the only one the runtime decodes.

When later chunks follow, the folded modules also fill the same :class:`FeatureCache` entries the
3D modules would, so the 3D encoder/decoder continues from them exactly.
"""

from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.wan_vae import Decoder3d, Encoder3d, WanTokenizer
from ..models.wan_vae_layers import (
    AttentionBlock,
    CausalConv3d,
    FeatureCache,
    Resample,
    ResidualBlock,
    RMSNorm,
    normalize_channels,
)

__all__ = ["FoldedConv", "FoldedTokenizer"]


class FoldedConv(nn.Module):
    """A :class:`CausalConv3d` applied to a single first-chunk frame, as a 2D convolution.

    ``x: [B, C_in, H, W]`` -> ``[B, C_out, H', W']``. The 2D weight is a copy made at construction
    (a non-persistent buffer, so it follows ``.to()``); rebuild after loading new weights.
    """

    def __init__(self, conv: CausalConv3d) -> None:
        super().__init__()
        kt = conv.kernel_size[0]
        if conv.stride[0] != 1 or conv.time_pad != kt - 1:
            # Only when the front padding covers every past tap does the first frame see zeros there.
            raise ValueError(f"cannot fold {conv}: needs time stride 1 and time padding kernel-1")
        self.register_buffer("weight", conv.weight.detach()[:, :, -1].clone(), persistent=False)
        self.register_buffer(
            "bias", None if conv.bias is None else conv.bias.detach().clone(), persistent=False
        )
        self.stride = tuple(conv.stride[1:])
        pw, _, ph, _ = conv.space_pad
        self.padding = (ph, pw)
        self._source = (conv,)  # a tuple, so the 3D module is not registered as a submodule
        self.caches = conv.time_pad > 0

    def forward(self, x: Tensor, cache: Optional[FeatureCache] = None) -> Tensor:
        """``x: [B, C_in, H, W]``; with ``cache``, stores what the 3D conv would keep for the next chunk."""
        if cache is not None and self.caches:
            cache.set(self._source[0], x.unsqueeze(2).clone())
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


def _norm2d(norm: RMSNorm, x: Tensor) -> Tensor:
    """The 5-D RMSNorm (gamma [C, 1, 1, 1]) on a 4-D frame ``[B, C, H, W]``."""
    return normalize_channels(x) * norm.scale * norm.gamma.view(-1, 1, 1)


class _FoldedResidual(nn.Module):
    def __init__(self, block: ResidualBlock) -> None:
        super().__init__()
        self.block = (block,)
        self.conv_a = FoldedConv(block.residual[2])
        self.conv_b = FoldedConv(block.residual[6])
        self.shortcut = FoldedConv(block.shortcut) if isinstance(block.shortcut, CausalConv3d) else None

    def forward(self, x: Tensor, cache: Optional[FeatureCache]) -> Tensor:
        r = self.block[0].residual
        h = self.conv_a(r[1](_norm2d(r[0], x)), cache)
        h = self.conv_b(r[5](r[4](_norm2d(r[3], h))), cache)
        return h + (x if self.shortcut is None else self.shortcut(x, cache))


class _FoldedResample(nn.Module):
    """First-chunk behaviour of :class:`Resample`: spatial part only, seeding the cache like the 3D path."""

    def __init__(self, resample: Resample) -> None:
        super().__init__()
        self.source = (resample,)  # its 2D convolutions are used as they are (owned by the tokenizer)

    def forward(self, x: Tensor, cache: Optional[FeatureCache]) -> Tensor:
        resample = self.source[0]
        if cache is not None and resample.mode == "upsample3d":
            cache.set(resample, True)  # first chunk marker, as Resample.forward does
        y = resample.resample(x)
        if cache is not None and resample.mode == "downsample3d":
            cache.set(resample, y.unsqueeze(2).clone())
        return y


class _FoldedAttention(nn.Module):
    def __init__(self, block: AttentionBlock) -> None:
        super().__init__()
        self.block = (block,)

    def forward(self, x: Tensor, cache: Optional[FeatureCache]) -> Tensor:
        # AttentionBlock is per frame: the 5-D call on one frame is the same computation.
        return self.block[0](x.unsqueeze(2))[:, :, 0]


def _fold(layer: nn.Module) -> nn.Module:
    if isinstance(layer, ResidualBlock):
        return _FoldedResidual(layer)
    if isinstance(layer, Resample):
        return _FoldedResample(layer)
    if isinstance(layer, AttentionBlock):
        return _FoldedAttention(layer)
    raise TypeError(f"no single-frame fold for {type(layer).__name__}")


class _FoldedStack(nn.Module):
    """conv1 -> layers -> head (RMSNorm, SiLU, conv) of an Encoder3d/Decoder3d, first chunk, 2D."""

    def __init__(self, coder: nn.Module, layers: List[nn.Module]) -> None:
        super().__init__()
        self.conv1 = FoldedConv(coder.conv1)
        self.layers = nn.ModuleList(_fold(layer) for layer in layers)
        self.head_norm = (coder.head[0],)
        self.head_conv = FoldedConv(coder.head[2])

    def forward(self, x: Tensor, cache: Optional[FeatureCache]) -> Tensor:
        x = self.conv1(x, cache)
        for layer in self.layers:
            x = layer(x, cache)
        return self.head_conv(F.silu(_norm2d(self.head_norm[0], x)), cache)


class FoldedTokenizer(nn.Module):
    """Encode/decode of a :class:`WanTokenizer` with the first chunk folded to 2D (same results).

    ``encode(video [B, 3, T, H, W]) -> [B, z, T', H/8, W/8]`` and
    ``decode(latents [B, z, T', h, w]) -> [B, 3, 1 + c (T' - 1), 8h, 8w]``, as the tokenizer's own.
    Decoder skip connections are not supported here (the streaming step does not use them).
    The folded weights are copies: build this after the weights are loaded.
    """

    def __init__(self, tokenizer: WanTokenizer) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        enc: Encoder3d = tokenizer.encoder
        dec: Decoder3d = tokenizer.decoder
        self.encoder2d = _FoldedStack(enc, [*enc.downsamples, *enc.middle])
        self.quant = FoldedConv(tokenizer.conv1)  # 1x1x1: 2z -> 2z
        # An encoder-only tokenizer (tokenizer.decoder false) has nothing to fold on the decode side.
        self.decoder2d = _FoldedStack(dec, [*dec.middle, *dec.upsamples]) if dec is not None else None
        self.post_quant = FoldedConv(tokenizer.conv2) if dec is not None else None  # 1x1x1: z -> z

    def encode(self, video: Tensor) -> Tensor:
        """Like :meth:`WanTokenizer.encode` (no skips): ``[B, 3, T, H, W]`` in [-1, 1] -> normalized latents."""
        tok = self.tokenizer
        tok._check_video(video)
        x = video.to(tok.dtype)
        tc = tok.temporal_compression
        more = x.shape[2] > 1
        cache = FeatureCache()
        first = self.encoder2d(x[:, :, 0].contiguous(), cache if more else None)
        outs = [self.quant(first)[:, : tok.z_dim].unsqueeze(2)]
        for start in range(1, x.shape[2], tc):
            chunk = x[:, :, start : start + tc].contiguous()
            outs.append(tok.conv1(tok.encoder(chunk, cache))[:, : tok.z_dim])
        mu = torch.cat(outs, dim=2) if more else outs[0]
        return ((mu - tok.latent_mean) * (1.0 / tok.latent_std)).to(video.dtype)

    def decode(self, latents: Tensor) -> Tensor:
        """Like :meth:`WanTokenizer.decode` (no skips): normalized latents -> video, not clamped."""
        tok = self.tokenizer
        tok._require_decoder()
        tok._check_latents(latents)
        z = latents.to(tok.dtype)
        z = z / (1.0 / tok.latent_std) + tok.latent_mean
        more = z.shape[2] > 1
        cache = FeatureCache()
        outs = [self.decoder2d(self.post_quant(z[:, :, 0]), cache if more else None).unsqueeze(2)]
        for i in range(1, z.shape[2]):
            outs.append(tok.decoder(tok.conv2(z[:, :, i : i + 1].contiguous()), cache))
        video = torch.cat(outs, dim=2) if more else outs[0]
        return video.to(latents.dtype)
