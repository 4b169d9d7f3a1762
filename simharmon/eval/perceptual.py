"""Perceptual metrics that need pretrained networks: LPIPS and DINO-Struct-Dist, LOCAL weights only.

Nothing here downloads anything, and nothing ever runs with random weights: both metrics are
built only from files the user passes, and their absence is reported as "not computed".

LPIPS (Zhang et al. 2018, v0.1): the input in [-1, 1] is shifted and scaled per channel
(shift -0.030, -0.088, -0.188; scale 0.458, 0.448, 0.450), run through the torchvision AlexNet
(or VGG16) feature stack, and at five ReLU outputs the features are unit-normalized over channels;
the squared difference is weighted by the learned 1x1 "lin" heads, averaged over space and
summed over the layers. Two files: the torchvision backbone state dict and the LPIPS heads file
(keys ``lin0.model.1.weight`` ... ``lin4.model.1.weight``, as the lpips package ships them).

DINO-Struct-Dist (the paper's structure-preservation metric, after Tumanyan et al.'s Splice): the
keys of the last ViT block for all tokens (CLS included) of input and output, the cosine
self-similarity matrix of each, and the mean squared difference of the two matrices. Images are
resized so the short side is 224 (bicubic), cropped to a multiple of the patch size, and
normalized with the ImageNet statistics. The weights file is a DINO ViT state dict in the
facebookresearch/dino layout (``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.N.*``,
``norm``); the width, depth and patch size are read from it, heads = width / 64.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Union

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ..models.checkpoints import CheckpointError, load_torch_file

__all__ = ["LPIPS", "DinoStructDistance", "load_state_file"]

PathLike = Union[str, Path]
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
_NETS = {
    # name: (feature slices at the five ReLUs, channels of each)
    "alex": (((0, 2), (2, 5), (5, 8), (8, 10), (10, 12)), (64, 192, 384, 256, 256)),
    "vgg": (((0, 4), (4, 9), (9, 16), (16, 23), (23, 30)), (64, 128, 256, 512, 512)),
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def load_state_file(path: PathLike, what: str) -> Dict[str, torch.Tensor]:
    """Load a tensor state dict from a local file (weights-only unpickling), with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights file not found: {path}")
    try:
        state = load_torch_file(path, expected=f"{what} weights (a torch.save file)")
    except CheckpointError as exc:
        raise ValueError(f"cannot read {what} weights: {exc}") from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model", "teacher"):  # common wrappers of a training checkpoint
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a {what} state dict of tensors")
    for prefix in ("module.", "backbone."):  # DDP and DINO-teacher prefixes
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _to_tensor(image: np.ndarray, device: str) -> torch.Tensor:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"images must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().to(device) / 255.0


