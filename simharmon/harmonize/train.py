"""Training recipes of the DiffHarmony family, small enough for CPU demonstrations.

* :func:`train_vae`: a KL autoencoder from scratch (L1 + a small KL term) when no SD VAE is at hand;
* :func:`train_latent_harmonizer`: DiffHarmony's recipe: epsilon prediction on the real image's
  latents given cat([mask, E(composite)]), foreground-weighted MSE, DDPM noise schedule of SD;
  ``mode="inverse"`` swaps the roles (target = composite, condition = real): inverse harmonization;
* :func:`train_harmony_vae`: DiffHarmony++'s recipe: reconstruct the real image from E(real) plus
  the condition cat(composite, mask), L1 loss; only E_c, the decoder and the zero convs train;
* :func:`train_classifier`: composite (1) vs real (0), cross-entropy.

Every loop is seeded (batches and noise come from one torch.Generator) and logs its loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import Tensor, nn

from .models.loading import DEFAULT_SCHEDULER
from .pipeline import latent_mask

__all__ = ["TrainSettings", "train_vae", "encode_latents", "train_latent_harmonizer", "train_harmony_vae",
           "train_classifier"]


@dataclass(frozen=True)
class TrainSettings:
    """steps of ``batch`` samples at learning rate ``lr`` (AdamW); log every ``log_every`` steps."""

    steps: int
    batch: int = 16
    lr: float = 1e-3
    seed: int = 0
    log_every: int = 100

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or not self.lr > 0:
            raise ValueError(f"invalid training settings {self}")


Log = List[Dict[str, float]]


def _loop(params, settings: TrainSettings, count: int, loss_fn: Callable[[Tensor, torch.Generator], Tensor],
          log: Optional[Log] = None) -> Log:  # fmt: skip
    log = [] if log is None else log
    gen = torch.Generator().manual_seed(settings.seed)
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    start, running = time.perf_counter(), 0.0
    for step in range(1, settings.steps + 1):
        index = torch.randint(0, count, (settings.batch,), generator=gen)
        loss = loss_fn(index, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()
        if step % settings.log_every == 0 or step == settings.steps:
            n = settings.log_every if step % settings.log_every == 0 else step % settings.log_every
            log.append({"step": step, "loss": running / n, "seconds": time.perf_counter() - start})
            running = 0.0
    return log


def train_vae(vae: nn.Module, images: Tensor, settings: TrainSettings, kl_weight: float = 1e-6) -> Log:
    """images ``[N, 3, H, W]`` in [-1, 1]; trains every VAE weight (posterior sampled, as SD's VAE)."""
    vae.train().requires_grad_(True)

    def loss_fn(index, gen):
        x = images[index]
        moments = vae.quant_conv(vae.encoder(x))
        mean, logvar = moments.chunk(2, dim=1)
        logvar = logvar.clamp(-30.0, 20.0)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)
        recon = vae.decoder(vae.post_quant_conv(z))
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        return F.l1_loss(recon, x) + kl_weight * kl

    log = _loop(vae.parameters(), settings, len(images), loss_fn)
    vae.eval().requires_grad_(False)
    return log


@torch.no_grad()
def encode_latents(vae: nn.Module, images: Tensor, scaling_factor: float, batch: int = 64) -> Tensor:
    """Posterior-mean latents times ``scaling_factor`` ``[N, 4, h, w]``."""
    out = [vae.quant_conv(vae.encoder(images[i:i + batch])).chunk(2, dim=1)[0] for i in range(0, len(images), batch)]
    return torch.cat(out) * scaling_factor


def train_latent_harmonizer(unet: nn.Module, prompt_embeds: Tensor, real_latents: Tensor, comp_latents: Tensor,
                            masks: Tensor, settings: TrainSettings, mode: str = "normal",
                            foreground_loss: bool = True) -> Log:  # fmt: skip
    """DiffHarmony's training step on precomputed scaled latents ``[N, 4, h, w]`` and masks ``[N, 1, H, W]``.

    normal: target = real, condition = composite; inverse: target = composite, condition = real.
    foreground_loss: MSE over ``eps * m`` (DiffHarmony's default), else over all latents.
    """
    if mode not in ("normal", "inverse"):
        raise ValueError(f"mode must be 'normal' or 'inverse', got {mode!r}")
    target, condition = (real_latents, comp_latents) if mode == "normal" else (comp_latents, real_latents)
    m_lat = latent_mask(masks, real_latents.shape[-2], real_latents.shape[-1])
    noise_scheduler = DDPMScheduler.from_config(DEFAULT_SCHEDULER)
    steps = noise_scheduler.config.num_train_timesteps
    unet.train().requires_grad_(True)

    def loss_fn(index, gen):
        x0, m, c = target[index], m_lat[index], condition[index]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, steps, (len(index),), generator=gen)
        noisy = noise_scheduler.add_noise(x0, noise, t)
        prompt = prompt_embeds.expand(len(index), -1, -1)
        pred = unet(torch.cat([noisy, m, c], dim=1), t, encoder_hidden_states=prompt, return_dict=False)[0]
        if foreground_loss:
            return F.mse_loss(pred * m, noise * m)
        return F.mse_loss(pred, noise)

    log = _loop(unet.parameters(), settings, len(target), loss_fn)
    unet.eval().requires_grad_(False)
    return log


def train_harmony_vae(harmony_vae: nn.Module, reals: Tensor, composites: Tensor, masks: Tensor,
                      settings: TrainSettings, mode: str = "normal") -> Log:  # fmt: skip
    """Reconstruct the target from E(target) (frozen encoder, posterior mean) and cat(condition, mask).

    normal: target = real, condition = composite; inverse: the roles swapped. Images in [-1, 1].
    """
    if mode not in ("normal", "inverse"):
        raise ValueError(f"mode must be 'normal' or 'inverse', got {mode!r}")
    target, condition = (reals, composites) if mode == "normal" else (composites, reals)
    binary = (masks >= 0.5).float()
    latents = encode_latents(harmony_vae, target, 1.0)
    harmony_vae.eval().requires_grad_(False)
    params = harmony_vae.trainable_parameters()
    for p in params:
        p.requires_grad_(True)

    def loss_fn(index, gen):
        cond = torch.cat([condition[index], binary[index]], dim=1)
        return F.l1_loss(harmony_vae.decode_with_condition(latents[index], cond), target[index])

    log = _loop(params, settings, len(target), loss_fn)
    harmony_vae.requires_grad_(False)
    return log


def train_classifier(classifier: nn.Module, images: Tensor, labels: Tensor, settings: TrainSettings) -> Log:
    """images ``[N, 3, H, W]`` in [0, 1], labels int64 ``[N]`` (1 = composite)."""
    classifier.train().requires_grad_(True)

    def loss_fn(index, gen):
        x = images[index]
        if torch.rand((), generator=gen) < 0.5:  # horizontal flip: harmony does not depend on it
            x = x.flip(-1)
        return F.cross_entropy(classifier(x), labels[index])

    log = _loop(classifier.parameters(), settings, len(images), loss_fn)
    classifier.eval().requires_grad_(False)
    return log
