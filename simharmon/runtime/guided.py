"""He et al.'s colour guided filter, for ``stream.guided_output``.

The output keeps the guide's (the input frame's) detail, which is exact and flow-consistent, and
takes the filtered image's (the decoded frame's) local colour and exposure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["guided_filter"]

_PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))  # the symmetric 3x3 covariance's entries


def _box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over ``(2 radius + 1)^2`` windows, reflect borders, from running sums: O(1) per pixel."""
    size = 2 * radius + 1
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    running = F.pad(padded.cumsum(2), (0, 0, 1, 0))
    rows = running[:, :, size:] - running[:, :, :-size]
    running = F.pad(rows.cumsum(3), (1, 0))
    return (running[..., size:] - running[..., :-size]) / (size * size)


def guided_filter(guide: torch.Tensor, image: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """Colour guided filter of ``image`` with ``guide`` (both ``[B, 3, H, W]`` in [0, 1]), float32.

    Each output channel is locally an affine function of the guide's three channels: the ridge
    regression (``eps``) of ``image`` on the guide over each ``(2 radius + 1)^2`` window (reflect
    borders), averaged over the windows that cover a pixel. The 3x3 systems are solved in closed
    form (adjugate): a few milliseconds at 256x144, where kornia's ``guided_blur`` (batched solves,
    2-D pooling) took 300 ms.
    """
    guide, image = guide.float(), image.float()
    radius = min(radius, max(min(guide.shape[-2:]) - 1, 1))  # reflect padding needs radius < size
    products = torch.stack([guide[:, i] * guide[:, j] for i, j in _PAIRS], 1)
    cross = (image.unsqueeze(2) * guide.unsqueeze(1)).flatten(1, 2)  # [B, 9, H, W]: (out channel, guide channel)
    stats = _box_mean(torch.cat([guide, image, products, cross], dim=1), radius)
    mean_g, mean_i = stats[:, 0:3], stats[:, 3:6]
    variance = stats[:, 6:12] - torch.stack([mean_g[:, i] * mean_g[:, j] for i, j in _PAIRS], 1)
    cov = stats[:, 12:21].unflatten(1, (3, 3)) - mean_i.unsqueeze(2) * mean_g.unsqueeze(1)  # [B, out, guide, H, W]
    s00, s01, s02, s11, s12, s22 = variance.unbind(1)
    s00, s11, s22 = s00 + eps, s11 + eps, s22 + eps
    # Inverse of the symmetric system by its adjugate.
    c00, c01, c02 = s11 * s22 - s12 * s12, s02 * s12 - s01 * s22, s01 * s12 - s02 * s11
    c11, c12, c22 = s00 * s22 - s02 * s02, s01 * s02 - s00 * s12, s00 * s11 - s01 * s01
    det = s00 * c00 + s01 * c01 + s02 * c02
    inverse = torch.stack([torch.stack(row, 1) for row in ((c00, c01, c02), (c01, c11, c12), (c02, c12, c22))], 1)
    inverse = inverse / det[:, None, None]  # [B, 3, 3, H, W]
    a = torch.einsum("bgkhw,bokhw->boghw", inverse, cov)  # a[o, g] = sum_k inv[g, k] cov[o, k]
    b = mean_i - (a * mean_g.unsqueeze(1)).sum(2)
    coefficients = _box_mean(torch.cat([a.flatten(1, 2), b], dim=1), radius)
    return (coefficients[:, :9].unflatten(1, (3, 3)) * guide.unsqueeze(1)).sum(2) + coefficients[:, 9:]
