"""The enhancer model: Wan tokenizer + single-step rectified-flow Cosmos DiT, and how to build one."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from ..config import ConfigError, EnhancerConfig, config_from_dict, config_to_dict, load_config
from .checkpoints import (
    DIT_OPTIONAL_BUFFERS,
    CheckpointError,
    CheckpointParts,
    LoadReport,
    load_state_strict,
    read_checkpoint,
    save_safetensors,
)
from .denoiser import RectifiedFlowDenoiser
from .dit import CosmosDiT
from .wan_vae import WanTokenizer

__all__ = ["EnhancerModel", "build_enhancer", "export_safetensors", "DTYPES"]

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
WeightsArg = Union[None, str, Path, Sequence[Union[str, Path]]]


class EnhancerModel(nn.Module):
    """Tokenizer plus denoiser. Latents are normalized Wan latents ``[B, 16, T, H/8, W/8]``.

    ``load_reports`` lists what each checkpoint contributed; ``weights`` names the files (empty
    when the weights are random).
    """

    def __init__(self, config: EnhancerConfig):
        super().__init__()
        self.config = config
        self.tokenizer = WanTokenizer(config.tokenizer)
        self.denoiser = RectifiedFlowDenoiser(CosmosDiT(config.dit), config.denoiser)
        self.load_reports: List[LoadReport] = []
        self.weights: List[str] = []

    @property
    def dit(self) -> CosmosDiT:
        return self.denoiser.net

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, video: torch.Tensor, return_skips: bool = False):
        """``video: [B, 3, T, H, W]`` in [-1, 1] -> normalized latents ``[B, 16, T', H/8, W/8]``.

        With ``return_skips``: ``(latents, skips)``, the encoder activations that the decoder's skip
        convolutions take (``tokenizer.skip_connections``).
        """
        return self.tokenizer.encode(video, return_skips=return_skips)

    def denoise(self, latents: torch.Tensor, condition_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One deterministic rectified-flow step: latents in, x0 (float32) out, same shape.

        condition_mask: ``[B, 1, h, w]`` actor mask for the DiT's padding-mask channel
        (``stream.mask_condition``), or None for zeros.
        """
        return self.denoiser(latents, condition_mask)

    def decode(self, latents: torch.Tensor, skips=None) -> torch.Tensor:
        """Normalized latents ``[B, 16, T', h, w]`` -> video ``[B, 3, T, 8h, 8w]`` in about [-1, 1].

        skips: from ``encode(..., return_skips=True)``, when the decoder has skip convolutions.
        """
        return self.tokenizer.decode(latents, skips=skips)


def _as_paths(weights: WeightsArg) -> List[Path]:
    if weights is None:
        return []
    if isinstance(weights, (str, Path)):
        return [Path(weights)]
    return [Path(w) for w in weights]


def _resolve_config(config: Union[None, str, Path, EnhancerConfig], parts: List[CheckpointParts]) -> EnhancerConfig:
    """Config precedence: explicit argument, else one embedded in a simharmon export, else tiny."""
    embedded = next((p.config for p in parts if p.config is not None), None)
    if isinstance(config, EnhancerConfig):
        resolved = config
    elif config is not None:
        resolved = load_config(config)
    elif embedded is not None:
        resolved = config_from_dict(embedded)
    else:
        resolved = load_config("tiny")
    if any(p.dit is not None or p.tokenizer is not None for p in parts) and resolved.untrained:
        resolved = resolved.replace(untrained=False)
    # The published decoder may carry skip convolutions: follow the file rather than drop weights.
    has_skips = any(p.tokenizer and any(k.startswith("decoder.skip_conv_") for k in p.tokenizer) for p in parts)
    if has_skips and not resolved.tokenizer.skip_connections:
        log.info("checkpoint has decoder skip convolutions: enabling tokenizer.skip_connections")
        resolved = resolved.replace(tokenizer=dataclasses.replace(resolved.tokenizer, skip_connections=True))
    layouts = {p.layout for p in parts if p.layout is not None}
    if len(layouts) > 1:
        raise ConfigError(f"checkpoints disagree on the temporal layout: {sorted(layouts)}")
    if layouts and config is None:
        layout = layouts.pop()
        if layout != resolved.stream.layout:
            resolved = resolved.replace(stream=dataclasses.replace(resolved.stream, layout=layout))
    return resolved


def build_enhancer(
    config: Union[None, str, Path, EnhancerConfig] = None,
    weights: WeightsArg = None,
    *,
    device: Union[str, torch.device] = "cpu",
    dtype: Optional[torch.dtype] = None,
    strict: bool = True,
    use_ema: bool = False,
    trusted: bool = False,
    seed: int = 0,
) -> EnhancerModel:
    """Build an enhancer and load its weights.

    config: an EnhancerConfig, a preset name or a YAML path; when None, a config embedded in the
        weights is used, else the "tiny" preset.
    weights: one or more checkpoint files (Harmonizer .pkl, Cosmos model.pt plus tokenizer.pth, or
        a simharmon .safetensors). Together they must provide both the DiT and the tokenizer. With
        no weights the model is randomly initialized from ``seed`` (reproducible, not meaningful).
    strict: fail on any key that is missing, unexpected or wrong-shaped (ignore rules aside).
    use_ema: load the DiT's EMA weights instead of the live ones.
    """
    paths = _as_paths(weights)
    parts = [read_checkpoint(p, use_ema=use_ema, trusted=trusted) for p in paths]
    resolved = _resolve_config(config, parts)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EnhancerModel(resolved)

    if parts:
        dit_parts = [p for p in parts if p.dit is not None]
        tok_parts = [p for p in parts if p.tokenizer is not None]
        for name, found in (("DiT", dit_parts), ("tokenizer", tok_parts)):
            if len(found) > 1:
                raise CheckpointError(f"{name} weights given twice: {[p.path for p in found]}")
            if not found and strict:
                hint = " (add tokenizer.pth)" if name == "tokenizer" else ""
                raise CheckpointError(f"no {name} weights in {[str(p) for p in paths]}{hint}")
        if dit_parts:
            model.load_reports.append(load_state_strict(
                model.dit, dit_parts[0].dit, f"DiT from {dit_parts[0].path}", optional=DIT_OPTIONAL_BUFFERS,
                strict=strict))  # fmt: skip
        if tok_parts:
            model.load_reports.append(load_state_strict(
                model.tokenizer, tok_parts[0].tokenizer, f"tokenizer from {tok_parts[0].path}", strict=strict))
        for part in parts:
            for rule, keys in part.ignored.items():
                log.info("%s: ignored %d keys (%s)", part.path, len(keys), rule)
        model.weights = [str(p) for p in paths]

    target_dtype = dtype if dtype is not None else DTYPES[resolved.dtype]
    model = model.to(device=device, dtype=target_dtype)
    model.eval().requires_grad_(False)
    return model


def export_safetensors(model: EnhancerModel, path: Union[str, Path], extra_metadata: Optional[dict] = None) -> None:
    """Write ``model`` as a simharmon safetensors file with its config embedded."""
    save_safetensors(path, model.dit, model.tokenizer, config=config_to_dict(model.config),
                     extra_metadata={k: str(v) for k, v in (extra_metadata or {}).items()})
