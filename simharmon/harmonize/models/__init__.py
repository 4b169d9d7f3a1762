"""Networks of the offline harmonizers (diffusers-based) and their strict loaders.

Models never import pipelines or runtimes.
"""

from .classifier import HarmonyClassifier, build_classifier, load_classifier
from .harmony_vae import HARMONY_VAE_CLASS, HarmonyVAE
from .loading import (
    Components,
    load_component,
    load_components,
    read_component,
    save_component,
    save_prompt_embeds,
)
from .presets import harmony_vae_config, sd15_inpaint_unet, sd_vae, tiny_unet, tiny_vae

__all__ = [
    "Components", "HARMONY_VAE_CLASS", "HarmonyClassifier", "HarmonyVAE", "build_classifier", "harmony_vae_config",
    "load_classifier", "load_component", "load_components", "read_component", "save_component",
    "save_prompt_embeds", "sd15_inpaint_unet", "sd_vae", "tiny_unet", "tiny_vae",
]
