"""Training configuration: a frozen, validated dataclass serialized as YAML (``configs/train-*.yaml``).

``load_train_config(path)`` merges the YAML onto the schema through OmegaConf (unknown keys and
wrong types fail there), then ``__post_init__`` checks the values, as ``simharmon.config`` does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from omegaconf import OmegaConf

from ..config import (
    ConfigError,
    EnhancerConfig,
    build_structured,
    config_from_dict,
    config_to_dict,
    load_config,
    read_yaml_mapping,
)

__all__ = ["TrainConfig", "load_train_config", "train_config_to_dict", "TRAINABLE", "PRECISIONS"]

TRAINABLE = ("all", "dit", "dit+decoder")
PRECISIONS = ("auto", "fp32", "bf16")
FLOW_SOURCES = ("data", "raft")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class TrainConfig:
    """One training run (paper recipe: single step, fixed timestep, L2 + perceptual + temporal).

    Data: ``manifest`` (pairs, NVIDIA layout; relative paths resolve against its folder) and
    optional ``temporal_manifest`` (sequences with flow, from ``simharmon curate --temporal``);
    ``extra_manifests`` / ``extra_temporal_manifests``: more curated sets, pooled with the first
    (batches draw uniformly from the pooled pairs, e.g. procedural and real-photo sets);
    ``crop`` (width, height) random crops, multiples of the model's pixel multiple;
    ``temporal_crop`` the same for temporal batches (None: ``crop``), for sequences curated smaller;
    ``crop_on_mask``: centre each crop on a random actor-mask pixel (for crops smaller than the pairs).
    Model: ``model`` preset or YAML, ``model_overrides`` merged onto it (e.g. the stream layout),
    ``init_weights`` optional checkpoint to start from, ``trainable`` which parts learn.
    Schedule: ``pretrain_steps`` non-temporal steps, then every ``temporal_every``-th step is a
    temporal batch (2 = alternating); ``temporal_frames`` frames per clip (>= 3: the last two are
    trained in one forward, the earlier ones build the history without gradients).
    Losses: ``l2_weight``, ``foreground_weight`` (L2 over the actor mask / its area, the fMSE the
    harmonization metrics report), ``perceptual_weight`` (VGG16 from ``vgg_weights``; 0 without it),
    ``temporal_weight`` (warping loss; flow from the data or RAFT with ``raft_weights``).
    """

    manifest: str = ""
    temporal_manifest: Optional[str] = None
    extra_manifests: Tuple[str, ...] = ()
    extra_temporal_manifests: Tuple[str, ...] = ()
    crop: Tuple[int, int] = (256, 144)
    temporal_crop: Optional[Tuple[int, int]] = None
    crop_on_mask: bool = False
    model: str = "tiny"
    model_overrides: Dict[str, Any] = field(default_factory=dict)
    init_weights: Optional[str] = None
    trainable: str = "all"
    steps: int = 1000
    pretrain_steps: int = 500
    temporal_every: int = 2
    temporal_frames: int = 3
    batch_size: int = 4
    lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    l2_weight: float = 1.0
    foreground_weight: float = 0.0
    perceptual_weight: float = 0.3
    patch_min: int = 128
    patch_max: int = 512
    perceptual_patches: int = 2
    vgg_weights: Optional[str] = None
    temporal_weight: float = 1.0
    flow_source: str = "data"
    raft_weights: Optional[str] = None
    ema_decay: float = 0.999
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    out: str = "runs/train"
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop", tuple(int(v) for v in self.crop))
        for name in ("extra_manifests", "extra_temporal_manifests"):
            object.__setattr__(self, name, tuple(str(v) for v in getattr(self, name)))
        _require(not self.extra_temporal_manifests or self.temporal_manifest is not None,
                 "train.extra_temporal_manifests needs train.temporal_manifest")
        if self.temporal_crop is not None:
            object.__setattr__(self, "temporal_crop", tuple(int(v) for v in self.temporal_crop))
            _require(len(self.temporal_crop) == 2 and min(self.temporal_crop) >= 16,
                     f"train.temporal_crop must be (width, height) >= 16, got {self.temporal_crop}")
        _require(bool(self.manifest), "train.manifest is required (a manifest.json from simharmon curate)")
        _require(len(self.crop) == 2 and min(self.crop) >= 16, f"train.crop must be (width, height) >= 16, got {self.crop}")
        _require(self.trainable in TRAINABLE, f"train.trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        _require(self.precision in PRECISIONS, f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        _require(self.flow_source in FLOW_SOURCES, f"train.flow_source must be one of {FLOW_SOURCES}")
        _require(self.flow_source != "raft" or self.raft_weights is not None,
                 "train.flow_source 'raft' needs train.raft_weights (a local RAFT-large state dict)")
        for name in ("steps", "batch_size", "temporal_every", "checkpoint_every", "log_every", "perceptual_patches",
                     "keep_checkpoints"):
            _require(getattr(self, name) >= 1, f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("pretrain_steps", "warmup_steps"):
            _require(getattr(self, name) >= 0, f"train.{name} must be >= 0")
        _require(self.temporal_frames >= 3, f"train.temporal_frames must be >= 3, got {self.temporal_frames}")
        _require(self.lr > 0 and self.weight_decay >= 0 and self.grad_clip >= 0, "train.lr > 0, weight_decay and "
                 "grad_clip >= 0 required")
        for name in ("l2_weight", "foreground_weight", "perceptual_weight", "temporal_weight"):
            _require(getattr(self, name) >= 0, f"train.{name} must be >= 0")
        _require(16 <= self.patch_min <= self.patch_max, "train.patch_min must be >= 16 and <= patch_max")
        _require(0.0 <= self.ema_decay < 1.0, f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        _require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
                 f"train.device must be auto, cpu or cuda[:N], got {self.device!r}")

    def enhancer_config(self) -> EnhancerConfig:
        """The model's EnhancerConfig: the ``model`` preset with ``model_overrides`` merged in."""
        base = config_to_dict(load_config(self.model))
        merged = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(self.model_overrides)))
        config = config_from_dict(merged)
        multiple = config.pixel_multiple
        for name in ("crop", "temporal_crop"):
            if getattr(self, name) is None:
                continue
            width, height = getattr(self, name)
            _require(width % multiple == 0 and height % multiple == 0,
                     f"train.{name} {width}x{height} must be a multiple of the model's pixel multiple {multiple}")
        return config

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)


def train_config_to_dict(config: TrainConfig) -> dict:
    """Plain, YAML/JSON-serializable mapping."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def load_train_config(path: str | Path, overrides: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """Load a training YAML (e.g. ``configs/train-default.yaml``) with optional field overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"training config not found: {path}")
    data = read_yaml_mapping(path)
    data.update(overrides or {})
    return build_structured(TrainConfig, data, f"training config {path}")
