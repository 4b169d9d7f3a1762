"""``simharmon harmonize``: harmonize composites (an image or a folder) with one registered method.

Output layout (OUT/<method>/ so that several methods can share one OUT)::

    OUT/<method>/<stem>.png     one harmonized image per input, written atomically
    OUT/<method>/run.json       the method's settings and the list of finished images

A re-run with the same settings skips finished images (resume). Different settings in an existing
OUT/<method>/ are refused unless ``overwrite``, which redoes every image.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..io.atomic import atomic_save_png, atomic_write_json
from .methods import Harmonizer

__all__ = ["IMAGE_SUFFIXES", "HarmonizeResult", "pair_inputs", "harmonize_pairs"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
RUN_FILE = "run.json"


@dataclass
class HarmonizeResult:
    """What a run did."""

    out: Path
    total: int
    done: int
    resumed: int
    seconds: float
    untrained: bool
    written: List[Path] = field(default_factory=list)


def _images_in(folder: Path, what: str) -> List[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def pair_inputs(inputs: Path, masks: Path) -> List[Tuple[str, Path, Path]]:
    """(stem, image path, mask path) for an image + mask file, or two folders matched by file stem."""
    inputs, masks = Path(inputs), Path(masks)
    if not inputs.exists():
        raise FileNotFoundError(f"input not found: {inputs}")
    if not masks.exists():
        raise FileNotFoundError(f"masks not found: {masks}")
    if inputs.is_file():
        if inputs.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"input must be a .png/.jpg/.jpeg image or a folder, got {inputs}")
        if not masks.is_file():
            raise ValueError(f"INPUT is one image, so --masks must be one mask image, got the folder {masks}")
        return [(inputs.stem, inputs, masks)]
    images = _images_in(inputs, "input")
    if not images:
        raise ValueError(f"no .png/.jpg/.jpeg images in {inputs}")
    if not masks.is_dir():
        raise ValueError(f"INPUT is a folder, so --masks must be a folder of masks with the same file stems, got {masks}")
    by_stem = {p.stem: p for p in _images_in(masks, "masks")}
    missing = [p.name for p in images if p.stem not in by_stem]
    if missing:
        raise ValueError(f"no mask in {masks} for {len(missing)} image(s), e.g. {missing[:3]}")
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        raise ValueError(f"two input images share a file stem in {inputs}; outputs are named by stem")
    return [(p.stem, p, by_stem[p.stem]) for p in images]


def _read(path: Path, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert(mode))
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def _check_run(folder: Path, settings: dict, overwrite: bool) -> set:
    """The stems an earlier run with the same settings finished (empty when starting afresh)."""
    path = folder / RUN_FILE
    if not path.exists():
        return set()
    try:
        earlier = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        if overwrite:
            return set()
        raise ValueError(f"{path} is unreadable ({exc}); pass --overwrite to start afresh") from exc
    if earlier.get("settings") != settings:
        if overwrite:
            return set()
        raise ValueError(f"{folder} holds outputs of a run with other settings ({earlier.get('settings')}); "
                         "use another --out or pass --overwrite")
    return {stem for stem in earlier.get("done", []) if (folder / f"{stem}.png").is_file()}


def harmonize_pairs(pairs: List[Tuple[str, Path, Path]], harmonizer: Harmonizer, out: Path, *,
                    overwrite: bool = False, progress: bool = True,
                    on_image: Optional[Callable[[str], None]] = None) -> HarmonizeResult:  # fmt: skip
    """Harmonize every (stem, image, mask) into ``out/<method>/<stem>.png`` (resumable, atomic)."""

    folder = Path(out) / harmonizer.name
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"output path is not a folder: {folder}")
    settings = harmonizer.settings()
    done = _check_run(folder, settings, overwrite)
    resumed = len(done & {stem for stem, _, _ in pairs})
    start = time.perf_counter()
    result = HarmonizeResult(out=folder, total=len(pairs), done=0, resumed=resumed, seconds=0.0,
                             untrained=harmonizer.untrained)
    record = {"settings": settings, "done": sorted(done)}
    bar = tqdm(pairs, desc=f"harmonize ({harmonizer.name})", unit="image", disable=not progress)
    for stem, image_path, mask_path in bar:
        if stem in done:
            result.done += 1
            continue
        image, mask = _read(image_path, "RGB"), _read(mask_path, "L")
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask {mask_path.name} is {mask.shape[1]}x{mask.shape[0]} but image {image_path.name} "
                             f"is {image.shape[1]}x{image.shape[0]} (WxH)")
        target = folder / f"{stem}.png"
        atomic_save_png(target, harmonizer(image, mask))
        done.add(stem)
        record["done"] = sorted(done)
        atomic_write_json(folder / RUN_FILE, record)
        result.done += 1
        result.written.append(target)
        if on_image is not None:
            on_image(stem)
    if not (folder / RUN_FILE).exists():
        atomic_write_json(folder / RUN_FILE, record)
    result.seconds = time.perf_counter() - start
    return result
