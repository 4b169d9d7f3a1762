"""Adapter for gsplat's ``rasterization()`` output (gsplat is not a dependency).

``rasterization(..., render_mode=...)`` returns ``(render_colors, render_alphas, meta)``:
render_colors ``[..., C, H, W, X]`` (channels last; with "RGB+D" / "RGB+ED" the last channel is
depth, so X = 4 for RGB), render_alphas ``[..., C, H, W, 1]``. Each of the C cameras (and each
leading batch index) is its own stream. Depth and alphas are handed back untouched; the colors
tensor is rebuilt with the enhanced RGB and the original extra channels.

The actor mask: render_alphas is the opacity of the whole scene, not of the inserted actors, so it
is never used as the mask. Give each Gaussian an extra colour feature that is 1 on the inserted
actors and 0 elsewhere; rasterized, that channel is the actors' opacity: ``mask_channel`` names its
index in X (e.g. 3 for colors ``[R, G, B, actor]`` in "RGB" mode, or ``[R, G, B, actor, D]`` in
"RGB+D" mode). Without it, pass ``mask=`` to the hook call.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from .post_render import RenderedFrames

__all__ = ["GsplatAdapter", "RENDER_MODES"]

RENDER_MODES: Tuple[str, ...] = ("RGB", "RGB+D", "RGB+ED")


class GsplatAdapter:
    """Frames from ``(render_colors, render_alphas, meta)`` (or render_colors alone).

    render_mode: the mode passed to ``rasterization``: "RGB", "RGB+D" or "RGB+ED" ("D" and "ED"
        render no image). The RGB channels are the first three of X.
    clamp: clamp RGB to [0, 1] first (gsplat does not clamp; the model expects [0, 1]). This is
        the one new buffer the adapter makes before the model; with clamp=False it passes views.
    """

    def __init__(self, render_mode: str = "RGB", clamp: bool = True, mask_channel: Optional[int] = None):
        if render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {list(RENDER_MODES)} (D and ED render no image), "
                             f"got {render_mode!r}")
        if mask_channel is not None and mask_channel < 3:
            raise ValueError(f"mask_channel must index an extra channel after RGB (>= 3), got {mask_channel}")
        self.render_mode = render_mode
        self.has_depth = render_mode != "RGB"
        self.clamp = clamp
        self.mask_channel = mask_channel

    def _colors(self, output: Any) -> torch.Tensor:
        colors = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(colors, torch.Tensor) or colors.dim() < 4:
            raise ValueError(f"render_colors must be a tensor [..., C, H, W, X], got "
                             f"{list(colors.shape) if isinstance(colors, torch.Tensor) else type(colors).__name__}")
        channels = colors.shape[-1]
        needed = 4 if self.has_depth else 3
        if self.mask_channel is not None:
            needed = max(needed, self.mask_channel + 1 + int(self.has_depth))
        if channels < needed:
            raise ValueError(f"render_mode {self.render_mode!r} needs at least {needed} channels in render_colors "
                             f"[..., C, H, W, X], got X = {channels}")
        if not colors.is_floating_point():
            raise TypeError(f"render_colors must be floating point, got {colors.dtype}")
        return colors

    def extract(self, output: Any) -> RenderedFrames:
        """``images`` ``[N, 3, H, W]`` with N = prod(leading dims) * C; depth ``[N, H, W, 1]`` (a view of
        the last channel) or None; mask ``[N, H, W, 1]`` (the ``mask_channel`` view, clamped) or None."""
        colors = self._colors(output)
        height, width, channels = colors.shape[-3:]
        flat = colors.reshape(-1, height, width, channels)  # a view for gsplat's contiguous output
        images = flat[..., :3].permute(0, 3, 1, 2)
        if self.clamp:
            images = images.clamp(0.0, 1.0)
        depth = flat[..., -1:] if self.has_depth else None
        mask = None
        if self.mask_channel is not None:
            mask = flat[..., self.mask_channel:self.mask_channel + 1].clamp(0.0, 1.0)
        return RenderedFrames(images, depth, mask)

    def rebuild(self, output: Any, enhanced: torch.Tensor) -> Any:
        """The output with render_colors' RGB replaced; alphas and meta are the same objects."""
        colors = self._colors(output)
        rgb = enhanced.permute(0, 2, 3, 1).reshape(*colors.shape[:-1], 3).to(colors.dtype)
        new_colors = rgb if colors.shape[-1] == 3 else torch.cat([rgb, colors[..., 3:]], dim=-1)
        if isinstance(output, (tuple, list)):
            return type(output)([new_colors, *output[1:]])
        return new_colors
