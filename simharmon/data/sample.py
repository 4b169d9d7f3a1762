"""A small, deterministic, procedurally generated driving clip for demos and tests.

The scene is a cool, slightly dim street: sky gradient with soft clouds, a skyline of buildings
with lit windows, a verge, and a road with edge lines and a centre dash that scrolls towards the
camera (forward motion). The camera pans smoothly to the left at a whole number of pixels per
frame, so consecutive frames are exact crops of one panorama (temporally consistent).

An inserted "actor", a car-like box overtaking in the right lane, is composited with colours that
do NOT match the scene: a warm, over-exposed look, flat lighting and no shadow. That mismatch is
what a harmonizing enhancer is meant to fix.

Only float64 element-wise arithmetic (no transcendental functions, no reductions) touches the
pixels, so the output is bit-exact across platforms; ``sample_frames/`` holds the committed
result of ``make_sample_frames()`` and a test checks they stay equal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Union

import numpy as np

from ..io.atomic import atomic_save_png

__all__ = ["make_sample_frames", "write_sample", "sample_frames_dir", "SAMPLE_NAME_FORMAT"]

SAMPLE_NAME_FORMAT = "frame_{index:03d}.png"
_HORIZON = 0.42  # horizon height as a fraction of the frame


def sample_frames_dir() -> Path:
    """Folder of the bundled sample frames (``frame_000.png`` ... ``frame_023.png``, 256x144)."""
    return Path(__file__).resolve().parent / "sample_frames"


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def _value_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1], ``[height, width]``: random lattice values, smoothstep-interpolated."""
    grid = rng.random((int(height / cell) + 2, int(width / cell) + 2))
    ys = np.arange(height, dtype=np.float64) / cell
    xs = np.arange(width, dtype=np.float64) / cell
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    fy, fx = _smoothstep(ys - y0)[:, None], _smoothstep(xs - x0)[None, :]
    top = grid[y0][:, x0] * (1.0 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1.0 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1.0 - fy) + bottom * fy


def _mix(base: np.ndarray, colour, alpha: np.ndarray) -> np.ndarray:
    """Blend ``colour`` over ``base`` ([H, W, 3]) with per-pixel coverage ``alpha`` ([H, W])."""
    alpha = alpha[:, :, None]
    return base * (1.0 - alpha) + np.asarray(colour, dtype=np.float64) * alpha


