"""Real-photo composites (recipe ``photo``): iHarmony4-style pairs and sequences cut from photographs.

A pair is a random VIEW of a photo (a crop at a random scale, resized to the output size), a
foreground REGION inside it and a COLOUR CHANGE of that region; the target is the view itself.
Outside the region the input is the target bit for bit.

* View: the crop's width is a log-uniform fraction in [``min_scale``, 1] of the widest crop of the
  output's aspect ratio that fits, placed uniformly; resized with area averaging (never upsampled by
  more than 1 / ``min_scale`` of the output, see :func:`random_view`). So one photo yields crops from
  whole-scene views down to close-ups.
* Region (5-30 % of the view): with probability ``grabcut_share`` a segmented one: an object that
  OpenCV's GrabCut finds inside a random rectangle (kept when its largest connected part covers
  5-30 %; up to 3 tries), else a connected part of a k-means colour cluster; otherwise, or when
  neither finds a usable part, a random smooth blob (thresholded low-frequency noise), an
  ellipse or a box, each of a random target coverage in [5 %, 30 %].
* Colour change (:data:`PHOTO_RANGES`, the ISP of ``isp.py`` without sensor noise): exposure
  +-1.2 EV, white balance (temperature +-0.3, tint +-0.15), Reinhard tone curve 0..0.6, gamma
  0.75..1.33, contrast 0.8..1.25, saturation 0.6..1.5. A share ``mild_share`` of the pairs gets a
  mild change (every range scaled by 0.15 around neutral), so that near-harmonious composites
  are in the data and a model learns to leave them alone.
* Sequences: a camera that pans (0.5-4 output px per frame) and zooms (-2 %..+2 % per frame)
  over the photo; each frame is resampled from the photo through its affine view map, so the flow
  between frames is known exactly (:func:`view_flow`). The region is fixed in the photo (it moves
  with the content); its colour change is the sequence's base change with a per-frame exposure
  jitter of up to +-``jitter_ev`` EV, the flicker a temporal model must remove.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import cv2
import numpy as np

from .isp import IspRanges, apply_isp, composite, sample_isp_params

__all__ = ["PHOTO_RANGES", "MILD_SCALE", "PhotoPair", "PhotoSequence", "random_view", "random_region",
           "random_change", "photo_pair", "photo_sequence", "view_flow"]

PHOTO_RANGES = IspRanges(exposure_ev=(-1.2, 1.2), temperature=(-0.3, 0.3), tint=(-0.15, 0.15), tone=(0.0, 0.6),
                         gamma=(0.75, 1.33), contrast=(0.8, 1.25), saturation=(0.6, 1.5), noise=(0.0, 0.0))
MILD_SCALE = 0.15
_NEUTRAL = {"exposure_ev": 0.0, "temperature": 0.0, "tint": 0.0, "tone": 0.0, "gamma": 1.0, "contrast": 1.0,
            "saturation": 1.0, "noise": 0.0}
COVERAGE = (0.05, 0.30)


@dataclass(frozen=True)
class PhotoPair:
    """input, target: uint8 ``[h, w, 3]``; mask: uint8 ``[h, w]`` (255 = region); params: provenance."""

    input: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    params: Dict[str, object]


@dataclass(frozen=True)
class PhotoSequence:
    """frames, targets: ``T`` uint8 ``[h, w, 3]``; masks ``T`` uint8 ``[h, w]``; flow_fw / flow_bw float32
    ``[T-1, 2, h, w]`` (F_{t->t+1} / F_{t+1->t}, pixels, x then y); params: provenance."""

    frames: List[np.ndarray]
    targets: List[np.ndarray]
    masks: List[np.ndarray]
    flow_fw: np.ndarray
    flow_bw: np.ndarray
    params: Dict[str, object]


def _check_photo(photo: np.ndarray, size: Tuple[int, int]) -> None:
    if not isinstance(photo, np.ndarray) or photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[2] != 3:
        raise ValueError(f"photo must be uint8 [H, W, 3], got {getattr(photo, 'dtype', type(photo))} "
                         f"{list(getattr(photo, 'shape', []))}")
    width, height = size
    if photo.shape[0] < height or photo.shape[1] < width:
        raise ValueError(f"photo {photo.shape[1]}x{photo.shape[0]} is smaller than the output {width}x{height}")


def _max_crop(photo_hw: Tuple[int, int], size: Tuple[int, int]) -> float:
    """Width of the widest crop with the output's aspect ratio that fits the photo."""
    (height, width), (out_w, out_h) = photo_hw, size
    return min(float(width), height * out_w / out_h)


