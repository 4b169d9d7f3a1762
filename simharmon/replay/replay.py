"""``simharmon replay``: enhance every camera of a logged drive, then evaluate and report.

Output folder ``RUN``::

    replay.json                          what produced the run (drive, weights, config) and its status
    cameras/<camera>/enhanced/<name>.png  enhanced frames, written atomically as they are produced
    cameras/<camera>/latency.json         per-frame enhancer latency (ms)
    videos/<camera>_enhanced.mp4, videos/side_by_side.mp4
    metrics/per_frame.csv, metrics/per_frame.json, metrics/summary.json
    plots/psnr.png, plots/fmse.png, plots/warping_error.png, plots/latency.png
    report.html                           everything above in one self-contained page
    enhanced.mcap                         with --mcap: the drive plus enhanced image topics (a log: in its
                                          own message types and encodings, simharmon.io.mcap_write)

Cameras are enhanced in time order, interleaved frame by frame as a simulator would render them,
each a stream of one engine from the runtime factory (its own history slot), with the per-frame
inputs the drive carries and the stream options read (mask; flow, or depth + pose + intrinsics). A re-run with the
same RUN resumes every camera after its last contiguous output, seeding its history from the
outputs on disk, so the enhanced frames are byte-identical to an uninterrupted run's; metrics,
plots, videos and the report are recomputed from them at the end of every run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from ..eval.evaluate import EvalOptions
from ..io.atomic import atomic_save_png, atomic_write_json
from ..io.drive import Drive, DriveError
from ..io.drives import LOG_KINDS, open_drive
from ..io.log_topics import LogSelection
from ..runtime import Engine, RuntimeSpec, resolve_device
from ..runtime.inputs import NO_MASK
from .replay_outputs import write_outputs
from .run_record import (
    IncompatibleRunError,
    RunRecord,
    check_resumable,
    completed_prefix,
    read_run_record,
    remove_stale_temp_files,
)
from .session import NO_MASK_NOTE, open_runtime, prime_from_outputs

__all__ = ["ReplayOptions", "ReplayResult", "replay", "REPLAY_FILE", "REPLAY_FORMAT"]

REPLAY_FILE = "replay.json"
REPLAY_FORMAT = "simharmon-replay-run"
_RECORD_EVERY_S = 2.0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay and how. Weight paths are local files; empty ``weights`` = random weights."""

    drive: Path
    out: Path
    weights: Tuple[Path, ...] = ()
    config: Optional[str] = None
    nontemporal: bool = False
    device: str = "auto"
    drive_kind: str = "auto"
    fps: Optional[float] = None
    cameras: Optional[Tuple[str, ...]] = None  # camera names or, for logs, image topics
    topics: Tuple[str, ...] = ()  # a log's camera image topics (default: discovered)
    mask_topics: Tuple[str, ...] = ()  # "IMAGE_TOPIC=MASK_TOPIC", or one bare mask topic
    max_frames: Optional[int] = None
    overwrite: bool = False
    trust_checkpoint: bool = False
    use_ema: bool = False
    raft_weights: Optional[Path] = None
    lpips_backbone: Optional[Path] = None
    lpips_heads: Optional[Path] = None
    dino_weights: Optional[Path] = None
    out_of_frame: str = "occluded"
    mcap: bool = False
    progress: bool = True
    plain: bool = False  # the plain computation instead of the exact optimizations
    backend: str = "auto"  # the engine backend (auto: cudagraph on CUDA, eager on the CPU)

    def __post_init__(self):
        object.__setattr__(self, "drive", Path(self.drive))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "weights", tuple(Path(w) for w in self.weights))
        object.__setattr__(self, "topics", tuple(self.topics))
        object.__setattr__(self, "mask_topics", tuple(self.mask_topics))
        if self.cameras is not None:
            object.__setattr__(self, "cameras", tuple(self.cameras))
            if not self.cameras:
                raise ValueError("cameras, when given, must name at least one camera")
        if self.max_frames is not None and (isinstance(self.max_frames, bool) or self.max_frames < 1):
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")


