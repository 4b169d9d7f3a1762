"""Per-image harmonization metrics, iHarmony4 convention (shared/reference/METRICS.md).

All scores are on 8-bit levels (values 0..255), after resizing output, ground truth and mask to
256x256 the way the public iHarmony4 evaluation scripts do:

* images: PIL bicubic resize of the uint8 image (the result is uint8 again, as PIL returns it);
* mask: binarized at 0.5 (PIL's mode "1"), then resized nearest-neighbour (PIL always resizes
  mode "1" images with NEAREST), so the mask stays binary. Resizing a soft mask bilinearly would
  change fMSE (METRICS.md caveat);
* nothing is resized when the frame already is 256x256.

Definitions (METRICS.md): MSE over all pixels and channels; PSNR = 10 log10(255^2 / MSE) with
data range 255 (never the output's own range); fMSE = sum(M (out - G)^2) / (3 sum(M)); bMSE the
same with 1 - M; SSIM is kornia's Gaussian-window SSIM (window 11, data range 255), mean over the
map. Foreground ratio = sum(M) / (256 * 256) after resizing; bins 0-5 %, 5-15 %, 15-100 %.
The output is scored as it is: the ground-truth background is never pasted in ("use_gt_bg" off).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from kornia.metrics import ssim as kornia_ssim
from PIL import Image

__all__ = [
    "EVAL_SIZE",
    "FG_BINS",
    "ImageScores",
    "resize_image",
    "resize_mask",
    "binarize_mask",
    "mse",
    "psnr",
    "fmse",
    "bmse",
    "ssim",
    "fg_ratio",
    "fg_bin",
    "score_image",
]

EVAL_SIZE = 256
# (label, lower bound exclusive except for the first, upper bound inclusive), as fractions of the image.
FG_BINS: Tuple[Tuple[str, float, float], ...] = (("0-5%", 0.0, 0.05), ("5-15%", 0.05, 0.15), ("15-100%", 0.15, 1.0))


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        what = f"{image.dtype} {list(image.shape)}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{name} must be a uint8 array [H, W, 3], got {what}")
    return image


def resize_image(image: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> uint8 ``[size, size, 3]`` (PIL bicubic); returned unchanged at that size."""
    image = _check_image(image, "image")
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """``mask: [H, W]`` float in [0, 1] or uint8 in [0, 255] -> bool ``[H, W]`` (foreground at >= half)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got {list(mask.shape)}")
    if mask.dtype == bool:
        return mask
    if mask.dtype == np.uint8:
        return mask >= 128
    return mask >= 0.5


def resize_mask(mask: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """Binarize ``mask: [H, W]`` and resize it nearest-neighbour to ``[size, size]`` (bool)."""
    binary = binarize_mask(mask)
    if binary.shape == (size, size):
        return binary
    picture = Image.fromarray(binary.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(picture) >= 128


def _squared_error(out: np.ndarray, gt: np.ndarray) -> np.ndarray:
    if out.shape != gt.shape:
        raise ValueError(f"output {list(out.shape)} and ground truth {list(gt.shape)} differ in shape")
    return (out.astype(np.float64) - gt.astype(np.float64)) ** 2


def mse(out: np.ndarray, gt: np.ndarray) -> float:
    """Mean over all pixels and RGB channels of ``(out - gt)^2``; ``[H, W, 3]`` arrays on 0..255 levels."""
    return float(_squared_error(out, gt).mean())


def psnr(mse_value: float) -> float:
    """10 log10(255^2 / MSE) with data range 255; ``inf`` when the MSE is 0."""
    if mse_value < 0 or math.isnan(mse_value):
        raise ValueError(f"MSE must be >= 0, got {mse_value}")
    return math.inf if mse_value == 0 else 10.0 * math.log10(255.0**2 / mse_value)


def _masked_mse(out: np.ndarray, gt: np.ndarray, weight: np.ndarray) -> Optional[float]:
    weight = weight.astype(np.float64)
    if weight.shape != out.shape[:2]:
        raise ValueError(f"mask {list(weight.shape)} does not match the image {list(out.shape[:2])}")
    area = float(weight.sum())
    if area == 0:
        return None  # undefined: no pixel in the region
    return float((_squared_error(out, gt) * weight[:, :, None]).sum() / (area * 3.0))


def fmse(out: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> Optional[float]:
    """Foreground MSE: ``sum(M (out - gt)^2) / (3 sum(M))`` (None when the mask is empty).

    out, gt: ``[H, W, 3]`` on 0..255 levels; mask: ``[H, W]`` bool or weights in [0, 1].
    """
    return _masked_mse(out, gt, np.asarray(mask))


def bmse(out: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> Optional[float]:
    """Background MSE: fMSE with ``1 - M`` (None when the mask covers everything)."""
    return _masked_mse(out, gt, 1.0 - np.asarray(mask, dtype=np.float64))


def ssim(out: np.ndarray, gt: np.ndarray) -> float:
    """Mean of kornia's SSIM map (Gaussian window 11, sigma 1.5, data range 255) over RGB ``[H, W, 3]`` images."""

    if out.shape != gt.shape:
        raise ValueError(f"output {list(out.shape)} and ground truth {list(gt.shape)} differ in shape")
    a = torch.from_numpy(np.array(out, dtype=np.float64)).permute(2, 0, 1)[None]
    b = torch.from_numpy(np.array(gt, dtype=np.float64)).permute(2, 0, 1)[None]
    return float(kornia_ssim(a, b, 11, max_val=255.0).mean())


def fg_ratio(mask: np.ndarray) -> float:
    """Foreground fraction of the image area: ``sum(M) / (H W)``."""
    mask = np.asarray(mask, dtype=np.float64)
    return float(mask.sum() / mask.size)


def fg_bin(ratio: float) -> Optional[str]:
    """The foreground-ratio bin label of ``ratio`` (a fraction); None when there is no foreground."""
    if ratio <= 0:
        return None
    for label, _low, high in FG_BINS:
        if ratio <= high:
            return label
    return FG_BINS[-1][0]


@dataclass(frozen=True)
class ImageScores:
    """Scores of one output frame against its ground truth (None = undefined or not available)."""

    mse: float
    psnr: float
    ssim: float
    fmse: Optional[float] = None
    bmse: Optional[float] = None
    fg_ratio: Optional[float] = None
    fg_bin: Optional[str] = None

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)


def score_image(out: np.ndarray, gt: np.ndarray, mask: Optional[np.ndarray] = None,
                size: int = EVAL_SIZE) -> ImageScores:
    """All per-image scores of ``out`` against ``gt`` at ``size`` x ``size`` (iHarmony4 convention).

    out, gt: uint8 ``[H, W, 3]``; mask: ``[H, W]`` (bool, float in [0, 1] or uint8), None when the
    drive has no actor mask (then fMSE, bMSE and the foreground ratio are None).
    """
    out = resize_image(_check_image(out, "output"), size)
    gt = resize_image(_check_image(gt, "ground truth"), size)
    error = mse(out, gt)
    scores = {"mse": error, "psnr": psnr(error), "ssim": ssim(out, gt)}
    if mask is not None:
        small = resize_mask(mask, size)
        ratio = fg_ratio(small)
        scores.update(fmse=fmse(out, gt, small), bmse=bmse(out, gt, small), fg_ratio=ratio, fg_bin=fg_bin(ratio))
    return ImageScores(**scores)
