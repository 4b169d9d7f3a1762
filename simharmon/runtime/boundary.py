"""uint8 frames at the runtime boundary (``StreamingEnhancer.step_uint8``).

Frames arrive from renderers as interleaved 8-bit pixels (RGB, RGBA or BGRA) and leave the same
way. ``simharmon.ops.pack`` / ``unpack`` convert in one pass each; these helpers validate the input
and handle the region-limited output, which is blended on [0, 1] frames.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from ..ops import LAYOUTS

__all__ = ["as_uint8_frames", "levels_to_hwc", "hwc_to_unit_frame"]


def as_uint8_frames(image, layout: str) -> Tuple[torch.Tensor, bool]:
    """``image``: uint8 ``[B, H, W, C]`` or ``[H, W, C]``, numpy or torch -> (4-D tensor, was 3-D)."""
    if layout not in LAYOUTS:
        raise ValueError(f"step_uint8: layout must be one of {tuple(LAYOUTS)}, got {layout!r}")
    tensor = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"step_uint8: image must be a numpy array or torch tensor, got {type(image).__name__}")
    if tensor.dtype != torch.uint8:
        raise TypeError(f"step_uint8: image must be uint8, got {tensor.dtype}")
    squeeze = tensor.dim() == 3
    if squeeze:
        tensor = tensor.unsqueeze(0)
    channels = LAYOUTS[layout][0]
    if tensor.dim() != 4 or tensor.shape[-1] != channels:
        raise ValueError(f"step_uint8: a {layout!r} image must have shape [B, H, W, {channels}] or "
                         f"[H, W, {channels}], got {list(image.shape)}")
    return tensor, squeeze


def hwc_to_unit_frame(image: torch.Tensor, layout: str) -> torch.Tensor:
    """uint8 ``[B, H, W, C]`` -> RGB ``[B, 3, H, W]`` float32 in [0, 1] (as ``uint8_hwc_to_frame``)."""
    _, order, _ = LAYOUTS[layout]
    return image[..., list(order)].permute(0, 3, 1, 2).float().div(255.0)


def levels_to_hwc(frame: torch.Tensor, layout: str) -> torch.Tensor:
    """``frame: [B, 3, H, W]`` float32 on 8-bit levels -> uint8 ``[B, H, W, C]`` in ``layout`` (alpha 255).

    ``x * 255`` truncated recovers every level ``k / 255`` exactly, so this is lossless.
    """
    channels, order, alpha = LAYOUTS[layout]
    levels = frame.clamp(0.0, 1.0).mul(255.0).to(torch.uint8).permute(0, 2, 3, 1)
    batch, height, width, _ = levels.shape
    out = torch.empty((batch, height, width, channels), dtype=torch.uint8, device=frame.device)
    out[..., list(order)] = levels
    if alpha >= 0:
        out[..., alpha] = 255
    return out
