"""simharmon: a real-time frame-enhancer runtime for neural-reconstruction driving simulators."""

from .config import (
    ConfigError,
    DenoiserConfig,
    DiTConfig,
    EnhancerConfig,
    StreamConfig,
    TokenizerConfig,
    load_config,
    save_config,
)
from .models.checkpoints import CheckpointError
from .models.enhancer import EnhancerModel, build_enhancer, export_safetensors
from .runtime.stream import StreamingEnhancer

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DenoiserConfig",
    "DiTConfig",
    "EnhancerConfig",
    "EnhancerModel",
    "StreamConfig",
    "StreamingEnhancer",
    "TokenizerConfig",
    "__version__",
    "build_enhancer",
    "export_safetensors",
    "load_config",
    "save_config",
]