class LPIPS:
    """LPIPS distance from local backbone + heads files; ``lpips(a, b)`` on uint8 ``[H, W, 3]`` images."""

    def __init__(self, backbone: PathLike, heads: PathLike, device: str = "cpu"):
        head_state = load_state_file(heads, "LPIPS heads")
        try:
            weights = [head_state[f"lin{k}.model.1.weight"] for k in range(5)]
        except KeyError as exc:
            raise ValueError(f"{heads} has no LPIPS head {exc}; expected lin0.model.1.weight ... lin4") from exc
        channels = tuple(int(w.shape[1]) for w in weights)
        net = next((name for name, (_, chans) in _NETS.items() if chans == channels), None)
        if net is None:
            raise ValueError(f"LPIPS heads in {heads} have channels {channels}: neither AlexNet nor VGG16")
        model = torchvision.models.alexnet(weights=None) if net == "alex" else torchvision.models.vgg16(weights=None)
        state = load_state_file(backbone, f"LPIPS {net} backbone")
        target = model if any(k.startswith("features.") for k in state) else model.features
        try:
            missing, unexpected = target.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise ValueError(f"{backbone} does not fit torchvision's {net}: {str(exc)[:300]}") from exc
        missing = [k for k in missing if k.startswith("features.") or target is model.features]
        if missing or unexpected:
            raise ValueError(f"{backbone} does not fit torchvision's {net} features: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
        slices, _ = _NETS[net]
        self.net = net
        self.stages = [model.features[a:b].to(device).eval().requires_grad_(False) for a, b in slices]
        self.heads = [w.float().to(device) for w in weights]
        self.shift = torch.tensor(_LPIPS_SHIFT, device=device).view(1, 3, 1, 1)
        self.scale = torch.tensor(_LPIPS_SCALE, device=device).view(1, 3, 1, 1)
        self.device = device

    def _features(self, image: np.ndarray):
        x = (_to_tensor(image, self.device) * 2.0 - 1.0 - self.shift) / self.scale
        for stage in self.stages:
            x = stage(x)
            yield x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)

    def __call__(self, image_a: np.ndarray, image_b: np.ndarray) -> float:
        if image_a.shape != image_b.shape:
            raise ValueError(f"images differ in shape: {list(image_a.shape)} vs {list(image_b.shape)}")
        with torch.inference_mode():
            total = 0.0
            for head, fa, fb in zip(self.heads, self._features(image_a), self._features(image_b)):
                total += float(F.conv2d((fa - fb) ** 2, head).mean())
        return total


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, hidden)
        self.mlp.fc2 = nn.Linear(hidden, dim)

    def qkv(self, x: torch.Tensor):
        batch, tokens, dim = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        return qkv.permute(2, 0, 3, 1, 4)  # [3, B, heads, T, head_dim]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(x.shape)
        x = x + self.attn.proj(attended)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class DinoStructDistance:
    """DINO-Struct-Dist from a local DINO ViT state dict; ``dist(input, output)`` on uint8 images."""

    def __init__(self, weights: PathLike, device: str = "cpu", short_side: int = 224):
        state = load_state_file(weights, "DINO ViT")
        try:
            proj = state["patch_embed.proj.weight"]
            dim, patch = int(proj.shape[0]), int(proj.shape[-1])
            depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
            hidden = int(state["blocks.0.mlp.fc1.weight"].shape[0])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{weights} is not a DINO ViT state dict (facebookresearch/dino layout): {exc}") from exc
        module = nn.Module()
        module.patch_embed = nn.Module()
        module.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        module.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        module.pos_embed = nn.Parameter(torch.zeros_like(state["pos_embed"]))
        module.blocks = nn.ModuleList(_Block(dim, max(dim // 64, 1), hidden) for _ in range(depth))
        module.norm = nn.LayerNorm(dim, eps=1e-6)
        wanted = {k: v for k, v in state.items() if not k.startswith("head.")}
        try:
            module.load_state_dict(wanted, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{weights} does not fit a DINO ViT: {str(exc)[:300]}") from exc
        self.model = module.to(device).eval().requires_grad_(False)
        self.patch, self.short_side, self.device = patch, short_side, device
        self.mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(_IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def _positions(self, rows: int, cols: int) -> torch.Tensor:
        pos = self.model.pos_embed
        cls_pos, grid = pos[:, :1], pos[:, 1:]
        side = int(math.isqrt(grid.shape[1]))
        grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        if (rows, cols) != (side, side):
            grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, grid.flatten(2).transpose(1, 2)], dim=1)

    def self_similarity(self, image: np.ndarray) -> torch.Tensor:
        """Cosine self-similarity ``[T, T]`` of the last block's keys (all heads concatenated)."""
        x = _to_tensor(image, self.device)
        height, width = x.shape[-2:]
        scale = self.short_side / min(height, width)
        size = (max(self.patch, round(height * scale)), max(self.patch, round(width * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
        rows, cols = size[0] // self.patch, size[1] // self.patch
        x = ((x - self.mean) / self.std)[..., : rows * self.patch, : cols * self.patch]
        with torch.inference_mode():
            tokens = self.model.patch_embed.proj(x).flatten(2).transpose(1, 2)
            tokens = torch.cat([self.model.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
            tokens = tokens + self._positions(rows, cols)
            for block in self.model.blocks[:-1]:
                tokens = block(tokens)
            keys = self.model.blocks[-1].qkv(tokens)[1]  # [B, heads, T, head_dim]
            keys = keys.transpose(1, 2).reshape(keys.shape[0], keys.shape[2], -1)[0]
            keys = F.normalize(keys, dim=-1)
            return keys @ keys.T

    def __call__(self, image_in: np.ndarray, image_out: np.ndarray) -> float:
        if image_in.shape != image_out.shape:
            raise ValueError(f"images differ in shape: {list(image_in.shape)} vs {list(image_out.shape)}")
        return float(F.mse_loss(self.self_similarity(image_out), self.self_similarity(image_in)))
