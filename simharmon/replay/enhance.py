"""Offline replay: enhance a recorded frame sequence into an output folder, resumably.

``enhance_sequence(EnhanceRequest(...))`` is what ``simharmon enhance`` runs. The engine comes from
the runtime factory (``session.open_runtime``), as for every front door. Each enhanced frame is
written atomically to ``OUT/frames/<name>.png`` as soon as it is produced, and ``OUT/run.json``
records the run. A re-run with the same ``OUT`` skips the frames already written, seeds the
stream's history with the last outputs read back from disk, and continues: the result is
byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..io.atomic import atomic_save_png
from ..io.frame_sources import FrameSource, load_image_rgb, open_frame_source
from ..io.video import write_mp4
from ..runtime import RuntimeSpec
from ..runtime.inputs import NO_MASK
from .run_record import (
    FRAMES_DIR,
    MP4_FILE,
    RunRecord,
    check_resumable,
    clear_outputs,
    completed_prefix,
    read_run_record,
    remove_stale_temp_files,
)
from .session import NO_MASK_NOTE, open_runtime, prime_from_outputs

__all__ = ["EnhanceRequest", "EnhanceResult", "enhance_sequence", "read_mask"]

_RECORD_EVERY_S = 2.0  # how often run.json is rewritten during a run (it is also written at the end)
STREAM_KEY = "enhance"


@dataclass
class EnhanceRequest:
    """What to enhance and how.

    weights: checkpoint files; empty with ``config`` None means the bundled default model
        (``simharmon.models.bundled``), empty with a config means random (untrained) weights.
    config: a preset name or YAML path; None uses the config carried by the weights.
    masks: folder of inserted-actor masks (``<frame name>.png``, 8-bit, 255 = actor) for models
        whose stream options read them (the bundled model); without it their frames pass through.
    plain: run the plain computation instead of the exact optimizations.
    backend: the engine backend (``auto``: cudagraph on CUDA, eager on the CPU).
    max_frames: enhance at most the first N frames of the input (a later run can continue).
    overwrite: discard the outputs of a different earlier run in ``out`` instead of refusing.
    """

    input: Path
    out: Path
    weights: Sequence[Path] = ()
    config: Optional[str] = None
    nontemporal: bool = False
    mp4: bool = False
    device: str = "auto"
    max_frames: Optional[int] = None
    overwrite: bool = False
    trust_checkpoint: bool = False
    use_ema: bool = False
    progress: bool = True
    masks: Optional[Path] = None
    plain: bool = False
    backend: str = "auto"


@dataclass
class EnhanceResult:
    """Outcome of :func:`enhance_sequence`."""

    out_dir: Path
    frames_dir: Path
    frame_count: int  # frames in the input
    target_count: int  # frames this run was asked to produce
    completed: int  # frames of the target whose outputs are now present
    resumed_from: int  # outputs that already existed when the run started
    seconds: float
    mp4_path: Optional[Path] = None
    untrained: bool = False
    names: List[str] = field(default_factory=list)
    passthrough: int = 0  # frames of this session passed through unchanged (no mask)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_mask(masks: Optional[Path], name: str) -> Optional[np.ndarray]:
    """The mask of frame ``name`` from a ``--masks`` folder (``[H, W]`` uint8), or None without a folder."""
    if masks is None:
        return None
    path = Path(masks) / f"{name}.png"
    if not path.is_file():
        raise FileNotFoundError(f"no mask for frame {name!r}: {path} is missing")
    return np.asarray(Image.open(path).convert("L"))


def _prepare_out_dir(out_dir: Path, record: RunRecord, overwrite: bool) -> None:
    """Refuse (or, with overwrite, clear) an output folder that belongs to another run."""
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} exists and is not a folder")
    frames_dir = out_dir / FRAMES_DIR
    if overwrite:
        clear_outputs(out_dir)
        return
    existing = read_run_record(out_dir)
    if existing is None:
        if frames_dir.is_dir() and any(frames_dir.glob("*.png")):
            raise ValueError(
                f"{frames_dir} already holds PNG files but {out_dir} has no run.json, so they cannot be "
                "resumed safely; pass --overwrite to replace them, or choose another --out"
            )
        return
    check_resumable(existing, record, out_dir)


def _read_outputs(frames_dir: Path, names: Sequence[str]):
    for name in names:
        yield load_image_rgb(frames_dir / f"{name}.png")


def enhance_sequence(request: EnhanceRequest, log: Callable[[str], None] = _stderr) -> EnhanceResult:
    """Enhance ``request.input`` into ``request.out`` (resuming if it holds a partial run of the same input).

    Raises FileNotFoundError / ValueError with a message naming the offending path or frame for
    bad input, and IncompatibleRunError (a ValueError) when ``out`` holds another run's outputs.
    KeyboardInterrupt is recorded in run.json (status "interrupted") and re-raised.
    """
    began = time.perf_counter()
    if request.max_frames is not None and request.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {request.max_frames}")
    source: FrameSource = open_frame_source(request.input)
    names = source.names
    frame_count = len(names)
    target = frame_count if request.max_frames is None else min(frame_count, request.max_frames)
    if request.masks is not None and not Path(request.masks).is_dir():
        raise FileNotFoundError(f"--masks {request.masks} is not a folder")
    spec = RuntimeSpec(weights=tuple(request.weights), config=request.config, device=request.device,
                       backend=request.backend, use_ema=request.use_ema, trusted=request.trust_checkpoint,
                       plain=request.plain, nontemporal=request.nontemporal, max_streams=1)
    session = open_runtime(spec, log)
    engine, config = session.engine, session.config
    if engine.reads_masks and request.masks is None:
        log(NO_MASK_NOTE.format(name=config.name, where="this input", advice="give the masks with --masks DIR"))
    if engine.stream_config.history_warp != "off":
        raise ValueError(f"{config.name!r} warps its history with per-frame {engine.stream_config.history_warp}, which "
                         "a frame folder or video does not have; replay a drive that carries it (simharmon replay)")

    out_dir = Path(request.out)
    frames_dir = out_dir / FRAMES_DIR
    record = RunRecord(
        input=str(Path(request.input).resolve()), weights=session.weights, config=session.config_record(),
        input_kind=source.kind, device=str(engine.device), fps=source.fps, frame_count=frame_count,
        target_count=target, extra={"engine": engine.describe(), "passthrough": {"reason": NO_MASK, "frames": 0}},
    )
    _prepare_out_dir(out_dir, record, request.overwrite)
    frames_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(frames_dir)  # leftovers of a hard kill are never valid outputs

    done = completed_prefix(frames_dir, names)  # may exceed target after an earlier, longer run
    start = min(done, target)
    if start:
        log(f"resuming: {start} of {target} frames already in {frames_dir}")
    size = prime_from_outputs(engine, STREAM_KEY, frames_dir, names, start) if start < target else None
    passed = 0
    record.completed = done
    record.save(out_dir)

    bar = tqdm(total=target, initial=start, unit="frame", desc="enhance", disable=not request.progress,
               dynamic_ncols=True, file=sys.stderr)
    session_start, processed, last_saved = time.perf_counter(), 0, time.perf_counter()
    # Nothing to enhance: skip iter_from, which would decode a whole video just to reach the end.
    remaining = source.iter_from(start) if start < target else iter(())
    try:
        for index, name, image in remaining:
            if index >= target:
                break
            frame_size = image.shape[:2]
            if size is None:
                size = frame_size
            elif frame_size != size:
                raise ValueError(
                    f"frame {name!r} (index {index}) of {request.input} is {frame_size[1]}x{frame_size[0]} but the "
                    f"earlier frames are {size[1]}x{size[0]}; all frames of one input must share a resolution"
                )
            mask = read_mask(request.masks, name)
            result = engine.step_many({STREAM_KEY: torch.from_numpy(image)}, {STREAM_KEY: {"mask": mask}})[STREAM_KEY]
            if result.error is not None:
                raise ValueError(f"cannot enhance frame {name!r} (index {index}) of {request.input}: {result.error}")
            passed += result.passthrough is not None
            atomic_save_png(frames_dir / f"{name}.png", result.output.cpu().numpy())
            record.completed = index + 1
            processed += 1
            elapsed = time.perf_counter() - session_start
            bar.set_postfix_str(f"fps={processed / elapsed:.2f}" if elapsed > 0 else "", refresh=False)
            bar.update(1)
            if time.perf_counter() - last_saved >= _RECORD_EVERY_S:
                record.extra["passthrough"]["frames"] = passed
                record.save(out_dir)
                last_saved = time.perf_counter()
        record.status = "complete" if record.completed == frame_count else "partial"
    except KeyboardInterrupt:
        record.status = "interrupted"
        raise
    except BaseException:
        record.status = "failed"
        raise
    finally:
        bar.close()
        record.extra["passthrough"]["frames"] = passed
        record.save(out_dir)

    if passed:
        log(f"note: {passed} frame(s) passed through unchanged: no mask (passthrough={NO_MASK!r}; run.json records it)")
    produced = min(record.completed, target)
    if produced < target:
        log(f"warning: the input ended after {produced} frames although {target} were expected")
    mp4_path = None
    if request.mp4 and produced:
        mp4_path = out_dir / MP4_FILE
        write_mp4(mp4_path, _read_outputs(frames_dir, names[:produced]), source.fps)
        record.mp4 = MP4_FILE
        record.save(out_dir)
    return EnhanceResult(
        out_dir=out_dir, frames_dir=frames_dir, frame_count=frame_count, target_count=target,
        completed=produced, resumed_from=start, seconds=time.perf_counter() - began,
        mp4_path=mp4_path, untrained=session.untrained, names=names[:produced], passthrough=passed,
    )
