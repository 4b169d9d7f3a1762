"""Strict loading of diffusers-layout folders: DiffHarmony's ``unet/``, ``vae/`` and condition VAE.

A component folder holds ``config.json`` (its ``_class_name`` says what it is) and one weights
file: ``diffusion_pytorch_model[.fp16].safetensors`` / ``.bin``, or a sharded
``diffusion_pytorch_model.safetensors.index.json`` with its shards. Recognized classes:

* ``UNet2DConditionModel`` -> diffusers' UNet (SD-1.5-inpainting shape: 9 input channels);
* ``AutoencoderKL`` -> diffusers' VAE (e.g. sd-vae-ft-mse);
* ``ConditionVAE`` -> :class:`HarmonyVAE` (DiffHarmony++'s Harmony-VAE).

A root folder (a Stable Diffusion inpainting checkout, DiffHarmony's release, or our own export)
holds components as sub-folders: ``unet/``, ``vae/``, ``condition_vae/`` or ``cvae/``, plus
optionally ``scheduler/scheduler_config.json`` and ``prompt_embeds.safetensors`` (the empty
prompt's text-encoder output, ``[1, L, cross_attention_dim]``; guidance 1.0 with an empty prompt
makes it a constant). Other sub-folders (``text_encoder``, ``tokenizer``, ``safety_checker`` ...)
are listed as unused.

Rules, as in :mod:`simharmon.models.checkpoints`: every weight is accounted for; any missing,
unexpected or wrong-shaped key raises :class:`CheckpointError` naming the keys. The one rewrite
is documented and reported: VAE attention weights saved under diffusers' deprecated names
(``query`` / ``key`` / ``value`` / ``proj_attn``, e.g. in sd-vae-ft-mse) are renamed to
``to_q`` / ``to_k`` / ``to_v`` / ``to_out.0`` (same shapes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ...io.atomic import atomic_path, atomic_write_json
from ...models.checkpoints import CheckpointError, LoadReport, load_state_strict
from .harmony_vae import HARMONY_VAE_CLASS, HarmonyVAE

__all__ = [
    "COMPONENT_CLASSES", "Component", "Components", "DEFAULT_SCHEDULER", "read_component", "build_module",
    "load_component", "load_components", "read_prompt_embeds", "save_component", "save_prompt_embeds",
]

COMPONENT_CLASSES = {"UNet2DConditionModel": "unet", "AutoencoderKL": "vae", HARMONY_VAE_CLASS: "harmony_vae"}
SUBFOLDERS = {"unet": "unet", "vae": "vae", "condition_vae": "harmony_vae", "cvae": "harmony_vae"}
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin")
SHARD_INDEX = "diffusion_pytorch_model.safetensors.index.json"
PROMPT_FILE = "prompt_embeds.safetensors"
# Stable Diffusion 1.x's training schedule (its scheduler_config.json); DiffHarmony builds
# Euler-ancestral from it.
DEFAULT_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                     "beta_schedule": "scaled_linear", "steps_offset": 1, "prediction_type": "epsilon"}
_DEPRECATED_ATTENTION = re.compile(r"^(.*\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$")
_RENAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_SHOW = 8


@dataclass
class Component:
    """One component folder as read: what it is, its config and its (renamed) state dict."""

    path: Path
    kind: str  # unet | vae | harmony_vae
    config: dict
    state: Dict[str, torch.Tensor]
    weights_file: str
    renamed: List[str] = field(default_factory=list)


@dataclass
class Components:
    """Every model a harmonizer may need, loaded; None where not given."""

    unet: Optional[UNet2DConditionModel] = None
    vae: Optional[AutoencoderKL] = None
    harmony_vae: Optional[HarmonyVAE] = None
    prompt_embeds: Optional[torch.Tensor] = None
    scheduler_config: dict = field(default_factory=lambda: dict(DEFAULT_SCHEDULER))
    reports: List[LoadReport] = field(default_factory=list)
    sources: Dict[str, str] = field(default_factory=dict)
    unused: List[str] = field(default_factory=list)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable JSON file (corrupt or truncated?): {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_safetensors(path: Path) -> Dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (corrupt or truncated?): {exc}") from exc


def _read_bin(path: Path) -> Dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt pickles and zips
        raise CheckpointError(f"{path}: not a readable torch weights file (corrupt, truncated, or holding "
                              f"Python objects): {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _read_weights(folder: Path) -> Tuple[Dict[str, torch.Tensor], str]:
    index = folder / SHARD_INDEX
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: no 'weight_map' object")
        state: Dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = folder / str(shard)
            if not shard_path.is_file():
                raise CheckpointError(f"{index}: shard {shard} is missing")
            state.update(_read_safetensors(shard_path))
        listed, found = set(weight_map), set(state)
        if listed != found:
            raise CheckpointError(f"{index}: the index and the shards disagree on keys: "
                                  f"{sorted(listed ^ found)[:_SHOW]}")
        return state, SHARD_INDEX
    present = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not present:
        raise CheckpointError(f"{folder}: no weights file (expected one of {', '.join(WEIGHT_FILES)} or {SHARD_INDEX})")
    name = present[0]  # diffusers' preference order: safetensors first, full precision first
    state = _read_safetensors(folder / name) if name.endswith(".safetensors") else _read_bin(folder / name)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{folder / name}: entries that are not tensors: {bad[:_SHOW]}")
    return state, name


def _rename_deprecated(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    out, renamed = {}, []
    for key, value in state.items():
        match = _DEPRECATED_ATTENTION.match(key)
        if match:
            new = f"{match.group(1)}{_RENAMES[match.group(2)]}.{match.group(3)}"
            if new in state:
                raise CheckpointError(f"both {key} and {new} are present: ambiguous attention weights")
            renamed.append(key)
            key = new
        out[key] = value
    return out, renamed


def read_component(folder: str | Path, expect: Optional[Sequence[str]] = None) -> Component:
    """Read ``folder/config.json`` and its weights. expect: allowed kinds (unet / vae / harmony_vae)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"component folder not found: {folder}")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{folder}: no config.json (a diffusers component folder has one)")
    config = _read_json(config_path)
    class_name = config.get("_class_name")
    kind = COMPONENT_CLASSES.get(class_name)
    if kind is None:
        raise CheckpointError(f"{config_path}: _class_name {class_name!r} is not one of {sorted(COMPONENT_CLASSES)}")
    if expect is not None and kind not in expect:
        raise CheckpointError(f"{folder}: holds a {class_name} ({kind}), expected {' or '.join(expect)}")
    state, weights_file = _read_weights(folder)
    renamed: List[str] = []
    if kind in ("vae", "harmony_vae"):
        state, renamed = _rename_deprecated(state)
    return Component(path=folder, kind=kind, config=config, state=state, weights_file=weights_file, renamed=renamed)


