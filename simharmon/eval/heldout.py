"""Held-out harmonization check of a model: ISP composites it never saw, scored against baselines.

The composites come from procedural street scenes (``simharmon.data.procedural``) whose seeds
start at :data:`HELDOUT_SEED_BASE`. ``simharmon curate --procedural N`` draws its scenes from
seeds ``0 .. N-1``, so no training run with fewer than a million procedural sources can have seen
them. Each composite re-renders the vehicles with random ISP settings (``isp_composite``), the
same kind of mismatch the model is trained to undo, drawn from a generator no curation uses.

Scores follow METRICS.md (``score_image``: 8-bit levels, 256x256 iHarmony4 resizing): mean fMSE
and mean PSNR over the set for the model, the composite input itself and Reinhard colour transfer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from ..data.isp import isp_composite
from ..data.procedural import procedural_scene
from ..runtime.inputs import normalize_inputs
from ..runtime.stream import StreamingEnhancer
from .baselines import reinhard_transfer
from .image_metrics import score_image
from .temporal import flow_to_tensor, warping_error

__all__ = ["HELDOUT_SEED_BASE", "HeldoutSample", "HeldoutScores", "heldout_composites", "score_heldout",
           "drive_warping_errors", "image_enhancer", "score_drive_frames", "sequence_enhancer"]

HELDOUT_SEED_BASE = 1_000_000
_ISP_STREAM = 424_242  # the composites' generator key; curation keys its generators by (seed, index, ...)


@dataclass(frozen=True)
class HeldoutSample:
    """composite, target: uint8 ``[H, W, 3]``; mask: uint8 ``[H, W]`` (255 = actor)."""

    composite: np.ndarray
    target: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class HeldoutScores:
    """Mean fMSE and PSNR over the set, per method ("model", "input", "reinhard")."""

    count: int
    fmse: Dict[str, float]
    psnr: Dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def heldout_composites(count: int, width: int = 256, height: int = 144,
                       seed_base: int = HELDOUT_SEED_BASE) -> List[HeldoutSample]:
    """``count`` ISP composites of procedural scenes ``seed_base, seed_base + 1, ...`` (deterministic)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    samples = []
    for index in range(count):
        image, mask = procedural_scene(seed_base + index, width, height)
        mask = np.asarray(mask)
        mask8 = mask if mask.dtype == np.uint8 else (np.clip(mask, 0, 1) * 255).round().astype(np.uint8)
        composite, _params = isp_composite(image, mask8, np.random.default_rng([_ISP_STREAM, seed_base + index]))
        samples.append(HeldoutSample(composite, image, mask8))
    return samples


