"""Harmony-VAE (DiffHarmony++'s "ConditionVAE"): a diffusers AutoencoderKL whose decoder also reads
a condition encoder E_c of cat(composite, mask) through zero-initialized skip convolutions.

Built from diffusers' own ``Encoder`` / ``Decoder`` modules (no hand-written VAE); only the
forward that threads the skips is ours. State-dict keys are those of the published ConditionVAE
(GitHub nicecv/DiffHarmony, ``src/models/condition_vae.py``):

* ``encoder.*``, ``decoder.*``, ``quant_conv.*``, ``post_quant_conv.*``: the plain VAE's;
* ``conditional_encoder.*``: a second encoder (same keys as ``encoder``) plus ``add_conv_in``
  (the mask input, ``[C0, 1, 3, 3]``), ``down_block_skip_convs.{i}`` and ``mid_block_skip_conv``;
* ``latent_skip_conv``: 1x1 conv adding the condition's latent to the decoder input.

Skips (one per encoder feature: conv_in output, every resnet output, every downsample output)
mirror the decoder's resnets, last first, as in a UNet; each is added after the resnet it meets.
With all skip convs at zero, ``decode_with_condition`` equals the plain ``decode`` exactly.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import Decoder, Encoder
from torch import Tensor, nn

__all__ = ["HarmonyVAE", "HARMONY_VAE_CLASS", "condition_skip_shapes"]

HARMONY_VAE_CLASS = "ConditionVAE"  # the published config.json's _class_name


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def condition_skip_shapes(block_out_channels, layers_per_block: int) -> List[Tuple[int, int]]:
    """(in, out) channels of each ``down_block_skip_convs`` conv, in encoder order."""
    c = list(block_out_channels)
    shapes = [(c[0], c[0])]
    for i, ch in enumerate(c):
        shapes += [(ch, ch)] * layers_per_block
        if i < len(c) - 1:
            shapes.append((ch, c[i + 1]))  # the downsample output, mapped to the decoder's width there
    return shapes


class _ConditionEncoder(Encoder):
    """diffusers' VAE Encoder plus a mask input and zero skip convs (keys of ``EncoderSkip``)."""

    def __init__(self, *, additional_in_channels: int, **kwargs) -> None:
        super().__init__(**kwargs)
        channels = kwargs["block_out_channels"]
        self.image_channels = kwargs["in_channels"]
        self.additional_in_channels = additional_in_channels
        if additional_in_channels:
            # Zero mask weights: at initialization E_c reads the composite like the VAE encoder.
            self.add_conv_in = _zero(nn.Conv2d(additional_in_channels, channels[0], 3, padding=1))
        self.down_block_skip_convs = nn.ModuleList(
            _zero(nn.Conv2d(i, o, 1)) for i, o in condition_skip_shapes(channels, kwargs["layers_per_block"]))
        self.mid_block_skip_conv = _zero(nn.Conv2d(channels[-1], channels[-1], 1))

    def forward_skips(self, cond: Tensor) -> Tuple[Tensor, List[Tensor], Tensor]:
        """cond ``[N, 3 + A, H, W]`` -> (moments ``[N, 2 * latent, h, w]``, skips, mid skip)."""
        x = self.conv_in(cond[:, :self.image_channels])
        if self.additional_in_channels:
            x = x + self.add_conv_in(cond[:, self.image_channels:])
        features = [x]
        for block in self.down_blocks:
            for resnet in block.resnets:
                x = resnet(x, None)
                features.append(x)
            for down in block.downsamplers or ():
                x = down(x)
                features.append(x)
        x = self.mid_block(x)
        mid = self.mid_block_skip_conv(x)
        moments = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        skips = [conv(f) for conv, f in zip(self.down_block_skip_convs, features)]
        return moments, skips, mid


class HarmonyVAE(nn.Module):
    """The plain VAE (encode / decode) and the condition path (decode_with_condition).

    config: an AutoencoderKL config mapping (``block_out_channels``, ``layers_per_block``, ...)
    plus ``additional_in_channels`` (1: the mask). Images are in [-1, 1]; latents are unscaled
    (multiply by ``scaling_factor`` for the UNet, as diffusers does).
    """

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.config = dict(config)
        c = self.config
        common = dict(block_out_channels=tuple(c["block_out_channels"]), layers_per_block=c["layers_per_block"],
                      norm_num_groups=c.get("norm_num_groups", 32), act_fn=c.get("act_fn", "silu"))
        down = tuple(c["down_block_types"])
        latent = c.get("latent_channels", 4)
        self.encoder = Encoder(in_channels=c.get("in_channels", 3), out_channels=latent, down_block_types=down,
                               double_z=True, **common)
        self.conditional_encoder = _ConditionEncoder(
            in_channels=c.get("in_channels", 3), out_channels=latent, down_block_types=down, double_z=True,
            additional_in_channels=int(c.get("additional_in_channels", 1)), **common)
        self.decoder = Decoder(in_channels=latent, out_channels=c.get("out_channels", 3),
                               up_block_types=tuple(c["up_block_types"]), **common)
        self.quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1)
        self.post_quant_conv = nn.Conv2d(latent, latent, 1)
        self.latent_skip_conv = _zero(nn.Conv2d(latent, latent, 1))
        self.scaling_factor = float(c.get("scaling_factor", 0.18215))

    @classmethod
    def from_vae(cls, vae: AutoencoderKL, additional_in_channels: int = 1) -> HarmonyVAE:
        """DiffHarmony++'s initialization: VAE weights everywhere, E_c = the VAE encoder, zero mask and skips."""
        config = dict(vae.config)
        config["additional_in_channels"] = additional_in_channels
        model = cls(config)
        own = model.state_dict()
        with torch.no_grad():
            for key, value in vae.state_dict().items():
                own[key].copy_(value)
                if key.startswith("encoder."):
                    own["conditional_" + key].copy_(value)
        return model

    def encode(self, image: Tensor) -> Tensor:
        """image ``[N, 3, H, W]`` in [-1, 1] -> the posterior mean latent ``[N, 4, H/8, W/8]`` (unscaled)."""
        return self.quant_conv(self.encoder(image)).chunk(2, dim=1)[0]

    def decode(self, latent: Tensor) -> Tensor:
        """The plain decoder: unscaled latent -> image ``[N, 3, H, W]`` (about [-1, 1])."""
        return self.decoder(self.post_quant_conv(latent))

    def decode_with_condition(self, latent: Tensor, cond: Tensor) -> Tensor:
        """Decode ``latent`` with the condition ``cond = cat(composite [-1, 1], mask [0, 1])`` ``[N, 4, H, W]``.

        The condition's latent is the mode of E_c's posterior (the published code samples it).
        """
        moments, skips, mid = self.conditional_encoder.forward_skips(cond)
        z_cond = self.quant_conv(moments).chunk(2, dim=1)[0]
        z = self.post_quant_conv(latent) + self.latent_skip_conv(self.post_quant_conv(z_cond))
        dec = self.decoder
        x = dec.mid_block(dec.conv_in(z), None) + mid
        for block in dec.up_blocks:
            for resnet in block.resnets:
                x = resnet(x, None) + skips.pop()
            for up in block.upsamplers or ():
                x = up(x)
        return dec.conv_out(dec.conv_act(dec.conv_norm_out(x)))

    def trainable_parameters(self) -> List[nn.Parameter]:
        """What DiffHarmony++ trains: E_c, the decoder and the zero convs (everything else frozen)."""
        params = list(self.conditional_encoder.parameters()) + list(self.decoder.parameters())
        return params + list(self.latent_skip_conv.parameters())
