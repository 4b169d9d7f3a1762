"""The Wan2.1 causal 3D VAE used as the Cosmos-Predict2 tokenizer (COSMOS.md 3.3-3.5, 3.8).

``WanTokenizer`` has exactly the state dict of Wan's ``VAE_`` (``encoder.*``, ``conv1.*``,
``conv2.*``, ``decoder.*``; 194 tensors for the published config), plus the Harmonizer's
``decoder.skip_conv_{0..8}.weight`` when ``TokenizerConfig.skip_connections`` is set.

Time handling (temporal compression c = 4 for the published config):

* encode: frame 0 is encoded alone, then chunks of c frames, with the causal feature cache
  carried across chunks. Latent frames T' = 1 + (T - 1) / c. Clips with a remainder,
  (T - 1) % c != 0, are rejected: Cosmos-Predict2's ``VAE_.encode`` appends a remainder chunk,
  but with c = 4 such a chunk is too short for the second stride-2 ``time_conv`` and raises
  there, and diffusers' ``AutoencoderKLWan`` silently drops the remainder frames.
* decode: one latent frame at a time with the cache; latent 0 gives 1 frame, later ones c each,
  so T = 1 + c * (T' - 1). Frame 0 depends on latent 0 only.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..config import TokenizerConfig
from .wan_vae_layers import (
    AttentionBlock,
    CausalConv3d,
    FeatureCache,
    Resample,
    ResidualBlock,
    RMSNorm,
)

__all__ = ["WanTokenizer", "Encoder3d", "Decoder3d", "SKIP_MAP"]

# Harmonizer skip connections, resolved (COSMOS.md 3.8): skip_conv_k adds encoder downsamples[e]
# into the decoder just before upsamples[d], for (d, e) = SKIP_MAP[k]. Wan2.1 layout only.
SKIP_MAP: Tuple[Tuple[int, int], ...] = ((0, 10), (1, 9), (2, 8), (5, 7), (6, 6), (8, 4), (10, 3), (12, 1), (14, 0))


def _middle(dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(dim, dim, dropout), AttentionBlock(dim), ResidualBlock(dim, dim, dropout))


def _head(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(RMSNorm(in_dim, images=False), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1))


def _run_stage(layer: nn.Module, x: Tensor, cache: FeatureCache) -> Tensor:
    return layer(x) if isinstance(layer, AttentionBlock) else layer(x, cache)


class Encoder3d(nn.Module):
    """Wan ``Encoder3d``: ``conv1``, ``downsamples``, ``middle``, ``head`` (out: 2 * z_dim channels)."""

    def __init__(self, dim: int, z_dim: int, dim_mult: Sequence[int], num_res_blocks: int,
                 temporal_downsample: Sequence[bool], dropout: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        dims = [dim * m for m in (1, *dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        layers: List[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(num_res_blocks):
                layers.append(ResidualBlock(in_dim, out_dim, dropout))
                in_dim = out_dim
            if i != len(dim_mult) - 1:
                layers.append(Resample(out_dim, "downsample3d" if temporal_downsample[i] else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)
        self.middle = _middle(dims[-1], dropout)
        self.head = _head(dims[-1], z_dim)

    @property
    def layer_channels(self) -> List[int]:
        """Output channels of each ``downsamples`` layer."""
        return [m.out_dim if isinstance(m, ResidualBlock) else m.out_channels for m in self.downsamples]

    def forward(self, x: Tensor, cache: FeatureCache, acts: Optional[List[Tensor]] = None) -> Tensor:
        """One chunk ``x: [B, 3, t, H, W]`` -> ``[B, 2z, t', H/8, W/8]``.

        acts: when a list, every ``downsamples`` output is appended to it (Harmonizer skips).
        """
        x = self.conv1(x, cache)
        for layer in self.downsamples:
            x = layer(x, cache)
            if acts is not None:
                acts.append(x)
        for layer in self.middle:
            x = _run_stage(layer, x, cache)
        x = self.head[1](self.head[0](x))
        return self.head[2](x, cache)


class Decoder3d(nn.Module):
    """Wan ``Decoder3d``: ``conv1``, ``middle``, ``upsamples``, ``head``, optional ``skip_conv_k``.

    skip_channels: channels of skip_conv_0..8 (None: no skip convolutions).
    """

    def __init__(self, dim: int, z_dim: int, dim_mult: Sequence[int], num_res_blocks: int,
                 temporal_upsample: Sequence[bool], dropout: float = 0.0,
                 skip_channels: Optional[Sequence[int]] = None) -> None:  # fmt: skip
        super().__init__()
        dims = [dim * m for m in (dim_mult[-1], *reversed(dim_mult))]
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0], dropout)
        layers: List[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim //= 2  # the previous stage's upsampler halved the channels
            for _ in range(num_res_blocks + 1):
                layers.append(ResidualBlock(in_dim, out_dim, dropout))
                in_dim = out_dim
            if i != len(dim_mult) - 1:
                layers.append(Resample(out_dim, "upsample3d" if temporal_upsample[i] else "upsample2d"))
        self.upsamples = nn.Sequential(*layers)
        self.head = _head(dims[-1], 3)
        self.num_skips = 0
        if skip_channels is not None:
            for k, ch in enumerate(skip_channels):
                conv = nn.Conv3d(ch, ch, kernel_size=1, bias=False)
                nn.init.constant_(conv.weight, 1e-5)  # Harmonizer's init: nearly no effect at start
                self.add_module(f"skip_conv_{k}", conv)
            self.num_skips = len(skip_channels)

    @property
    def layer_in_channels(self) -> List[int]:
        """Input channels of each ``upsamples`` layer."""
        return [m.in_dim if isinstance(m, ResidualBlock) else m.dim for m in self.upsamples]

    def _add_skip(self, x: Tensor, k: int, d: int, e: int, skips: Sequence[Tensor]) -> Tensor:
        skip = skips[e]
        ok = (skip.dim() == 5 and skip.shape[1] == x.shape[1] and skip.shape[3:] == x.shape[3:]
              and skip.shape[0] in (1, x.shape[0]) and skip.shape[2] in (1, x.shape[2]))  # fmt: skip
        if not ok:
            # Plain broadcasting could grow x's time axis (e.g. 2 skip frames onto 1 decoded frame).
            raise ValueError(
                f"skip activation {e} (for skip_conv_{k}) has shape {tuple(skip.shape)}, which does not "
                f"broadcast onto the decoder activation {tuple(x.shape)} before upsamples[{d}]; it needs the same "
                "channels and spatial size, and batch and time equal to the decoder's or 1 (encode with the "
                "same frame size, and with T=1 unless every decoded chunk has matching frame counts)"
            )
        return x + getattr(self, f"skip_conv_{k}")(skip.to(x.dtype))

    def forward(self, x: Tensor, cache: FeatureCache, skips: Optional[Sequence[Tensor]] = None) -> Tensor:
        """One latent frame ``x: [B, z, 1, h, w]`` -> ``[B, 3, t, 8h, 8w]`` (t = 1 on the first chunk).

        skips: the encoder's 11 ``downsamples`` activations, added through the skip convolutions.
        """
        x = self.conv1(x, cache)
        for layer in self.middle:
            x = _run_stage(layer, x, cache)
        targets = {d: (k, e) for k, (d, e) in enumerate(SKIP_MAP)} if skips is not None else {}
        for d, layer in enumerate(self.upsamples):
            if d in targets:
                k, e = targets[d]
                x = self._add_skip(x, k, d, e, skips)
            x = layer(x, cache)
        x = self.head[1](self.head[0](x))
        return self.head[2](x, cache)


class WanTokenizer(nn.Module):
    """Wan2.1 causal 3D VAE with Cosmos latent normalization: video <-> normalized latents.

    Computes in the parameters' dtype and returns results in the input's dtype. The latent
    mean/std are non-persistent buffers (not in the checkpoint); they follow ``.to(dtype)``, so a
    bf16 model uses bf16-rounded statistics like Cosmos-Predict2. After building on the meta
    device and ``to_empty()``, call :meth:`reset_latent_stats`.
    """

    def __init__(self, config: Optional[TokenizerConfig] = None) -> None:
        super().__init__()
        config = config if config is not None else TokenizerConfig()
        self.config = config
        self.z_dim = config.z_dim
        self.spatial_compression = config.spatial_compression
        self.temporal_compression = config.temporal_compression
        layout = (config.dim_mult, config.num_res_blocks)
        self.encoder = Encoder3d(config.base_dim, 2 * config.z_dim, *layout, config.temporal_downsample)
        self.conv1 = CausalConv3d(2 * config.z_dim, 2 * config.z_dim, 1)
        self.conv2 = CausalConv3d(config.z_dim, config.z_dim, 1) if config.decoder else None
        skip_channels = None
        if config.skip_connections:
            skip_channels = [self.encoder.layer_channels[e] for _, e in SKIP_MAP]
        temporal_upsample = tuple(reversed(config.temporal_downsample))
        self.decoder = (Decoder3d(config.base_dim, config.z_dim, *layout, temporal_upsample, skip_channels=skip_channels)
                        if config.decoder else None)
        if skip_channels is not None:
            dec_in = self.decoder.layer_in_channels
            if len(self.encoder.downsamples) != 11 or [dec_in[d] for d, _ in SKIP_MAP] != skip_channels:
                raise ValueError("skip connections need the Wan2.1 encoder/decoder layout (COSMOS.md 3.8)")
        self.register_buffer("latent_mean", torch.empty(1, config.z_dim, 1, 1, 1), persistent=False)
        self.register_buffer("latent_std", torch.empty(1, config.z_dim, 1, 1, 1), persistent=False)
        self.reset_latent_stats()

    # ------------------------------------------------------------------ helpers

    @torch.no_grad()
    def reset_latent_stats(self) -> None:
        """(Re)fill the latent mean/std buffers from the config, keeping their device and dtype."""
        for name, values in (("latent_mean", self.config.latent_mean), ("latent_std", self.config.latent_std)):
            buf = getattr(self, name)
            if buf.device.type != "meta":
                buf.copy_(torch.tensor(values, dtype=torch.float64).view_as(buf))

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype (that of the parameters)."""
        return self.conv1.weight.dtype

    @property
    def num_skips(self) -> int:
        """Number of decoder skip convolutions (0 or 9)."""
        return self.decoder.num_skips if self.decoder is not None else 0

    def _require_decoder(self) -> None:
        if self.decoder is None:
            raise ValueError("this tokenizer has no decoder (tokenizer.decoder false: an encoder-only, "
                             "colour-transform model, whose output is never decoded)")

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for a clip of ``num_frames`` (which must be 1 + c*k)."""
        return 1 + (num_frames - 1) // self.temporal_compression

    def pixel_frames(self, num_latent_frames: int) -> int:
        """Decoded frames for ``num_latent_frames`` latent frames."""
        return 1 + self.temporal_compression * (num_latent_frames - 1)

    def _check_video(self, video: Tensor) -> None:
        if not isinstance(video, Tensor) or video.dim() != 5:
            shape = tuple(video.shape) if isinstance(video, Tensor) else type(video).__name__
            raise ValueError(f"video must be a 5-D tensor [B, 3, T, H, W], got {shape}")
        b, c, t, h, w = video.shape
        if not video.is_floating_point():
            raise ValueError(f"video must have a floating dtype, got {video.dtype}")
        if c != 3:
            raise ValueError(f"video must have 3 channels (dim 1 of [B, 3, T, H, W]), got shape {tuple(video.shape)}")
        s, tc = self.spatial_compression, self.temporal_compression
        if b < 1 or t < 1 or h < s or w < s or h % s or w % s:
            raise ValueError(
                f"video [B, 3, T, H, W] needs B, T >= 1 and H, W positive multiples of {s}, got {tuple(video.shape)}"
            )
        if (t - 1) % tc:
            raise ValueError(
                f"video has T={t} frames; the causal VAE needs T = 1 + {tc}*k (frame 0, then chunks of {tc}). "
                f"Trim to {1 + (t - 1) // tc * tc} frames or pad to {1 + -(-(t - 1) // tc) * tc}."
            )

    def _check_latents(self, latents: Tensor) -> None:
        if not isinstance(latents, Tensor) or latents.dim() != 5:
            shape = tuple(latents.shape) if isinstance(latents, Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a 5-D tensor [B, {self.z_dim}, T', h, w], got {shape}")
        if not latents.is_floating_point():
            raise ValueError(f"latents must have a floating dtype, got {latents.dtype}")
        if latents.shape[1] != self.z_dim:
            raise ValueError(f"latents must have {self.z_dim} channels, got shape {tuple(latents.shape)}")
        if min(latents.shape) < 1:
            raise ValueError(f"latents must not be empty, got shape {tuple(latents.shape)}")

    def _check_skips(self, skips: Sequence[Tensor]) -> None:
        if self.num_skips == 0:
            raise ValueError("skips were given, but this tokenizer has no skip convolutions "
                             "(TokenizerConfig.skip_connections=False)")  # fmt: skip
        n = len(self.encoder.downsamples)
        if len(skips) != n or not all(isinstance(s, Tensor) and s.dim() == 5 for s in skips):
            raise ValueError(f"skips must be the {n} 5-D encoder activations from encode(..., return_skips=True)")

    # ------------------------------------------------------------------ encode / decode

    def encode(self, video: Tensor, return_skips: bool = False):
        """Encode a clip to normalized latents.

        video: ``[B, 3, T, H, W]`` in [-1, 1], T = 1 + c*k (c = temporal compression, 4 by default),
            H and W multiples of the spatial compression (8 by default).
        return_skips: also return the 11 encoder ``downsamples`` activations of the LAST chunk
            (what the Harmonizer feeds its decoder skips), in the compute dtype.
        Returns ``latents: [B, z, 1 + (T-1)/c, H/8, W/8]`` = (mu - mean) / std, in the input dtype;
        with ``return_skips``, the tuple ``(latents, skips)``.
        """
        self._check_video(video)
        x = video.to(self.dtype)
        tc = self.temporal_compression
        cache = FeatureCache()
        outs, acts = [], None
        for start in [0, *range(1, x.shape[2], tc)]:
            chunk = x[:, :, start : start + (1 if start == 0 else tc)].contiguous()
            acts = [] if return_skips else None
            # conv1 is pointwise in time: applying it per chunk keeps latent 0 independent of T.
            outs.append(self.conv1(self.encoder(chunk, cache, acts))[:, : self.z_dim])
        mu = torch.cat(outs, dim=2)
        # Cosmos multiplies by 1/std (reciprocal in the compute dtype); decode divides by it.
        latents = ((mu - self.latent_mean) * (1.0 / self.latent_std)).to(video.dtype)
        return (latents, acts) if return_skips else latents

    def decode(self, latents: Tensor, skips: Optional[Sequence[Tensor]] = None) -> Tensor:
        """Decode normalized latents to a clip (not clamped).

        latents: ``[B, z, T', h, w]``.
        skips: the list from ``encode(..., return_skips=True)``; only with skip convolutions.
            They are added at every latent frame, so their batch/time sizes must broadcast onto
            the decoder's (T=1 encodes always do); otherwise a ValueError is raised.
        Returns ``video: [B, 3, 1 + c*(T'-1), 8h, 8w]`` in the latents' dtype.
        """
        self._require_decoder()
        self._check_latents(latents)
        if skips is not None:
            self._check_skips(skips)
        z = latents.to(self.dtype)
        z = z / (1.0 / self.latent_std) + self.latent_mean
        cache = FeatureCache()
        outs = []
        for i in range(z.shape[2]):
            frame = self.conv2(z[:, :, i : i + 1].contiguous())
            outs.append(self.decoder(frame, cache, skips))
        return torch.cat(outs, dim=2).to(latents.dtype)

    def encode_frame(self, image: Tensor, return_skips: bool = False):
        """Encode single images: ``image: [B, 3, H, W]`` in [-1, 1] -> ``[B, z, H/8, W/8]``.

        With ``return_skips``, returns ``(latent, skips)`` (skips as in :meth:`encode`, T = 1).
        """
        if not isinstance(image, Tensor) or image.dim() != 4:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"image must be a 4-D tensor [B, 3, H, W], got {shape}")
        out = self.encode(image.unsqueeze(2), return_skips=return_skips)
        if return_skips:
            return out[0][:, :, 0], out[1]
        return out[:, :, 0]

    def decode_frame(self, latent: Tensor, skips: Optional[Sequence[Tensor]] = None) -> Tensor:
        """Decode single latents: ``latent: [B, z, h, w]`` -> ``image: [B, 3, 8h, 8w]``."""
        if not isinstance(latent, Tensor) or latent.dim() != 4:
            shape = tuple(latent.shape) if isinstance(latent, Tensor) else type(latent).__name__
            raise ValueError(f"latent must be a 4-D tensor [B, {self.z_dim}, h, w], got {shape}")
        return self.decode(latent.unsqueeze(2), skips=skips)[:, :, 0]

    def forward(self, video: Tensor) -> Tensor:
        """Round trip ``video: [B, 3, T, H, W]`` -> reconstruction of the same shape."""
        return self.decode(self.encode(video))
