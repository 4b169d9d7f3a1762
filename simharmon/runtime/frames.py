"""Conversions between 8-bit frames and model tensors.

Model space is [-1, 1] (ToTensor then Normalize(0.5, 0.5), as the release does). Enhanced outputs
are quantized the way the release writes them: clamp to [0, 1], then ``x * 255`` truncated to
uint8 (torchvision's ToPILImage on float tensors). The release reloads those 8-bit files as its
temporal references, so quantizing the same way is part of being exact to it.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "check_frame",
    "uint8_hwc_to_frame",
    "frame_to_uint8_hwc",
    "quantize_like_release",
    "frame_to_model",
    "model_to_frame",
]


def check_frame(frame: torch.Tensor, name: str = "frame") -> torch.Tensor:
    """Validate ``frame: [B, 3, H, W]`` (or ``[3, H, W]``) floating point; returns the 4-D view."""
    if not isinstance(frame, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(frame).__name__}")
    if frame.dim() == 3:
        frame = frame.unsqueeze(0)
    if frame.dim() != 4 or frame.shape[1] != 3:
        raise ValueError(f"{name} must have shape [B, 3, H, W] or [3, H, W], got {list(frame.shape)}")
    if not frame.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor in [0, 1], got dtype {frame.dtype}; "
            "convert uint8 images with simharmon.runtime.frames.uint8_hwc_to_frame"
        )
    return frame


def uint8_hwc_to_frame(image, device: torch.device | str | None = None) -> torch.Tensor:
    """``image: [H, W, 3]`` or ``[B, H, W, 3]`` uint8 (numpy or torch) -> ``[B, 3, H, W]`` float32 in [0, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"image must be a numpy array or torch tensor, got {type(image).__name__}")
    if tensor.dtype != torch.uint8:
        raise TypeError(f"image must be uint8, got {tensor.dtype}")
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 4 or tensor.shape[-1] != 3:
        raise ValueError(f"image must have shape [H, W, 3] or [B, H, W, 3], got {list(tensor.shape)}")
    return tensor.to(device=device).permute(0, 3, 1, 2).float().div(255.0)


def quantize_like_release(frame: torch.Tensor) -> torch.Tensor:
    """``frame: [B, 3, H, W]`` float -> the same float frame on 8-bit levels (clamp, then truncate)."""
    return frame.clamp(0.0, 1.0).mul(255.0).to(torch.uint8).to(frame.dtype).div(255.0)


def frame_to_uint8_hwc(frame: torch.Tensor) -> np.ndarray:
    """``frame: [B, 3, H, W]`` float in [0, 1] -> numpy ``[B, H, W, 3]`` uint8 (release quantization)."""
    frame = check_frame(frame)
    return frame.detach().clamp(0.0, 1.0).mul(255.0).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def frame_to_model(frame: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``frame: [B, 3, H, W]`` in [0, 1] -> model space [-1, 1] in ``dtype``."""
    # Normalize in float32, then cast: the release casts after torchvision's Normalize.
    return ((frame.float() - 0.5) / 0.5).to(dtype)


def model_to_frame(image: torch.Tensor) -> torch.Tensor:
    """Model space ``[B, 3, H, W]`` in [-1, 1] -> float32 frame in [0, 1], release-quantized."""
    return quantize_like_release(image.float() * 0.5 + 0.5)
