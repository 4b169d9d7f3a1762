"""Colour-transform output (``stream.colour_transform``): the network predicts a smooth colour
transform that is applied to the INPUT frame, instead of decoding an image.

The DiT's x0 latent of the current frame minus what the rectified-flow skip path carries over from
its input, ``x0 - c_skip * x`` (= ``c_out * F``, the network's own contribution; zero when F is zero),
is read as a grid of coefficients at latent resolution (1/8 of the frame). Channels (``affine_curve``):

    0..8    M, a 3x3 matrix (row-major: M[c, k] is channel 3 c + k)
    9..11   b, an offset per channel
    12..14  q, a curve (gamma-like bend) per channel; channel 15 is unused

The grid is upsampled bilinearly (``align_corners=False``) to the frame, and each pixel of the input
``I`` (``[0, 1]``) becomes

    out_c = I_c + sum_k M[c, k] I_k + b_c + q_c I_c (1 - I_c),   clamped to [0, 1].

Zero coefficients give the input back; the coefficients vary at 1/8 resolution only, so the output
carries the input's own detail (scaled by the local gain) and never a synthesized texture.

``smooth_affine_curve`` evaluates the change on the low-passed input ``L`` (the s x s cell means,
s = frame / grid size, upsampled bilinearly like the grid) and adds it to the input:

    out_c = I_c + sum_k M[c, k] L_k + b_c + q_c L_c (1 - L_c),   clamped to [0, 1],

so the change is smooth everywhere and the input's detail passes through at its own contrast (an
L2-trained transform that is unsure of a region shrinks its contrast; this one cannot). The
terms cover what a colour mismatch is made of: exposure and white balance (gains), saturation
(mixing), contrast and offsets, gamma and tone curves (the bend, exact at 0 and 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import COLOUR_TRANSFORM_CHANNELS, COLOUR_TRANSFORMS

__all__ = ["COLOUR_TRANSFORMS", "NUM_COEFFICIENTS", "transform_coefficients", "apply_colour_transform",
           "colour_transform_output", "quantize_nearest"]

NUM_COEFFICIENTS = COLOUR_TRANSFORM_CHANNELS


def transform_coefficients(x0: torch.Tensor, latent: torch.Tensor, c_skip: float) -> torch.Tensor:
    """``x0``, ``latent``: ``[B, C >= 15, h, w]`` (the denoiser's output and input for the current
    frame) -> coefficients ``[B, 15, h, w]`` float32, ``x0 - c_skip * latent``."""
    if x0.shape != latent.shape or x0.dim() != 4 or x0.shape[1] < NUM_COEFFICIENTS:
        raise ValueError(f"colour transform needs x0 and latent of one shape [B, >= {NUM_COEFFICIENTS}, h, w], got "
                         f"{list(x0.shape)} and {list(latent.shape)}")
    return (x0.float() - c_skip * latent.float())[:, :NUM_COEFFICIENTS]


def apply_colour_transform(frame: torch.Tensor, coefficients: torch.Tensor, smooth: bool = False) -> torch.Tensor:
    """Apply the coefficient grid (``[B, 15, h, w]``) to ``frame: [B, 3, H, W]`` in [0, 1] -> float32
    ``[B, 3, H, W]`` in [0, 1] (module docstring; ``smooth``: the change evaluated on the low-passed
    frame, which needs H, W multiples of h, w). Differentiable in both arguments."""
    if frame.dim() != 4 or frame.shape[1] != 3 or coefficients.dim() != 4 or coefficients.shape[1] != NUM_COEFFICIENTS \
            or coefficients.shape[0] != frame.shape[0]:
        raise ValueError(f"apply_colour_transform: frame [B, 3, H, W] and coefficients [B, {NUM_COEFFICIENTS}, h, w] "
                         f"expected, got {list(frame.shape)} and {list(coefficients.shape)}")
    frame = frame.float()
    size = frame.shape[-2:]
    grid = F.interpolate(coefficients.float(), size=size, mode="bilinear", align_corners=False)
    base = frame
    if smooth:
        cells = coefficients.shape[-2:]
        if size[0] % cells[0] or size[1] % cells[1]:
            raise ValueError(f"smooth colour transform: frame {tuple(size)} is not a multiple of the grid {tuple(cells)}")
        means = F.avg_pool2d(frame, (size[0] // cells[0], size[1] // cells[1]))
        base = F.interpolate(means, size=size, mode="bilinear", align_corners=False)
    matrix = grid[:, :9].unflatten(1, (3, 3))  # [B, 3 (out), 3 (in), H, W]
    mixed = (matrix * base.unsqueeze(1)).sum(2)
    out = frame + mixed + grid[:, 9:12] + grid[:, 12:15] * base * (1.0 - base)
    return out.clamp(0.0, 1.0)


def colour_transform_output(image: torch.Tensor, x0: torch.Tensor, latent: torch.Tensor, c_skip: float,
                            mode: str = "affine_curve") -> torch.Tensor:
    """The step's output in model space: ``image`` ``[B, 3, H, W]`` in [-1, 1] transformed by the
    coefficients of (``x0``, ``latent``) (``[B, 16, h, w]``) as ``mode`` (``stream.colour_transform``)
    says; returns float32 ``[B, 3, H, W]`` in [-1, 1]."""
    if mode not in COLOUR_TRANSFORMS[1:]:
        raise ValueError(f"colour transform mode must be one of {COLOUR_TRANSFORMS[1:]}, got {mode!r}")
    frame = image.float() * 0.5 + 0.5
    coefficients = transform_coefficients(x0, latent, c_skip)
    return apply_colour_transform(frame, coefficients, smooth=mode == "smooth_affine_curve") * 2.0 - 1.0


def quantize_nearest(frame: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` float -> the same on 8-bit levels, rounded to nearest (a zero transform then
    returns 8-bit input levels exactly, where the release's truncation would lose one level on some)."""
    return frame.clamp(0.0, 1.0).mul(255.0).round().div(255.0)
