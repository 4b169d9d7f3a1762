"""The harmonizers' compute stages as modules with static shapes, so every backend can take them.

Each stage is a pure function of tensors (no scheduler state, no host sync): the sampler keeps the
scheduler arithmetic outside, and a backend compiles or captures one stage per input shape.

* :class:`UNetStep`: ``eps = UNet(cat([x_in, mask_lat, cond_lat]), t, prompt)`` (9 channels);
* :class:`Encode`: image in [-1, 1] -> scaled posterior-mean latent;
* :class:`Decode`: scaled latent -> image in [-1, 1];
* :class:`ConditionDecode`: Harmony-VAE decode of a scaled latent with cat(composite, mask).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["UNetStep", "Encode", "Decode", "ConditionDecode"]


class UNetStep(nn.Module):
    """One denoiser evaluation with the constant (empty-prompt) text embedding.

    forward(x_in ``[N, 4, h, w]`` (already scaled by the scheduler), mask_lat ``[N, 1, h, w]``,
    cond_lat ``[N, 4, h, w]``, timestep ``[1]`` float) -> eps ``[N, 4, h, w]``.
    """

    def __init__(self, unet: nn.Module, prompt_embeds: Tensor) -> None:
        super().__init__()
        self.unet = unet
        self.register_buffer("prompt_embeds", prompt_embeds.detach().clone(), persistent=False)

    def forward(self, x_in: Tensor, mask_lat: Tensor, cond_lat: Tensor, timestep: Tensor) -> Tensor:
        sample = torch.cat((x_in, mask_lat, cond_lat), dim=1)  # DiffHarmony's (and SD-inpainting's) order
        prompt = self.prompt_embeds.to(sample.dtype).expand(sample.shape[0], -1, -1)
        return self.unet(sample, timestep, encoder_hidden_states=prompt, return_dict=False)[0]


class Encode(nn.Module):
    """image ``[N, 3, H, W]`` in [-1, 1] -> ``scaling_factor * mode(posterior)`` ``[N, 4, H/8, W/8]``."""

    def __init__(self, vae: nn.Module, scaling_factor: float) -> None:
        super().__init__()
        self.vae, self.scaling_factor = vae, float(scaling_factor)

    def forward(self, image: Tensor) -> Tensor:
        moments = self.vae.quant_conv(self.vae.encoder(image))
        return moments.chunk(2, dim=1)[0] * self.scaling_factor


class Decode(nn.Module):
    """scaled latent ``[N, 4, h, w]`` -> image ``[N, 3, 8h, 8w]`` (about [-1, 1])."""

    def __init__(self, vae: nn.Module, scaling_factor: float) -> None:
        super().__init__()
        self.vae, self.scaling_factor = vae, float(scaling_factor)

    def forward(self, latent: Tensor) -> Tensor:
        return self.vae.decoder(self.vae.post_quant_conv(latent / self.scaling_factor))


class ConditionDecode(nn.Module):
    """Harmony-VAE: (scaled latent, cond ``[N, 4, H, W]`` = cat(composite [-1, 1], mask)) -> image."""

    def __init__(self, harmony_vae: nn.Module, scaling_factor: float) -> None:
        super().__init__()
        self.vae, self.scaling_factor = harmony_vae, float(scaling_factor)

    def forward(self, latent: Tensor, cond: Tensor) -> Tensor:
        return self.vae.decode_with_condition(latent / self.scaling_factor, cond)