def _box_coverage(xs: np.ndarray, ys: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Anti-aliased coverage of the box [x0, x1] x [y0, y1] at pixel centres (1 inside, ramps at edges)."""
    cover_x = np.clip(np.minimum(xs + 0.5 - x0, x1 - (xs - 0.5)), 0.0, 1.0)
    cover_y = np.clip(np.minimum(ys + 0.5 - y0, y1 - (ys - 0.5)), 0.0, 1.0)
    return cover_y[:, None] * cover_x[None, :]


def _panorama(rng: np.random.Generator, height: int, world_width: int) -> np.ndarray:
    """The static background (sky, skyline, verge) in world coordinates, float ``[H, world_width, 3]``."""
    horizon = int(_HORIZON * height)
    ys = np.arange(height, dtype=np.float64)
    world = np.zeros((height, world_width, 3))

    # Sky: blue at the top fading to pale haze at the horizon, plus soft clouds.
    t = np.clip(ys / max(horizon, 1), 0.0, 1.0)[:, None, None]
    sky = np.array([0.22, 0.36, 0.62]) * (1.0 - t) + np.array([0.66, 0.74, 0.82]) * t
    world[:] = sky
    clouds = _value_noise(rng, height, world_width, cell=max(height / 6.0, 4.0))
    cloud_alpha = np.clip((clouds - 0.55) * 2.5, 0.0, 1.0) * 0.55
    cloud_alpha[horizon:] = 0.0
    world = _mix(world, (0.86, 0.88, 0.92), cloud_alpha)

    # Ground behind the road: a muted green-brown verge with smooth texture.
    grass = _value_noise(rng, height, world_width, cell=max(height / 24.0, 2.0))
    ground = np.array([0.30, 0.36, 0.24])[None, None, :] * (0.85 + 0.3 * grass[:, :, None])
    world[horizon:] = ground[horizon:]

    # Skyline: buildings of random width/height/colour standing on the horizon, with window grids.
    scale = height / 144.0
    x = 0
    while x < world_width:
        r = rng.random(6)
        width = int((10 + 26 * r[0]) * scale) + 2
        top = horizon - int((12 + 38 * r[1]) * scale) - 2
        shade = 0.30 + 0.25 * r[2]
        colour = (shade + 0.06 * r[3], shade + 0.03 * r[3], shade)
        x1 = min(x + width, world_width)
        world[top:horizon, x:x1] = colour
        cell = max(int(4 * scale), 3)
        lit = rng.random(((horizon - top) // cell + 1, width // cell + 1))
        for row in range(top + 2, horizon - 2, cell):
            for col in range(x + 2, x1 - 2, cell):
                value = lit[(row - top) // cell, (col - x) // cell]
                glow = (0.85, 0.78, 0.55) if value > 0.6 else (0.18, 0.20, 0.24)
                world[row:row + 2, col:col + 2] = glow
        x = x1 + int(4 * r[4] * scale)  # gaps between some buildings show the sky
    return world


def _draw_road(frame: np.ndarray, road_x: float, phase: float, asphalt: np.ndarray) -> np.ndarray:
    """Draw the road (asphalt, edge lines, scrolling centre dashes) on ``frame`` in place of the verge."""
    height, width = frame.shape[:2]
    horizon = int(_HORIZON * height)
    ys = np.arange(horizon, height, dtype=np.float64) + 0.5
    depth = (ys - horizon) / (height - horizon)  # 0 at the horizon, 1 at the bottom row
    xs = np.arange(width, dtype=np.float64)[None, :] + 0.5
    half = (0.02 + 0.62 * depth)[:, None] * width  # road half-width per row
    offset = np.abs(xs - road_x)

    part = frame[horizon:]
    road = np.clip(half - offset + 0.5, 0.0, 1.0)
    part = part * (1.0 - road[:, :, None]) + asphalt[horizon:] * road[:, :, None]

    line = (0.004 + 0.018 * depth)[:, None] * width  # marking width grows towards the camera
    edge = np.clip(line - np.abs(offset - 0.92 * half) + 0.5, 0.0, 1.0)
    part = _mix(part, (0.80, 0.80, 0.76), edge)

    # Centre dashes: depth along the road is ~1/depth; dashes scroll as the car drives forward.
    distance = 1.0 / (depth + 0.05)
    pattern = (distance * 2.0 + phase) % 2.0
    dash = (pattern < 1.0).astype(np.float64)[:, None] * np.clip(0.5 * line - offset + 0.5, 0.0, 1.0)
    part = _mix(part, (0.86, 0.78, 0.40), dash)
    frame[horizon:] = part
    return frame


def _draw_actor(frame: np.ndarray, progress: float, road_x: float) -> np.ndarray:
    """Composite the mismatched car: warm, over-exposed, flat-lit, no shadow; ``progress`` in [0, 1]."""
    height, width = frame.shape[:2]
    horizon = int(_HORIZON * height)
    # It overtakes: starts near the camera and recedes up the right lane, shrinking with depth.
    depth = 0.85 - 0.45 * progress
    base_y = horizon + depth * (height - horizon)
    half = (0.02 + 0.62 * depth) * width
    centre = road_x + 0.45 * half
    car_w = 0.55 * half
    body_h, cabin_h = 0.38 * car_w, 0.26 * car_w
    ys = np.arange(height, dtype=np.float64) + 0.5
    xs = np.arange(width, dtype=np.float64) + 0.5
    left, right = centre - 0.5 * car_w, centre + 0.5 * car_w

    body = _box_coverage(xs, ys, left, base_y - body_h, right, base_y - 0.08 * car_w)
    cabin = _box_coverage(xs, ys, left + 0.18 * car_w, base_y - body_h - cabin_h, right - 0.18 * car_w,
                          base_y - body_h + 0.5)
    window = _box_coverage(xs, ys, left + 0.24 * car_w, base_y - body_h - 0.8 * cabin_h, right - 0.24 * car_w,
                           base_y - body_h - 0.1 * cabin_h)
    wheel_w, wheel_h = 0.16 * car_w, 0.14 * car_w
    wheels = np.maximum(
        _box_coverage(xs, ys, left + 0.06 * car_w, base_y - wheel_h, left + 0.06 * car_w + wheel_w, base_y),
        _box_coverage(xs, ys, right - 0.06 * car_w - wheel_w, base_y - wheel_h, right - 0.06 * car_w, base_y),
    )
    lights = np.maximum(
        _box_coverage(xs, ys, left + 0.04 * car_w, base_y - 0.30 * car_w, left + 0.16 * car_w, base_y - 0.22 * car_w),
        _box_coverage(xs, ys, right - 0.16 * car_w, base_y - 0.30 * car_w, right - 0.04 * car_w, base_y - 0.22 * car_w),
    )
    # Deliberately off: saturated orange paint lifted past the scene's exposure, milky windows,
    # grey (not black) tyres, as if rendered under a different, warmer light.
    frame = _mix(frame, (1.00, 0.62, 0.30), np.maximum(body, cabin))
    frame = _mix(frame, (0.98, 0.90, 0.70), window)
    frame = _mix(frame, (0.45, 0.36, 0.30), wheels)
    frame = _mix(frame, (1.00, 0.92, 0.55), lights)
    return frame


def make_sample_frames(num_frames: int = 24, width: int = 256, height: int = 144, seed: int = 0) -> List[np.ndarray]:
    """Render the sample clip: ``num_frames`` uint8 ``[height, width, 3]`` RGB frames.

    Deterministic for a given (num_frames, width, height, seed). The defaults reproduce the
    committed ``sample_frames/``. width and height must be at least 16.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if width < 16 or height < 16:
        raise ValueError(f"width and height must be >= 16, got {width}x{height}")
    rng = np.random.default_rng(seed)
    pan = max(1, round(width / 128))  # whole pixels per frame: every frame is an exact crop
    world_width = width + pan * (num_frames - 1) + 1
    world = _panorama(rng, height, world_width)
    texture = _value_noise(rng, height, world_width, cell=max(height / 36.0, 1.5))
    asphalt = np.array([0.27, 0.28, 0.31])[None, None, :] * (0.9 + 0.2 * texture[:, :, None])
    road_world_x = 0.5 * width + 0.5 * pan * (num_frames - 1)  # centred mid-clip

    frames = []
    for index in range(num_frames):
        # The camera yaws right, so the world slides left past the view.
        shift = pan * index
        view = world[:, shift:shift + width].copy()
        road_x = road_world_x - shift
        view = _draw_road(view, road_x, phase=0.12 * index, asphalt=asphalt[:, shift:shift + width])
        view = view * np.array([0.92, 0.96, 1.04])  # cool grade on the scene only, not on the actor
        view = _draw_actor(view, index / max(num_frames - 1, 1), road_x)
        frames.append(np.clip(np.floor(view * 255.0 + 0.5), 0, 255).astype(np.uint8))
    return frames


def write_sample(out_dir: Union[str, os.PathLike], **kwargs) -> List[Path]:
    """Render the sample clip into ``out_dir`` as ``frame_000.png``, ``frame_001.png``, ... (atomically).

    kwargs are passed to :func:`make_sample_frames`. Returns the written paths in order.
    """

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(make_sample_frames(**kwargs)):
        path = out_dir / SAMPLE_NAME_FORMAT.format(index=index)
        atomic_save_png(path, image, compress_level=9)
        paths.append(path)
    return paths