def random_view(rng: np.random.Generator, photo: np.ndarray, size: Tuple[int, int],
                min_scale: float = 0.15) -> Tuple[np.ndarray, Dict[str, float]]:
    """A random crop of ``photo`` with the aspect ratio of ``size = (w, h)``, resized to ``size``.

    The crop width is ``s * widest`` with ``s`` log-uniform in [``min_scale``, 1] (but never narrower
    than the output, so views are not upsampled), placed uniformly. Returns (uint8 ``[h, w, 3]``,
    ``{"x", "y", "width"}`` of the crop in photo pixels).
    """
    _check_photo(photo, size)
    out_w, out_h = size
    widest = _max_crop(photo.shape[:2], size)
    low = max(min_scale, out_w / widest)
    scale = float(np.exp(rng.uniform(np.log(low), 0.0))) if low < 1.0 else 1.0
    crop_w = max(out_w, int(round(widest * scale)))
    crop_h = max(out_h, int(round(crop_w * out_h / out_w)))
    crop_w, crop_h = min(crop_w, photo.shape[1]), min(crop_h, photo.shape[0])
    x = int(rng.integers(0, photo.shape[1] - crop_w + 1))
    y = int(rng.integers(0, photo.shape[0] - crop_h + 1))
    crop = photo[y:y + crop_h, x:x + crop_w]
    view = cv2.resize(crop, (out_w, out_h), interpolation=cv2.INTER_AREA) if (crop_w, crop_h) != size else crop.copy()
    return np.ascontiguousarray(view), {"x": x, "y": y, "width": crop_w, "height": crop_h}


