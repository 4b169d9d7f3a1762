"""ISP modification of a masked foreground (the paper's main harmonization data source).

The whole image goes through a small software ISP with random settings; the result replaces the
source only where the mask is non-zero:  I_mix = M * I_isp + (1 - M) * I.  Pixels where M == 0
are copied from the source, so the background is bit-identical to it.

The ISP works in approximately linear light (sRGB gamma 2.2 removed first) and applies, in order:
exposure (EV), white balance (temperature: red/blue gains; tint: green gain), a tone curve
(a blend towards Reinhard's x / (1 + x), renormalized so white stays white), gamma, contrast
around mid-grey, saturation (mix with Rec. 709 luma) and sensor noise (shot + read noise).
Every random draw comes from one ``numpy.random.Generator``, so a seed fixes the result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Tuple

import numpy as np

__all__ = ["IspParams", "IspRanges", "DEFAULT_RANGES", "sample_isp_params", "apply_isp", "composite", "isp_composite", "as_mask"]

_LUMA = np.array([0.2126, 0.7152, 0.0722])
_DISPLAY_GAMMA = 2.2


@dataclass(frozen=True)
class IspParams:
    """One ISP setting. Neutral values: 0, 0, 0, 0, 1, 1, 1, 0."""

    exposure_ev: float = 0.0  # stops; gain 2**ev in linear light
    temperature: float = 0.0  # > 0 warmer (red up, blue down), in [-1, 1]
    tint: float = 0.0  # > 0 more magenta (green down), in [-1, 1]
    tone: float = 0.0  # 0 = linear, 1 = full Reinhard tone mapping
    gamma: float = 1.0  # extra display gamma (output = x ** (1 / gamma))
    contrast: float = 1.0  # slope around mid-grey
    saturation: float = 1.0  # 0 = grey, 1 = unchanged
    noise: float = 0.0  # sensor noise level in linear [0, 1] units (shot noise variance noise * x / 2)

    def to_dict(self) -> Dict[str, float]:
        """Plain mapping, for the manifest's provenance record."""
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class IspRanges:
    """Uniform sampling ranges (low, high) of each ISP parameter."""

    exposure_ev: Tuple[float, float] = (-1.5, 1.5)
    temperature: Tuple[float, float] = (-0.35, 0.35)
    tint: Tuple[float, float] = (-0.2, 0.2)
    tone: Tuple[float, float] = (0.0, 0.8)
    gamma: Tuple[float, float] = (0.7, 1.4)
    contrast: Tuple[float, float] = (0.7, 1.4)
    saturation: Tuple[float, float] = (0.4, 1.6)
    noise: Tuple[float, float] = (0.0, 0.02)

    def __post_init__(self) -> None:
        for name, (low, high) in asdict(self).items():
            if not low <= high:
                raise ValueError(f"isp range {name} needs low <= high, got ({low}, {high})")


DEFAULT_RANGES = IspRanges()


def sample_isp_params(rng: np.random.Generator, ranges: IspRanges = DEFAULT_RANGES, min_change_ev: float = 0.0) -> IspParams:
    """Draw one IspParams from ``ranges``. ``min_change_ev`` rejects exposures closer than that to 0."""
    values = {}
    for name, (low, high) in asdict(ranges).items():
        values[name] = float(rng.uniform(low, high))
    if min_change_ev > 0 and abs(values["exposure_ev"]) < min_change_ev:
        values["exposure_ev"] = float(np.copysign(min_change_ev, values["exposure_ev"] or 1.0))
    return IspParams(**values)


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be a uint8 [H, W, 3] array, got {getattr(image, 'dtype', type(image))} "
                         f"{list(getattr(image, 'shape', []))}")
    return image


def as_mask(mask: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Foreground weights float64 ``[H, W]`` in [0, 1] from a bool, uint8 (0..255) or float mask.

    A mask with a channel axis (``[H, W, C]``) uses its first channel. Raises if the size differs.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    if mask.shape != tuple(shape):
        raise ValueError(f"mask size {mask.shape[1]}x{mask.shape[0]} (WxH) does not match the image "
                         f"{shape[1]}x{shape[0]}")
    if mask.dtype == np.uint8:
        return mask.astype(np.float64) / 255.0
    return np.clip(mask.astype(np.float64), 0.0, 1.0)


def apply_isp(image: np.ndarray, params: IspParams, rng: np.random.Generator) -> np.ndarray:
    """Run the whole ``image`` (uint8 ``[H, W, 3]``) through the ISP; returns uint8 ``[H, W, 3]``.

    ``rng`` provides the sensor noise (used only when ``params.noise > 0``).
    """
    x = (_check_image(image).astype(np.float64) / 255.0) ** _DISPLAY_GAMMA
    x = x * 2.0 ** params.exposure_ev
    gains = np.array([1.0 + 0.5 * params.temperature, 1.0 - 0.5 * params.tint, 1.0 - 0.5 * params.temperature])
    x = x * gains
    if params.tone > 0:
        # Reinhard curve renormalized so that 1 maps to 1, blended in by ``tone``.
        mapped = x * 2.0 / (1.0 + x)
        x = (1.0 - params.tone) * x + params.tone * mapped
    if params.noise > 0:
        # Shot noise grows with the signal; the read-noise floor is kept small because the display
        # gamma below amplifies noise in the shadows a lot.
        std = np.sqrt(np.clip(x, 0.0, None) * params.noise * 0.5 + (0.1 * params.noise) ** 2)
        x = x + rng.standard_normal(x.shape) * std
    x = np.clip(x, 0.0, 1.0) ** (1.0 / (_DISPLAY_GAMMA * params.gamma))
    x = (x - 0.5) * params.contrast + 0.5
    luma = (x @ _LUMA)[:, :, None]
    x = luma + (x - luma) * params.saturation
    return np.clip(np.floor(x * 255.0 + 0.5), 0, 255).astype(np.uint8)


def composite(foreground: np.ndarray, background: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``M * foreground + (1 - M) * background`` (uint8 ``[H, W, 3]`` each, mask ``[H, W]``).

    Where M == 0 the result is ``background`` bit for bit; elsewhere the blend is rounded.
    """
    weights = as_mask(mask, background.shape[:2])
    blended = weights[:, :, None] * foreground.astype(np.float64) + (1.0 - weights[:, :, None]) * background
    blended = np.clip(np.floor(blended + 0.5), 0, 255).astype(np.uint8)
    return np.where((weights > 0)[:, :, None], blended, background)


def isp_composite(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                  ranges: IspRanges = DEFAULT_RANGES) -> Tuple[np.ndarray, IspParams]:
    """One ISP-modification pair input: the masked foreground re-rendered with random ISP settings.

    image: uint8 ``[H, W, 3]`` (the target); mask: ``[H, W]`` foreground. Returns (input, params).
    """
    params = sample_isp_params(rng, ranges, min_change_ev=0.25)
    return composite(apply_isp(image, params, rng), image, mask), params
