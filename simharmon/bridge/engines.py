"""Engines: what the server (and the in-process hooks) run frames through.

The serving layer only talks to the small :class:`Engine` interface, so the model side
(:class:`ModelEngine`, the real enhancer on :class:`~simharmon.runtime.multistream.MultiStreamEnhancer`)
stays separate from the transport, and tests and the bridge benchmark can swap in
:class:`IdentityEngine`, a clearly labelled STAND-IN that returns its input.

Engines are not thread-safe; the server calls them from its single engine thread only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Hashable, List, Mapping, Optional, Protocol, Sequence, Union, runtime_checkable

import torch

from .renderer_inputs import InputConverter

__all__ = ["Engine", "FrameAux", "ModelEngine", "IdentityEngine", "build_engine"]


@dataclass(frozen=True)
class FrameAux:
    """Optional per-frame extras that travel with a frame, as received (docs/PROTOCOL.md §3.1).

    Tensors are ``[1, C, H, W]`` on the engine's device, possibly views of the received buffers
    (mask uint8 C = 1, depth float32 C = 1, flow float32 C = 2); pose is a row-major 4x4
    camera-to-world transform (16 floats), intrinsics ``(fx, fy, cx, cy)`` in pixels.
    ``renderer_inputs.InputConverter`` turns them into the enhancer's per-frame inputs."""

    mask: Optional[torch.Tensor] = None
    depth: Optional[torch.Tensor] = None
    flow: Optional[torch.Tensor] = None
    intrinsics: Optional[Sequence[float]] = None
    pose: Optional[Sequence[float]] = None


@runtime_checkable
class Engine(Protocol):
    """The interface the server needs from a model.

    ``step_many`` enhances one frame per stream: ``frames`` maps a stream key to ``[1, 3, H, W]``
    float32 in [0, 1] on ``device``; ``aux`` maps (some of) the same keys to their
    :class:`FrameAux`; it returns the same keys mapped to ``[1, 3, H, W]`` float32 in [0, 1]. Each
    key has its own temporal history; frames of equal size may run as one batch. A frame it cannot
    take raises ValueError/TypeError naming its key (``repr``) before any history changes.
    """

    name: str
    untrained: bool
    stand_in: bool
    used_inputs: List[str]  # protocol fields (layers, intrinsics, pose) the engine reads; others are ignored
    device: torch.device
    pixel_multiple: int
    max_width: int
    max_height: int

    def check_size(self, width: int, height: int) -> None: ...

    def step_many(self, frames: Mapping[Hashable, torch.Tensor],
                  aux: Optional[Mapping[Hashable, FrameAux]] = None) -> Dict[Hashable, torch.Tensor]: ...

    def remove(self, key: Hashable) -> None: ...

    def keys(self) -> List[Hashable]: ...


def _check_size(width: int, height: int, multiple: int, max_width: int, max_height: int) -> None:
    if width % multiple or height % multiple:
        raise ValueError(f"frame size {width}x{height} (WxH) is not supported: width and height must be multiples "
                         f"of {multiple}; the nearest smaller size is {width // multiple * multiple}x"
                         f"{height // multiple * multiple}")
    if width > max_width or height > max_height:
        raise ValueError(f"frame size {width}x{height} exceeds the engine's maximum {max_width}x{max_height}")


class ModelEngine:
    """The real enhancer behind the :class:`Engine` interface (batched per-stream histories).

    model: a built ``EnhancerModel``; max_streams: bound on live stream histories.
    The optional layers (mask, depth, flow), intrinsics and pose feed the stream options of
    ``model.config.stream`` that use them (``history_warp``, ``region_latent``, ``region_pixel``),
    converted by :class:`~simharmon.bridge.renderer_inputs.InputConverter`; the rest are ignored.
    """

    stand_in = False

    def __init__(self, model, max_streams: int = 64):
        from ..runtime.multistream import MultiStreamEnhancer

        self.model = model
        self.multi = MultiStreamEnhancer(model, max_streams=max_streams)
        self.inputs = InputConverter(self.multi.stream_config, model.device)
        self.used_inputs = self.inputs.used
        config = model.config
        self.name = str(getattr(config, "name", "enhancer"))
        # Random weights whenever no checkpoint was loaded, whatever the preset claims.
        self.untrained = not getattr(model, "weights", None) or bool(getattr(config, "untrained", False))
        self.device = torch.device(model.device)
        self.pixel_multiple = int(config.pixel_multiple)
        stride = config.tokenizer.spatial_compression  # the DiT's RoPE tables cover max_img latents
        self.max_width = int(config.dit.max_img_w * stride)
        self.max_height = int(config.dit.max_img_h * stride)

    def check_size(self, width: int, height: int) -> None:
        """Raise ValueError when the model cannot take ``width`` x ``height`` frames."""
        _check_size(width, height, self.pixel_multiple, self.max_width, self.max_height)

    def step_many(self, frames: Mapping[Hashable, torch.Tensor],
                  aux: Optional[Mapping[Hashable, FrameAux]] = None) -> Dict[Hashable, torch.Tensor]:
        """See :class:`Engine`. ``frames``: key -> ``[1, 3, H, W]`` float32 in [0, 1]; ``aux``: their extras."""
        converted = self.inputs.convert(list(frames), aux)
        for key in converted.broken:
            self.multi.reset(key)
        outputs = self.multi.step_many(frames, converted.inputs)
        self.inputs.commit(converted.poses)
        return outputs

    def remove(self, key: Hashable) -> None:
        """Drop a stream's history (unknown keys are ignored)."""
        self.multi.remove(key)
        self.inputs.remove(key)

    def keys(self) -> List[Hashable]:
        """Keys of the streams that have a history."""
        return self.multi.keys()