def score_heldout(samples: List[HeldoutSample],
                  enhance: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> HeldoutScores:
    """Score ``enhance(composite uint8 [H, W, 3], mask uint8 [H, W]) -> uint8 [H, W, 3]`` on ``samples``."""
    methods: Dict[str, Callable[[HeldoutSample], np.ndarray]] = {
        "model": lambda s: enhance(s.composite, s.mask),
        "input": lambda s: s.composite,
        "reinhard": lambda s: reinhard_transfer(s.composite, s.mask.astype(np.float32) / 255.0),
    }
    totals: Dict[str, List[Tuple[float, float]]] = {name: [] for name in methods}
    for sample in samples:
        for name, method in methods.items():
            output = np.asarray(method(sample))
            if output.shape != sample.target.shape or output.dtype != np.uint8:
                raise ValueError(f"{name}: expected uint8 {sample.target.shape}, got {output.dtype} {output.shape}")
            scores = score_image(output, sample.target, sample.mask)
            totals[name].append((scores.fmse, scores.psnr))
    return HeldoutScores(
        count=len(samples),
        fmse={name: float(np.mean([f for f, _ in values])) for name, values in totals.items()},
        psnr={name: float(np.mean([p for _, p in values])) for name, values in totals.items()},
    )


def drive_warping_errors(drive, enhance_camera: Callable[[str, List[np.ndarray], List[np.ndarray]], List[np.ndarray]],
                         cameras=None, keep: Dict[str, tuple] | None = None) -> Dict[str, float]:
    """Mean warping error (METRICS.md, ground-truth flow) of a drive's frames and of their enhancement.

    drive: an open :class:`simharmon.io.drive.Drive` with flow and masks;
    enhance_camera(name, frames uint8 [H, W, 3], masks uint8 [H, W]) -> enhanced frames, in order.
    Returns {"input": e, "model": e}, each the mean over every camera's frame pairs.
    keep: if given, receives ``{camera: (frames, masks, enhanced)}`` for further scoring.
    """
    def unit(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].double() / 255.0

    errors: Dict[str, List[float]] = {"input": [], "model": []}
    for name in cameras or drive.cameras:
        count = drive.frame_count(name)
        frames = [drive.read_frame(name, i) for i in range(count)]
        masks = []
        for i in range(count):
            mask = drive.read_mask(name, i)
            if mask is None:
                raise ValueError(f"camera {name!r} frame {i} has no actor mask")
            masks.append((np.clip(mask, 0, 1) * 255).round().astype(np.uint8))
        flows = []
        for i in range(count - 1):
            pair = drive.read_flow(name, i)
            if pair is None:
                raise ValueError(f"camera {name!r} has no flow for frame {i}")
            flows.append((flow_to_tensor(pair[0]), flow_to_tensor(pair[1])))
        enhanced = enhance_camera(name, frames, masks)
        if keep is not None:
            keep[name] = (frames, masks, enhanced)
        for key, sequence in (("input", frames), ("model", enhanced)):
            errors[key].extend(e for e in warping_error([unit(f) for f in sequence], flows) if e is not None)
    return {key: float(np.mean(values)) for key, values in errors.items()}


def score_drive_frames(drive, kept: Dict[str, tuple]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Mean fMSE and PSNR against the drive's ground truth, per camera, for the kept model outputs,
    the input and Reinhard: ``{camera: {"model" | "input" | "reinhard": {"fmse", "psnr"}}}``."""
    result: Dict[str, Dict[str, Dict[str, float]]] = {}
    for name, (frames, masks, enhanced) in kept.items():
        scores: Dict[str, List[Tuple[float, float]]] = {"model": [], "input": [], "reinhard": []}
        for index, (frame, mask, output) in enumerate(zip(frames, masks, enhanced)):
            truth = drive.read_gt(name, index)
            if truth is None:
                raise ValueError(f"camera {name!r} frame {index} has no ground truth")
            for method, image in (("model", output), ("input", frame), ("reinhard", reinhard_transfer(frame, mask))):
                s = score_image(image, truth, mask)
                scores[method].append((s.fmse, s.psnr))
        result[name] = {m: {"fmse": float(np.mean([f for f, _ in v if f is not None])),
                            "psnr": float(np.mean([p for _, p in v]))} for m, v in scores.items()}
    return result


def _step_uint8(stream: StreamingEnhancer, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One uint8 frame with its uint8 actor mask through ``stream`` (the runtime's step)."""
    given = normalize_inputs({"mask": mask}, *image.shape[:2]) if stream.stream.uses_mask else {}
    return stream.step_uint8(image, **given).cpu().numpy()


def image_enhancer(model) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``enhance(image, mask)`` for :func:`score_heldout`: each image is a new stream's first frame."""
    return lambda image, mask: _step_uint8(StreamingEnhancer(model), image, mask)


def sequence_enhancer(model) -> Callable[[str, List[np.ndarray], List[np.ndarray]], List[np.ndarray]]:
    """``enhance_camera(name, frames, masks)`` for :func:`drive_warping_errors`: one stream per camera."""

    def run(_name: str, frames: List[np.ndarray], masks: List[np.ndarray]) -> List[np.ndarray]:
        stream = StreamingEnhancer(model)
        return [_step_uint8(stream, frame, mask) for frame, mask in zip(frames, masks)]

    return run


def stream_runner(model) -> Callable[[List[np.ndarray], List[np.ndarray], bool], List[np.ndarray]]:
    """``run(frames, masks, with_history)`` (uint8 frames and masks): one fresh stream per call, with the
    model's history settings or with ``history: none`` (frame by frame), for ``sequence_flicker``."""

    def run(frames: List[np.ndarray], masks: List[np.ndarray], with_history: bool) -> List[np.ndarray]:
        stream = StreamingEnhancer(model)
        if not with_history:
            stream = stream.with_stream(history="none")
        return [_step_uint8(stream, frame, mask) for frame, mask in zip(frames, masks)]

    return run
