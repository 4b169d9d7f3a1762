"""Score a replayed drive: the enhancer's outputs next to the baselines, frame by frame.

For every camera and frame, each method's output (``enhancer``, and the baselines ``identity``
and ``reinhard``) is scored against the ground truth when the drive has one (PSNR, MSE, SSIM,
and with a mask fMSE, bMSE and the foreground-ratio bin; LPIPS with local weights), against the
input for DINO-Struct-Dist (local weights), and over time: warping error of each consecutive pair
under the pair's flow, and the VBench flicker MAE. The ground-truth sequence itself is scored
for the temporal metrics too, as a reference (its warping error under exact flow is 0).

Flow for a pair comes, in this order, from the drive's own flow, from its depth + poses +
intrinsics (a static-scene flow), or from RAFT with local weights on the ground truth (else the
input); otherwise the warping error is not computed.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from ..io.drive import Drive
from ..io.frame_sources import load_image_rgb
from .baselines import BASELINES
from .flow import RaftFlow, depth_flow_pair
from .image_metrics import score_image
from .perceptual import LPIPS, DinoStructDistance
from .temporal import OUT_OF_FRAME_MODES, flicker_mae, flow_to_tensor, warping_error_pair

__all__ = ["EvalOptions", "EvalResult", "METHODS", "GROUND_TRUTH", "evaluate_drive", "FRAME_FIELDS", "one_thread"]

METHODS = ("enhancer",) + tuple(BASELINES)
GROUND_TRUTH = "ground_truth"  # scored for the temporal metrics only
FRAME_FIELDS = ("camera", "index", "name", "method", "mse", "psnr", "ssim", "fmse", "bmse", "fg_ratio", "fg_bin",
                "lpips", "dino_struct", "warp_error", "flicker_mae", "latency_ms")


@dataclass(frozen=True)
class EvalOptions:
    """How to score. Weight paths are local files; None means "not computed"."""

    raft_weights: Optional[Path] = None
    lpips_backbone: Optional[Path] = None
    lpips_heads: Optional[Path] = None
    dino_weights: Optional[Path] = None
    out_of_frame: str = "occluded"
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self):
        if self.out_of_frame not in OUT_OF_FRAME_MODES:
            raise ValueError(f"out_of_frame must be one of {OUT_OF_FRAME_MODES}, got {self.out_of_frame!r}")
        if (self.lpips_backbone is None) != (self.lpips_heads is None):
            raise ValueError("LPIPS needs both a backbone file and a heads file (or neither)")
        labels = {"raft_weights": "RAFT weights", "lpips_backbone": "LPIPS backbone", "lpips_heads": "LPIPS heads",
                  "dino_weights": "DINO weights"}
        for name, label in labels.items():
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
                if not Path(value).is_file():
                    raise FileNotFoundError(f"{label} file not found: {value}")


@dataclass
class EvalResult:
    """Per-frame rows (dicts with FRAME_FIELDS) plus what could not be computed and why."""

    rows: List[Dict[str, object]] = field(default_factory=list)
    not_computed: Dict[str, str] = field(default_factory=dict)
    flow_source: Dict[str, Optional[str]] = field(default_factory=dict)
    has_gt: Dict[str, bool] = field(default_factory=dict)
    has_mask: Dict[str, bool] = field(default_factory=dict)


@contextlib.contextmanager
def one_thread():
    """Small per-frame tensor ops: one intra-op thread is faster, and far faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _as_unit(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float64 ``[1, 3, H, W]`` in [0, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.float64)).permute(2, 0, 1)[None] / 255.0


class _FlowProvider:
    """Flow of pair (t, t+1) of one camera from the best available source."""

    def __init__(self, drive: Drive, camera: str, raft: Optional[RaftFlow]):
        self.drive, self.camera, self.raft = drive, camera, raft
        intrinsics = drive.camera(camera).intrinsics
        if drive.has("flow", camera):
            self.source: Optional[str] = "drive"
        elif drive.has("depth", camera) and drive.has("pose", camera) and intrinsics is not None:
            self.source = "depth+poses"
        elif raft is not None:
            self.source = "raft"
        else:
            self.source = None
        self._depth: Dict[int, np.ndarray] = {}

    def _depth_at(self, index: int) -> np.ndarray:
        if index not in self._depth:
            self._depth = {k: v for k, v in self._depth.items() if k >= index - 1}
            self._depth[index] = self.drive.read_depth(self.camera, index)
        return self._depth[index]

    def pair(self, index: int, frame_a: np.ndarray, frame_b: np.ndarray) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        if self.source is None:
            return None
        if self.source == "drive":
            flows = self.drive.read_flow(self.camera, index)
        elif self.source == "depth+poses":
            flows = depth_flow_pair(self._depth_at(index), self._depth_at(index + 1),
                                    self.drive.camera(self.camera).intrinsics.matrix(),
                                    self.drive.read_pose(self.camera, index), self.drive.read_pose(self.camera, index + 1))
        else:
            flows = (self.raft(frame_a, frame_b), self.raft(frame_b, frame_a))
        return None if flows is None else (flow_to_tensor(flows[0]), flow_to_tensor(flows[1]))


