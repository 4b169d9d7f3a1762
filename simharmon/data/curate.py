"""Curation of training pairs: ``simharmon curate --images DIR [--masks DIR] --out DIR --recipe ...``.

Recipes (each makes a degraded INPUT whose TARGET is the source image; pixels outside the mask are
the source's bit for bit):

* ``isp``: ISP modification of the masked foreground (``isp.py``);
* ``poisson``: random Poisson blending with alpha mixing (``poisson.py``, needs OpenCV);
* ``artifacts``: novel-view artifact degradations inside the mask (``degrade.py``);
* ``inverse``: DiffHarmony++'s inverse harmonization (a model, so it is passed in by the caller as
  ``recipes={"inverse": fn}``; the CLI builds it from ``simharmon.harmonize.inverse``).
* ``photo``: real-photo composites (``photo.py``): a random view of the source at a random scale,
  resized to ``photo_size``, a segmented or random region and a colour change inside it. Each pair
  has its own target (the view), written to ``targets/<pair id>.png``; the source's mask is unused.

Temporal sequences (``temporal > 0``): crops along a synthetic camera path with exact flow
(``temporal_seq.py``) of one ISP composite per sequence; with the ``photo`` recipe, pans and zooms
over the photo with a per-frame exposure jitter of the region (``photo.photo_sequence``).

Output folder layout (paths in the JSON files are relative to OUT)::

    OUT/manifest.json   {"train": {id: {"image", "target_image", "prompt", "mask"}}, "test": {...}}
    OUT/temporal.json   {"train": {id: {"frames": [...], "targets": [...], "masks": [...],
                                        "flow": "temporal/<id>/flow.npz"}}, "test": {...}}
    OUT/curate.json     settings and per-pair parameters (provenance)
    OUT/inputs/<id>.png, OUT/targets/<source>.png, OUT/masks/<id>.png, OUT/temporal/<id>/...

``manifest.json`` is NVIDIA's layout; the extra ``mask`` key is ignored by their trainer. The split
is per source image, so no test source is ever seen in training. Every file is written atomically;
a pair's random draws depend only on (seed, source index, recipe, variant).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..io.atomic import atomic_path, atomic_save_png, atomic_write_json
from .degrade import random_artifacts
from .isp import apply_isp, as_mask, composite, isp_composite, sample_isp_params
from .photo import photo_pair, photo_sequence
from .poisson import random_poisson_composite
from .procedural import procedural_scene
from .temporal_seq import camera_path, crop_sequence

__all__ = ["CurateConfig", "CurateResult", "RECIPES", "MODEL_RECIPES", "Recipe", "curate", "make_pair", "load_sources", "random_mask", "DEFAULT_PROMPT"]

RECIPES = ("isp", "poisson", "artifacts", "photo", "inverse")
MODEL_RECIPES = ("inverse",)  # provided by the caller: recipe(image, mask, rng) -> (input, parameters)
Recipe = Callable[[np.ndarray, np.ndarray, np.random.Generator], Tuple[np.ndarray, dict]]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_PROMPT = "remove degradation"


@dataclass(frozen=True)
class CurateConfig:
    """Settings of one curation run.

    recipes: subset of RECIPES; variants: pairs per source image and recipe; temporal: sequences per
    source image (0 = none) of ``temporal_frames`` frames, each crop ``temporal_crop`` of the source
    side (rounded down to a multiple of ``multiple``); test_fraction: share of source images held
    out for "test" (at least one when there are two or more sources and the fraction is > 0).
    photo_size: (width, height) of the ``photo`` recipe's pairs and sequences; photo_mild_share: the
    share of its pairs with a mild colour change; photo_jitter_ev: its sequences' per-frame exposure
    jitter (+- EV).
    """

    recipes: Tuple[str, ...] = ("isp",)
    variants: int = 1
    temporal: int = 0
    temporal_frames: int = 5
    temporal_crop: float = 0.75
    multiple: int = 16
    test_fraction: float = 0.1
    seed: int = 0
    prompt: str = DEFAULT_PROMPT
    photo_size: Tuple[int, int] = (256, 144)
    photo_mild_share: float = 0.15
    photo_jitter_ev: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "recipes", tuple(str(r) for r in self.recipes))
        object.__setattr__(self, "photo_size", tuple(int(v) for v in self.photo_size))
        if len(self.photo_size) != 2 or min(self.photo_size) < 16 or any(v % self.multiple for v in self.photo_size):
            raise ValueError(f"photo_size must be (width, height), each >= 16 and a multiple of {self.multiple}, "
                             f"got {self.photo_size}")
        if not 0.0 <= self.photo_mild_share <= 1.0 or not 0.0 <= self.photo_jitter_ev <= 2.0:
            raise ValueError("photo_mild_share must be in [0, 1] and photo_jitter_ev in [0, 2]")
        unknown = [r for r in self.recipes if r not in RECIPES]
        if unknown or not self.recipes:
            raise ValueError(f"unknown recipe(s) {unknown}; choose from {list(RECIPES)}")
        if self.variants < 0 or self.temporal < 0 or self.variants + self.temporal == 0:
            raise ValueError("variants and temporal must be >= 0 and not both 0")
        if self.temporal_frames < 2:
            raise ValueError(f"temporal_frames must be >= 2, got {self.temporal_frames}")
        if not 0.2 <= self.temporal_crop < 1.0:
            raise ValueError(f"temporal_crop must be in [0.2, 1), got {self.temporal_crop}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.multiple < 1:
            raise ValueError(f"multiple must be >= 1, got {self.multiple}")


@dataclass(frozen=True)
class CurateResult:
    """What a run wrote: counts per split and the manifest paths."""

    out: Path
    pairs: Dict[str, int]
    sequences: Dict[str, int]
    manifest: Path
    temporal_manifest: Optional[Path]


def _read_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("RGB"))
    except OSError as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc


def _read_mask(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("L"))
    except OSError as exc:
        raise ValueError(f"cannot read mask {path}: {exc}") from exc


def _list_images(folder: Path, what: str) -> List[Path]:
    if not folder.exists():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"{what} path is not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return files


def random_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random foreground: a union of 1-3 boxes and ellipses covering about 3-30 % of the frame.

    Returns uint8 ``[H, W]`` (0 or 255).
    """
    ys, xs = np.mgrid[0:height, 0:width]
    mask = np.zeros((height, width), dtype=bool)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.15, 0.85) * width
        ry, rx = rng.uniform(0.08, 0.25) * height, rng.uniform(0.06, 0.2) * width
        if rng.random() < 0.5:
            mask |= (np.abs(ys - cy) <= ry) & (np.abs(xs - cx) <= rx)
        else:
            mask |= ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0
    return mask.astype(np.uint8) * 255


