"""What ``enhance`` and ``replay`` share: the runtime from the factory, what they tell the user, resuming.

Both front doors build their engine with :func:`simharmon.runtime.build_runtime` through
:func:`open_runtime`, say the same things in the same words (random weights, the bundled model, a
mask-reading model given frames without masks), record the same ``run.json`` fields, and resume a
stream by priming its history with the last outputs read back from disk (:func:`prime_from_outputs`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..config import EnhancerConfig, config_to_dict
from ..io.frame_sources import load_image_rgb
from ..models.bundled import BUNDLED_WEIGHTS, MODEL_CARD
from ..runtime import Engine, RuntimeSpec, build_runtime
from ..runtime.inputs import NO_MASK_MESSAGE

__all__ = [
    "UNTRAINED_WARNING",
    "NO_MASK_NOTE",
    "RuntimeSession",
    "open_runtime",
    "prime_from_outputs",
    "weights_field",
]

UNTRAINED_WARNING = """\
========================================================================================
WARNING: UNTRAINED WEIGHTS. No --weights were given and the config {name!r} has none, so
the enhancer runs with RANDOM weights. Its outputs are NOT meaningful enhancements: this
run only exercises the pipeline (reading, streaming, writing, resuming). Pass --weights
with a trained checkpoint for real results.
========================================================================================"""
NO_MASK_NOTE = "note: " + NO_MASK_MESSAGE + "; {where} has none: {advice}"


def weights_field(weights: Sequence[str], use_ema: bool = False):
    """How a run record names its weights: ``"untrained"``, one resolved path, or a list (EMA marked)."""
    paths = [str(Path(w).resolve()) for w in weights]
    if not paths:
        return "untrained"
    if use_ema:  # EMA and live weights of one file are different models: a resume must not mix them
        paths = [f"{p} (EMA)" for p in paths]
    return paths[0] if len(paths) == 1 else paths


@dataclasses.dataclass
class RuntimeSession:
    """An engine plus what a run records about it."""

    engine: Engine
    spec: RuntimeSpec
    config: EnhancerConfig  # the model's config with the stream options the engine runs
    untrained: bool

    @property
    def weights(self):
        """The run record's ``weights`` field."""
        return weights_field(self.spec.resolved_weights, self.spec.use_ema)

    def config_record(self) -> dict:
        """The run record's ``config`` field."""
        return config_to_dict(self.config)


def open_runtime(spec: RuntimeSpec, log: Callable[[str], None]) -> RuntimeSession:
    """Build the engine for ``spec`` and say what runs (random weights loudly; the bundled model with its card)."""
    engine = build_runtime(spec)
    config = dataclasses.replace(engine.model.config, stream=engine.stream_config)
    untrained = engine.untrained
    if untrained:
        log(UNTRAINED_WARNING.format(name=config.name))
    weights = spec.resolved_weights
    if weights and Path(weights[0]).resolve() == BUNDLED_WEIGHTS.resolve():
        log(f"using the bundled default model {config.name!r} (model card: {MODEL_CARD})")
    return RuntimeSession(engine, spec, config, untrained)


def prime_from_outputs(engine: Engine, key, frames_dir: Path, names: Sequence[str], start: int,
                       inputs: Optional[Callable[[int], dict]] = None) -> Optional[tuple]:
    """Seed stream ``key`` with its last outputs before ``start``; returns their [H, W] size (None if none).

    inputs: frame index -> that frame's per-frame inputs (history warping needs them for primed frames).
    """
    wanted = min(engine.history_length(), start)
    if wanted <= 0:
        return None
    history, size = [], None
    for name in names[start - wanted:start]:
        path = frames_dir / f"{name}.png"
        image = load_image_rgb(path)
        if size is not None and image.shape[:2] != size:
            raise ValueError(f"cannot resume: earlier outputs in {frames_dir} have different sizes ({path})")
        size = image.shape[:2]
        history.append(image)
    given = None if inputs is None else [inputs(index) for index in range(start - wanted, start)]
    try:
        engine.prime(key, [torch.from_numpy(image) for image in history], given)
    except ValueError as exc:
        raise ValueError(f"cannot resume from the outputs in {frames_dir}: {exc}") from exc
    return size