def _public_config(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def build_module(kind: str, config: dict) -> nn.Module:
    """A freshly initialized module for a component ``config`` (diffusers config mapping)."""
    try:
        if kind == "unet":
            return UNet2DConditionModel.from_config(_public_config(config))
        if kind == "vae":
            if config.get("use_quant_conv") is False or config.get("use_post_quant_conv") is False:
                raise ValueError("VAEs without quant_conv / post_quant_conv are not supported")
            return AutoencoderKL.from_config(_public_config(config))
        if kind == "harmony_vae":
            return HarmonyVAE(_public_config(config))
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"config describes no buildable {kind}: {type(exc).__name__}: {exc}") from exc
    raise ValueError(f"unknown component kind {kind!r}")


def load_component(folder: str | Path, expect: Optional[Sequence[str]] = None) -> Tuple[nn.Module, LoadReport, Component]:
    """Build the module of a component folder and load its weights strictly."""
    comp = read_component(folder, expect)
    module = build_module(comp.kind, comp.config)
    try:
        report = load_state_strict(module, comp.state, f"{comp.path.name}/{comp.weights_file}")
    except CheckpointError as exc:
        raise CheckpointError(f"{comp.path}: {exc}") from exc
    module.eval().requires_grad_(False)
    return module, report, comp


