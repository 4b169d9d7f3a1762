"""CARLA-style camera callbacks: BGRA bytes in, enhanced BGRA bytes out (carla is not a dependency).

``sensor.listen(callback)`` calls ``callback(image)`` with ``image.raw_data`` (``width * height * 4``
bytes, BGRA), ``image.width``, ``image.height``, ``image.frame`` and ``image.timestamp`` (seconds),
plus ``image.transform``. :class:`CarlaCameraHook` turns such a callback into an enhanced one::

    hook = CarlaCameraHook(build_enhancer(...))
    camera.listen(hook.listener("front", lambda out: show(out.bgra)))

The bytes are viewed, not copied; the 8-bit data goes to the model's device as is and is
converted there; one packed BGRA array comes back to the host (the callback wants bytes).
Alpha is passed through. Each camera name is its own stream.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from ..io.pixels import decode_pixels, encode_pixels
from .post_render import as_engine

__all__ = ["CarlaCameraHook", "EnhancedImage"]


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

    @property
    def raw_data(self) -> memoryview:
        """The BGRA bytes, like ``carla.Image.raw_data``."""
        return memoryview(self.bgra).cast("B")


class CarlaCameraHook:
    """Enhance CARLA camera images in their sensor callbacks (thread-safe; calls are serialized).

    enhancer: an EnhancerModel, MultiStreamEnhancer or bridge Engine.
    device: where to decode (default: the engine's device, else CPU).
    """

    def __init__(self, enhancer: Any, device: Optional[str] = None):
        self.engine = as_engine(enhancer)
        model = getattr(self.engine, "model", None)
        self.device = device or getattr(self.engine, "device", None) or (model.device if model is not None else "cpu")
        self._lock = threading.Lock()

    def enhance_image(self, image: Any, camera: str = "camera") -> EnhancedImage:
        """Enhance one CARLA-style image (see the module docstring for the attributes it reads)."""
        width, height = int(image.width), int(image.height)
        raw = image.raw_data
        size = memoryview(raw).nbytes
        if size != width * height * 4:
            raise ValueError(f"camera {camera!r} frame {getattr(image, 'frame', '?')}: raw_data is {size} bytes, "
                             f"expected width*height*4 = {width}*{height}*4 = {width * height * 4} (BGRA)")
        decoded = decode_pixels(raw, "bgra8", width, height, self.device)
        with self._lock:
            enhanced = self.engine.step_many({camera: decoded.frame})[camera]
        bgra = encode_pixels(enhanced, "bgra8", decoded.alpha)
        return EnhancedImage(camera=camera, frame=int(image.frame), timestamp=float(image.timestamp), width=width,
                             height=height, bgra=bgra, transform=getattr(image, "transform", None))

    def listener(self, camera: str, callback: Callable[[EnhancedImage], None]) -> Callable[[Any], None]:
        """A function to pass to ``sensor.listen``: enhances each image, then calls ``callback``."""

        def listen(image: Any) -> None:
            callback(self.enhance_image(image, camera))

        return listen

    def reset(self, camera: str) -> None:
        """Forget one camera's history (after a teleport or a new episode)."""
        with self._lock:
            if hasattr(self.engine, "reset"):
                self.engine.reset(camera)
            else:
                self.engine.remove(camera)
