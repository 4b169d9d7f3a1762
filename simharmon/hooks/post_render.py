"""In-process post-render hooks: enhance what a render function returns, in the same process.

A hook wraps a render function; an *adapter* says where the image is in the render output (a
tensor, a tuple with depth and mask, a dict such as drivestudio's, gsplat's ``rasterization``
tuple) and which per-frame inputs it carries (the actor mask, depth). Every camera in one call is
its own stream of the runtime's engine (built by the runtime factory, as for every front door),
and all cameras of the same size run as one batched step.

No host round trip: the hook takes views of the rendered tensors, the engine copies them into its
static buffers on the same device, and depth, masks and everything else the renderer produced come
back as the very same tensor objects. Inputs are float images in [0, 1]; outputs are float32 in
[0, 1] on 8-bit levels (``simharmon.io.pixels``), cast back to the input's dtype.

For a model that reads actor masks, a camera whose render has no mask passes through unchanged:
``hook.last_passthrough[i]`` is ``"no_mask"`` for it (and the engine logs it once per stream).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Protocol

import torch

from ..runtime.engine import Engine, StepResult
from ..runtime.factory import engine_for

__all__ = ["RenderedFrames", "Adapter", "ImageAdapter", "DictAdapter", "PostRenderHook", "post_render_hook",
           "as_processor", "per_camera"]


@dataclass
class RenderedFrames:
    """What an adapter found in a render output.

    images: ``[N, 3, H, W]`` float, one frame per camera (usually a view of the render output).
    depth: per-camera depth (``per_camera`` shapes), or None; passed to the engine when it reads depth.
    mask: per-camera inserted-actor mask in [0, 1] (``per_camera`` shapes), or None; passed to the
        engine when it reads masks.
    """

    images: torch.Tensor
    depth: Optional[torch.Tensor] = None
    mask: Optional[torch.Tensor] = None


class Adapter(Protocol):
    """Finds the frames in a render output and puts enhanced frames back into one."""

    def extract(self, output: Any) -> RenderedFrames:
        """The frames (``[N, 3, H, W]`` views) and per-frame inputs of a render output."""
        ...

    def rebuild(self, output: Any, enhanced: torch.Tensor) -> Any:
        """``output`` with its frames replaced by ``enhanced`` ``[N, 3, H, W]``; the rest unchanged."""
        ...


def per_camera(value: Optional[torch.Tensor], cameras: int, height: int, width: int,
               what: str) -> Optional[torch.Tensor]:
    """A single-channel map as ``[N, 1, H, W]`` from ``[H, W]``, ``[H, W, 1]``, ``[N, H, W]``, ``[N, H, W, 1]``,
    ``[1, H, W]`` or ``[N, 1, H, W]`` (views; None stays None)."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(value).__name__}")
    shape = tuple(value.shape)
    if shape[-2:] == (height, width):
        flat = value.reshape(-1, 1, height, width)
    elif shape[-3:] == (height, width, 1):
        flat = value.reshape(-1, height, width, 1).permute(0, 3, 1, 2)
    else:
        raise ValueError(f"{what} must be [..., H, W] or [..., H, W, 1] with H, W = {height}, {width}, got {list(shape)}")
    if flat.shape[0] != cameras:
        raise ValueError(f"{what} holds {flat.shape[0]} maps for {cameras} camera(s)")
    return flat


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
    Tuple items 1 and 2 are the depth and the actor mask; the tuple's items are returned unchanged.
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
    """A render function returning a dict; returns a shallow copy with ``image_key`` replaced.

    drivestudio / OmniRe renders are dicts of ``[H, W, C]`` maps: ``rgb``, ``depth``, ``opacity`` and
    per-class ones such as ``Dynamic_opacity`` (the dynamic actors' opacity: the actor mask) or
    ``Vehicle_opacity``. :meth:`drivestudio` gives that preset.
    """

    def __init__(self, image_key: str = "rgb", depth_key: Optional[str] = "depth", mask_key: Optional[str] = None,
                 layout: str = "hwc"):
        self.image_key, self.depth_key, self.mask_key = image_key, depth_key, mask_key
        self.inner = ImageAdapter(layout)

    @classmethod
    def drivestudio(cls, mask_key: str = "Dynamic_opacity") -> DictAdapter:
        """drivestudio's render dict: ``rgb`` ``[H, W, 3]``, ``depth`` and the actor mask ``mask_key`` ``[H, W, 1]``."""
        return cls("rgb", "depth", mask_key, "hwc")

    def extract(self, output: Any) -> RenderedFrames:
        """The ``image_key`` entry as frames; ``depth_key`` / ``mask_key`` entries as depth and mask."""
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


