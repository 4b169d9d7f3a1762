"""In-process post-render hooks: enhance what a render function returns, in the same process.

A hook wraps a render function; an *adapter* says where the image is in the render output (a
tensor, a tuple with depth and mask, a dict, gsplat's ``rasterization`` tuple). Every camera in
one call becomes its own stream with its own temporal history, and all cameras of the same size
run as one batched forward pass.

Zero-copy: the hook takes views of the rendered tensors (``permute``/``reshape``/slicing, no
``contiguous()``), never moves data to the host, and returns depth, mask and anything else the
renderer produced as the very same tensor objects. On a GPU the frames stay on the GPU from
renderer to model and back (keep the model on the renderer's device; otherwise the engine moves
them). On the CPU the only new buffers are the ones the model computes. Inputs are float images
in [0, 1]; outputs are float32 in [0, 1] on 8-bit levels (see ``simharmon.io.pixels``), cast
back to the input's dtype.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Protocol

import torch

__all__ = ["RenderedFrames", "Adapter", "ImageAdapter", "DictAdapter", "PostRenderHook", "post_render_hook",
           "as_engine"]


@dataclass
class RenderedFrames:
    """What an adapter found in a render output.

    images: ``[N, 3, H, W]`` float, one frame per camera (usually a view of the render output).
    depth, mask: whatever the renderer produced, passed through untouched (may be None).
    """

    images: torch.Tensor
    depth: Optional[torch.Tensor] = None
    mask: Optional[torch.Tensor] = None


class Adapter(Protocol):
    """Finds the frames in a render output and puts enhanced frames back into one."""

    def extract(self, output: Any) -> RenderedFrames:
        """The frames (``[N, 3, H, W]`` views) and passthrough extras of a render output."""
        ...

    def rebuild(self, output: Any, enhanced: torch.Tensor) -> Any:
        """``output`` with its frames replaced by ``enhanced`` ``[N, 3, H, W]``; the rest unchanged."""
        ...


def _to_nchw(image: torch.Tensor, layout: str, what: str) -> torch.Tensor:
    """``[3, H, W]``/``[N, 3, H, W]`` (chw) or ``[H, W, 3]``/``[N, H, W, 3]`` (hwc) -> ``[N, 3, H, W]`` view."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(f"{what} must be a floating-point image in [0, 1], got {image.dtype}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    channel_dim = 1 if layout == "chw" else 3
    if image.dim() != 4 or image.shape[channel_dim] != 3:
        expected = "[3, H, W] or [N, 3, H, W]" if layout == "chw" else "[H, W, 3] or [N, H, W, 3]"
        raise ValueError(f"{what} must be {expected} ({layout} layout), got {list(image.shape)}")
    return image if layout == "chw" else image.permute(0, 3, 1, 2)


def _from_nchw(enhanced: torch.Tensor, like: torch.Tensor, layout: str) -> torch.Tensor:
    """Put ``[N, 3, H, W]`` back into the layout, rank and dtype of ``like`` (views, no copies)."""
    out = enhanced if layout == "chw" else enhanced.permute(0, 2, 3, 1)
    if like.dim() == 3:
        out = out[0]
    return out.to(like.dtype)


class ImageAdapter:
    """A render function returning an image tensor, or a tuple ``(image, depth, mask, ...)``.

    layout: "chw" for ``[3, H, W]`` / ``[N, 3, H, W]``, "hwc" for ``[H, W, 3]`` / ``[N, H, W, 3]``.
    The tuple's other items are returned unchanged.
    """

    def __init__(self, layout: str = "chw"):
        if layout not in ("chw", "hwc"):
            raise ValueError(f"layout must be 'chw' or 'hwc', got {layout!r}")
        self.layout = layout

    def extract(self, output: Any) -> RenderedFrames:
        """Image (item 0 of a tuple) as ``[N, 3, H, W]``; items 1 and 2 as depth and mask."""
        if isinstance(output, (tuple, list)):
            if not output:
                raise ValueError("render output is an empty tuple")
            image, rest = output[0], list(output[1:])
            depth = rest[0] if rest else None
            mask = rest[1] if len(rest) > 1 else None
            return RenderedFrames(_to_nchw(image, self.layout, "render output[0]"), depth, mask)
        return RenderedFrames(_to_nchw(output, self.layout, "render output"))

    def rebuild(self, output: Any, enhanced: torch.Tensor) -> Any:
        """Same structure, layout, rank and dtype as ``output``, image replaced."""
        if isinstance(output, (tuple, list)):
            return type(output)([_from_nchw(enhanced, output[0], self.layout), *output[1:]])
        return _from_nchw(enhanced, output, self.layout)


