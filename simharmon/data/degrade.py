"""Novel-view-synthesis artifact degradations (in the spirit of Difix3D+'s artifact pairs).

Each degradation is a function ``(image, mask, rng, **parameters) -> image`` on uint8
``[H, W, 3]`` images; it changes only pixels where ``mask > 0`` (the region a bad reconstruction
affects), so everything outside the mask is the source bit for bit. Parameters not given are
drawn from ``rng``. ``DEGRADATIONS`` maps names to functions; ``random_artifacts`` applies a
random subset in a random order.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .isp import as_mask

__all__ = ["blur", "ghosting", "holes", "floaters", "color_noise", "DEGRADATIONS", "random_artifacts", "smooth_noise"]


def _restrict(out: np.ndarray, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend ``out`` into ``image`` with the mask weights; the source stays exact where mask == 0."""
    weights = as_mask(mask, image.shape[:2])
    mixed = weights[:, :, None] * out.astype(np.float64) + (1.0 - weights[:, :, None]) * image
    mixed = np.clip(np.floor(mixed + 0.5), 0, 255).astype(np.uint8)
    return np.where((weights > 0)[:, :, None], mixed, image)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of float ``[H, W, C]`` with edge replication (pure numpy)."""
    if sigma <= 0:
        return image.astype(np.float64)
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    x = image.astype(np.float64)
    for axis in (0, 1):
        padded = np.pad(x, [(radius, radius) if a == axis else (0, 0) for a in range(x.ndim)], mode="edge")
        length = x.shape[axis]
        x = sum(w * np.take(padded, np.arange(i, i + length), axis=axis) for i, w in enumerate(taps))
    return x


def smooth_noise(rng: np.random.Generator, height: int, width: int, channels: int, cell: float) -> np.ndarray:
    """Low-frequency noise ``[H, W, C]`` with unit-ish std: white noise blurred at scale ``cell``."""
    noise = _gaussian_blur(rng.standard_normal((height, width, channels)), cell)
    return noise / max(float(noise.std()), 1e-8)


def blur(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, sigma: Optional[float] = None) -> np.ndarray:
    """Gaussian blur of std ``sigma`` pixels (default: uniform in [0.8, 3])."""
    sigma = float(rng.uniform(0.8, 3.0)) if sigma is None else float(sigma)
    return _restrict(_gaussian_blur(image, sigma), image, mask)


def ghosting(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, shift: Optional[Tuple[int, int]] = None,
             strength: Optional[float] = None) -> np.ndarray:
    """A shifted double image: ``(1 - s) * I + s * I(x - shift)``; shift (dx, dy) pixels, s in [0.2, 0.5]."""
    if shift is None:
        shift = tuple(int(v) * int(rng.choice([-1, 1])) for v in rng.integers(2, 9, size=2))
    strength = float(rng.uniform(0.2, 0.5)) if strength is None else float(strength)
    dx, dy = shift
    shifted = np.roll(image, (dy, dx), axis=(0, 1)).astype(np.float64)
    return _restrict((1.0 - strength) * image + strength * shifted, image, mask)


def _blobs(rng: np.random.Generator, height: int, width: int, count: int, radius: Tuple[float, float],
           within: np.ndarray) -> np.ndarray:
    """Union of ``count`` random ellipses centred on pixels of ``within``; bool ``[H, W]``."""
    out = np.zeros((height, width), dtype=bool)
    candidates = np.argwhere(within)
    if len(candidates) == 0:
        return out
    ys, xs = np.mgrid[0:height, 0:width]
    for _ in range(count):
        cy, cx = candidates[rng.integers(len(candidates))]
        ry, rx = rng.uniform(*radius, size=2) * min(height, width)
        out |= ((ys - cy) / max(ry, 1.0)) ** 2 + ((xs - cx) / max(rx, 1.0)) ** 2 <= 1.0
    return out


def holes(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, count: Optional[int] = None,
          fill: Optional[str] = None) -> np.ndarray:
    """Missing regions: ellipses filled with black, a flat grey, or a smear of the surroundings."""
    count = int(rng.integers(1, 4)) if count is None else int(count)
    fill = str(rng.choice(["black", "grey", "smear"])) if fill is None else fill
    region = _blobs(rng, *image.shape[:2], count, (0.03, 0.12), as_mask(mask, image.shape[:2]) > 0)
    if fill == "black":
        filled = np.zeros_like(image, dtype=np.float64)
    elif fill == "grey":
        filled = np.full(image.shape, 128.0)
    elif fill == "smear":
        filled = _gaussian_blur(image, 8.0)
    else:
        raise ValueError(f"holes: fill must be black, grey or smear, got {fill!r}")
    out = np.where(region[:, :, None], filled, image.astype(np.float64))
    return _restrict(out, image, mask)


def floaters(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, count: Optional[int] = None,
             opacity: Optional[float] = None) -> np.ndarray:
    """Floaters: soft, semi-transparent blobs of a random colour hanging in front of the scene."""
    count = int(rng.integers(2, 7)) if count is None else int(count)
    opacity = float(rng.uniform(0.3, 0.8)) if opacity is None else float(opacity)
    height, width = image.shape[:2]
    region = _blobs(rng, height, width, count, (0.01, 0.06), as_mask(mask, (height, width)) > 0)
    soft = _gaussian_blur(region[:, :, None].astype(np.float64), 1.5)[:, :, 0] * opacity
    colour = rng.uniform(0, 255, size=3)
    out = (1.0 - soft[:, :, None]) * image + soft[:, :, None] * colour
    return _restrict(out, image, mask)


def color_noise(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, std: Optional[float] = None,
                cell: Optional[float] = None) -> np.ndarray:
    """Blotchy chroma noise: low-frequency per-channel offsets of ``std`` levels at scale ``cell`` px."""
    std = float(rng.uniform(6.0, 20.0)) if std is None else float(std)
    cell = float(rng.uniform(1.0, 4.0)) if cell is None else float(cell)
    noise = smooth_noise(rng, image.shape[0], image.shape[1], 3, cell) * std
    return _restrict(image + noise, image, mask)


DEGRADATIONS: Dict[str, Callable[..., np.ndarray]] = {
    "blur": blur,
    "ghosting": ghosting,
    "holes": holes,
    "floaters": floaters,
    "color_noise": color_noise,
}


def random_artifacts(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                     kinds: Sequence[str] = tuple(DEGRADATIONS), max_kinds: int = 2) -> Tuple[np.ndarray, List[str]]:
    """Apply 1..``max_kinds`` distinct degradations from ``kinds`` in a random order.

    Returns (degraded uint8 ``[H, W, 3]``, the names applied in order).
    """
    unknown = [k for k in kinds if k not in DEGRADATIONS]
    if unknown or not kinds:
        raise ValueError(f"unknown degradations {unknown}; available: {sorted(DEGRADATIONS)}")
    chosen = [str(k) for k in rng.permutation(list(kinds))[: int(rng.integers(1, max(1, min(max_kinds, len(kinds))) + 1))]]
    out = image
    for name in chosen:
        out = DEGRADATIONS[name](out, mask, rng)
    return out, chosen