def as_processor(enhancer: Any) -> Any:
    """What a hook steps: an ``Engine`` (or any object with ``step_many``, e.g. the identity stand-in)
    is used as is; a built model gets its engine from the runtime factory (``factory.engine_for``)."""
    if hasattr(enhancer, "step_many"):
        return enhancer
    if isinstance(enhancer, torch.nn.Module) and hasattr(enhancer, "config"):
        return engine_for(enhancer)
    raise TypeError(f"expected an Engine (simharmon.runtime.build_runtime), a built model or a stand-in, got "
                    f"{type(enhancer).__name__}")


def _join(parts: List[torch.Tensor]) -> torch.Tensor:
    """Stack ``[1, 3, H, W]`` frames into ``[N, 3, H, W]``: a view when they are consecutive slices
    of one batch, a copy only otherwise."""
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

    enhancer: an ``Engine`` from ``simharmon.runtime.build_runtime(...)`` (or a built model, whose
        engine the factory builds; or the identity stand-in).
    adapter: where the frames are in the output (default ``ImageAdapter("chw")``).
    stream: name prefix of this hook's streams; camera ``i`` of a call is stream ``(stream, i)``.
    Thread-safe: calls are serialized (the engine's histories are shared state).
    """

    def __init__(self, enhancer: Any, adapter: Optional[Adapter] = None, stream: str = "render", enabled: bool = True):
        self.engine = as_processor(enhancer)
        self.adapter = adapter if adapter is not None else ImageAdapter("chw")
        self.stream = stream
        self.enabled = enabled
        self.last_passthrough: List[Optional[str]] = []  # per camera of the last call: "no_mask" or None
        self._lock = threading.Lock()
        self._keys: set = set()

    @property
    def used_inputs(self) -> List[str]:
        """The per-frame inputs the engine reads (``mask``; ``flow``; ``depth``, ``intrinsics``, ``pose``)."""
        return list(getattr(self.engine, "used_inputs", []))

    def enhance(self, images: torch.Tensor, **inputs: Any) -> torch.Tensor:
        """``images``: ``[N, 3, H, W]`` float in [0, 1] (camera ``i`` = stream ``i``) -> same shape, float32
        in [0, 1], on the engine's device.

        inputs: per-frame inputs for all N cameras, as the engine takes them: ``mask`` / ``depth``
        (``per_camera`` shapes), ``flow`` ``[N, 2, H, W]``, ``intrinsics`` ``[N, 3, 3]`` or ``(fx, fy,
        cx, cy)``, ``pose`` ``[N, 4, 4]`` (current -> previous camera) or ``camera_to_world`` ``[N, 4, 4]``.
        Only those the engine reads are passed on.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {list(images.shape)}")
        count, _, height, width = images.shape
        keys = [(self.stream, i) for i in range(count)]
        used = set(self.used_inputs)
        given: Dict[Hashable, Dict[str, Any]] = {key: {} for key in keys}
        for name, value in inputs.items():
            reads = "pose" if name == "camera_to_world" else name
            if reads not in used or value is None:
                continue
            if name in ("mask", "depth"):
                value = per_camera(value, count, height, width, name)
            # (fx, fy, cx, cy) given once holds for every camera
            shared = name == "intrinsics" and not isinstance(value, torch.Tensor) and isinstance(value[0], (int, float))
            for i, key in enumerate(keys):
                given[key][name] = value if shared else value[i:i + 1] if isinstance(value, torch.Tensor) else value[i]
        frames = {key: images[i:i + 1] for i, key in enumerate(keys)}  # views
        with self._lock:
            results: Dict[Hashable, StepResult] = self.engine.step_many(frames, given)
            self._keys.update(keys)
        errors = [f"camera {key[1]}: {results[key].error}" for key in keys if results[key].error is not None]
        if errors:
            raise ValueError("the engine refused the render: " + "; ".join(errors))
        self.last_passthrough = [results[key].passthrough for key in keys]
        return _join([results[key].output for key in keys])

    def __call__(self, output: Any, **inputs: Any) -> Any:
        """Enhance one render output; returns the same structure with the frames replaced.

        inputs: per-frame inputs the render output does not carry (``enhance``'s keywords); the
        adapter's mask and depth are used unless given here.
        """
        if not self.enabled:
            return output
        frames = self.adapter.extract(output)
        extracted = {"mask": frames.mask, "depth": frames.depth}
        merged = {**{k: v for k, v in extracted.items() if v is not None}, **inputs}
        return self.adapter.rebuild(output, self.enhance(frames.images, **merged))

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
                if isinstance(self.engine, Engine):
                    self.engine.reset(key)
                else:
                    self.engine.remove(key)
            self._keys.clear()


def post_render_hook(enhancer: Any, adapter: Optional[Adapter] = None,
                     stream: str = "render") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator form: ``@post_render_hook(engine, GsplatAdapter("RGB+D"))`` over a render function.
    The wrapped function carries its hook as ``.hook`` (for ``reset()``)."""

    def decorate(render_fn: Callable[..., Any]) -> Callable[..., Any]:
        return PostRenderHook(enhancer, adapter, stream).wrap(render_fn)

    return decorate