def load_sources(images: Optional[Path], masks: Optional[Path], procedural: int = 0,
                 procedural_size: Tuple[int, int] = (256, 144)) -> List[Tuple[str, np.ndarray, Optional[np.ndarray]]]:
    """Source images as (name, uint8 ``[H, W, 3]``, uint8 ``[H, W]`` mask or None).

    images: folder of .png/.jpg; masks: folder with one mask per image of the same stem (any image
    suffix, same size); procedural: this many generated scenes (``procedural.py``) are added.
    """
    sources: List[Tuple[str, np.ndarray, Optional[np.ndarray]]] = []
    if images is not None:
        files = _list_images(Path(images), "images")
        if not files:
            raise ValueError(f"no .png/.jpg/.jpeg images in {images}")
        mask_files = {}
        if masks is not None:
            mask_files = {p.stem: p for p in _list_images(Path(masks), "masks")}
            missing = [p.name for p in files if p.stem not in mask_files]
            if missing:
                raise ValueError(f"no mask in {masks} for {len(missing)} image(s), e.g. {missing[:3]} "
                                 "(masks need the image's file name stem)")
        for path in files:
            image = _read_rgb(path)
            mask = None
            if masks is not None:
                mask = _read_mask(mask_files[path.stem])
                if mask.shape != image.shape[:2]:
                    raise ValueError(f"mask {mask_files[path.stem].name} is {mask.shape[1]}x{mask.shape[0]} but image "
                                     f"{path.name} is {image.shape[1]}x{image.shape[0]} (WxH)")
            sources.append((path.stem, image, mask))
    for index in range(procedural):
        image, mask = procedural_scene(index, *procedural_size)
        sources.append((f"procedural_{index:05d}", image, mask))
    if not sources:
        raise ValueError("no source images: give --images DIR and/or --procedural N")
    names = [name for name, _, _ in sources]
    if len(set(names)) != len(names):
        raise ValueError("source image names (file stems) must be unique")
    return sources