class IdentityEngine:
    """STAND-IN engine for tests and transport benchmarks: returns each frame unchanged.

    It is not an enhancer. It has the real engine's interface and bookkeeping (per-stream keys,
    a stream bound, the same size rule), so the serving layer can be exercised and timed without a
    model. ``delay_s`` simulates a slow model (per call, not per frame, like a batched forward).
    """

    stand_in = True
    untrained = True
    used_inputs: List[str] = []

    def __init__(self, max_streams: int = 64, pixel_multiple: int = 16, max_width: int = 4096,
                 max_height: int = 4096, delay_s: float = 0.0, device: Union[str, torch.device] = "cpu"):
        if max_streams < 1 or pixel_multiple < 1 or delay_s < 0:
            raise ValueError("max_streams and pixel_multiple must be >= 1 and delay_s >= 0")
        self.name = "identity (stand-in, not an enhancer)"
        self.device = torch.device(device)
        self.pixel_multiple = pixel_multiple
        self.max_width, self.max_height = max_width, max_height
        self.max_streams = max_streams
        self.delay_s = delay_s
        self._frames_seen: Dict[Hashable, int] = {}
        self.calls = 0
        self.batch_sizes: List[int] = []

    def check_size(self, width: int, height: int) -> None:
        """Raise ValueError for sizes the real model would refuse (same multiple rule)."""
        _check_size(width, height, self.pixel_multiple, self.max_width, self.max_height)

    def step_many(self, frames: Mapping[Hashable, torch.Tensor],
                  aux: Optional[Mapping[Hashable, FrameAux]] = None) -> Dict[Hashable, torch.Tensor]:
        """Return ``frames`` unchanged (same tensor objects), after ``delay_s``."""
        new = [k for k in frames if k not in self._frames_seen]
        if len(self._frames_seen) + len(new) > self.max_streams:
            raise RuntimeError(f"too many streams ({self.max_streams}); remove idle streams first")
        for key, frame in frames.items():
            if not isinstance(frame, torch.Tensor) or frame.dim() != 4 or frame.shape[:2] != (1, 3):
                raise ValueError(f"stream {key!r}: frame must be [1, 3, H, W], got {getattr(frame, 'shape', None)}")
            self._frames_seen[key] = self._frames_seen.get(key, 0) + 1
        self.calls += 1
        self.batch_sizes.append(len(frames))
        del self.batch_sizes[:-1000]  # bounded record for tests
        if self.delay_s:
            time.sleep(self.delay_s)
        return dict(frames)

    def remove(self, key: Hashable) -> None:
        """Forget a stream (unknown keys are ignored)."""
        self._frames_seen.pop(key, None)

    def keys(self) -> List[Hashable]:
        """Keys of the streams seen and not removed."""
        return list(self._frames_seen)


def build_engine(kind: str = "model", config: Union[None, str, Path] = None,
                 weights: Union[None, str, Path, Sequence[Union[str, Path]]] = None, device: str = "cpu",
                 max_streams: int = 64, identity_delay_s: float = 0.0) -> Engine:
    """Build the engine for ``simharmon serve``: ``kind`` "model" or "identity" (the stand-in).

    "model": the enhancer from ``config`` and ``weights``; with neither, the bundled default model
    (``simharmon.models.bundled``); with a config alone, random weights. The exact optimizations
    (``OptimizedEnhancer``) are on unless the tokenizer has decoder skip connections.
    """
    if kind == "identity":
        return IdentityEngine(max_streams=max_streams, delay_s=identity_delay_s, device=device)
    if kind != "model":
        raise ValueError(f"engine must be 'model' or 'identity', got {kind!r}")
    from ..models.bundled import default_weights
    from ..models.enhancer import build_enhancer
    from ..runtime.optimize import OptimizedEnhancer

    if isinstance(weights, (str, Path)):
        weights = [weights]
    chosen = default_weights([Path(w) for w in (weights or [])], None if config is None else str(config))
    model = build_enhancer(config, [str(w) for w in chosen] or None, device=device)
    if not model.config.tokenizer.skip_connections:
        model = OptimizedEnhancer(model).prepare()
    return ModelEngine(model, max_streams=max_streams)
