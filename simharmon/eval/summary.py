"""Aggregate per-frame rows into a summary, and write rows/summary as CSV and JSON (atomically).

Averages follow the papers: per-image scores are averaged over frames (PSNR too: the mean of
per-frame PSNRs, not the PSNR of the mean MSE). fMSE/bMSE averages skip frames where they are
undefined (empty mask / full mask) and say how many frames they cover. Foreground-ratio bins are
reported separately (frames with no actor in view are in no bin). The warping error of a
sequence is the mean over its pairs; cameras are pooled over all their pairs. VBench flicker is
(255 - mean MAE) / 255 over all pairs, labelled as a static-camera metric. Latency statistics use
the frames whose latency was measured in this or an earlier (resumed) session.

JSON has no infinity: a non-finite number (PSNR of an exact match) is written as the string
"inf" in JSON and in the CSV.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..io.atomic import atomic_write_bytes, atomic_write_json
from .evaluate import FRAME_FIELDS, GROUND_TRUTH, METHODS, EvalResult
from .image_metrics import FG_BINS
from .verdict import verdicts

__all__ = ["summarize", "latency_stats", "write_rows_csv", "write_rows_json", "write_summary", "json_safe", "CONVENTIONS",
           "LATENCY_WARMUP_FRAMES"]

LATENCY_WARMUP_FRAMES = 1  # per camera, left out of the "after warm-up" latency statistics
IMAGE_KEYS = ("mse", "psnr", "ssim", "fmse", "bmse", "lpips", "dino_struct")
CONVENTIONS = {
    "image_metrics": "iHarmony4: output, ground truth and mask resized to 256x256 (PIL bicubic; mask binarized at "
                     "0.5, nearest); 0..255 levels; PSNR data range 255; no ground-truth background pasted in",
    "fmse": "sum(M (out - G)^2) / (3 sum(M)); bMSE with 1 - M; frames with an empty (full) mask are skipped. "
            "Unless frames are already 256x256, the bicubic resize spreads the actor's edge into background "
            "pixels, so a foreground-only change has a small, non-zero bMSE",
    "ssim": "kornia.metrics.ssim, Gaussian window 11, sigma 1.5, data range 255, reflect padding, mean of the map",
    "fg_bins": "foreground ratio sum(M) / 256^2 after resizing: 0-5 %, 5-15 %, 15-100 % (upper bounds inclusive)",
    "warp_error": "Lai et al. 2018: warp O_t+1 to t with F_t->t+1 (bilinear, border-clamped), forward-backward "
                  "occlusion + motion-boundary test; mean over non-occluded pixels and RGB of the squared "
                  "difference in [0, 1], averaged over pairs",
    "vbench_flicker": "STATIC-CAMERA metric: (255 - mean_t MAE(f_t, f_t+1)) / 255 on uint8 frames; with a moving "
                      "ego camera read the warping error instead",
    "latency_ms": "wall time of one engine step per frame (device synchronized), including the first "
                  "non-temporal frames; 'after warm-up' leaves out each camera's first frame. A resumed run keeps "
                  "the timings its earlier session measured",
}


def json_safe(value):
    """Replace non-finite floats (recursively) with strings, so strict JSON can hold them."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
    present = [float(v) for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _image_block(rows: Sequence[Dict[str, object]]) -> Dict[str, object]:
    block: Dict[str, object] = {"frames": len(rows)}
    for key in IMAGE_KEYS:
        block[key] = _mean(r[key] for r in rows)
    block["fmse_frames"] = sum(1 for r in rows if r["fmse"] is not None)
    block["psnr_inf_frames"] = sum(1 for r in rows if r["psnr"] is not None and math.isinf(r["psnr"]))
    return block


def latency_stats(values: Iterable[Optional[float]]) -> Optional[Dict[str, float]]:
    """mean, p50, p90, p99, max (ms), fps and count of the measured latencies (None if none)."""
    data = np.array([float(v) for v in values if v is not None])
    if data.size == 0:
        return None
    mean = float(data.mean())
    return {"count": int(data.size), "mean": mean, "p50": float(np.percentile(data, 50)),
            "p90": float(np.percentile(data, 90)), "p99": float(np.percentile(data, 99)), "max": float(data.max()),
            "fps": 1000.0 / mean if mean > 0 else None}


def summarize(result: EvalResult, extra: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """The summary dict of an evaluation (see the module docstring for how each number is pooled)."""
    methods: Dict[str, Dict[str, object]] = {}
    cameras = sorted({str(r["camera"]) for r in result.rows}, key=lambda c: [r["camera"] for r in result.rows].index(c))
    for method in METHODS + (GROUND_TRUTH,):
        rows = [r for r in result.rows if r["method"] == method]
        if not rows:
            continue
        entry: Dict[str, object] = {}
        if method != GROUND_TRUTH and any(r["mse"] is not None for r in rows):
            entry["overall"] = _image_block([r for r in rows if r["mse"] is not None])
            entry["per_camera"] = {c: _image_block([r for r in rows if r["camera"] == c and r["mse"] is not None])
                                   for c in cameras}
            entry["fg_bins"] = {label: _image_block([r for r in rows if r["fg_bin"] == label]) for label, _, _ in FG_BINS}
        warps = [r["warp_error"] for r in rows if r["warp_error"] is not None]
        entry["warp_error"] = _mean(warps)
        entry["warp_error_pairs"] = len(warps)
        entry["warp_error_per_camera"] = {c: _mean(r["warp_error"] for r in rows if r["camera"] == c) for c in cameras}
        maes = [r["flicker_mae"] for r in rows if r["flicker_mae"] is not None]
        entry["vbench_flicker"] = (255.0 - float(np.mean(maes))) / 255.0 if maes else None
        if method == "enhancer":
            entry["latency_ms"] = latency_stats(r["latency_ms"] for r in rows)
            # Without each camera's first frames: one-time allocation (and compilation), empty history.
            entry["latency_ms_after_warmup"] = latency_stats(r["latency_ms"] for r in rows
                                                             if r["index"] >= LATENCY_WARMUP_FRAMES)
        methods[method] = entry
    summary: Dict[str, object] = {
        "methods": methods,
        "not_computed": dict(result.not_computed),
        "flow_source": dict(result.flow_source),
        "ground_truth": dict(result.has_gt),
        "masks": dict(result.has_mask),
        "conventions": CONVENTIONS,
    }
    summary.update(extra or {})
    summary["verdicts"] = verdicts(summary)  # needs the drive's cameras from ``extra``
    return summary


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else json_safe(value)
    return str(value)


def write_rows_csv(path, rows: List[Dict[str, object]]) -> None:
    """Per-frame rows as CSV (FRAME_FIELDS columns; empty = not available)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FRAME_FIELDS)
    for row in rows:
        writer.writerow([_csv_value(row.get(key)) for key in FRAME_FIELDS])
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def write_rows_json(path, rows: List[Dict[str, object]]) -> None:
    """Per-frame rows as a JSON list of objects."""
    atomic_write_json(path, json_safe(rows))


def write_summary(path, summary: Dict[str, object]) -> None:
    atomic_write_json(path, json_safe(summary))
