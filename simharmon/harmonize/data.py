"""Training and evaluation pairs for the harmonizers: (composite, real, mask) triples.

Sources: procedural scenes (``simharmon.data.procedural``) with ISP composites
(``simharmon.data.isp``, the curation recipe), or any curated folder's ``manifest.json`` (the layout
``simharmon curate`` writes). Arrays are uint8 ``[N, H, W, 3]`` images and uint8 ``[N, H, W]`` masks;
:func:`to_model` turns them into model tensors through ``simharmon.ops.pack``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..data.isp import as_mask, composite, isp_composite
from ..data.procedural import procedural_scene
from ..ops import pack

__all__ = ["Pairs", "procedural_pairs", "manifest_pairs", "to_model", "mask_tensor", "foreground_change",
           "random_colour_change"]


@dataclass
class Pairs:
    """composites / reals: uint8 ``[N, H, W, 3]``; masks: uint8 ``[N, H, W]`` (255 = foreground)."""

    composites: np.ndarray
    reals: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.reals)

    def take(self, index) -> Pairs:
        return Pairs(self.composites[index], self.reals[index], self.masks[index])


def procedural_pairs(count: int, size: int, seed: int, start: int = 0) -> Pairs:
    """``count`` square procedural scenes of side ``size`` (scene ids start..start+count-1) with one
    ISP composite each (random draws from ``seed`` and the scene id)."""
    comps, reals, masks = [], [], []
    for index in range(start, start + count):
        image, mask = procedural_scene(index, size, size)
        comp, _ = isp_composite(image, mask, np.random.default_rng([seed, index]))
        comps.append(comp), reals.append(image), masks.append(mask)
    return Pairs(np.stack(comps), np.stack(reals), np.stack(masks))


def _read(path: Path, mode: str, size: Optional[int]) -> np.ndarray:
    with Image.open(path) as picture:
        picture = picture.convert(mode)
        if size is not None and picture.size != (size, size):
            resample = Image.Resampling.NEAREST if mode == "L" else Image.Resampling.BICUBIC
            picture = picture.resize((size, size), resample)
        return np.asarray(picture)


def manifest_pairs(folder: str | Path, split: str = "train", size: Optional[int] = None) -> Pairs:
    """The pairs of a curated folder's ``manifest.json`` split (inputs, targets, masks), resized to
    ``size`` x ``size`` when given."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    entries = manifest.get(split, {})
    if not entries:
        raise ValueError(f"{folder}/manifest.json has no pairs in split {split!r}")
    comps, reals, masks = [], [], []
    for entry in entries.values():
        if "mask" not in entry:
            raise ValueError(f"{folder}/manifest.json: an entry has no 'mask' (harmonizers need the foreground)")
        comps.append(_read(folder / entry["image"], "RGB", size))
        reals.append(_read(folder / entry["target_image"], "RGB", size))
        masks.append(_read(folder / entry["mask"], "L", size))
    return Pairs(np.stack(comps), np.stack(reals), np.stack(masks))


def to_model(images: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """uint8 ``[N, H, W, 3]`` -> float32 ``[N, 3, H, W]`` in [-1, 1] (``simharmon.ops.pack``)."""
    return pack(torch.from_numpy(np.ascontiguousarray(images)).to(device))


def mask_tensor(masks: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """uint8 ``[N, H, W]`` (0..255) -> float32 ``[N, 1, H, W]`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(masks)).to(device).float().div(255.0).unsqueeze(1)


def foreground_change(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute difference of two uint8 ``[H, W, 3]`` images inside the mask (8-bit levels)."""
    weights = as_mask(mask, a.shape[:2])[:, :, None]
    return float((np.abs(a.astype(np.float64) - b) * weights).sum() / max(weights.sum() * 3, 1e-9))


def random_colour_change(image: np.ndarray, mask: np.ndarray, strength: float,
                         rng: np.random.Generator) -> Tuple[np.ndarray, float]:
    """A random per-channel colour change of the foreground, scaled to ``strength``.

    The change is ``delta = image * (g - 1) + o`` with per-channel gains ``g ~ U(0.6, 1.4)`` and
    offsets ``o ~ U(-30, 30)`` (8-bit levels), rescaled so the mean |change| inside the mask
    equals ``strength`` (up to rounding and clipping); the background is untouched. Returns
    (uint8 ``[H, W, 3]``, the achieved mean absolute change inside the mask).
    """
    gains = rng.uniform(0.6, 1.4, size=3)
    offsets = rng.uniform(-30.0, 30.0, size=3)
    delta = image.astype(np.float64) * (gains - 1.0) + offsets
    weights = as_mask(mask, image.shape[:2])[:, :, None]
    base = float((np.abs(delta) * weights).sum() / max(weights.sum() * 3, 1e-9))
    scale = strength / base if base > 0 else 0.0
    changed = np.clip(np.floor(image + scale * delta + 0.5), 0, 255).astype(np.uint8)
    out = composite(changed, image, mask)
    return out, foreground_change(out, image, mask)
