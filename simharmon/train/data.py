"""Training data: pairs and temporal sequences from curated manifests, sampled per step.

Every batch is a pure function of (seed, step, rank): indices and crop positions come from
``numpy.random.default_rng([seed, step, rank, kind])``. A resumed run therefore sees exactly the
batches the uninterrupted run would have seen, with no loader state to save. Images are decoded
once and kept in memory as uint8 (curated sets for this model are small).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

__all__ = ["PairBatch", "ClipBatch", "PairSet", "SequenceSet", "read_manifest"]


def read_manifest(path: Path, split: str = "train") -> Tuple[Path, Dict[str, dict]]:
    """(folder the relative paths resolve against, entries of ``split``) of a manifest JSON."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get(split), dict):
        raise ValueError(f"{path} has no {split!r} section (expected {{\"train\": {{...}}, \"test\": {{...}}}})")
    if not data[split]:
        raise ValueError(f"{path}: the {split!r} section is empty")
    return path.parent, data[split]


def _load(root: Path, rel: str, mode: str = "RGB") -> np.ndarray:
    path = Path(rel) if Path(rel).is_absolute() else root / rel
    if not path.is_file():
        raise FileNotFoundError(f"file listed in the manifest not found: {path}")
    with Image.open(path) as picture:
        return np.asarray(picture.convert(mode))


