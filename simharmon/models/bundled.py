"""The bundled default enhancer: a small model trained by our own pipeline (issues 7 and 15).

Its weights ship inside the package (``simharmon/data/default_model/``) with a model card. The
safetensors file carries its config, so loading needs nothing else. It harmonizes INSERTED ACTORS:
the actor mask goes into the DiT (``stream.mask_condition``); the network's output latent is read
as a smooth colour transform applied to the input frame (``stream.colour_transform``, an
encoder-only tokenizer), so the output keeps the input's detail; outside the mask the output is the
input (``stream.region_pixel``). It was trained on real-photo composites and procedural scenes. A
frame without a mask passes through.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

__all__ = ["BUNDLED_NAME", "BUNDLED_DIR", "BUNDLED_WEIGHTS", "MODEL_CARD", "bundled_weights", "default_weights"]

BUNDLED_NAME = "simharmon-default"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "default_model"
BUNDLED_WEIGHTS = BUNDLED_DIR / f"{BUNDLED_NAME}.safetensors"
MODEL_CARD = BUNDLED_DIR / "MODEL_CARD.md"


def bundled_weights() -> Path:
    """Path of the bundled default weights; FileNotFoundError (naming the path) when missing."""
    if not BUNDLED_WEIGHTS.is_file():
        raise FileNotFoundError(
            f"the bundled default model {BUNDLED_WEIGHTS} is missing: reinstall simharmon, or pass --weights / --config"
        )
    return BUNDLED_WEIGHTS


def default_weights(weights: Sequence[Path], config: Optional[str]) -> List[Path]:
    """The weights a run uses: the given ones; with neither weights nor a config, the bundled model."""
    if weights or config is not None:
        return [Path(w) for w in weights]
    return [bundled_weights()]
