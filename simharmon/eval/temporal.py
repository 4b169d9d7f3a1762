"""Temporal metrics: warping error (Lai et al. 2018) and VBench temporal flickering.

Warping error, as Lai et al.'s released evaluation computes it (METRICS.md):

* O_{t+1} is warped to time t with the forward flow F = F_{t->t+1}: bilinear sampling at x + F(x),
  with coordinates outside the image clamped to the border (FlowNet2's Resample2d, which their
  code uses);
* a pixel is occluded where |F(x) + B(x + F(x))|^2 > 0.01 (|F(x)|^2 + |B(x + F(x))|^2) + 0.5
  (B = F_{t+1->t}), or on a motion boundary of the warping flow:
  |grad F_u|^2 + |grad F_v|^2 > 0.01 |F|^2 + 0.002 (forward differences, zero on the last
  row/column). METRICS.md writes this flow w_bw, after Ruder et al., whose w_bw is the flow
  used for warping; here that is F;
* E_t = sum over non-occluded pixels and the 3 channels of (warped - O_t)^2, divided by
  3 x (number of non-occluded pixels) (their mask is read as a 3-channel image); E_t = 0 when
  every pixel is occluded, as in their code. The sequence error is the mean over the T-1 pairs.
  Images are in [0, 1].

One addition, on by default (``out_of_frame="occluded"``): a pixel whose flow target
x + F(x) lies outside the image has no correspondence in O_{t+1} and is counted as occluded.
With a moving ego camera a whole border strip leaves the view every frame; clamping compares it
against the border column instead. ``out_of_frame="clamp"`` reproduces Lai et al. exactly.
Pixels with a non-finite flow (unknown, e.g. behind the camera) are always occluded.

Bilinear sampling is written as ``a + w (b - a)`` so that an integer flow, or a flow along a
constant row, reproduces the source values exactly: warping error is exactly 0 for a sequence
that is consistent under its flow.

VBench temporal flickering (a STATIC-CAMERA metric): on uint8 frames,
score = (255 - mean_t MAE(f_t, f_{t+1})) / 255, MAE over pixels and channels.
"""

from __future__ import annotations

from typing import Iterable, List, Optional

import numpy as np
import torch

__all__ = [
    "OUT_OF_FRAME_MODES",
    "warp",
    "occlusion_mask",
    "warping_error_pair",
    "warping_error",
    "flicker_mae",
    "vbench_flicker",
    "flow_to_tensor",
]

OUT_OF_FRAME_MODES = ("occluded", "clamp")