@dataclass
class ReplayResult:
    """Outcome of :func:`replay`."""

    out_dir: Path
    cameras: List[str]
    produced: Dict[str, int]
    resumed_from: Dict[str, int]
    seconds: float
    untrained: bool
    summary_path: Optional[Path] = None
    report_path: Optional[Path] = None
    videos: Dict[str, Path] = field(default_factory=dict)
    mcap_path: Optional[Path] = None
    status: str = "complete"
    passthrough: Dict[str, int] = field(default_factory=dict)  # frames passed through (no mask), per camera


def camera_dir(out_dir: Path, camera: str) -> Path:
    return Path(out_dir) / "cameras" / camera


def _prepare(out_dir: Path, record: RunRecord, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} exists and is not a folder")
    if overwrite:
        for name in ("cameras", "videos", "metrics", "plots"):
            if (out_dir / name).is_dir():
                shutil.rmtree(out_dir / name)
        for name in (REPLAY_FILE, "report.html", "enhanced.mcap"):
            if (out_dir / name).is_file():
                (out_dir / name).unlink()
        return
    existing = read_run_record(out_dir, REPLAY_FILE, REPLAY_FORMAT, "simharmon replay")
    if existing is None:
        if (out_dir / "cameras").is_dir() and any((out_dir / "cameras").rglob("*.png")):
            raise IncompatibleRunError(f"{out_dir / 'cameras'} holds PNG files but {out_dir} has no {REPLAY_FILE}; "
                                       "pass --overwrite to replace them, or choose another --out")
        return
    check_resumable(existing, record, out_dir)


def _load_latency(path: Path) -> Dict[str, Optional[float]]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): (None if v is None else float(v)) for k, v in data.get("frames", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}  # a damaged latency log only loses timings, never frames


def _save_latency(path: Path, latency: Dict[str, Optional[float]]) -> None:
    atomic_write_json(path, {"unit": "ms", "frames": latency})


def drive_inputs(drive: Drive, camera: str, index: int, used: Sequence[str]) -> Dict[str, Any]:
    """The per-frame inputs of frame ``index`` that the engine reads (``used``), from what the drive carries.

    mask ``[H, W]`` uint8; flow: the backward flow to the previous frame (the drive's pair
    ``index - 1``); depth ``[H, W]``; ``camera_to_world`` 4x4 (the engine forms the relative pose);
    intrinsics ``(fx, fy, cx, cy)``. A layer the drive lacks is left out.
    """
    given: Dict[str, Any] = {}
    if "mask" in used:
        given["mask"] = drive.read_mask(camera, index)
    if "flow" in used and index > 0:
        pair = drive.read_flow(camera, index - 1)
        given["flow"] = None if pair is None else pair[1]
    if "depth" in used:
        given["depth"] = drive.read_depth(camera, index)
        given["camera_to_world"] = drive.read_pose(camera, index)
        intrinsics = drive.camera(camera).intrinsics
        given["intrinsics"] = None if intrinsics is None else (intrinsics.fx, intrinsics.fy, intrinsics.cx,
                                                               intrinsics.cy)
    return {k: v for k, v in given.items() if v is not None}


class _Camera:
    """Per-camera replay state: where it resumes, its outputs, latencies and passthroughs."""

    def __init__(self, drive: Drive, name: str, out_dir: Path, target: int):
        self.name = name
        self.names = drive.frame_names(name)
        self.target = target
        self.dir = camera_dir(out_dir, name) / "enhanced"
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.dir)
        remove_stale_temp_files(self.dir.parent)
        self.done = completed_prefix(self.dir, self.names)
        self.start = min(self.done, target)
        self.latency_path = self.dir.parent / "latency.json"
        self.latency = _load_latency(self.latency_path)
        self.frames = None
        self.passthrough = 0


def _step_timed(engine: Engine, camera: str, image, given: Dict[str, Any]):
    synchronize = engine.device.type == "cuda"
    if synchronize:
        torch.cuda.synchronize()
    began = time.perf_counter()
    result = engine.step_many({camera: torch.from_numpy(image)}, {camera: given})[camera]
    if synchronize:
        torch.cuda.synchronize()
    return result, (time.perf_counter() - began) * 1000.0