def _split(count: int, fraction: float, seed: int) -> List[str]:
    """'train' / 'test' per source, deterministic under ``seed``."""
    order = np.random.default_rng([seed, 1]).permutation(count)
    n_test = int(round(count * fraction))
    if fraction > 0 and count >= 2:
        n_test = min(max(n_test, 1), count - 1)
    test = set(order[:n_test].tolist())
    return ["test" if i in test else "train" for i in range(count)]


def make_pair(recipe: str, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
              recipes: Optional[Mapping[str, Recipe]] = None) -> Tuple[np.ndarray, dict]:
    """The degraded input of one pair for ``recipe``; returns (uint8 ``[H, W, 3]``, parameters).

    recipes: callables for the model-based recipes (``MODEL_RECIPES``).
    """
    if recipe in MODEL_RECIPES:
        if not recipes or recipe not in recipes:
            raise ValueError(f"recipe {recipe!r} needs its model; pass recipes={{{recipe!r}: ...}} "
                             "(CLI: see simharmon curate --help)")
        return recipes[recipe](image, mask, rng)
    if recipe == "isp":
        out, params = isp_composite(image, mask, rng)
        return out, {"isp": params.to_dict()}
    if recipe == "poisson":

        return random_poisson_composite(image, mask, rng)
    if recipe == "artifacts":
        out, kinds = random_artifacts(image, mask, rng)
        return out, {"artifacts": kinds}
    raise ValueError(f"unknown recipe {recipe!r}; choose from {list(RECIPES)}")


def _crop_size(height: int, width: int, config: CurateConfig) -> Tuple[int, int]:
    m = config.multiple
    w = int(width * config.temporal_crop) // m * m
    h = int(height * config.temporal_crop) // m * m
    if w < m or h < m:
        raise ValueError(f"source {width}x{height} is too small for temporal crops (multiple of {m})")
    return w, h


