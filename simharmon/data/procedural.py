"""Redistributable procedural source images with an object mask, for curation and tests.

A street scene drawn with the sample clip's panorama and road (``sample.py``, fully procedural,
no third-party imagery) plus one to three box-shaped "vehicles" lit consistently with the scene
(same colour grade). The vehicles' coverage is the foreground mask. Deterministic per seed.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from . import sample

__all__ = ["procedural_scene"]


def procedural_scene(seed: int, width: int = 256, height: int = 144) -> Tuple[np.ndarray, np.ndarray]:
    """Render one scene: (uint8 ``[H, W, 3]`` RGB image, uint8 ``[H, W]`` mask, 255 = object)."""
    if width < 16 or height < 16:
        raise ValueError(f"width and height must be >= 16, got {width}x{height}")
    rng = np.random.default_rng([seed, 7])
    world = sample._panorama(rng, height, width * 2)
    start = int(rng.integers(0, width))
    view = world[:, start:start + width].copy()
    texture = sample._value_noise(rng, height, width, cell=max(height / 36.0, 1.5))
    asphalt = np.array([0.27, 0.28, 0.31])[None, None, :] * (0.9 + 0.2 * texture[:, :, None])
    road_x = float(rng.uniform(0.3, 0.7)) * width
    view = sample._draw_road(view, road_x, phase=float(rng.uniform(0, 2)), asphalt=asphalt)

    horizon = int(sample._HORIZON * height)
    xs = np.arange(width, dtype=np.float64) + 0.5
    ys = np.arange(height, dtype=np.float64) + 0.5
    mask = np.zeros((height, width))
    for _ in range(int(rng.integers(1, 4))):
        depth = float(rng.uniform(0.45, 1.0))
        base = horizon + depth * (height - horizon)
        car_w = (0.02 + 0.62 * depth) * width * float(rng.uniform(0.4, 0.8))
        centre = float(rng.uniform(0.1, 0.9)) * width
        body = sample._box_coverage(xs, ys, centre - car_w / 2, base - 0.4 * car_w, centre + car_w / 2, base)
        cabin = sample._box_coverage(xs, ys, centre - 0.3 * car_w, base - 0.65 * car_w, centre + 0.3 * car_w,
                                     base - 0.39 * car_w)
        glass = sample._box_coverage(xs, ys, centre - 0.24 * car_w, base - 0.6 * car_w, centre + 0.24 * car_w,
                                     base - 0.45 * car_w)
        paint = rng.uniform(0.1, 0.8, size=3)
        shade = np.linspace(1.0, 0.75, height)[:, None, None]  # lit from above, like the scene
        cover = np.maximum(body, cabin)
        view = view * (1 - cover[:, :, None]) + paint * shade * cover[:, :, None]
        view = sample._mix(view, (0.15, 0.17, 0.2), glass)
        mask = np.maximum(mask, cover)
    view = view * np.array([0.92, 0.96, 1.04])  # the scene's grade applies to the vehicles too
    image = np.clip(np.floor(view * 255.0 + 0.5), 0, 255).astype(np.uint8)
    return image, np.clip(np.floor(mask * 255.0 + 0.5), 0, 255).astype(np.uint8)