def read_prompt_embeds(path: Path) -> torch.Tensor:
    """``prompt_embeds.safetensors``: exactly one tensor ``prompt_embeds`` of shape [1, L, D]."""
    state = _read_safetensors(path)
    if set(state) != {"prompt_embeds"}:
        raise CheckpointError(f"{path}: expected exactly one tensor 'prompt_embeds', got keys {sorted(state)[:_SHOW]}")
    embeds = state["prompt_embeds"]
    if embeds.dim() != 3 or embeds.shape[0] != 1:
        raise CheckpointError(f"{path}: prompt_embeds must be [1, L, D], got {list(embeds.shape)}")
    return embeds.float()


def _component_folders(path: Path) -> Tuple[List[Path], List[str]]:
    if (path / "config.json").is_file():
        return [path], []
    found = [path / name for name in SUBFOLDERS if (path / name / "config.json").is_file()]
    unused = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name not in SUBFOLDERS)
    if not found and not (path / PROMPT_FILE).is_file():
        raise CheckpointError(f"{path}: neither a component folder (config.json) nor a root with any of "
                              f"{', '.join(f'{n}/' for n in SUBFOLDERS)} or {PROMPT_FILE}")
    return found, unused


def load_components(paths: Sequence[str | Path]) -> Components:
    """Load every component found in ``paths`` (roots or component folders, in any order).

    Each kind may come from one place only: giving two UNets (say) is an error naming both.
    """
    result = Components()
    if not paths:
        raise CheckpointError("no weights given")
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise CheckpointError(f"weights not found: {path}")
        if not path.is_dir():
            raise CheckpointError(f"weights must be a folder (diffusers layout), got a file: {path}")
        folders, unused = _component_folders(path)
        result.unused += [str(path / name) for name in unused if name not in ("scheduler",)]
        for folder in folders:
            module, report, comp = load_component(folder)
            if comp.kind in result.sources:
                raise CheckpointError(f"two {comp.kind} components given: {result.sources[comp.kind]} and {folder}")
            setattr(result, comp.kind, module)
            result.sources[comp.kind] = str(folder)
            if comp.renamed:
                report.what += f" ({len(comp.renamed)} deprecated attention keys renamed)"
            result.reports.append(report)
        scheduler = path / "scheduler" / "scheduler_config.json"
        if scheduler.is_file():
            result.scheduler_config = {**DEFAULT_SCHEDULER, **_public_config(_read_json(scheduler))}
        if (path / PROMPT_FILE).is_file():
            if "prompt_embeds" in result.sources:
                raise CheckpointError(f"two {PROMPT_FILE} given: {result.sources['prompt_embeds']} and {path}")
            result.prompt_embeds = read_prompt_embeds(path / PROMPT_FILE)
            result.sources["prompt_embeds"] = str(path / PROMPT_FILE)
    return result


def save_component(folder: str | Path, module: nn.Module, config: dict, class_name: str) -> None:
    """Write ``config.json`` + ``diffusion_pytorch_model.safetensors`` (each file atomically)."""
    folder = Path(folder)
    atomic_write_json(folder / "config.json", {"_class_name": class_name, **_public_config(config)})
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_path(folder / WEIGHT_FILES[0]) as tmp:
        save_file(tensors, str(tmp))


def save_prompt_embeds(path: str | Path, embeds: torch.Tensor) -> None:
    """Write the constant prompt embedding as ``prompt_embeds.safetensors`` (atomically)."""
    with atomic_path(path) as tmp:
        save_file({"prompt_embeds": embeds.detach().float().contiguous().cpu()}, str(tmp))
