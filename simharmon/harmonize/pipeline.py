"""DiffHarmony's latent-diffusion sampler, composed from diffusers models, a scheduler and the stages.

For a composite ``I`` and its foreground mask ``M`` (both at the processing resolution):

1. ``c = E(I) * scaling_factor`` (the posterior mean; the composite is NOT masked),
   ``m = nearest-resize(binarize(M), H/8 x W/8)``;
2. ``x_T = randn(seed) * init_noise_sigma``; for each of the ``steps`` timesteps:
   ``eps = UNet(cat([scale(x_t), m, c]), t, empty prompt)``, ``x_{t-1} = scheduler.step(eps, ...)``
   (guidance 1.0: one UNet evaluation per step, no unconditional branch);
3. decode ``x_0 / scaling_factor`` with the plain decoder, or with the Harmony-VAE given
   cat(I, binarized M) (DiffHarmony++).

Euler-ancestral with 5 steps is DiffHarmony's setting; DDIM is offered for part 2's inversion.
The random draws (initial noise, ancestral noise) all come from one ``torch.Generator`` seeded
with ``seed``, in the order diffusers' inpainting pipeline draws them, so the same seed gives the
same output as that pipeline given the same components (tests/harmonize/test_oracle.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor, nn

from ..runtime.stages_runner import StageRunner
from .stages import ConditionDecode, Decode, Encode, UNetStep

__all__ = ["SCHEDULERS", "SamplerConfig", "LatentHarmonizer", "make_scheduler", "latent_mask"]

SCHEDULERS = {"euler_ancestral": EulerAncestralDiscreteScheduler, "ddim": DDIMScheduler}


@dataclass(frozen=True)
class SamplerConfig:
    """Sampling settings. resolution: the square side the composite is processed at (512 or 1024
    for the published model; any multiple of the VAE stride for small models)."""

    steps: int = 5
    scheduler: str = "euler_ancestral"
    resolution: int = 512
    seed: int = 0
    eta: float = 0.0  # DDIM only

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= 1000:
            raise ValueError(f"steps must be an int in [1, 1000], got {self.steps!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {tuple(SCHEDULERS)}, got {self.scheduler!r}")
        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int) or self.resolution < 8:
            raise ValueError(f"resolution must be an int >= 8, got {self.resolution!r}")
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")


def make_scheduler(name: str, config: dict):
    """A fresh diffusers scheduler of kind ``name`` from a scheduler config mapping."""
    return SCHEDULERS[name].from_config(config)


def latent_mask(mask: Tensor, height: int, width: int) -> Tensor:
    """``[N, 1, H, W]`` in [0, 1] -> binarized (>= 0.5) and nearest-resized to ``[N, 1, height, width]``."""
    binary = (mask >= 0.5).to(mask.dtype)
    return F.interpolate(binary, size=(height, width))  # mode "nearest", as the pipelines do


class LatentHarmonizer:
    """A DiffHarmony(-shaped) harmonizer: UNet + VAE (+ Harmony-VAE) + scheduler + stage runner.

    unet: a 9-input-channel ``UNet2DConditionModel``; vae: an ``AutoencoderKL`` or a
    :class:`HarmonyVAE` (its plain path); prompt_embeds: ``[1, L, cross_attention_dim]``.
    harmony_vae: if given, decoding uses its condition path (DiffHarmony++).
    """

    def __init__(self, unet: nn.Module, vae: nn.Module, prompt_embeds: Tensor, scheduler_config: dict, *,
                 harmony_vae: Optional[nn.Module] = None, runner: Optional[StageRunner] = None,
                 dtype: torch.dtype = torch.float32) -> None:  # fmt: skip
        in_channels = unet.config.in_channels
        vae_config = dict(vae.config)  # diffusers' FrozenDict or HarmonyVAE's dict
        latent = vae_config.get("latent_channels", 4)
        if in_channels != 2 * latent + 1:
            raise ValueError(f"the UNet has {in_channels} input channels; DiffHarmony needs {2 * latent + 1} "
                             f"(noisy latents {latent} + mask 1 + composite latents {latent})")
        cross = unet.config.cross_attention_dim
        if prompt_embeds.dim() != 3 or prompt_embeds.shape[-1] != cross:
            raise ValueError(f"prompt_embeds must be [1, L, {cross}] for this UNet, got {list(prompt_embeds.shape)}")
        self.runner = runner or StageRunner("eager", "cpu")
        self.device, self.dtype = self.runner.device, dtype
        self.latent_channels = latent
        scaling = float(vae_config.get("scaling_factor", 0.18215))
        self.stride = 2 ** (len(vae_config["block_out_channels"]) - 1)
        self.scheduler_config = dict(scheduler_config)
        self.unet_step = UNetStep(self._place(unet), prompt_embeds.to(self.device, dtype))
        self.encode = Encode(self._place(vae), scaling)
        self.decode = Decode(vae, scaling)
        self.condition_decode = None
        if harmony_vae is not None:
            self.condition_decode = ConditionDecode(self._place(harmony_vae), scaling)

    def _place(self, module: nn.Module) -> nn.Module:
        module = module.to(self.device).eval()
        if next(module.parameters()).dtype != self.dtype:
            module = module.to(self.dtype)
        return module

    def check_size(self, height: int, width: int) -> None:
        if height % self.stride or width % self.stride:
            raise ValueError(f"processing size {width}x{height} must be a multiple of the VAE stride {self.stride}")

    def encode_condition(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(composite latents ``[N, 4, h, w]``, latent mask ``[N, 1, h, w]``) at the processing size."""
        cond = self.runner("encode", self.encode, image.to(self.device, self.dtype))
        return cond, latent_mask(mask.to(self.device, self.dtype), cond.shape[-2], cond.shape[-1])

    def sample(self, cond: Tensor, mask_lat: Tensor, config: SamplerConfig, seed: Optional[int] = None,
               on_step=None) -> Tensor:  # fmt: skip
        """Run the sampler; returns the scaled x_0 latents ``[N, 4, h, w]``."""
        generator = torch.Generator(device=self.device).manual_seed(config.seed if seed is None else seed)
        scheduler = make_scheduler(config.scheduler, self.scheduler_config)
        scheduler.set_timesteps(config.steps, device=self.device)
        latents = randn_tensor(tuple(cond.shape), generator=generator, device=self.device, dtype=self.dtype)
        latents = latents * scheduler.init_noise_sigma
        extra = {"generator": generator}
        if config.scheduler == "ddim":
            extra["eta"] = config.eta
        for index, t in enumerate(scheduler.timesteps):
            x_in = scheduler.scale_model_input(latents, t)
            timestep = t.reshape(1).to(self.device)
            eps = self.runner("unet", self.unet_step, x_in, mask_lat, cond, timestep)
            latents = scheduler.step(eps, t, latents, return_dict=False, **extra)[0]
            if on_step is not None:
                on_step(index)
        return latents

    def decode_latents(self, latents: Tensor, image: Optional[Tensor] = None, mask: Optional[Tensor] = None) -> Tensor:
        """Scaled latents -> image in [-1, 1] (not clamped); with the Harmony-VAE when one is loaded.

        image / mask: the composite ``[N, 3, H, W]`` in [-1, 1] and mask ``[N, 1, H, W]``, needed
        by the Harmony-VAE.
        """
        if self.condition_decode is None:
            return self.runner("decode", self.decode, latents)
        if image is None or mask is None:
            raise ValueError("the Harmony-VAE decoder needs the composite and its mask")
        binary = (mask >= 0.5).to(self.dtype).to(self.device)
        cond = torch.cat([image.to(self.device, self.dtype), binary], dim=1)
        return self.runner("condition_decode", self.condition_decode, latents, cond)

    def harmonize(self, image: Tensor, mask: Tensor, config: SamplerConfig, seed: Optional[int] = None,
                  on_step=None) -> Tensor:  # fmt: skip
        """image ``[N, 3, H, W]`` in [-1, 1], mask ``[N, 1, H, W]`` in [0, 1] at the processing size
        -> harmonized image ``[N, 3, H, W]`` in [-1, 1] (not clamped)."""
        self.check_size(image.shape[-2], image.shape[-1])
        cond, mask_lat = self.encode_condition(image, mask)
        latents = self.sample(cond, mask_lat, config, seed, on_step)
        return self.decode_latents(latents, image, mask)
