"""CARLA-style camera callbacks: BGRA bytes in, enhanced BGRA bytes out (carla is not a dependency).

``sensor.listen(callback)`` calls ``callback(image)`` with ``image.raw_data`` (``width * height * 4``
bytes, BGRA), ``image.width``, ``image.height``, ``image.frame`` and ``image.timestamp`` (seconds),
plus ``image.transform``. :class:`CarlaCameraHook` turns such a callback into an enhanced one::

    hook = CarlaCameraHook(build_enhancer(...))
    camera.listen(hook.listener("front", lambda out: show(out.bgra)))

The bytes are viewed, not copied; the 8-bit data goes to the engine's device as is and is
converted there; one packed BGRA array comes back to the host (the callback wants bytes).
Alpha is passed through. Each camera name is its own stream of the runtime's engine.

The actor mask comes from a CARLA instance-segmentation camera at the same pose
(``sensor.camera.instance_segmentation``: red = semantic tag, green + 256 * blue = the actor's
instance id): :func:`actor_mask` keeps the pixels of the given actor ids (the inserted actors) or
semantic tags; pass the segmentation image as ``enhance_image(image, camera, segmentation=...)``.
Without a mask, a mask-reading model passes the image through (``EnhancedImage.passthrough``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Collection, Optional

import numpy as np

from ..io.pixels import decode_pixels, encode_pixels
from .post_render import as_processor

__all__ = ["CarlaCameraHook", "EnhancedImage", "actor_mask"]


def _bgra(image: Any, what: str) -> np.ndarray:
    width, height = int(image.width), int(image.height)
    raw = np.frombuffer(image.raw_data, dtype=np.uint8)
    if raw.size != width * height * 4:
        raise ValueError(f"{what}: raw_data is {raw.size} bytes, expected width*height*4 = "
                         f"{width}*{height}*4 = {width * height * 4} (BGRA)")
    return raw.reshape(height, width, 4)


def actor_mask(segmentation: Any, actor_ids: Optional[Collection[int]] = None,
               semantic_tags: Optional[Collection[int]] = None) -> np.ndarray:
    """``[H, W]`` uint8 mask (255 = actor) from a CARLA instance-segmentation image.

    actor_ids: instance ids (``actor.id`` of the inserted actors; green + 256 * blue); semantic_tags:
    CARLA semantic tags (red), e.g. the vehicle classes. A pixel counts when either matches.
    """
    if actor_ids is None and semantic_tags is None:
        raise ValueError("actor_mask needs actor_ids and/or semantic_tags")
    bgra = _bgra(segmentation, "segmentation image")
    instance = bgra[..., 1].astype(np.int32) + 256 * bgra[..., 0].astype(np.int32)
    mask = np.zeros(instance.shape, dtype=bool)
    if actor_ids is not None:
        mask |= np.isin(instance, np.fromiter(actor_ids, dtype=np.int32))
    if semantic_tags is not None:
        mask |= np.isin(bgra[..., 2], np.fromiter(semantic_tags, dtype=np.uint8))
    return mask.astype(np.uint8) * 255


@dataclass(frozen=True)
class EnhancedImage:
    """An enhanced camera image: ``bgra`` ``[H, W, 4]`` uint8 plus the source image's metadata."""

    camera: str
    frame: int
    timestamp: float
    width: int
    height: int
    bgra: np.ndarray
    transform: Any = None
    passthrough: Optional[str] = None  # "no_mask": returned unchanged (the model reads masks; none was given)

    @property
    def raw_data(self) -> memoryview:
        """The BGRA bytes, like ``carla.Image.raw_data``."""
        return memoryview(self.bgra).cast("B")


class CarlaCameraHook:
    """Enhance CARLA camera images in their sensor callbacks (thread-safe; calls are serialized).

    enhancer: an ``Engine`` from ``simharmon.runtime.build_runtime(...)`` (or a built model, or the
        identity stand-in).
    device: where to decode (default: the engine's device).
    actor_ids / semantic_tags: what counts as an inserted actor in the segmentation images (``actor_mask``).
    """

    def __init__(self, enhancer: Any, device: Optional[str] = None, actor_ids: Optional[Collection[int]] = None,
                 semantic_tags: Optional[Collection[int]] = None):
        self.engine = as_processor(enhancer)
        self.device = device or self.engine.device
        self.actor_ids, self.semantic_tags = actor_ids, semantic_tags
        self._lock = threading.Lock()

    def enhance_image(self, image: Any, camera: str = "camera", segmentation: Any = None,
                      mask: Optional[np.ndarray] = None) -> EnhancedImage:
        """Enhance one CARLA-style image (see the module docstring for the attributes it reads).

        segmentation: the instance-segmentation image of the same frame (its actor mask is used when
        the engine reads masks); mask: an ``[H, W]`` uint8 actor mask given directly instead.
        """
        width, height = int(image.width), int(image.height)
        raw = _bgra(image, f"camera {camera!r} frame {getattr(image, 'frame', '?')}")
        if mask is None and segmentation is not None:
            mask = actor_mask(segmentation, self.actor_ids, self.semantic_tags)
        decoded = decode_pixels(raw, "bgra8", width, height, self.device)
        given = {"mask": mask} if mask is not None and "mask" in getattr(self.engine, "used_inputs", []) else {}
        with self._lock:
            result = self.engine.step_many({camera: decoded.frame}, {camera: given})[camera]
        if result.error is not None:
            raise ValueError(f"camera {camera!r} frame {getattr(image, 'frame', '?')}: {result.error}")
        bgra = encode_pixels(result.output, "bgra8", decoded.alpha)
        return EnhancedImage(camera=camera, frame=int(image.frame), timestamp=float(image.timestamp), width=width,
                             height=height, bgra=bgra, transform=getattr(image, "transform", None),
                             passthrough=result.passthrough)

    def listener(self, camera: str, callback: Callable[[EnhancedImage], None]) -> Callable[[Any], None]:
        """A function to pass to ``sensor.listen``: enhances each image, then calls ``callback``."""

        def listen(image: Any) -> None:
            callback(self.enhance_image(image, camera))

        return listen

    def reset(self, camera: str) -> None:
        """Forget one camera's history (after a teleport or a new episode)."""
        with self._lock:
            reset = getattr(self.engine, "reset", None)
            (reset or self.engine.remove)(camera)