def _load_average() -> Optional[float]:
    """The 1-minute load average (None where the platform has none, e.g. Windows)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _latency_context(device: str, load_start: Optional[float]) -> Dict[str, object]:
    """What the latencies were measured on and under (the report prints it beside them)."""
    name = f"{device} ({torch.cuda.get_device_name(torch.device(device))})" if device.startswith("cuda") else device
    return {"device": name, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_avg_1m": {"start": load_start, "end": _load_average()}}


def _enhance(cameras: List[_Camera], drive: Drive, engine: Engine, record: RunRecord, out_dir: Path, progress: bool,
             log: Callable[[str], None]) -> None:
    """Run every camera to its target, frame index by frame index."""
    total = sum(c.target for c in cameras)
    bar = tqdm(total=total, initial=sum(c.start for c in cameras), unit="frame", desc="replay",
               disable=not progress, dynamic_ncols=True, file=sys.stderr)
    last_saved = time.perf_counter()
    try:
        active = [c for c in cameras if c.start < c.target]
        for camera in active:
            camera.frames = drive.iter_frames(camera.name, camera.start)
        while active:
            for camera in list(active):
                item = next(camera.frames, None)
                if item is None:
                    raise DriveError(f"camera {camera.name!r} of {drive.info.path} ended after {camera.done} frames, "
                                     f"but it reported {len(camera.names)}")
                index, name, image = item
                given = drive_inputs(drive, camera.name, index, engine.used_inputs)
                result, milliseconds = _step_timed(engine, camera.name, image, given)
                if result.error is not None:
                    raise ValueError(f"cannot enhance frame {name!r} (index {index}) of camera {camera.name!r}: "
                                     f"{result.error}")
                camera.passthrough += result.passthrough is not None
                atomic_save_png(camera.dir / f"{name}.png", result.output.cpu().numpy())
                camera.latency[name] = round(milliseconds, 3)
                camera.done = max(camera.done, index + 1)
                bar.set_postfix_str(f"{camera.name} {milliseconds:.0f} ms", refresh=False)
                bar.update(1)
                if index + 1 >= camera.target:
                    active.remove(camera)
            if time.perf_counter() - last_saved >= _RECORD_EVERY_S:
                for camera in cameras:
                    _save_latency(camera.latency_path, camera.latency)
                _record_progress(record, cameras)
                record.save(out_dir)
                last_saved = time.perf_counter()
    finally:
        bar.close()
        for camera in cameras:
            _save_latency(camera.latency_path, camera.latency)


def _record_progress(record: RunRecord, cameras: List[_Camera]) -> None:
    record.completed = sum(min(c.done, c.target) for c in cameras)
    record.extra["passthrough"] = {"reason": NO_MASK, "frames": {c.name: c.passthrough for c in cameras}}


def replay(options: ReplayOptions, log: Callable[[str], None] = _stderr) -> ReplayResult:
    """Replay ``options.drive`` into ``options.out`` (resuming a partial run of the same drive and model).

    Raises FileNotFoundError / DriveError / ValueError for bad inputs (naming the path, camera or
    frame), IncompatibleRunError when ``out`` holds a different run. KeyboardInterrupt is
    recorded in ``replay.json`` (status "interrupted") and re-raised; a re-run resumes.
    """
    began = time.perf_counter()
    drive = open_drive(options.drive, options.drive_kind, options.fps, LogSelection(options.topics, options.mask_topics))
    names = list(dict.fromkeys(drive.find_camera(c) for c in options.cameras)) if options.cameras else drive.cameras
    for note in drive.notes:
        log(f"note: {note}")
    device = resolve_device(options.device)
    spec = RuntimeSpec(weights=tuple(options.weights), config=options.config, device=device,
                       backend=options.backend, use_ema=options.use_ema, trusted=options.trust_checkpoint,
                       plain=options.plain, nontemporal=options.nontemporal, max_streams=max(len(names), 1))
    eval_options = EvalOptions(options.raft_weights, options.lpips_backbone, options.lpips_heads, options.dino_weights,
                               options.out_of_frame, device, options.progress)  # validates the paths before any work
    session = open_runtime(spec, log)
    engine, config = session.engine, session.config
    untrained = session.untrained
    unmasked = [drive.camera(n).title for n in names if not drive.has("mask", n)]
    if engine.reads_masks and unmasked:
        log(NO_MASK_NOTE.format(name=config.name, where=f"camera(s) {unmasked} of {options.drive}",
                                advice="their frames pass through unchanged"))

    out_dir = options.out
    targets = {n: drive.frame_count(n) if options.max_frames is None else min(drive.frame_count(n), options.max_frames)
               for n in names}
    record = RunRecord(
        input=str(Path(options.drive).resolve()), weights=session.weights,
        config=session.config_record(), input_kind=drive.info.kind, device=str(engine.device), fps=drive.info.fps,
        frame_count=sum(drive.frame_count(n) for n in names), target_count=sum(targets.values()),
        run_format=REPLAY_FORMAT, file=REPLAY_FILE,
        extra={"cameras": names, "frames_per_camera": {n: drive.frame_count(n) for n in names},
               "engine": engine.describe()},
        frames_dir=None, frames_dirs={n: (camera_dir(Path("."), n) / "enhanced").as_posix() for n in names},
    )
    # Which cameras were replayed (and from which topics) is part of what a resume must match.
    record.config = dict(record.config, replay_cameras=names)
    if drive.info.kind in LOG_KINDS:
        record.config["replay_topics"] = {n: drive.camera(n).label for n in names}
        record.config["replay_companions"] = {n: drive.info.extra["companions"][n] for n in names}
    _prepare(out_dir, record, options.overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    for folder in (out_dir, out_dir / "metrics", out_dir / "plots", out_dir / "videos"):
        remove_stale_temp_files(folder)  # left by a hard kill; never valid outputs

    cameras = [_Camera(drive, n, out_dir, targets[n]) for n in names]
    for camera in cameras:
        if camera.start:
            log(f"resuming camera {camera.name}: {camera.start} of {camera.target} frames already in {camera.dir}")
        if camera.start < camera.target:
            try:
                prime_from_outputs(engine, camera.name, camera.dir, camera.names, camera.start,
                                   lambda i, name=camera.name: drive_inputs(drive, name, i, engine.used_inputs))
            except ValueError as exc:
                raise ValueError(f"camera {camera.name!r}: {exc}") from exc
    _record_progress(record, cameras)
    record.save(out_dir)
    load_start = _load_average()
    try:
        _enhance(cameras, drive, engine, record, out_dir, options.progress, log)
        complete = all(c.done >= drive.frame_count(c.name) for c in cameras)
        record.status = "complete" if complete else "partial"
    except KeyboardInterrupt:
        record.status = "interrupted"
        raise
    except BaseException:
        record.status = "failed"
        raise
    finally:
        _record_progress(record, cameras)
        record.save(out_dir)
    passed = {c.name: c.passthrough for c in cameras if c.passthrough}
    if passed:
        log(f"note: frames passed through unchanged for lack of a mask (passthrough={NO_MASK!r}, in {REPLAY_FILE}): "
            + ", ".join(f"{name}: {count}" for name, count in passed.items()))

    produced = {c.name: min(c.done, c.target) for c in cameras}
    result = ReplayResult(out_dir=out_dir, cameras=names, produced=produced,
                          resumed_from={c.name: c.start for c in cameras}, seconds=0.0, untrained=untrained,
                          status=record.status, passthrough={c.name: c.passthrough for c in cameras})
    context = {"weights": record.weights, "config_name": config.name, "untrained": untrained,
               "status": record.status, "device": device, "latency_context": _latency_context(device, load_start)}
    write_outputs(drive, out_dir, {c.name: [c.dir / f"{n}.png" for n in c.names[:produced[c.name]]] for c in cameras},
                  {c.name: c.latency for c in cameras}, eval_options, context, options.mcap, result, log)
    result.seconds = time.perf_counter() - began
    return result

