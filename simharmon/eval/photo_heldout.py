"""The real-photo held-out check: composites of photographs no training run sees, scored per composite.

The photos are ``simharmon/data/heldout_photos/`` (eight Debian-packaged photographs, split off by
source image: ``photo_sources.json`` marks them ``heldout``, and ``simharmon curate`` never reads
that folder). Composites are made by the training recipe itself (``simharmon.data.photo``: a random
view, a segmented or random region of 5-30 %, a colour change inside it; a share of mild changes)
from a generator key no curation uses, at 256x144 and 512x288.

Per composite: fMSE and PSNR (METRICS.md, 256x256) of the model, the composite itself (identity)
and Reinhard colour transfer, and the Laplacian energy inside the mask of the model's output and of
the ground truth (:func:`laplacian_energy`). Temporal: jittered sequences of the same photos, the
warping error inside the mask (:func:`masked_warping_error`) of the model run as a stream against
the same model run frame by frame (no history).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from PIL import Image

from ..data.photo import PhotoSequence, photo_pair, photo_sequence
from .baselines import reinhard_transfer
from .image_metrics import score_image
from .temporal import flow_to_tensor, occlusion_mask, warp

__all__ = ["HELDOUT_PHOTOS", "PHOTO_SIZES", "PhotoSample", "heldout_photos", "photo_heldout_composites",
           "laplacian_energy", "score_photo_heldout", "photo_targets", "heldout_sequences", "masked_warping_error",
           "sequence_flicker"]

HELDOUT_PHOTOS = Path(__file__).resolve().parent.parent / "data" / "heldout_photos"
PHOTO_SIZES: Tuple[Tuple[int, int], ...] = ((256, 144), (512, 288))
_STREAM = 515_151  # the composites' generator key; curation keys its generators by (seed, index, ...)
_SEQUENCE_STREAM = 616_161


@dataclass(frozen=True)
class PhotoSample:
    """One composite: name (photo), size (w, h); composite, target uint8 ``[h, w, 3]``; mask uint8 ``[h, w]``."""

    name: str
    size: Tuple[int, int]
    composite: np.ndarray
    target: np.ndarray
    mask: np.ndarray


def heldout_photos(folder: Path = HELDOUT_PHOTOS) -> List[Tuple[str, np.ndarray]]:
    """(name, uint8 ``[H, W, 3]``) of every .jpg/.png in ``folder``, sorted by name."""

    folder = Path(folder)
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise FileNotFoundError(f"no held-out photos in {folder}")
    photos = []
    for path in files:
        with Image.open(path) as picture:
            photos.append((path.stem, np.asarray(picture.convert("RGB"))))
    return photos


def photo_heldout_composites(per_photo: int = 4, sizes: Sequence[Tuple[int, int]] = PHOTO_SIZES,
                             folder: Path = HELDOUT_PHOTOS, photos: Optional[int] = None) -> List[PhotoSample]:
    """``per_photo`` composites of each held-out photo at each size (deterministic); ``photos``: only the first N."""
    if per_photo < 1:
        raise ValueError(f"per_photo must be >= 1, got {per_photo}")
    samples = []
    for index, (name, photo) in enumerate(heldout_photos(folder)[:photos]):
        for s, size in enumerate(sizes):
            for k in range(per_photo):
                pair = photo_pair(np.random.default_rng([_STREAM, index, s, k]), photo, tuple(size))
                samples.append(PhotoSample(name, tuple(size), pair.input, pair.target, pair.mask))
    return samples


def laplacian_energy(image: np.ndarray, mask: np.ndarray, erode: int = 2) -> float:
    """Mean squared 4-neighbour Laplacian (RGB, 0..255 levels) over the mask eroded by ``erode`` px.

    The erosion keeps the mask's own edge (where a composite may have a seam) out of the measure.
    Returns 0.0 when the eroded mask is empty.
    """
    inner = mask > 0
    if erode > 0:
        kernel = np.ones((2 * erode + 1, 2 * erode + 1), np.uint8)
        inner = cv2.erode(inner.astype(np.uint8), kernel) > 0
    if not inner.any():
        return 0.0
    lap = cv2.Laplacian(image.astype(np.float64), cv2.CV_64F, ksize=1, borderType=cv2.BORDER_REFLECT)
    return float((lap[inner] ** 2).mean())


def score_photo_heldout(samples: Sequence[PhotoSample],
                        enhance: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Dict[str, object]:
    """Score ``enhance(composite, mask) -> uint8 [h, w, 3]`` per composite; returns rows and a summary.

    summary: per size and overall, mean fMSE / PSNR of model, input and Reinhard, the model's fMSE
    ratio to each, the share of composites where the model's fMSE is below the input's, the worst
    fMSE increase among composites whose input fMSE is below 100, and the Laplacian energy ratio
    (model / ground truth, ratio of the means and median of the per-composite ratios; and the
    composite's own ratio, for reference).
    """
    rows = []
    for sample in samples:
        outputs = {"model": np.asarray(enhance(sample.composite, sample.mask)), "input": sample.composite,
                   "reinhard": reinhard_transfer(sample.composite, sample.mask.astype(np.float32) / 255.0)}
        row: Dict[str, object] = {"photo": sample.name, "size": f"{sample.size[0]}x{sample.size[1]}",
                                  "coverage": round(float((sample.mask > 0).mean()), 4)}
        for method, output in outputs.items():
            if output.shape != sample.target.shape or output.dtype != np.uint8:
                raise ValueError(f"{method}: expected uint8 {sample.target.shape}, got {output.dtype} {output.shape}")
            scores = score_image(output, sample.target, sample.mask)
            row[f"fmse_{method}"], row[f"psnr_{method}"] = scores.fmse, scores.psnr
        row["laplacian_model"] = laplacian_energy(outputs["model"], sample.mask)
        row["laplacian_input"] = laplacian_energy(sample.composite, sample.mask)
        row["laplacian_truth"] = laplacian_energy(sample.target, sample.mask)
        rows.append(row)
    groups = {"overall": rows}
    for size in sorted({r["size"] for r in rows}):
        groups[size] = [r for r in rows if r["size"] == size]
    return {"rows": rows, "summary": {name: _summary(group) for name, group in groups.items()}}


def _summary(rows: List[dict]) -> Dict[str, object]:
    mean = {m: float(np.mean([r[f"fmse_{m}"] for r in rows])) for m in ("model", "input", "reinhard")}
    psnr = {m: float(np.mean([r[f"psnr_{m}"] for r in rows])) for m in ("model", "input", "reinhard")}
    small = [r for r in rows if r["fmse_input"] < 100]
    lap_model = np.array([r["laplacian_model"] for r in rows])
    lap_input = np.array([r["laplacian_input"] for r in rows])
    lap_truth = np.array([r["laplacian_truth"] for r in rows])
    per = lap_model[lap_truth > 0] / lap_truth[lap_truth > 0]
    return {
        "count": len(rows), "photos": len({r["photo"] for r in rows}), "fmse": mean, "psnr": psnr,
        "fmse_ratio_to_input": mean["model"] / mean["input"], "fmse_ratio_to_reinhard": mean["model"] / mean["reinhard"],
        "beats_input_share": float(np.mean([r["fmse_model"] < r["fmse_input"] for r in rows])),
        "small_input_count": len(small),
        "worst_increase_small_input": max((r["fmse_model"] - r["fmse_input"] for r in small), default=None),
        "laplacian_ratio": float(lap_model.sum() / lap_truth.sum()) if lap_truth.sum() > 0 else None,
        "laplacian_ratio_median": float(np.median(per)) if per.size else None,
        "laplacian_ratio_input": float(lap_input.sum() / lap_truth.sum()) if lap_truth.sum() > 0 else None,
    }


def photo_targets(summary: Dict[str, object]) -> Dict[str, bool]:
    """The issue-15 targets on one summary block (``score_photo_heldout(...)["summary"][...]``)."""
    worst = summary["worst_increase_small_input"]
    return {
        "fmse_at_most_half_of_input": summary["fmse_ratio_to_input"] <= 0.5,
        "fmse_at_most_0.8_of_reinhard": summary["fmse_ratio_to_reinhard"] <= 0.8,
        "beats_input_on_90_percent": summary["beats_input_share"] >= 0.9,
        "no_small_input_composite_worse_by_50": worst is None or worst <= 50.0,
        "laplacian_energy_at_least_0.8": summary["laplacian_ratio"] is not None and summary["laplacian_ratio"] >= 0.8,
    }


def heldout_sequences(count: int = 8, size: Tuple[int, int] = (256, 144), frames: int = 12, jitter_ev: float = 0.2,
                      folder: Path = HELDOUT_PHOTOS) -> List[PhotoSequence]:
    """``count`` jittered pan / zoom sequences over the held-out photos (round robin), deterministic."""
    photos = heldout_photos(folder)
    return [photo_sequence(np.random.default_rng([_SEQUENCE_STREAM, i]), photos[i % len(photos)][1], tuple(size),
                           frames, jitter_ev) for i in range(count)]


def masked_warping_error(frames: Sequence[np.ndarray], masks: Sequence[np.ndarray], flow_fw: np.ndarray,
                         flow_bw: np.ndarray) -> float:
    """Lai et al.'s warping error restricted to the mask: frames uint8 ``[h, w, 3]``, masks ``[h, w]``,
    flows ``[T-1, 2, h, w]``. Per pair, the mean over non-occluded pixels inside mask t (and RGB)
    of the squared difference in [0, 1]; the mean over pairs."""
    errors = []
    for t in range(len(frames) - 1):
        a = torch.from_numpy(np.ascontiguousarray(frames[t])).permute(2, 0, 1)[None].double() / 255.0
        b = torch.from_numpy(np.ascontiguousarray(frames[t + 1])).permute(2, 0, 1)[None].double() / 255.0
        fw, bw = flow_to_tensor(np.moveaxis(flow_fw[t], 0, -1)), flow_to_tensor(np.moveaxis(flow_bw[t], 0, -1))
        warped, _inside = warp(b, fw)
        keep = (~occlusion_mask(fw, bw)).double() * torch.from_numpy(masks[t] > 0).double()[None, None]
        count = float(keep.sum()) * 3
        if count:
            errors.append(float(((warped - a) ** 2 * keep).sum() / count))
    return float(np.mean(errors)) if errors else 0.0


def sequence_flicker(sequences: Sequence[PhotoSequence],
                     run: Callable[[List[np.ndarray], List[np.ndarray], bool], List[np.ndarray]]) -> Dict[str, float]:
    """Masked warping error of the inputs, of ``run(frames, masks, True)`` (a stream with its history)
    and of ``run(frames, masks, False)`` (frame by frame), averaged over ``sequences``; plus the
    sequence / frame-by-frame ratio."""
    totals: Dict[str, List[float]] = {"input": [], "sequence": [], "frame_by_frame": [], "truth": []}
    for seq in sequences:
        outputs = {"input": seq.frames, "truth": seq.targets, "sequence": run(seq.frames, seq.masks, True),
                   "frame_by_frame": run(seq.frames, seq.masks, False)}
        for key, frames in outputs.items():
            totals[key].append(masked_warping_error(frames, seq.masks, seq.flow_fw, seq.flow_bw))
    result = {key: float(np.mean(values)) for key, values in totals.items()}
    result["ratio_sequence_to_frame_by_frame"] = (result["sequence"] / result["frame_by_frame"]
                                                  if result["frame_by_frame"] > 0 else None)
    return result
