"""Random Poisson blending (after R2R's recipe) with alpha mixing, via OpenCV's seamlessClone.

A foreground whose appearance was changed (random ISP settings, ``isp.py``) is pasted back into the
ORIGINAL image by Poisson (gradient-domain) blending: inside the mask it keeps the modified
foreground's gradients while its boundary values come from the original surroundings, which gives
a subtler mismatch than a plain paste. The final input mixes the Poisson result with the plain
composite, ``alpha * poisson + (1 - alpha) * paste``, with a random alpha. Pixels outside the mask
are the original ones bit for bit (seamlessClone may touch its bounding box; that is undone).
"""

from __future__ import annotations

from typing import Dict, Tuple

import cv2
import numpy as np

from .isp import DEFAULT_RANGES, IspRanges, apply_isp, as_mask, composite, sample_isp_params

__all__ = ["poisson_blend", "random_poisson_composite"]


def poisson_blend(source: np.ndarray, destination: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Poisson-blend ``source`` into ``destination`` inside ``mask`` at the same position.

    source, destination: uint8 ``[H, W, 3]`` RGB; mask: ``[H, W]`` (non-zero = foreground).
    Returns uint8 ``[H, W, 3]``; equal to ``destination`` outside the mask and when it is empty.
    """
    binary = as_mask(mask, destination.shape[:2]) > 0
    if not binary.any():
        return destination.copy()
    ys, xs = np.nonzero(binary)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    height, width = destination.shape[:2]
    # seamlessClone needs the mask's box strictly inside the image: pad by reflection when it touches.
    pad = 2
    src = np.pad(source, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    dst = np.pad(destination, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    m = np.pad(binary, pad).astype(np.uint8) * 255
    # OpenCV centres the mask's bounding box at ``centre``; an even/odd box size shifts it by one.
    box_w, box_h = x1 - x0, y1 - y0
    centre = (x0 + pad + box_w // 2, y0 + pad + box_h // 2)
    blended = cv2.seamlessClone(src[:, :, ::-1].copy(), dst[:, :, ::-1].copy(), m, centre, cv2.NORMAL_CLONE)
    blended = blended[pad:pad + height, pad:pad + width, ::-1]
    return np.where(binary[:, :, None], blended, destination)


def random_poisson_composite(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                             ranges: IspRanges = DEFAULT_RANGES,
                             alpha_range: Tuple[float, float] = (0.3, 1.0)) -> Tuple[np.ndarray, Dict[str, object]]:
    """One Poisson-blending pair input for target ``image`` (uint8 ``[H, W, 3]``), mask ``[H, W]``.

    Returns (input uint8 ``[H, W, 3]``, parameters: the ISP settings and alpha).
    """
    params = sample_isp_params(rng, ranges, min_change_ev=0.25)
    modified = apply_isp(image, params, rng)
    alpha = float(rng.uniform(*alpha_range))
    pasted = composite(modified, image, mask)
    blended = poisson_blend(modified, image, mask)
    mixed = np.clip(np.floor(alpha * blended.astype(np.float64) + (1.0 - alpha) * pasted + 0.5), 0, 255)
    weights = as_mask(mask, image.shape[:2])
    out = np.where((weights > 0)[:, :, None], mixed.astype(np.uint8), image)
    return out, {"isp": params.to_dict(), "alpha": alpha}
