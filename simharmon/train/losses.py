"""Training losses: L2, the multi-scale VGG16 patch perceptual loss, and the temporal warping loss.

The perceptual loss uses VGG16 features from a LOCAL weights file only. Without one it is switched
off with a warning (``VggPerceptual.load`` returns None); it is never computed on random features.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from ..eval.perceptual import load_state_file
from ..eval.temporal import occlusion_mask

__all__ = ["foreground_l2_loss", "l2_loss", "VggPerceptual", "temporal_warping_loss", "warp_bilinear", "VGG_LAYERS"]

log = logging.getLogger(__name__)
# Indices in torchvision's vgg16().features right after relu1_2, relu2_2, relu3_3, relu4_3.
VGG_LAYERS = (3, 8, 15, 22)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def l2_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of two ``[B, 3, H, W]`` images (any range), as a float32 scalar."""
    return F.mse_loss(output.float(), target.float())


def foreground_l2_loss(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Squared error over the mask, divided by its area (METRICS.md fMSE, in the images' range).

    output, target: ``[B, 3, H, W]``; mask: ``[B, 1, H, W]`` in [0, 1]. Images without foreground
    add nothing; a batch without any returns 0.
    """
    mask = mask.float()
    error = (output.float() - target.float()).square().mean(dim=1, keepdim=True) * mask
    area = mask.sum(dim=(1, 2, 3))
    per_image = error.sum(dim=(1, 2, 3)) / area.clamp_min(1.0)
    return per_image.sum() / (area > 0).sum().clamp_min(1)


class VggPerceptual(nn.Module):
    """Sum over VGG16 layers of the mean squared feature difference, on random square patches.

    Built only by :meth:`load` from a local torchvision ``vgg16`` state dict (full, or just the
    ``features.*`` part). The network is frozen; gradients flow to the images.
    """

    def __init__(self, features: nn.Sequential, layer_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)):
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.layer_weights = tuple(float(w) for w in layer_weights)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def load(cls, path: Union[None, str, Path]) -> Optional[VggPerceptual]:
        """The loss from a local VGG16 weights file, or None (with a warning) when ``path`` is None."""
        if path is None:
            warnings.warn("no VGG16 weights given (train.vgg_weights): the perceptual loss is switched off",
                          stacklevel=2)
            return None


        state = load_state_file(path, "VGG16")
        if any(k.startswith("features.") for k in state):
            state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        features = make_layers(cfgs["D"])[: VGG_LAYERS[-1] + 1]  # vgg16().features, no classifier
        try:
            features.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise ValueError(f"{path} is not a torchvision vgg16 state dict: {str(exc)[:300]}") from exc
        missing = [k for k in features.state_dict() if k not in state]
        if missing:
            raise ValueError(f"{path} lacks VGG16 feature weights {missing[:4]}")
        return cls(features)

    def _features(self, image: torch.Tensor):
        x = (image * 0.5 + 0.5 - self.mean) / self.std  # model space [-1, 1] -> ImageNet statistics
        out = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in VGG_LAYERS:
                out.append(x)
        return out

    def forward(self, output: torch.Tensor, target: torch.Tensor, rng: np.random.Generator, patches: int = 2,
                side: Sequence[int] = (128, 512)) -> torch.Tensor:
        """Loss of ``output`` vs ``target`` (``[B, 3, H, W]`` in [-1, 1]) on ``patches`` random squares.

        Each patch side is drawn uniformly in ``side`` (clamped to the image), at one random position
        shared by the batch; the loss is averaged over patches.
        """
        height, width = output.shape[-2:]
        limit = min(height, width)
        total = output.new_zeros((), dtype=torch.float32)
        for _ in range(patches):
            low, high = min(side[0], limit), min(side[1], limit)
            k = int(rng.integers(low, high + 1))
            y, x = int(rng.integers(0, height - k + 1)), int(rng.integers(0, width - k + 1))
            a = self._features(output[..., y:y + k, x:x + k].float())
            with torch.no_grad():
                b = self._features(target[..., y:y + k, x:x + k].float())
            total = total + sum(w * F.mse_loss(fa, fb) for w, fa, fb in zip(self.layer_weights, a, b))
        return total / patches


def warp_bilinear(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` ``[B, C, H, W]`` at x + flow(x) (``flow [B, 2, H, W]`` pixels), border-clamped.

    Differentiable in ``image``, on its device. Written as ``a + w (b - a)`` so that an integer flow
    reproduces source values exactly (the same convention as ``simharmon.eval.temporal.warp``).
    """
    batch, channels, height, width = image.shape
    ys, xs = torch.meshgrid(torch.arange(height, device=image.device, dtype=torch.float32),
                            torch.arange(width, device=image.device, dtype=torch.float32), indexing="ij")
    x = (xs + flow[:, 0]).clamp(0, width - 1)
    y = (ys + flow[:, 1]).clamp(0, height - 1)
    x0, y0 = x.floor(), y.floor()
    wx, wy = (x - x0).unsqueeze(1).to(image.dtype), (y - y0).unsqueeze(1).to(image.dtype)
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
    flat = image.reshape(batch, channels, height * width)

    def gather(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        index = (yy * width + xx).reshape(batch, 1, -1).expand(batch, channels, -1)
        return flat.gather(2, index).reshape(batch, channels, height, width)

    top = gather(y0, x0) + wx * (gather(y0, x1) - gather(y0, x0))
    bottom = gather(y1, x0) + wx * (gather(y1, x1) - gather(y1, x0))
    return top + wy * (bottom - top)


def temporal_warping_loss(frame_t: torch.Tensor, frame_t1: torch.Tensor, flow_fw: torch.Tensor,
                          flow_bw: torch.Tensor) -> torch.Tensor:
    """Warping loss between consecutive outputs: ``frame_t1`` warped to t with F_{t->t+1} vs ``frame_t``.

    frame_t, frame_t1: ``[B, 3, H, W]`` (model space); flow_fw: F_{t->t+1} ``[B, 2, H, W]`` pixels,
    flow_bw: F_{t+1->t}. Occluded, motion-boundary and out-of-frame pixels are excluded (the rule of
    the warping-error metric, ``simharmon.eval.temporal``). Mean squared difference over visible
    pixels and channels; exactly 0 for outputs consistent under an integer flow; 0 when nothing is visible.
    """
    with torch.no_grad():  # the metric's occlusion rule runs on the CPU in float64
        visible = (~occlusion_mask(flow_fw.double().cpu(), flow_bw.double().cpu())).to(frame_t.device, torch.float32)
    flow = torch.nan_to_num(flow_fw.float(), nan=0.0, posinf=0.0, neginf=0.0).to(frame_t.device)
    warped = warp_bilinear(frame_t1.float(), flow)
    count = visible.sum() * frame_t.shape[1]
    if count.item() == 0:
        return (warped * 0.0).sum()
    return ((warped - frame_t.float()) ** 2 * visible).sum() / count