def _to_model(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[B, H, W, 3]`` -> float32 ``[B, 3, H, W]`` in [-1, 1] (the model's input space)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


@dataclass
class PairBatch:
    """inputs, targets: ``[B, 3, H, W]`` in [-1, 1]; masks ``[B, 1, H, W]`` in [0, 1]."""

    inputs: torch.Tensor
    targets: torch.Tensor
    masks: torch.Tensor


@dataclass
class ClipBatch:
    """inputs, targets: ``[T, B, 3, H, W]`` in [-1, 1]; masks ``[T, B, 1, H, W]``;
    flow_fw / flow_bw: ``[T-1, B, 2, H, W]`` pixels (F_{t->t+1} / F_{t+1->t}), or None when the
    flow must be estimated (RAFT) from the targets."""

    inputs: torch.Tensor
    targets: torch.Tensor
    masks: torch.Tensor
    flow_fw: Optional[torch.Tensor]
    flow_bw: Optional[torch.Tensor]


def _crop_origin(rng: np.random.Generator, shape: Tuple[int, int], crop: Tuple[int, int], what: str,
                 mask: Optional[np.ndarray] = None) -> Tuple[int, int]:
    """Top-left (y, x) of a random ``crop = (w, h)`` window; with ``mask``, the window is centred on a
    random mask pixel (clamped to the image), so small crops still hold some of the actor."""
    height, width = shape
    crop_w, crop_h = crop
    if width < crop_w or height < crop_h:
        raise ValueError(f"{what} is {width}x{height}, smaller than the training crop {crop_w}x{crop_h}")
    if mask is not None:
        ys, xs = np.nonzero(mask)
        if ys.size:
            pick = int(rng.integers(ys.size))
            return (int(np.clip(ys[pick] - crop_h // 2, 0, height - crop_h)),
                    int(np.clip(xs[pick] - crop_w // 2, 0, width - crop_w)))
    return int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))


def _manifest_list(manifest) -> List[Path]:
    return [Path(manifest)] if isinstance(manifest, (str, Path)) else [Path(m) for m in manifest]


class PairSet:
    """Pairs of a manifest split: input, target and mask (all-ones when the entry has none).

    manifest: one manifest path, or several whose pairs are pooled (ids become ``<index>:<id>``
    after the first, so equal ids in different sets stay apart).
    """

    def __init__(self, manifest, split: str = "train"):
        self.ids: List[str] = []
        self.inputs, self.targets, self.masks = [], [], []
        for number, path in enumerate(_manifest_list(manifest)):
            self._add(path, split, "" if number == 0 else f"{number}:")

    def _add(self, manifest: Path, split: str, prefix: str) -> None:
        root, entries = read_manifest(manifest, split)
        for key in sorted(entries):
            self.ids.append(prefix + key)
            entry = entries[key]
            for field_name in ("image", "target_image"):
                if field_name not in entry:
                    raise ValueError(f"{manifest}: entry {key!r} has no {field_name!r}")
            image, target = _load(root, entry["image"]), _load(root, entry["target_image"])
            if image.shape != target.shape:
                raise ValueError(f"{manifest}: {key!r} image {image.shape[:2]} and target {target.shape[:2]} differ")
            mask = _load(root, entry["mask"], "L") if "mask" in entry else np.full(image.shape[:2], 255, np.uint8)
            if mask.shape != image.shape[:2]:
                raise ValueError(f"{manifest}: {key!r} mask {mask.shape} does not match the image {image.shape[:2]}")
            self.inputs.append(image)
            self.targets.append(target)
            self.masks.append(mask)

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, rng: np.random.Generator, size: int, crop: Tuple[int, int], on_mask: bool = False) -> PairBatch:
        """``size`` random pairs (with replacement), each randomly cropped to ``crop = (w, h)``
        (``on_mask``: centred on a random mask pixel)."""
        crop_w, crop_h = crop
        picks = rng.integers(0, len(self), size=size)
        ins, tgs, mks = [], [], []
        for index in picks:
            y, x = _crop_origin(rng, self.inputs[index].shape[:2], crop, self.ids[index],
                                self.masks[index] if on_mask else None)
            window = (slice(y, y + crop_h), slice(x, x + crop_w))
            ins.append(self.inputs[index][window])
            tgs.append(self.targets[index][window])
            mks.append(self.masks[index][window])
        masks = torch.from_numpy(np.stack(mks)).float().div(255.0).unsqueeze(1)
        return PairBatch(_to_model(np.stack(ins)), _to_model(np.stack(tgs)), masks)


class SequenceSet:
    """Temporal sequences of a ``temporal.json`` split (``simharmon curate --temporal``); one path
    or several pooled, as :class:`PairSet`."""

    def __init__(self, manifest, split: str = "train", need_flow: bool = True):
        self.ids: List[str] = []
        self.sequences = []
        for number, path in enumerate(_manifest_list(manifest)):
            self._add(path, split, need_flow, "" if number == 0 else f"{number}:")

    def _add(self, manifest: Path, split: str, need_flow: bool, prefix: str) -> None:
        root, entries = read_manifest(manifest, split)
        for key in sorted(entries):
            self.ids.append(prefix + key)
            entry = entries[key]
            frames = np.stack([_load(root, p) for p in entry["frames"]])
            targets = np.stack([_load(root, p) for p in entry["targets"]])
            masks = np.stack([_load(root, p, "L") for p in entry["masks"]])
            if frames.shape != targets.shape or masks.shape != frames.shape[:3]:
                raise ValueError(f"{manifest}: sequence {key!r} frames, targets and masks differ in size")
            flow = None
            if need_flow:
                if "flow" not in entry:
                    raise ValueError(f"{manifest}: sequence {key!r} has no flow (use flow_source: raft)")
                with np.load(root / entry["flow"]) as data:
                    flow = (data["flow_fw"].astype(np.float32), data["flow_bw"].astype(np.float32))
                expected = (len(frames) - 1, 2) + frames.shape[1:3]
                if flow[0].shape != expected or flow[1].shape != expected:
                    raise ValueError(f"{manifest}: sequence {key!r} flow {flow[0].shape} is not {expected}")
            self.sequences.append((frames, targets, masks, flow))

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, rng: np.random.Generator, size: int, crop: Tuple[int, int], frames: int,
              on_mask: bool = False) -> ClipBatch:
        """``size`` clips of ``frames`` consecutive frames, one crop window per clip (flow is cropped too;
        ``on_mask``: centred on a random pixel of the clip's first mask)."""
        crop_w, crop_h = crop
        parts: Dict[str, list] = {"in": [], "tg": [], "mk": [], "fw": [], "bw": []}
        for index in rng.integers(0, len(self), size=size):
            seq_frames, seq_targets, seq_masks, flow = self.sequences[index]
            if len(seq_frames) < frames:
                raise ValueError(f"sequence {self.ids[index]!r} has {len(seq_frames)} frames, fewer than {frames}")
            start = int(rng.integers(0, len(seq_frames) - frames + 1))
            y, x = _crop_origin(rng, seq_frames.shape[1:3], crop, self.ids[index],
                                seq_masks[start] if on_mask else None)
            t, win = slice(start, start + frames), (slice(y, y + crop_h), slice(x, x + crop_w))
            parts["in"].append(seq_frames[t][:, win[0], win[1]])
            parts["tg"].append(seq_targets[t][:, win[0], win[1]])
            parts["mk"].append(seq_masks[t][:, win[0], win[1]])
            if flow is not None:
                pairs = slice(start, start + frames - 1)
                parts["fw"].append(flow[0][pairs][:, :, win[0], win[1]])
                parts["bw"].append(flow[1][pairs][:, :, win[0], win[1]])

        def clip(key: str) -> torch.Tensor:  # [B, T, H, W, 3] -> [T, B, 3, H, W]
            stacked = np.stack(parts[key])
            return _to_model(stacked.reshape(-1, *stacked.shape[2:])).reshape(size, frames, 3, crop_h, crop_w).transpose(0, 1)

        masks = torch.from_numpy(np.stack(parts["mk"])).float().div(255.0).transpose(0, 1).unsqueeze(2)
        flow_fw = torch.from_numpy(np.stack(parts["fw"])).transpose(0, 1).contiguous() if parts["fw"] else None
        flow_bw = torch.from_numpy(np.stack(parts["bw"])).transpose(0, 1).contiguous() if parts["bw"] else None
        return ClipBatch(clip("in").contiguous(), clip("tg").contiguous(), masks.contiguous(), flow_fw, flow_bw)
