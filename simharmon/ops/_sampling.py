"""Bilinear sampling in torch, written to match ``kernels/common.cuh`` operation for operation.

Pixel centres sit at integer coordinates (``grid_sample``'s ``align_corners=True``, in pixels).
Zero padding drops taps outside the image; border padding clamps the position into the image
first. ``inside`` is the summed weight of the in-bounds taps at the unclamped position (both
paddings), 0 for non-finite positions. Products and sums run in the same order as the kernels, so
in fp32 the two agree to the bit (FMA contraction is disabled there).
"""

from __future__ import annotations

from typing import List, Tuple

import torch


def pixel_grid(height: int, width: int, dtype: torch.dtype, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` pixel coordinates, each ``[H, W]``."""
    ys = torch.arange(height, dtype=dtype, device=device).view(height, 1).expand(height, width)
    xs = torch.arange(width, dtype=dtype, device=device).view(1, width).expand(height, width)
    return xs, ys


def _weights(sx: torch.Tensor, sy: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor) -> List[torch.Tensor]:
    fx, fy = sx - x0, sy - y0
    gx, gy = 1.0 - fx, 1.0 - fy
    return [gx * gy, fx * gy, gx * fy, fx * fy]


def _in_range(sx: torch.Tensor, sy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return (sx > -1) & (sx < width) & (sy > -1) & (sy < height)


def inside_weight(sx: torch.Tensor, sy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Summed bilinear weight of the in-bounds taps at ``(sx, sy)`` (``[N, H, W]`` each)."""
    ok = _in_range(sx, sy, height, width)
    sx, sy = torch.where(ok, sx, 0.0), torch.where(ok, sy, 0.0)
    x0, y0 = torch.floor(sx), torch.floor(sy)
    w = _weights(sx, sy, x0, y0)
    in_x = (x0 >= 0, x0 + 1 <= width - 1)
    in_y = (y0 >= 0, y0 + 1 <= height - 1)
    total = torch.zeros_like(sx)
    for k in range(4):
        total = total + torch.where(ok & in_x[k & 1] & in_y[k >> 1], w[k], 0.0)
    return total


def bilinear(src: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, border: bool) -> torch.Tensor:
    """Sample ``src: [N, C, H, W]`` at ``(sx, sy): [N, H', W']`` -> ``[N, C, H', W']`` in src's dtype."""
    n, c, height, width = src.shape
    finite = torch.isfinite(sx) & torch.isfinite(sy)
    if border:
        taps_ok = finite
        sx = sx.clamp(0, width - 1)
        sy = sy.clamp(0, height - 1)
    else:
        taps_ok = finite & _in_range(sx, sy, height, width)
    sx, sy = torch.where(taps_ok, sx, 0.0), torch.where(taps_ok, sy, 0.0)
    x0, y0 = torch.floor(sx), torch.floor(sy)
    w = _weights(sx, sy, x0, y0)
    xi, yi = x0.long(), y0.long()
    flat = src.reshape(n, c, height * width)
    out = torch.zeros((n, c) + tuple(sx.shape[1:]), dtype=src.dtype, device=src.device)
    for k in range(4):
        x, y = xi + (k & 1), yi + (k >> 1)
        if border:
            x, y = x.clamp(max=width - 1), y.clamp(max=height - 1)
        use = taps_ok & (x >= 0) & (x < width) & (y >= 0) & (y < height)
        index = (y.clamp(0, height - 1) * width + x.clamp(0, width - 1)).reshape(n, 1, -1).expand(n, c, -1)
        value = torch.gather(flat, 2, index).reshape(out.shape)
        out = out + torch.where(use.unsqueeze(1), w[k].unsqueeze(1) * value, 0.0)
    return out
