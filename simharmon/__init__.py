"""simharmon: a real-time frame-enhancer runtime for neural-reconstruction driving simulators.

Names are imported lazily (on first use), so ``import simharmon`` and the command line start
without loading torch: a Ctrl-C while the command's imports load then ends it like any other
Ctrl-C (see :mod:`simharmon.__main__`).
"""

from __future__ import annotations

import importlib
from typing import Any, List

__version__ = "0.1.0"

_EXPORTS = {
    "CheckpointError": ".models.checkpoints",
    "ConfigError": ".config",
    "DenoiserConfig": ".config",
    "DiTConfig": ".config",
    "EnhancerConfig": ".config",
    "EnhancerModel": ".models.enhancer",
    "StreamConfig": ".config",
    "StreamingEnhancer": ".runtime.stream",
    "TokenizerConfig": ".config",
    "build_enhancer": ".models.enhancer",
    "export_safetensors": ".models.enhancer",
    "load_config": ".config",
    "save_config": ".config",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)


def __dir__() -> List[str]:
    return sorted([*globals(), *_EXPORTS])
