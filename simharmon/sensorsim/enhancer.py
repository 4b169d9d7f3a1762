"""What the SensorsimService proxy does to rendered images, without gRPC: decode, enhance per stream, encode.

:class:`RenderEnhancer` owns the engine (from the runtime factory, or any ``FrameProcessor``) and the
stream bookkeeping. A stream is one ``(scene_id, camera)``; its history restarts when

* the camera shows another scene (the old scene's stream is removed, freeing its slot);
* ``frame_start_us`` goes backwards (a re-run or a rewind of the scene);
* the resolution changes.

Masks (``mask_from_background``): the renderer's API has no mask output, but it renders the
``dynamic_objects`` it is given, so the proxy asks the renderer a second time without them (the
background) and marks the pixels that differ by more than a threshold: the inserted actors. With
no dynamic objects the mask is empty. Without a mask (``--masks none``), a model that reads masks
(the bundled default) passes every frame through unchanged (``passthrough="no_mask"``).

The engine needs only the bridge's ``FrameProcessor`` interface (``step_many``, ``remove``). It is not
thread-safe: calls are serialized by a lock; decoding and encoding run outside it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .images import decode_image, encode_image

__all__ = ["EnhanceItem", "EnhanceOutcome", "ProxyStats", "RenderEnhancer", "mask_from_background"]

log = logging.getLogger("simharmon.sensorsim")


def mask_from_background(rendered: np.ndarray, background: np.ndarray, threshold: int = 8) -> np.ndarray:
    """uint8 ``[H, W]`` mask, 255 where ``rendered`` and ``background`` (uint8 ``[H, W, 3]``) differ by more
    than ``threshold`` levels in any channel (the inserted actors), else 0."""
    if rendered.shape != background.shape:
        raise ValueError(f"background render is {background.shape[1]}x{background.shape[0]}, the image "
                         f"{rendered.shape[1]}x{rendered.shape[0]}")
    diff = np.abs(rendered.astype(np.int16) - background.astype(np.int16)).max(axis=2)
    return np.where(diff > threshold, 255, 0).astype(np.uint8)


@dataclasses.dataclass
class EnhanceItem:
    """One rendered image to enhance.

    camera / scene_id / frame_start_us: the stream and its clock; data: the renderer's image bytes in
    ``fmt`` (an ``ImageFormat`` value) of ``height`` x ``width`` (0: read from the file); quality: the
    request's ``image_quality``; background: the renderer's image without dynamic objects (bytes in
    ``background_fmt``), or None: no mask unless ``empty_mask`` (no dynamic objects: nothing inserted).
    """

    camera: str
    scene_id: str
    frame_start_us: int
    data: bytes
    fmt: int
    height: int = 0
    width: int = 0
    quality: float = 0.0
    background: Optional[bytes] = None
    background_fmt: int = 0
    empty_mask: bool = False

    @property
    def key(self) -> Tuple[str, str]:
        return (self.scene_id, self.camera)


@dataclasses.dataclass
class EnhanceOutcome:
    """The image bytes to return (enhanced, or the renderer's own) and what happened.

    error: why the enhancer could not enhance (the bytes are then the renderer's); passthrough: the
    engine's flag (``"no_mask"``); history_reset: the stream's history restarted before this frame.
    """

    data: bytes
    enhanced: bool = False
    error: Optional[str] = None
    passthrough: Optional[str] = None
    history_reset: bool = False


@dataclasses.dataclass
class ProxyStats:
    """Counters since start (read by tests, logged by the CLI)."""

    enhanced: int = 0
    passthrough: int = 0
    errors: int = 0
    resets: int = 0


@dataclasses.dataclass
class _Decoded:
    index: int
    item: EnhanceItem
    frame: torch.Tensor
    mask: Optional[np.ndarray]


class RenderEnhancer:
    """Enhance rendered images per ``(scene_id, camera)`` stream with ``engine`` (``step_many`` / ``remove``:
    the runtime's ``Engine``, or the bridge's identity stand-in for transport benchmarks).

    mask_threshold: levels of difference to the background render that mark an inserted actor.
    """

    def __init__(self, engine, mask_threshold: int = 8) -> None:
        self.engine = engine
        self.mask_threshold = mask_threshold
        self.stats = ProxyStats()
        self._lock = threading.Lock()
        self._scene: Dict[str, str] = {}  # camera -> the scene it shows now
        self._clock: Dict[Hashable, Tuple[int, Tuple[int, int]]] = {}  # key -> (last frame_start_us, (H, W))

    def enhance(self, items: Sequence[EnhanceItem]) -> List[EnhanceOutcome]:
        """One outcome per item, in order; never raises for a bad image or an engine failure (see ``error``)."""
        outcomes: List[Optional[EnhanceOutcome]] = [None] * len(items)
        decoded: List[_Decoded] = []
        for index, item in enumerate(items):
            try:
                decoded.append(self._decode(index, item))
            except ValueError as exc:
                outcomes[index] = self._failed(item, f"cannot decode the renderer's image: {exc}")
        # One engine call per round of distinct streams (a batch may hold one camera twice).
        while decoded:
            seen, round_, rest = set(), [], []
            for entry in decoded:
                (rest if entry.item.key in seen else round_).append(entry)
                seen.add(entry.item.key)
            for entry, outcome in zip(round_, self._step(round_)):
                outcomes[entry.index] = outcome
            decoded = rest
        return outcomes  # type: ignore[return-value]

    def _decode(self, index: int, item: EnhanceItem) -> _Decoded:
        image = decode_image(item.data, item.fmt, item.height, item.width)
        mask = None
        if item.background is not None:
            background = decode_image(item.background, item.background_fmt, image.shape[0], image.shape[1])
            mask = mask_from_background(image, background, self.mask_threshold)
        elif item.empty_mask:
            mask = np.zeros(image.shape[:2], np.uint8)
        return _Decoded(index, item, torch.from_numpy(image), mask)

    def _failed(self, item: EnhanceItem, error: str) -> EnhanceOutcome:
        self.stats.errors += 1
        log.error("scene %r camera %r frame_start_us %d: %s; returning the renderer's image", item.scene_id,
                  item.camera, item.frame_start_us, error)
        return EnhanceOutcome(item.data, error=error)

    def _admit(self, item: EnhanceItem, size: Tuple[int, int]) -> bool:
        """Stream bookkeeping before a frame; True when this frame restarts the stream's history."""
        key = item.key
        old_scene = self._scene.get(item.camera)
        if old_scene is not None and old_scene != item.scene_id:
            self.engine.remove((old_scene, item.camera))
            self._clock.pop((old_scene, item.camera), None)
        self._scene[item.camera] = item.scene_id
        last = self._clock.get(key)
        self._clock[key] = (item.frame_start_us, size)
        if last is None:
            return old_scene is not None and old_scene != item.scene_id
        if last[1] != size:
            self.engine.remove(key)
            return True
        if item.frame_start_us < last[0]:
            self.engine.remove(key)  # re-admitted on this frame with an empty history
            return True
        return False

    def _step(self, entries: List[_Decoded]) -> List[EnhanceOutcome]:
        with self._lock:
            restarted = {e.item.key: self._admit(e.item, tuple(e.frame.shape[:2])) for e in entries}
            frames = {e.item.key: e.frame for e in entries}
            inputs = {e.item.key: {"mask": e.mask} for e in entries if e.mask is not None}
            try:
                results = self.engine.step_many(frames, inputs)
            except Exception as exc:  # an engine failure must not fail the render (see module docstring)
                for e in entries:
                    self._clock.pop(e.item.key, None)
                    self.engine.remove(e.item.key)
                return [self._failed(e.item, f"enhancer failed: {type(exc).__name__}: {exc}") for e in entries]
        outcomes = []
        for e in entries:
            result = results[e.item.key]
            reset = restarted[e.item.key] or bool(result.history_reset)
            self.stats.resets += reset
            if result.error is not None:
                outcome = self._failed(e.item, f"enhancer refused the frame: {result.error}")
            elif result.passthrough is not None:
                self.stats.passthrough += 1
                outcome = EnhanceOutcome(e.item.data, passthrough=result.passthrough)
            else:
                try:
                    data = encode_image(result.output.cpu().numpy(), e.item.fmt, e.item.quality)
                except ValueError as exc:
                    outcomes.append(self._failed(e.item, f"cannot encode the enhanced image: {exc}"))
                    continue
                self.stats.enhanced += 1
                outcome = EnhanceOutcome(data, enhanced=True)
            outcome.history_reset = reset
            outcomes.append(outcome)
        return outcomes
