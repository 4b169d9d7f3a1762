"""Offline replay: enhance a recorded frame sequence into an output folder, resumably.

``enhance_sequence(EnhanceRequest(...))`` is what ``simharmon enhance`` runs. Each enhanced frame
is written atomically to ``OUT/frames/<name>.png`` as soon as it is produced, and ``OUT/run.json``
records the run. A re-run with the same ``OUT`` skips the frames already written, seeds the
streaming enhancer's history with the last outputs read back from disk, and continues: the
result is byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from ..io.frame_sources import FrameSource, load_image_rgb, open_frame_source
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

__all__ = [
    "EnhanceRequest",
    "EnhanceResult",
    "enhance_sequence",
    "load_backend",
    "build_backend",
    "prime_from_outputs",
    "resolve_device",
    "weights_field",
    "mask_input",
    "UNTRAINED_WARNING",
    "NO_MASK_NOTE",
]

UNTRAINED_WARNING = """\
========================================================================================
WARNING: UNTRAINED WEIGHTS. No --weights were given and the config {name!r} has none, so
the enhancer runs with RANDOM weights. Its outputs are NOT meaningful enhancements: this
run only exercises the pipeline (reading, streaming, writing, resuming). Pass --weights
with a trained checkpoint for real results.
========================================================================================"""
NO_MASK_NOTE = ("note: {name!r} harmonizes inserted actors and reads their masks (stream options {options}); "
                "this input has none, so every frame gets an empty mask and passes through unchanged "
                "(give the masks with --masks DIR)")
_RECORD_EVERY_S = 2.0  # how often run.json is rewritten during a run (it is also written at the end)


def load_backend() -> Tuple[Callable, type]:
    """Import ``(build_enhancer, StreamingEnhancer)``; a separate function so tests can substitute them."""
    from ..models.enhancer import build_enhancer
    from ..runtime.stream import StreamingEnhancer

    return build_enhancer, StreamingEnhancer


@dataclass
class EnhanceRequest:
    """What to enhance and how.

    weights: checkpoint files; empty with ``config`` None means the bundled default model
        (``simharmon.models.bundled``), empty with a config means random (untrained) weights.
    config: a preset name or YAML path; None uses the config carried by the weights.
    masks: folder of inserted-actor masks (``<frame name>.png``, 8-bit, 255 = actor) for models
        whose stream options read them (the bundled model); without it such models get empty masks.
    plain: run the plain computation instead of the exact optimizations (``OptimizedEnhancer``).
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


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def resolve_device(device: Optional[str]) -> str:
    """``"auto"``/None -> cuda when available else cpu; a cuda request without CUDA is an error."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} was requested but CUDA is not available (torch.cuda.is_available() is False)")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return device


def weights_field(weights: Sequence[Path], use_ema: bool = False):
    """How a run record names its weights: ``"untrained"``, one resolved path, or a list (EMA marked)."""
    paths = [str(Path(w).resolve()) for w in weights]
    if not paths:
        return "untrained"
    if use_ema:  # EMA and live weights of one file are different models: a resume must not mix them
        paths = [f"{p} (EMA)" for p in paths]
    return paths[0] if len(paths) == 1 else paths


_weights_field = weights_field  # the name this module used before it was shared


def build_backend(weights: Sequence[Path], config: Optional[str], nontemporal: bool, device: str,
                  trust_checkpoint: bool = False, use_ema: bool = False, optimized: bool = True):
    """Build the model once; returns ``(model, streaming_cls, effective config)``.

    Create one ``streaming_cls(model, stream=config.stream)`` per camera: each has its own history.
    ``optimized`` wraps the model in :class:`OptimizedEnhancer` (the exact optimizations: same
    results up to float rounding, e.g. 3D convolutions of single frames run as 2D ones) unless its
    tokenizer has decoder skip connections, which that wrapper does not support.
    """
    import dataclasses

    build_enhancer, streaming_cls = load_backend()
    for weight in weights:
        if not Path(weight).is_file():
            raise FileNotFoundError(f"weights file not found: {weight}")
    extra = {"trusted": True} if trust_checkpoint else {}
    if use_ema:
        extra["use_ema"] = True
    model = build_enhancer(config, weights=[str(w) for w in weights] or None, device=device, strict=True, **extra)
    # Weights may carry their own config, so what was built is the reference, not the request.
    effective = model.config
    from ..models.enhancer import EnhancerModel

    if optimized and isinstance(model, EnhancerModel) and not effective.tokenizer.skip_connections:
        from ..runtime.optimize import OptimizedEnhancer

        model = OptimizedEnhancer(model).prepare()
    if nontemporal and effective.stream.history != "none":
        effective = effective.replace(stream=dataclasses.replace(effective.stream, history="none"))
    return model, streaming_cls, effective


def _build(request: EnhanceRequest, device: str):
    """Build the model and its streaming wrapper; returns (stream, effective config)."""
    model, streaming_cls, config = build_backend(request.weights, request.config, request.nontemporal, device,
                                                 request.trust_checkpoint, request.use_ema, not request.plain)
    return streaming_cls(model, stream=config.stream), config


def mask_input(stream_config, mask, height: int, width: int, device: str) -> dict:
    """``step`` keywords for an actor mask: ``{"mask": [1, 1, H, W] float}`` when the stream options
    read one (an absent mask becomes an empty one), else ``{}``.

    mask: ``[H, W]`` float in [0, 1], uint8 (255 = actor), or None.
    """
    import numpy as np
    import torch

    if not stream_config.uses_mask:
        return {}
    if mask is None:
        mask = np.zeros((height, width), np.float32)
    mask = np.asarray(mask)
    if mask.shape != (height, width):
        raise ValueError(f"the mask is {mask.shape[1]}x{mask.shape[0]} but the frame is {width}x{height}")
    values = mask.astype(np.float32) / 255.0 if mask.dtype == np.uint8 else mask.astype(np.float32)
    return {"mask": torch.from_numpy(values)[None, None].to(device)}


def _read_mask(masks: Optional[Path], name: str):
    if masks is None:
        return None
    path = Path(masks) / f"{name}.png"
    if not path.is_file():
        raise FileNotFoundError(f"no mask for frame {name!r}: {path} is missing")
    import numpy as np
    from PIL import Image

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


def prime_from_outputs(stream, frames_dir: Path, names: Sequence[str], start: int, device: str) -> Optional[tuple]:
    """Seed the stream with the last outputs before ``start``; returns their [H, W] size (None if none)."""
    from ..io.pixels import uint8_hwc_to_frame

    wanted = min(int(stream.history_length), start)
    if wanted <= 0:
        return None
    history, size = [], None
    for name in names[start - wanted:start]:
        path = frames_dir / f"{name}.png"
        image = load_image_rgb(path)
        if size is not None and image.shape[:2] != size:
            raise ValueError(f"cannot resume: earlier outputs in {frames_dir} have different sizes ({path})")
        size = image.shape[:2]
        history.append(uint8_hwc_to_frame(image, device=device))
    try:
        stream.prime(history)
    except ValueError as exc:
        raise ValueError(f"cannot resume from the outputs in {frames_dir}: {exc}") from exc
    return size


_prime = prime_from_outputs


def _mask_options(stream) -> str:
    return ", ".join(n for n in ("mask_condition", "region_pixel", "region_latent") if getattr(stream, n))


def _read_outputs(frames_dir: Path, names: Sequence[str]):
    for name in names:
        yield load_image_rgb(frames_dir / f"{name}.png")


def enhance_sequence(request: EnhanceRequest, log: Callable[[str], None] = _stderr) -> EnhanceResult:
    """Enhance ``request.input`` into ``request.out`` (resuming if it holds a partial run of the same input).

    Raises FileNotFoundError / ValueError with a message naming the offending path or frame for
    bad input, and IncompatibleRunError (a ValueError) when ``out`` holds another run's outputs.
    KeyboardInterrupt is recorded in run.json (status "interrupted") and re-raised.
    """
    from tqdm import tqdm

    from ..config import config_to_dict
    from ..io.atomic import atomic_save_png
    from ..io.pixels import frame_to_uint8_hwc, uint8_hwc_to_frame
    from ..io.video import write_mp4

    began = time.perf_counter()
    if request.max_frames is not None and request.max_frames < 1:
        raise ValueError(f"--max-frames must be >= 1, got {request.max_frames}")
    source: FrameSource = open_frame_source(request.input)
    names = source.names
    frame_count = len(names)
    target = frame_count if request.max_frames is None else min(frame_count, request.max_frames)
    device = resolve_device(request.device)
    from ..models.bundled import BUNDLED_WEIGHTS, MODEL_CARD, default_weights

    request = dataclasses.replace(request, weights=default_weights(request.weights, request.config))
    if request.masks is not None and not Path(request.masks).is_dir():
        raise FileNotFoundError(f"--masks {request.masks} is not a folder")
    stream, config = _build(request, device)

    untrained = not request.weights and bool(config.untrained)
    if untrained:
        log(UNTRAINED_WARNING.format(name=config.name))
    if request.weights and Path(request.weights[0]).resolve() == BUNDLED_WEIGHTS.resolve():
        log(f"using the bundled default model {config.name!r} (model card: {MODEL_CARD})")
    if config.stream.uses_mask and request.masks is None:
        log(NO_MASK_NOTE.format(name=config.name, options=_mask_options(config.stream)))

    out_dir = Path(request.out)
    frames_dir = out_dir / FRAMES_DIR
    record = RunRecord(
        input=str(Path(request.input).resolve()), weights=_weights_field(request.weights, request.use_ema),
        config=config_to_dict(config), input_kind=source.kind, device=device, fps=source.fps,
        frame_count=frame_count, target_count=target,
    )
    _prepare_out_dir(out_dir, record, request.overwrite)
    frames_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(frames_dir)  # leftovers of a hard kill are never valid outputs

    done = completed_prefix(frames_dir, names)  # may exceed target after an earlier, longer run
    start = min(done, target)
    if start:
        log(f"resuming: {start} of {target} frames already in {frames_dir}")
    size = _prime(stream, frames_dir, names, start, device) if start < target else None
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
            try:
                extra = mask_input(config.stream, _read_mask(request.masks, name), *frame_size, device)
                output = stream.step(uint8_hwc_to_frame(image, device=device), **extra)
            except ValueError as exc:
                raise ValueError(f"cannot enhance frame {name!r} (index {index}) of {request.input}: {exc}") from exc
            atomic_save_png(frames_dir / f"{name}.png", frame_to_uint8_hwc(output)[0])
            record.completed = index + 1
            processed += 1
            elapsed = time.perf_counter() - session_start
            bar.set_postfix_str(f"fps={processed / elapsed:.2f}" if elapsed > 0 else "", refresh=False)
            bar.update(1)
            if time.perf_counter() - last_saved >= _RECORD_EVERY_S:
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
        record.save(out_dir)

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
        mp4_path=mp4_path, untrained=untrained, names=names[:produced],
    )
