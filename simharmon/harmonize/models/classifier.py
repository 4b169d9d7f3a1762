"""DiffHarmony++'s harmony classifier: a torchvision ResNet with a 2-class head.

Published layout (``checkpoints/harmony_classifier/model_state_dict.pth``): the plain torchvision
``resnet50`` state dict with ``fc`` replaced by ``Linear(2048, 2)``. Input: RGB resized to 256x256
(bilinear, antialiased), ``ToTensor`` then ImageNet normalization. Class 1 = "composite"
(inharmonious); the softmax of class 1 is the score used to pick candidates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch
import torch.nn.functional as F
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from ...models.checkpoints import CheckpointError, LoadReport, load_state_strict

__all__ = ["ARCHES", "IMAGENET_MEAN", "IMAGENET_STD", "HarmonyClassifier", "build_classifier", "load_classifier"]

ARCHES = ("resnet50", "resnet18")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class HarmonyClassifier(nn.Module):
    """``forward(image)``: float ``[N, 3, H, W]`` in [0, 1] -> logits ``[N, 2]`` (resize + normalize inside).

    input_size: the side the image is resized to (256 as published).
    """

    def __init__(self, arch: str = "resnet50", input_size: int = 256) -> None:
        super().__init__()
        if arch not in ARCHES:
            raise ValueError(f"classifier arch must be one of {ARCHES}, got {arch!r}")
        if input_size < 32:
            raise ValueError(f"classifier input_size must be >= 32, got {input_size}")
        self.arch, self.input_size = arch, input_size
        self.net = getattr(torchvision.models, arch)(weights=None, num_classes=2)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def prepare(self, image: Tensor) -> Tensor:
        """[N, 3, H, W] in [0, 1] -> normalized [N, 3, S, S]."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"classifier input must be [N, 3, H, W], got {list(image.shape)}")
        if tuple(image.shape[-2:]) != (self.input_size, self.input_size):
            image = F.interpolate(image, size=(self.input_size, self.input_size), mode="bilinear",
                                  align_corners=False, antialias=True)
        return (image - self.mean) / self.std

    def forward(self, image: Tensor) -> Tensor:
        return self.net(self.prepare(image))

    @torch.no_grad()
    def composite_probability(self, image: Tensor) -> Tensor:
        """P(composite) per image, ``[N]``."""
        return self.forward(image).softmax(dim=-1)[:, 1]


def build_classifier(arch: str = "resnet50", input_size: int = 256) -> HarmonyClassifier:
    """A randomly initialized classifier."""
    return HarmonyClassifier(arch, input_size)


def _read_state(path: Path) -> Dict[str, Tensor]:
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file (corrupt or truncated?): {exc}") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip / pickle errors come in many types
        raise CheckpointError(f"{path}: not a readable torch state dict (corrupt or truncated?): "
                              f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def load_classifier(path: str | Path, input_size: int = 256) -> tuple[HarmonyClassifier, LoadReport]:
    """Load a harmony classifier state dict strictly; the architecture is read from the keys' shapes.

    Accepts the published ``model_state_dict.pth`` (torchvision keys, no prefix) and our
    ``.safetensors`` export of ``HarmonyClassifier.net``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"classifier weights not found: {path}")
    state = _read_state(path)
    fc = state.get("fc.weight")
    if fc is None:
        raise CheckpointError(f"{path}: no 'fc.weight': not a torchvision ResNet state dict "
                              f"(first keys: {list(state)[:8]})")
    if fc.dim() != 2 or fc.shape[0] != 2:
        raise CheckpointError(f"{path}: fc.weight is {list(fc.shape)}; a harmony classifier has 2 classes")
    arch = {2048: "resnet50", 512: "resnet18"}.get(int(fc.shape[1]))
    if arch is None:
        raise CheckpointError(f"{path}: fc.weight {list(fc.shape)} matches no supported ResNet ({ARCHES})")
    model = HarmonyClassifier(arch, input_size)
    report = load_state_strict(model.net, state, f"{path.name} ({arch})")
    return model.eval().requires_grad_(False), report
