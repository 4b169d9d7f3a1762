"""The harmonization methods behind ``simharmon harmonize --method NAME``, in one registry.

A method is built from :class:`MethodOptions` into a :class:`Harmonizer`: a callable from one
uint8 ``[H, W, 3]`` composite and its ``[H, W]`` mask to the harmonized uint8 ``[H, W, 3]``.
Part 1's builders are here (``diffharmony``, ``diffharmony++``, ``reinhard``); the names live in
the light :mod:`simharmon.harmonize.registry` (part 2: R2R, HarmoniDiff-RS, guided-ldm, hsv-transfer).

Latent methods run at ``resolution`` x ``resolution`` (the composite and mask are resized there
and the result back to the input size), then, with ``keep_background``, paste the input's own
pixels outside the mask (``simharmon.ops.masked_blend``); 8-bit conversion goes through
``simharmon.ops.pack`` / ``unpack``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel

from ..eval.baselines import reinhard_transfer
from ..models.checkpoints import CheckpointError
from ..ops import masked_blend, pack, unpack
from ..runtime.factory import stage_runner
from .models import HarmonyVAE, load_components, tiny_unet, tiny_vae
from .models.loading import Components
from .models.prompt import empty_prompt_embeds
from .pipeline import LatentHarmonizer, SamplerConfig
from .registry import METHODS, resolve_builder

__all__ = ["Harmonizer", "MethodOptions", "build_method", "build_diffharmony", "build_diffharmony_pp",
           "build_reinhard", "LatentMethod", "BaselineMethod", "random_components", "check_pair"]


@dataclass(frozen=True)
class MethodOptions:
    """What the CLI (or a caller) chooses; each method reads the fields it needs."""

    weights: Tuple[Path, ...] = ()
    steps: int = 5
    seed: int = 0
    resolution: int = 512
    device: str = "cpu"
    backend: str = "auto"
    keep_background: bool = True

    def sampler(self) -> SamplerConfig:
        return SamplerConfig(steps=self.steps, resolution=self.resolution, seed=self.seed)


class Harmonizer:
    """Base of the built methods. ``untrained``: random weights (outputs are not meaningful)."""

    name: str = ""
    untrained: bool = False

    def __call__(self, image: np.ndarray, mask: np.ndarray, seed: Optional[int] = None) -> np.ndarray:
        raise NotImplementedError

    def settings(self) -> dict:
        """What identifies this run's outputs (compared when a run resumes)."""
        return {"method": self.name, "untrained": self.untrained}

    def describe(self) -> str:
        """One line per loaded part (empty for methods without weights)."""
        return ""


def check_pair(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Validate a composite and mask; returns the mask as float32 ``[H, W]`` in [0, 1]."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {getattr(image, 'dtype', type(image))} "
                         f"{list(getattr(image, 'shape', []))}")
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask is {list(mask.shape)} but the image is {list(image.shape[:2])} (H, W)")
    return mask.astype(np.float32) / 255.0 if mask.dtype == np.uint8 else np.clip(mask.astype(np.float32), 0, 1)


