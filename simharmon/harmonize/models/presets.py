"""Component configs: the published shapes and tiny ones with the same topology (same keys).

``sd15_inpaint_unet`` is Stable Diffusion 1.5 inpainting's ``unet/config.json`` (DiffHarmony
fine-tunes it: 9 input channels); ``sd_vae`` is SD's ``vae/config.json`` (sd-vae-ft-mse has the
same shapes). ``tiny_*`` keep every block type, block count and layer count (so the state-dict key
names are identical) with small widths, for tests and CPU training.
"""

from __future__ import annotations

from typing import Dict

__all__ = ["sd15_inpaint_unet", "sd_vae", "tiny_unet", "tiny_vae", "harmony_vae_config", "PRESETS"]

_DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
_UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]


def sd15_inpaint_unet() -> Dict:
    """SD-1.5-inpainting UNet (about 860 M parameters)."""
    return {"_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
            "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 768,
            "down_block_types": list(_DOWN), "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0,
            "in_channels": 9, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
            "norm_num_groups": 32, "out_channels": 4, "sample_size": 64, "up_block_types": list(_UP)}


def sd_vae() -> Dict:
    """Stable Diffusion's KL-f8 VAE (about 84 M parameters)."""
    return {"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4,
            "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 512,
            "scaling_factor": 0.18215, "up_block_types": ["UpDecoderBlock2D"] * 4}


def tiny_unet(width: int = 8, cross_attention_dim: int = 16) -> Dict:
    """SD-inpainting topology, widths (w, 2w, 4w, 4w); ``width`` a multiple of 8."""
    config = sd15_inpaint_unet()
    config.update(block_out_channels=[width, 2 * width, 4 * width, 4 * width], norm_num_groups=min(8, width),
                  cross_attention_dim=cross_attention_dim, attention_head_dim=2, sample_size=8)
    return config


def tiny_vae(width: int = 8) -> Dict:
    """SD VAE topology (4 levels, 2 layers, mid attention), widths (w, 2w, 4w, 4w)."""
    config = sd_vae()
    config.update(block_out_channels=[width, 2 * width, 4 * width, 4 * width], norm_num_groups=min(8, width),
                  sample_size=64)
    return config


def harmony_vae_config(vae_config: Dict, additional_in_channels: int = 1) -> Dict:
    """The ConditionVAE config of a VAE config (the published one adds ``additional_in_channels``)."""
    return {**vae_config, "_class_name": "ConditionVAE", "additional_in_channels": additional_in_channels}


PRESETS = {"sd15-inpaint": (sd15_inpaint_unet, sd_vae), "tiny": (tiny_unet, tiny_vae)}
