"""The one factory: every front door builds its runtime here from (weights, config, device, backend).

``serve``, the in-process hooks, ``enhance``, ``replay`` (and the offline harmonizers) call
:func:`build_runtime`; nothing else builds an enhancer for running it. Its rules:

* weights and config: the given checkpoint files, with the config they carry or a preset/YAML;
  with neither, the bundled default model (``simharmon.models.bundled``); a config alone means
  random (untrained) weights, which every front door then says;
* device ``auto``: CUDA when available, else the CPU (:func:`resolve_device`);
* backend ``auto``: cudagraph (over compile) on CUDA, eager on the CPU (``backends.resolve_backend``);
* dtype ``auto``: the model's own on the CPU, bfloat16 on CUDA;
* the exact optimizations are on unless ``plain``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Tuple, Union

import torch

from ..config import EngineConfig, OptimizationConfig
from ..models.bundled import default_weights
from ..models.enhancer import EnhancerModel, build_enhancer
from .engine import Engine
from .stages_runner import StageRunner

__all__ = ["RuntimeSpec", "build_model", "build_runtime", "engine_for", "resolve_device", "stage_runner"]

PathLike = Union[str, Path]


def resolve_device(device: Optional[str]) -> str:
    """``"auto"``/None -> cuda when available else cpu; a cuda request without CUDA is a ValueError."""
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} was requested but CUDA is not available (torch.cuda.is_available() is False)")
    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ValueError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return device


@dataclasses.dataclass(frozen=True)
class RuntimeSpec:
    """What a front door asks for.

    weights: checkpoint files (a DiT plus tokenizer pair, a Harmonizer .pkl, or a simharmon
        .safetensors); empty with ``config`` None means the bundled default model.
    config: a preset name (``tiny``, ``cosmos-0.6b``) or YAML path; None: the weights' own.
    device / backend / dtype: see the module docstring; ``backend`` is one of ``EngineConfig``'s.
    use_ema: the DiT's EMA weights of a Harmonizer .pkl; trusted: allow full unpickling.
    plain: run the plain computation (every exact optimization off).
    nontemporal: every frame alone (``stream.history = "none"``).
    max_streams: live streams per resolution.
    """

    weights: Tuple[str, ...] = ()
    config: Optional[str] = None
    device: str = "auto"
    backend: str = "auto"
    dtype: str = "auto"
    use_ema: bool = False
    trusted: bool = False
    plain: bool = False
    nontemporal: bool = False
    max_streams: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", tuple(str(w) for w in self.weights))
        if self.config is not None:
            object.__setattr__(self, "config", str(self.config))

    @property
    def resolved_weights(self) -> Tuple[str, ...]:
        """The files actually loaded: the given ones, or the bundled model with neither weights nor config."""
        return tuple(str(w) for w in default_weights([Path(w) for w in self.weights], self.config))


def build_model(spec: RuntimeSpec, device: str) -> EnhancerModel:
    """Load the model of ``spec`` on ``device`` (files checked first, so a typo names the path)."""
    weights = spec.resolved_weights
    for weight in weights:
        if not Path(weight).is_file():
            raise FileNotFoundError(f"weights file not found: {weight}")
    return build_enhancer(spec.config, list(weights) or None, device=device, strict=True, use_ema=spec.use_ema,
                          trusted=spec.trusted)


def build_runtime(spec: Optional[RuntimeSpec] = None, **fields) -> Engine:
    """The engine for ``spec`` (or ``RuntimeSpec(**fields)``): model loaded, converted, optimized, ready.

    The engine's ``stream_config`` is the model's stream options (``nontemporal`` turns history off);
    ``engine.weights`` / ``engine.untrained`` / ``engine.describe()`` say what runs.
    """
    spec = spec if spec is not None else RuntimeSpec(**fields)
    model = build_model(spec, resolve_device(spec.device))
    return engine_for(model, backend=spec.backend, dtype=spec.dtype, plain=spec.plain, nontemporal=spec.nontemporal,
                      max_streams=spec.max_streams)


def engine_for(model: EnhancerModel, *, backend: str = "auto", dtype: str = "auto", plain: bool = False,
               nontemporal: bool = False, max_streams: int = 64) -> Engine:
    """The engine for an already built model, on its device (the rules of ``build_runtime``)."""
    stream = model.config.stream
    if nontemporal and stream.history != "none":
        stream = dataclasses.replace(stream, history="none")
    optimizations = OptimizationConfig.none() if plain else OptimizationConfig()
    config = EngineConfig(backend=backend, dtype=dtype, device=str(model.device), max_streams=max_streams,
                          optimizations=optimizations)
    return Engine(model, config, stream)



def stage_runner(device: Optional[str] = "auto", backend: str = "auto") -> StageRunner:
    """The runtime for stage modules other than the enhancer's step (the offline harmonizers' UNet step,
    VAE encode / decode): the same device and backend rules, each (stage, shapes) bucket built once."""
    return StageRunner(backend, resolve_device(device))