def flow_to_tensor(flow: np.ndarray) -> torch.Tensor:
    """numpy flow ``[H, W, 2]`` (dx, dy in pixels) -> float64 tensor ``[1, 2, H, W]``."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be [H, W, 2], got {list(flow.shape)}")
    return torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float64)).permute(2, 0, 1)[None]


def _check_flow(flow: torch.Tensor, image: torch.Tensor) -> None:
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be [B, 2, H, W], got {list(flow.shape)}")
    if flow.shape[0] != image.shape[0] or flow.shape[2:] != image.shape[2:]:
        raise ValueError(f"flow {list(flow.shape)} does not match the image {list(image.shape)}")


def warp(image: torch.Tensor, flow: torch.Tensor):
    """Sample ``image`` at x + flow(x), bilinearly, clamping coordinates to the border.

    image: ``[B, C, H, W]`` float; flow: ``[B, 2, H, W]`` in pixels (dx, dy), same dtype.
    Returns ``(warped [B, C, H, W], inside [B, 1, H, W] bool)``; ``inside`` is False where the
    target lies outside the image or the flow is not finite (warped is then the border value or 0).
    """
    _check_flow(flow, image)
    batch, channels, height, width = image.shape
    dtype = image.dtype
    finite = torch.isfinite(flow).all(dim=1, keepdim=True)
    flow = torch.where(finite, flow, torch.zeros((), dtype=flow.dtype))
    ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")
    x = xs + flow[:, 0].to(dtype)
    y = ys + flow[:, 1].to(dtype)
    inside = ((x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)).unsqueeze(1) & finite
    x = x.clamp(0, width - 1)
    y = y.clamp(0, height - 1)
    x0, y0 = x.floor(), y.floor()
    wx, wy = (x - x0).unsqueeze(1), (y - y0).unsqueeze(1)
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
    flat = image.reshape(batch, channels, height * width)

    def gather(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        index = (yy * width + xx).reshape(batch, 1, height * width).expand(batch, channels, -1)
        return flat.gather(2, index).reshape(batch, channels, height, width)

    top_left, top_right = gather(y0, x0), gather(y0, x1)
    bottom_left, bottom_right = gather(y1, x0), gather(y1, x1)
    top = top_left + wx * (top_right - top_left)
    bottom = bottom_left + wx * (bottom_right - bottom_left)
    warped = top + wy * (bottom - top)
    return torch.where(finite, warped, torch.zeros((), dtype=dtype)), inside


def _magnitude2(flow: torch.Tensor) -> torch.Tensor:
    return flow[:, 0:1] ** 2 + flow[:, 1:2] ** 2


def occlusion_mask(flow_fw: torch.Tensor, flow_bw: torch.Tensor, out_of_frame: str = "occluded") -> torch.Tensor:
    """Occluded pixels of frame t for warping O_{t+1} to t (True = occluded), ``[B, 1, H, W]``.

    flow_fw: F_{t->t+1} ``[B, 2, H, W]``; flow_bw: F_{t+1->t}, same shape (pixels).
    out_of_frame: "occluded" also marks pixels whose target leaves the image; "clamp" does not
    (Lai et al.'s exact rule).
    """
    if out_of_frame not in OUT_OF_FRAME_MODES:
        raise ValueError(f"out_of_frame must be one of {OUT_OF_FRAME_MODES}, got {out_of_frame!r}")
    if flow_fw.shape != flow_bw.shape:
        raise ValueError(f"forward flow {list(flow_fw.shape)} and backward flow {list(flow_bw.shape)} differ")
    finite = torch.isfinite(flow_fw).all(dim=1, keepdim=True)
    fw = torch.where(finite, flow_fw, torch.zeros((), dtype=flow_fw.dtype))
    bw_at, inside = warp(flow_bw, fw)  # B(x + F(x))
    inconsistent = _magnitude2(fw + bw_at) > 0.01 * (_magnitude2(fw) + _magnitude2(bw_at)) + 0.5
    du = torch.zeros_like(fw)
    dv = torch.zeros_like(fw)
    du[..., :, :-1] = fw[..., :, :-1] - fw[..., :, 1:]
    dv[..., :-1, :] = fw[..., :-1, :] - fw[..., 1:, :]
    gradient = (du**2 + dv**2).sum(dim=1, keepdim=True)
    boundary = gradient > 0.01 * _magnitude2(fw) + 0.002
    occluded = inconsistent | boundary | ~finite
    if out_of_frame == "occluded":
        occluded = occluded | ~inside
    return occluded


def warping_error_pair(frame_t: torch.Tensor, frame_t1: torch.Tensor, flow_fw: torch.Tensor, flow_bw: torch.Tensor,
                       out_of_frame: str = "occluded") -> float:
    """E_t for one pair. frame_t, frame_t1: ``[B, 3, H, W]`` in [0, 1]; flows ``[B, 2, H, W]`` (pixels)."""
    if frame_t.shape != frame_t1.shape:
        raise ValueError(f"frames differ in shape: {list(frame_t.shape)} vs {list(frame_t1.shape)}")
    frame_t, frame_t1 = frame_t.double(), frame_t1.double()
    flow_fw, flow_bw = flow_fw.double(), flow_bw.double()
    warped, _inside = warp(frame_t1, torch.nan_to_num(flow_fw, nan=0.0, posinf=0.0, neginf=0.0))
    visible = (~occlusion_mask(flow_fw, flow_bw, out_of_frame)).double()
    count = float(visible.sum()) * frame_t.shape[1]
    if count == 0:
        return 0.0  # everything occluded: Lai et al. then divide a zero sum by H W C
    return float(((warped - frame_t) ** 2 * visible).sum() / count)


def warping_error(frames: List[torch.Tensor], flows: Iterable[Optional[tuple]], out_of_frame: str = "occluded") -> List[
        Optional[float]]:
    """Per-pair warping errors of ``frames`` (each ``[B, 3, H, W]`` in [0, 1]).

    flows: one ``(F_{t->t+1}, F_{t+1->t})`` pair of ``[B, 2, H, W]`` tensors per consecutive pair,
    or None where no flow is known (that pair's error is None). Average the non-None values for
    the sequence error.
    """
    errors: List[Optional[float]] = []
    for index, pair in enumerate(flows):
        if index + 1 >= len(frames):
            break
        errors.append(None if pair is None else warping_error_pair(frames[index], frames[index + 1], *pair,
                                                                    out_of_frame=out_of_frame))
    return errors


def flicker_mae(frame_a: np.ndarray, frame_b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 ``[H, W, 3]`` frames over pixels and channels (0..255)."""
    if frame_a.dtype != np.uint8 or frame_b.dtype != np.uint8:
        raise ValueError("VBench flickering is defined on uint8 frames")
    if frame_a.shape != frame_b.shape:
        raise ValueError(f"frames differ in shape: {list(frame_a.shape)} vs {list(frame_b.shape)}")
    return float(np.abs(frame_a.astype(np.int16) - frame_b.astype(np.int16)).mean())


def vbench_flicker(maes: Iterable[float]) -> Optional[float]:
    """VBench temporal-flickering score from the per-pair MAEs: ``(255 - mean MAE) / 255`` (None if no pair)."""
    values = [float(v) for v in maes]
    if not values:
        return None
    return (255.0 - float(np.mean(values))) / 255.0
