"""Networks (Cosmos DiT, Wan tokenizer, rectified-flow denoiser) and checkpoint loading."""

from .checkpoints import CheckpointError, LoadReport, read_checkpoint
from .denoiser import RectifiedFlowDenoiser
from .dit import CosmosDiT
from .enhancer import EnhancerModel, build_enhancer, export_safetensors
from .wan_vae import WanTokenizer

__all__ = [
    "CheckpointError",
    "CosmosDiT",
    "EnhancerModel",
    "LoadReport",
    "RectifiedFlowDenoiser",
    "WanTokenizer",
    "build_enhancer",
    "export_safetensors",
    "read_checkpoint",
]