def _write_frames(out: Path, seq_id: str, seq, config: CurateConfig) -> dict:
    """Write a sequence's frames, targets, masks and flow; returns its temporal.json entry."""
    folder = out / "temporal" / seq_id
    entry: Dict[str, object] = {"frames": [], "targets": [], "masks": [], "prompt": config.prompt}
    for t, (frame, target, crop_mask) in enumerate(zip(seq.frames, seq.targets, seq.masks)):
        for key, array, name in (("frames", frame, "frame"), ("targets", target, "target")):
            atomic_save_png(folder / f"{name}_{t:03d}.png", array)
            entry[key].append(f"temporal/{seq_id}/{name}_{t:03d}.png")
        _save_mask(folder / f"mask_{t:03d}.png", crop_mask)
        entry["masks"].append(f"temporal/{seq_id}/mask_{t:03d}.png")
    with atomic_path(folder / "flow.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, flow_fw=seq.flow_fw, flow_bw=seq.flow_bw)
    entry["flow"] = f"temporal/{seq_id}/flow.npz"
    return entry


def _write_sequence(out: Path, seq_id: str, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                    config: CurateConfig) -> Tuple[dict, dict]:
    if "photo" in config.recipes:
        seq = photo_sequence(rng, image, config.photo_size, config.temporal_frames, config.photo_jitter_ev)
        return _write_frames(out, seq_id, seq, config), {"recipe": "temporal_photo", **seq.params}
    height, width = image.shape[:2]
    params = sample_isp_params(rng, min_change_ev=0.25)
    degraded = composite(apply_isp(image, params, rng), image, mask)
    crop_w, crop_h = _crop_size(height, width, config)
    offsets = camera_path(rng, config.temporal_frames, (width - crop_w, height - crop_h))
    seq = crop_sequence(degraded, image, mask, (crop_w, crop_h), offsets)
    return _write_frames(out, seq_id, seq, config), {"recipe": "temporal_isp", "isp": params.to_dict(),
                                                     "offsets": seq.offsets.tolist()}


def _save_mask(path: Path, mask: np.ndarray) -> None:
    """Masks are stored as RGB PNGs with equal channels (atomic_save_png writes RGB)."""
    atomic_save_png(path, np.repeat(mask[:, :, None], 3, axis=2))


def curate(sources, out: Path, config: CurateConfig = CurateConfig(), progress: bool = True,
           recipes: Optional[Mapping[str, Recipe]] = None) -> CurateResult:
    """Make the pairs and sequences of ``config`` from ``sources`` (see :func:`load_sources`) into ``out``.

    recipes: the model-based recipes' callables (``MODEL_RECIPES``), by name.
    """
    missing = [r for r in config.recipes if r in MODEL_RECIPES and not (recipes and r in recipes)]
    if missing:
        raise ValueError(f"recipe(s) {missing} need their model (for 'inverse': --inverse-weights and --classifier)")

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out is not a folder: {out}")
    if not sources:
        raise ValueError("no source images")
    splits = _split(len(sources), config.test_fraction, config.seed)
    manifest: Dict[str, dict] = {"train": {}, "test": {}}
    temporal: Dict[str, dict] = {"train": {}, "test": {}}
    provenance: Dict[str, dict] = {}
    for index, (name, image, given_mask) in enumerate(tqdm(sources, desc="curate", unit="image", disable=not progress)):
        mask_rng = np.random.default_rng([config.seed, index, 99])
        mask = given_mask if given_mask is not None else random_mask(mask_rng, *image.shape[:2])
        mask = np.asarray(mask)
        as_mask(mask, image.shape[:2])  # size check with a clear message
        if not (mask > 0).any():
            raise ValueError(f"the mask of {name} is empty: every recipe needs a foreground")
        split = splits[index]
        target_rel = f"targets/{name}.png"
        if any(recipe != "photo" for recipe in config.recipes):
            atomic_save_png(out / target_rel, image)
        for r, recipe in enumerate(config.recipes):
            for variant in range(config.variants):
                pair_id = f"{name}_{recipe}_{variant:02d}"
                rng = np.random.default_rng([config.seed, index, r, variant])
                if recipe == "photo":
                    pair = photo_pair(rng, image, config.photo_size, config.photo_mild_share)
                    degraded, pair_mask, params = pair.input, pair.mask, pair.params
                    target_rel = f"targets/{pair_id}.png"
                    atomic_save_png(out / target_rel, pair.target)
                else:
                    degraded, params = make_pair(recipe, image, mask, rng, recipes)
                    pair_mask, target_rel = mask, f"targets/{name}.png"
                atomic_save_png(out / "inputs" / f"{pair_id}.png", degraded)
                _save_mask(out / "masks" / f"{pair_id}.png", pair_mask)
                manifest[split][pair_id] = {"image": f"inputs/{pair_id}.png", "target_image": target_rel,
                                            "prompt": config.prompt, "mask": f"masks/{pair_id}.png"}
                provenance[pair_id] = {"source": name, "recipe": recipe, "split": split, **params}
        for s in range(config.temporal):
            seq_id = f"{name}_seq_{s:02d}"
            rng = np.random.default_rng([config.seed, index, 1000 + s])
            temporal[split][seq_id], params = _write_sequence(out, seq_id, image, mask, rng, config)
            provenance[seq_id] = {"source": name, "split": split, **params}
    manifest_path = out / "manifest.json"
    atomic_write_json(manifest_path, manifest)
    temporal_path = None
    if config.temporal:
        temporal_path = out / "temporal.json"
        atomic_write_json(temporal_path, temporal)
    atomic_write_json(out / "curate.json", {"config": dataclasses.asdict(config), "pairs": provenance})
    return CurateResult(out=out, pairs={k: len(v) for k, v in manifest.items()},
                        sequences={k: len(v) for k, v in temporal.items()}, manifest=manifest_path,
                        temporal_manifest=temporal_path)