class BaselineMethod(Harmonizer):
    """A numpy baseline ``fn(image, mask) -> image`` (Reinhard colour transfer)."""

    def __init__(self, name: str, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        self.name, self.fn = name, fn

    def __call__(self, image, mask, seed=None):
        return self.fn(image, check_pair(image, mask))


class LatentMethod(Harmonizer):
    """A :class:`LatentHarmonizer` on 8-bit images (see the module docstring)."""

    def __init__(self, name: str, harmonizer: LatentHarmonizer, options: MethodOptions, untrained: bool,
                 sources: Optional[Dict[str, str]] = None) -> None:  # fmt: skip
        self.name, self.harmonizer, self.options, self.untrained = name, harmonizer, options, untrained
        self.sampler = options.sampler()
        self.sources = dict(sources or {})

    def settings(self) -> dict:
        o = self.options
        return {**super().settings(), "steps": o.steps, "seed": o.seed, "resolution": o.resolution,
                "keep_background": o.keep_background, "weights": self.sources}

    def describe(self) -> str:
        return "\n".join(f"{kind}: {source}" for kind, source in self.sources.items())

    def __call__(self, image, mask, seed=None, on_step=None):
        weights = check_pair(image, mask)
        device = self.harmonizer.device
        x = pack(torch.from_numpy(np.array(image)).to(device))  # a copy: PIL arrays are read-only
        m = torch.from_numpy(weights).to(device)[None, None]
        height, width = image.shape[:2]
        side = self.sampler.resolution
        xs, ms = x, m
        if (height, width) != (side, side):
            xs = F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False, antialias=True)
            ms = F.interpolate(m, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        with torch.inference_mode():
            out = self.harmonizer.harmonize(xs.clamp(-1, 1), ms, self.sampler, seed, on_step).float()
        if (height, width) != (side, side):
            out = F.interpolate(out, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
        out = out.clamp(-1, 1)
        if self.options.keep_background:
            out = masked_blend(out, x, m)
        return unpack(out, rounding="nearest")[0].cpu().numpy()


def random_components(seed: int = 0) -> Components:
    """Tiny random components of the published topology (for runs without weights: untrained)."""
    torch.manual_seed(seed)
    pub = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    unet = UNet2DConditionModel.from_config(pub(tiny_unet()))
    vae = AutoencoderKL.from_config(pub(tiny_vae()))
    harmony = HarmonyVAE.from_vae(vae)
    prompt = torch.zeros(1, 1, unet.config.cross_attention_dim)
    return Components(unet=unet.eval(), vae=vae.eval(), harmony_vae=harmony.eval(), prompt_embeds=prompt,
                      sources={"random": f"tiny preset, seed {seed}"})


def _prompt(components: Components, options: MethodOptions) -> torch.Tensor:
    if components.prompt_embeds is not None:
        return components.prompt_embeds
    roots = [p for p in options.weights if (Path(p) / "text_encoder").is_dir()]
    if not roots:
        raise CheckpointError("no prompt embedding: give a root with prompt_embeds.safetensors, or the Stable "
                              "Diffusion inpainting root (text_encoder/ and tokenizer/) as another --weights")
    components.sources["prompt_embeds"] = f"{roots[0]}/text_encoder (empty prompt)"
    return empty_prompt_embeds(roots[0])


def _build_latent(name: str, options: MethodOptions, with_harmony_vae: bool) -> LatentMethod:
    untrained = not options.weights
    comps = random_components(options.seed) if untrained else load_components(options.weights)
    if comps.unet is None:
        raise CheckpointError(f"{name} needs a UNet (a unet/ folder) among --weights")
    vae = comps.vae if comps.vae is not None else comps.harmony_vae
    if vae is None:
        raise CheckpointError(f"{name} needs a VAE (vae/ or condition_vae/) among --weights")
    harmony = None
    if with_harmony_vae:
        if comps.harmony_vae is None:
            raise CheckpointError(f"{name} needs the Harmony-VAE (a condition_vae/ or cvae/ folder) among --weights")
        harmony = comps.harmony_vae
    runner = stage_runner(options.device, options.backend)
    harmonizer = LatentHarmonizer(comps.unet, vae, _prompt(comps, options), comps.scheduler_config,
                                  harmony_vae=harmony, runner=runner)
    return LatentMethod(name, harmonizer, options, untrained, comps.sources)


def build_diffharmony(options: MethodOptions) -> LatentMethod:
    """``diffharmony``: the plain VAE decoder."""
    return _build_latent("diffharmony", options, with_harmony_vae=False)


def build_diffharmony_pp(options: MethodOptions) -> LatentMethod:
    """``diffharmony++``: the Harmony-VAE decoder."""
    return _build_latent("diffharmony++", options, with_harmony_vae=True)


def build_reinhard(options: MethodOptions) -> BaselineMethod:
    """``reinhard``: the colour-transfer baseline."""
    return BaselineMethod("reinhard", reinhard_transfer)


def build_method(name: str, options: MethodOptions) -> Harmonizer:
    """Build the registered method ``name`` (see :mod:`simharmon.harmonize.registry`)."""
    builder = resolve_builder(name)
    if options.weights and not METHODS[name].uses_weights:
        raise ValueError(f"method {name!r} takes no --weights")
    return builder(options)