class DictAdapter:
    """A render function returning a dict (e.g. drivestudio/OmniRe: ``rgb`` ``[H, W, 3]``,
    ``depth``, ``opacity``). Returns a shallow copy with ``image_key`` replaced."""

    def __init__(self, image_key: str = "rgb", depth_key: Optional[str] = "depth", mask_key: Optional[str] = None,
                 layout: str = "hwc"):
        self.image_key, self.depth_key, self.mask_key = image_key, depth_key, mask_key
        self.inner = ImageAdapter(layout)

    def extract(self, output: Any) -> RenderedFrames:
        """The ``image_key`` entry as frames; ``depth_key`` / ``mask_key`` entries passed through."""
        if not isinstance(output, Mapping) or self.image_key not in output:
            raise KeyError(f"render output must be a mapping with key {self.image_key!r}")
        images = self.inner.extract(output[self.image_key]).images
        return RenderedFrames(images, output.get(self.depth_key) if self.depth_key else None,
                              output.get(self.mask_key) if self.mask_key else None)

    def rebuild(self, output: Any, enhanced: torch.Tensor) -> Any:
        """A shallow copy of ``output`` with the image entry replaced."""
        rebuilt = dict(output)
        rebuilt[self.image_key] = self.inner.rebuild(output[self.image_key], enhanced)
        return rebuilt


def as_engine(enhancer: Any, max_streams: int = 64) -> Any:
    """An object with ``step_many``: an EnhancerModel is wrapped in a MultiStreamEnhancer; an
    Engine or MultiStreamEnhancer is used as is."""
    if hasattr(enhancer, "step_many"):
        return enhancer
    if isinstance(enhancer, torch.nn.Module) and hasattr(enhancer, "config"):
        from ..runtime.multistream import MultiStreamEnhancer

        return MultiStreamEnhancer(enhancer, max_streams=max_streams)
    raise TypeError(f"expected an EnhancerModel, an Engine or a MultiStreamEnhancer, got {type(enhancer).__name__}")


def _join(parts: List[torch.Tensor]) -> torch.Tensor:
    """Stack ``[1, 3, H, W]`` frames into ``[N, 3, H, W]``: a view when they are consecutive slices
    of one batch (what a batched forward returns), a copy only otherwise."""
    first = parts[0]
    if len(parts) == 1:
        return first
    step = first.stride(0)
    if all(p.untyped_storage().data_ptr() == first.untyped_storage().data_ptr() and p.shape == first.shape
           and p.stride() == first.stride() and p.storage_offset() == first.storage_offset() + i * step
           for i, p in enumerate(parts)):
        return first.as_strided((len(parts), *first.shape[1:]), first.stride(), first.storage_offset())
    return torch.cat(parts)


class PostRenderHook:
    """Enhance the frames of render outputs in process (see the module docstring).

    enhancer: an EnhancerModel (``simharmon.build_enhancer(...)``), a MultiStreamEnhancer or any
        bridge Engine (e.g. the IdentityEngine stand-in).
    adapter: where the frames are in the output (default ``ImageAdapter("chw")``).
    stream: name prefix of this hook's streams; camera ``i`` of a call is stream ``(stream, i)``.
    Thread-safe: calls are serialized (the model's histories are shared state).
    """

    def __init__(self, enhancer: Any, adapter: Optional[Adapter] = None, stream: str = "render", enabled: bool = True):
        self.engine = as_engine(enhancer)
        self.adapter = adapter if adapter is not None else ImageAdapter("chw")
        self.stream = stream
        self.enabled = enabled
        self._lock = threading.Lock()
        self._keys: set = set()

    def enhance(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: ``[N, 3, H, W]`` float in [0, 1] (camera ``i`` = stream ``i``) -> same shape,
        float32 in [0, 1], on the engine's device."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {list(images.shape)}")
        keys = [(self.stream, i) for i in range(images.shape[0])]
        frames: Dict[Hashable, torch.Tensor] = {k: images[i:i + 1] for i, k in enumerate(keys)}  # views
        with self._lock:
            outputs = self.engine.step_many(frames)
            self._keys.update(keys)
        return _join([outputs[k] for k in keys])

    def __call__(self, output: Any) -> Any:
        """Enhance one render output; returns the same structure with the frames replaced."""
        if not self.enabled:
            return output
        frames = self.adapter.extract(output)
        return self.adapter.rebuild(output, self.enhance(frames.images))

    def wrap(self, render_fn: Callable[..., Any]) -> Callable[..., Any]:
        """``render_fn`` with this hook applied to everything it returns."""

        @functools.wraps(render_fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            return self(render_fn(*args, **kwargs))

        wrapped.hook = self  # type: ignore[attr-defined]
        return wrapped

    def reset(self) -> None:
        """Forget every camera's history (a new drive or a scene cut)."""
        with self._lock:
            for key in self._keys:
                if hasattr(self.engine, "reset"):
                    self.engine.reset(key)
                else:
                    self.engine.remove(key)
            self._keys.clear()


def post_render_hook(enhancer: Any, adapter: Optional[Adapter] = None,
                     stream: str = "render") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator form: ``@post_render_hook(model, GsplatAdapter("RGB+D"))`` over a render function.
    The wrapped function carries its hook as ``.hook`` (for ``reset()``)."""

    def decorate(render_fn: Callable[..., Any]) -> Callable[..., Any]:
        return PostRenderHook(enhancer, adapter, stream).wrap(render_fn)

    return decorate

