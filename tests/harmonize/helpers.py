"""Tiny diffusers components with the published topology, and writers for the published folder layouts."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from simharmon.harmonize.models import (
    HarmonyVAE,
    harmony_vae_config,
    save_component,
    save_prompt_embeds,
    tiny_unet,
    tiny_vae,
)


def randomize(module: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Non-zero values everywhere (zero-init convs too), so every key matters in a comparison."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return module


def tiny_components(seed: int = 0):
    """(unet, vae, harmony_vae, prompt_embeds) with random non-zero weights."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config({k: v for k, v in tiny_unet().items() if not k.startswith("_")})
    vae = AutoencoderKL.from_config({k: v for k, v in tiny_vae().items() if not k.startswith("_")})
    randomize(vae, seed + 1, 0.01)
    harmony = randomize(HarmonyVAE.from_vae(vae), seed + 2, 0.01)
    prompt = torch.randn(1, 5, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(seed + 3))
    return unet.eval(), vae.eval(), harmony.eval(), prompt


def write_release(root: Path, seed: int = 0, cvae_name: str = "condition_vae", prompt: bool = True):
    """A DiffHarmony++-style folder: unet/, vae/, condition_vae/ (+ prompt_embeds.safetensors)."""
    unet, vae, harmony, embeds = tiny_components(seed)
    save_component(root / "unet", unet, dict(unet.config), "UNet2DConditionModel")
    save_component(root / "vae", vae, dict(vae.config), "AutoencoderKL")
    save_component(root / cvae_name, harmony, harmony_vae_config(tiny_vae()), "ConditionVAE")
    if prompt:
        save_prompt_embeds(root / "prompt_embeds.safetensors", embeds)
    return unet, vae, harmony, embeds
