"""Baselines reported next to the enhancer: identity and Reinhard colour transfer in the actor mask.

Reinhard et al. (2001) colour transfer, as harmonization papers use it as a baseline: in CIE Lab
(kornia's sRGB <-> Lab conversions, D65), the foreground's per-channel mean and standard deviation
are matched to the background's of the same frame:

    out_fg = (x - mean_fg) / std_fg * std_bg + mean_bg

then converted back to sRGB, clipped, and composited with the mask: ``M out + (1 - M) input``.
Foreground and background statistics use the binarized mask (>= 0.5). Without a mask, or with an
empty or full one, the input is returned unchanged.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import torch
from kornia.color import lab_to_rgb, rgb_to_lab

__all__ = ["identity", "reinhard_transfer", "BASELINES"]

_EPS = 1e-6


def identity(image: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """The input itself (uint8 ``[H, W, 3]``): what the renderer gave."""
    return image


def reinhard_transfer(image: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    """Match the foreground's Lab statistics to the background's.

    image: uint8 ``[H, W, 3]`` sRGB; mask: ``[H, W]`` foreground weights in [0, 1] (or bool/uint8).
    Returns uint8 ``[H, W, 3]`` (rounded).
    """

    if mask is None:
        return image
    weights = np.asarray(mask)
    weights = weights.astype(np.float64) / 255.0 if weights.dtype == np.uint8 else weights.astype(np.float64)
    if weights.shape != image.shape[:2]:
        raise ValueError(f"mask {list(weights.shape)} does not match the image {list(image.shape[:2])}")
    foreground = weights >= 0.5
    if not foreground.any() or foreground.all():
        return image
    rgb = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None] / 255.0
    lab = rgb_to_lab(rgb)[0]  # [3, H, W]
    fg = torch.from_numpy(foreground)
    fg_pixels, bg_pixels = lab[:, fg], lab[:, ~fg]  # [3, N]
    mean_fg, std_fg = fg_pixels.mean(dim=1), fg_pixels.std(dim=1, unbiased=False)
    mean_bg, std_bg = bg_pixels.mean(dim=1), bg_pixels.std(dim=1, unbiased=False)
    scale = std_bg / std_fg.clamp_min(_EPS)
    moved = (lab - mean_fg[:, None, None]) * scale[:, None, None] + mean_bg[:, None, None]
    result = lab_to_rgb(moved[None], clip=True)[0].clamp(0.0, 1.0)
    alpha = torch.from_numpy(weights.astype(np.float32))[None]
    blended = alpha * result + (1.0 - alpha) * rgb[0]
    return np.clip(np.floor(blended.permute(1, 2, 0).numpy() * 255.0 + 0.5), 0, 255).astype(np.uint8)


# name -> function(image, mask) -> image; reported in this order after the enhancer.
BASELINES: Dict[str, Callable[[np.ndarray, Optional[np.ndarray]], np.ndarray]] = {
    "identity": identity,
    "reinhard": reinhard_transfer,
}