def _largest_part(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(mask, dtype=bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def _grabcut(rng: np.random.Generator, view: np.ndarray):
    """An object GrabCut finds in a random rectangle, or None when it covers outside 5-30 %."""
    height, width = view.shape[:2]
    rect_w = int(rng.uniform(0.22, 0.55) * width)
    rect_h = int(rng.uniform(0.3, 0.7) * height)
    x, y = int(rng.integers(1, width - rect_w)), int(rng.integers(1, height - rect_h))
    labels = np.zeros((height, width), np.uint8)
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(int(rng.integers(0, 2**31 - 1)))  # GrabCut's k-means initialisation draws from it
    try:
        cv2.grabCut(view[:, :, ::-1].copy(), labels, (x, y, rect_w, rect_h), background, foreground, 3,
                    cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        return None
    region = _largest_part((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD))
    coverage = region.mean()
    if not COVERAGE[0] <= coverage <= COVERAGE[1]:
        return None
    return region


def _blob(rng: np.random.Generator, height: int, width: int, coverage: float) -> np.ndarray:
    """A smooth random blob: low-frequency noise plus a bump at a random centre, thresholded."""
    grid = rng.standard_normal((6, 10)).astype(np.float32)
    field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = rng.uniform(0.25, 0.75) * height, rng.uniform(0.2, 0.8) * width
    bump = np.exp(-(((ys - cy) / (0.35 * height)) ** 2 + ((xs - cx) / (0.35 * width)) ** 2))
    field = field * 0.6 + 3.0 * bump
    region = _largest_part(field >= np.quantile(field, 1.0 - coverage))
    return region


def _shape(rng: np.random.Generator, height: int, width: int, coverage: float, kind: str) -> np.ndarray:
    """An ellipse or a box of about ``coverage`` of the frame, at a random place and aspect."""
    area = coverage * height * width
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))  # width / height of the shape
    if kind == "ellipse":
        ry = np.sqrt(area / (np.pi * aspect))
    else:
        ry = np.sqrt(area / aspect) / 2.0
    rx = min(ry * aspect, 0.48 * width)
    ry = min(ry, 0.48 * height)
    cy, cx = rng.uniform(ry, height - ry), rng.uniform(rx, width - rx)
    ys, xs = np.mgrid[0:height, 0:width]
    if kind == "ellipse":
        return ((ys + 0.5 - cy) / ry) ** 2 + ((xs + 0.5 - cx) / rx) ** 2 <= 1.0
    return (np.abs(ys + 0.5 - cy) <= ry) & (np.abs(xs + 0.5 - cx) <= rx)


def _colour_segment(rng: np.random.Generator, view: np.ndarray):
    """A connected part of one colour cluster (k-means on Lab, k = 3..6) covering 5-30 %, or None."""
    small = cv2.resize(view, (view.shape[1] // 2, view.shape[0] // 2), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(cv2.GaussianBlur(small, (5, 5), 0), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    k = int(rng.integers(3, 7))
    cv2.setRNGSeed(int(rng.integers(0, 2**31 - 1)))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 1.0)
    _, labels, _ = cv2.kmeans(lab, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
    labels = labels.reshape(small.shape[:2])
    for cluster in rng.permutation(k):
        part = _largest_part(labels == cluster)
        part = cv2.resize(part.astype(np.uint8), (view.shape[1], view.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
        if COVERAGE[0] <= part.mean() <= COVERAGE[1]:
            return part
    return None


def random_region(rng: np.random.Generator, view: np.ndarray, grabcut_share: float = 0.4) -> Tuple[np.ndarray, str]:
    """A foreground region of ``view`` (uint8 ``[h, w, 3]``) covering 5-30 %: (uint8 mask 0/255, kind).

    With probability ``grabcut_share`` a segmented one: GrabCut in up to 3 random rectangles, then a
    colour-cluster segment; else (or when neither finds a 5-30 % part) a blob, ellipse or box.
    """
    height, width = view.shape[:2]
    if rng.random() < grabcut_share:
        for _ in range(3):
            region = _grabcut(rng, view)
            if region is not None:
                return region.astype(np.uint8) * 255, "grabcut"
        region = _colour_segment(rng, view)
        if region is not None:
            return region.astype(np.uint8) * 255, "colour_segment"
    kind = ("blob", "ellipse", "box")[int(rng.integers(3))]
    for _ in range(8):
        coverage = float(rng.uniform(*COVERAGE))
        region = _blob(rng, height, width, coverage) if kind == "blob" else _shape(rng, height, width, coverage, kind)
        if COVERAGE[0] * 0.8 <= region.mean() <= COVERAGE[1] * 1.1:
            break
    return region.astype(np.uint8) * 255, kind


def random_change(rng: np.random.Generator, mild_share: float = 0.15):
    """Colour-change settings (``IspParams``) from :data:`PHOTO_RANGES`; a ``mild_share`` of them mild."""
    params = sample_isp_params(rng, PHOTO_RANGES)
    mild = bool(rng.random() < mild_share)
    if mild:
        values = params.to_dict()
        params = type(params)(**{k: _NEUTRAL[k] + MILD_SCALE * (v - _NEUTRAL[k]) for k, v in values.items()})
    return params, mild


def photo_pair(rng: np.random.Generator, photo: np.ndarray, size: Tuple[int, int], mild_share: float = 0.15,
               grabcut_share: float = 0.4, min_scale: float = 0.15) -> PhotoPair:
    """One composite of ``photo`` (uint8 ``[H, W, 3]``) at ``size = (w, h)``: view, region, colour change."""
    view, crop = random_view(rng, photo, size, min_scale)
    mask, kind = random_region(rng, view, grabcut_share)
    params, mild = random_change(rng, mild_share)
    changed = composite(apply_isp(view, params, rng), view, mask)
    return PhotoPair(changed, view, mask, {"crop": crop, "region": kind, "coverage": float((mask > 0).mean()),
                                           "mild": mild, "isp": params.to_dict()})


def _view_matrix(centre: np.ndarray, scale: float, size: Tuple[int, int]) -> np.ndarray:
    """2x3 map from output pixel (x, y) to photo pixel: ``p = scale * (x - c_out) + centre``."""
    out_w, out_h = size
    c_out = np.array([(out_w - 1) / 2.0, (out_h - 1) / 2.0])
    return np.array([[scale, 0.0, centre[0] - scale * c_out[0]], [0.0, scale, centre[1] - scale * c_out[1]]])


def view_flow(matrix_a: np.ndarray, matrix_b: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Flow ``[2, h, w]`` from view a to view b: pixel x of a shows the photo point that b shows at
    ``x + flow(x)`` (both views ``p = s x + t`` maps, :func:`_view_matrix`)."""
    out_w, out_h = size
    ys, xs = np.mgrid[0:out_h, 0:out_w].astype(np.float64)
    px = matrix_a[0, 0] * xs + matrix_a[0, 2]
    py = matrix_a[1, 1] * ys + matrix_a[1, 2]
    bx = (px - matrix_b[0, 2]) / matrix_b[0, 0]
    by = (py - matrix_b[1, 2]) / matrix_b[1, 1]
    return np.stack([bx - xs, by - ys]).astype(np.float32)


def _camera(rng: np.random.Generator, photo_hw: Tuple[int, int], size: Tuple[int, int], frames: int):
    """View centres ``[T, 2]`` and scales ``[T]`` (photo px per output px) that stay inside the photo."""
    height, width = photo_hw
    out_w, out_h = size
    widest = _max_crop(photo_hw, size)
    top = widest / out_w / 1.03 ** frames  # room for the zoom
    low = min(max(1.0, 0.2 * widest / out_w), top)
    scale0 = float(np.exp(rng.uniform(np.log(low), np.log(max(low, top)))))
    zoom = float(rng.uniform(-0.02, 0.02))
    scales = scale0 * (1.0 + zoom) ** np.arange(frames)
    speed = rng.uniform(0.5, 4.0) * scales[0]  # output px per frame, in photo px
    angle = rng.uniform(0, 2 * np.pi)
    velocity = speed * np.array([np.cos(angle), np.sin(angle)])
    half = np.stack([scales * out_w / 2.0, scales * out_h / 2.0], axis=1)  # [T, 2]
    low_c = half.max(0)
    high_c = np.array([width, height]) - half.max(0)
    span = velocity * (frames - 1)
    start_low = low_c - np.minimum(0.0, span)
    start_high = high_c - np.maximum(0.0, span)
    start = np.array([rng.uniform(a, b) if b > a else (a + b) / 2.0 for a, b in zip(start_low, start_high)])
    centres = start[None] + velocity[None] * np.arange(frames)[:, None]
    centres = np.clip(centres, half, np.array([width, height]) - half)
    return centres, scales


def photo_sequence(rng: np.random.Generator, photo: np.ndarray, size: Tuple[int, int], frames: int,
                   jitter_ev: float = 0.2, grabcut_share: float = 0.4) -> PhotoSequence:
    """``frames`` views of ``photo`` along a panning / zooming camera with exact flow (module docstring)."""
    _check_photo(photo, size)
    if frames < 2:
        raise ValueError(f"a sequence needs at least 2 frames, got {frames}")
    centres, scales = _camera(rng, photo.shape[:2], size, frames)
    matrices = [_view_matrix(c, s, size) for c, s in zip(centres, scales)]
    targets = [_warp_area(photo, matrix, size) for matrix in matrices]
    mask0, kind = random_region(rng, targets[0], grabcut_share)
    # The region lives in the photo: map frame 0's mask to each frame through the views.
    masks = [mask0]
    for matrix in matrices[1:]:
        to_first = _compose(matrices[0], matrix)  # frame t pixel -> frame 0 pixel
        masks.append(cv2.warpAffine(mask0, to_first, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0))
    base, mild = random_change(rng, 0.0)
    jitters = rng.uniform(-jitter_ev, jitter_ev, size=frames)
    inputs = []
    for target, mask, jitter in zip(targets, masks, jitters):
        params = type(base)(**{**base.to_dict(), "exposure_ev": base.exposure_ev + float(jitter)})
        inputs.append(composite(apply_isp(target, params, rng), target, mask))
    flow_fw = np.stack([view_flow(a, b, size) for a, b in zip(matrices[:-1], matrices[1:])])
    flow_bw = np.stack([view_flow(b, a, size) for a, b in zip(matrices[:-1], matrices[1:])])
    return PhotoSequence(inputs, targets, masks, flow_fw, flow_bw, {
        "centres": centres.round(3).tolist(), "scales": [round(float(s), 5) for s in scales], "region": kind,
        "isp": base.to_dict(), "exposure_jitter_ev": [round(float(j), 4) for j in jitters]})


def _compose(first: np.ndarray, current: np.ndarray) -> np.ndarray:
    """2x3 map from a pixel of view ``current`` to the pixel of view ``first`` showing the same photo point."""
    sx = current[0, 0] / first[0, 0]
    sy = current[1, 1] / first[1, 1]
    return np.array([[sx, 0.0, (current[0, 2] - first[0, 2]) / first[0, 0]],
                     [0.0, sy, (current[1, 2] - first[1, 2]) / first[1, 1]]])


def _warp_area(photo: np.ndarray, matrix: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """The view of ``matrix`` with area averaging: a box prefilter at the view's scale, then the affine."""
    scale = matrix[0, 0]
    factor = int(np.floor(scale))
    if factor < 2:
        return cv2.warpAffine(photo, matrix, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REFLECT)
    blurred = cv2.blur(photo, (factor, factor))
    return cv2.warpAffine(blurred, matrix, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)