def _not_computed(options: EvalOptions, result: EvalResult) -> Tuple[Optional[LPIPS], Optional[DinoStructDistance],
                                                                       Optional[RaftFlow]]:
    lpips = dino = raft = None
    if options.lpips_backbone is not None:
        lpips = LPIPS(options.lpips_backbone, options.lpips_heads, device=options.device)
    else:
        result.not_computed["lpips"] = "not computed: no local LPIPS weights (--lpips-backbone and --lpips-heads)"
    if options.dino_weights is not None:
        dino = DinoStructDistance(options.dino_weights, device=options.device)
    else:
        result.not_computed["dino_struct"] = "not computed: no local DINO ViT weights (--dino-weights)"
    if options.raft_weights is not None:
        raft = RaftFlow(options.raft_weights, device=options.device)
    return lpips, dino, raft


def evaluate_drive(drive: Drive, outputs: Dict[str, Sequence[Path]], latency: Dict[str, Dict[str, Optional[float]]],
                   options: EvalOptions = EvalOptions(),
                   load_output: Optional[Callable[[Path], np.ndarray]] = None) -> EvalResult:
    """Score the enhanced frames ``outputs`` (camera -> PNG paths for frames 0, 1, ...) of ``drive``.

    latency: camera -> frame name -> milliseconds (None when not measured, e.g. lost in a crash).
    Returns one row per (camera, frame, method), in that order.
    """


    load_output = load_output or load_image_rgb
    result = EvalResult()
    lpips, dino, raft = _not_computed(options, result)
    total = sum(len(paths) for paths in outputs.values())
    bar = tqdm(total=total, unit="frame", desc="evaluate", disable=not options.progress)
    for camera, paths in outputs.items():
        title = drive.camera(camera).title  # rows and summaries name cameras as the user knows them
        has_gt, has_mask = drive.has("gt", camera), drive.has("mask", camera)
        result.has_gt[title], result.has_mask[title] = has_gt, has_mask
        flows = _FlowProvider(drive, camera, raft)
        result.flow_source[title] = flows.source
        names = drive.frame_names(camera)
        previous: Dict[str, np.ndarray] = {}
        previous_rows: Dict[str, Dict[str, object]] = {}
        frames = drive.iter_frames(camera)
        for index, path in enumerate(paths):
            item = next(frames, None)
            if item is None:
                raise ValueError(f"camera {camera!r} of {drive.info.path} ended after {index} frames")
            image = item[2]
            gt = drive.read_gt(camera, index) if has_gt else None
            mask = drive.read_mask(camera, index) if has_mask else None
            candidates = {"enhancer": load_output(path)}
            with one_thread():
                for method, baseline in BASELINES.items():
                    candidates[method] = baseline(image, mask)
            if gt is not None:
                candidates[GROUND_TRUTH] = gt
            pair = None
            if index > 0 and flows.source is not None:
                reference = previous.get(GROUND_TRUTH, previous["identity"])
                pair = flows.pair(index - 1, reference, gt if gt is not None else image)
            for method, output in candidates.items():
                row: Dict[str, object] = {key: None for key in FRAME_FIELDS}
                row.update(camera=title, index=index, name=names[index], method=method)
                if method != GROUND_TRUTH:
                    if gt is not None:
                        with one_thread():
                            row.update(score_image(output, gt, mask).to_dict())
                        if lpips is not None:
                            row["lpips"] = lpips(output, gt)
                    if dino is not None:
                        row["dino_struct"] = dino(image, output)
                if method == "enhancer":
                    row["latency_ms"] = latency.get(camera, {}).get(names[index])
                if index > 0:
                    before = previous_rows[method]
                    before["flicker_mae"] = flicker_mae(previous[method], output)
                    if pair is not None:
                        with one_thread():
                            before["warp_error"] = warping_error_pair(_as_unit(previous[method]), _as_unit(output),
                                                                      *pair, out_of_frame=options.out_of_frame)
                previous[method], previous_rows[method] = output, row
                result.rows.append(row)
            bar.update(1)
    bar.close()
    if all(source is None for source in result.flow_source.values()):
        result.not_computed["warp_error"] = ("not computed: the drive has no flow and no depth + poses + intrinsics, "
                                             "and no local RAFT weights were given (--raft-weights)")
    if not any(result.has_gt.values()):
        result.not_computed["image_metrics"] = "not computed: the drive has no ground-truth frames"
    return result
