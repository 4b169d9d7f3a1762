"""Single-step rectified-flow denoiser around the Cosmos DiT (COSMOS.md 2, HARMONIZER.md).

The clean latent of the rendered frame is treated as x_sigma at a fixed sigma = timestep / 1000.
With t = sigma / (sigma + 1):  x0 = (1 - t) * x - t * F((1 - t) * x, t).  This is NOT EDM
preconditioning, and the DiT's timestep input is t itself (not t * 1000).
"""

from __future__ import annotations

from typing import Tuple, TypeVar

import torch
from torch import Tensor, nn

from simharmon.config import DenoiserConfig
from simharmon.models.dit import CosmosDiT

__all__ = ["RectifiedFlowDenoiser", "rectified_flow_coefficients"]

Num = TypeVar("Num", float, Tensor)


def rectified_flow_coefficients(sigma: Num) -> Tuple[Num, Num, Num, Num]:
    """Rectified-flow preconditioning (``RectifiedFlowScaling`` with sigma_data = 1).

    Args:
        sigma: noise level, a float or a tensor of any shape (e.g. [B]).

    Returns:
        (c_skip, c_out, c_in, c_noise) = (1 - t, -t, 1 - t, t) with t = sigma / (sigma + 1),
        each of the same type and shape as ``sigma``.
    """
    t = sigma / (sigma + 1)
    return 1 - t, -t, 1 - t, t


class RectifiedFlowDenoiser(nn.Module):
    """x0 prediction of the DiT at the fixed sigma of ``config``, with the null condition.

    Condition: all-zero text embeddings [B, null_text_tokens, crossattn_emb_channels] in the net's
    dtype and an all-zero padding mask. The net runs in its parameter dtype; x0 is formed in float32.
    """

    def __init__(self, net: CosmosDiT, config: DenoiserConfig) -> None:
        super().__init__()
        self.net = net
        self.config = config

    @property
    def sigma(self) -> float:
        """Noise level, timestep / 1000."""
        return self.config.sigma

    @property
    def t(self) -> float:
        """Flow time fed to the DiT, sigma / (sigma + 1)."""
        return rectified_flow_coefficients(self.sigma)[3]

    def null_context(self, batch: int, device: torch.device) -> Tensor:
        """All-zero text condition: [batch, null_text_tokens, crossattn_emb_channels] in the net's dtype."""
        return torch.zeros(
            batch,
            self.config.null_text_tokens,
            self.net.config.crossattn_emb_channels,
            dtype=self.net.dtype,
            device=device,
        )

    def forward(self, latent: Tensor, condition_mask: Tensor | None = None) -> Tensor:
        """latent: [B, C, T, h, w] (C = the net's in_channels) -> x0 [B, C, T, h, w] float32.

        condition_mask: [B or 1, 1, h, w] for the DiT's padding-mask channel, or None (zeros).
        """
        channels = self.net.config.in_channels
        if latent.ndim != 5 or latent.shape[1] != channels:
            raise ValueError(f"latent must be [B, {channels}, T, h, w], got shape {tuple(latent.shape)}")
        c_skip, c_out, c_in, c_noise = rectified_flow_coefficients(self.sigma)
        b = latent.shape[0]
        x = latent.float()
        timesteps = torch.full((b, 1), c_noise, dtype=self.net.dtype, device=latent.device)
        velocity = self.net(
            (x * c_in).to(self.net.dtype), timesteps, self.null_context(b, latent.device), padding_mask=condition_mask
        )
        return c_skip * x + c_out * velocity.float()
