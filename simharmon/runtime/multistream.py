"""Many independent streams (cameras, simulators) served by one model in batched forward passes."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, Hashable, List, Mapping, Optional, Tuple

import torch

from ..config import StreamConfig
from ..models.enhancer import EnhancerModel
from .frames import frame_to_model, model_to_frame
from .stream import StreamingEnhancer, run_model_step

__all__ = ["MultiStreamEnhancer"]


class MultiStreamEnhancer:
    """Independent streams, each with its own history ring, batched when their shapes agree.

    Frames of streams with the same size and the same number of available references run as one
    forward pass of batch N; the results equal N separate ``StreamingEnhancer.step`` calls up to
    floating-point batching effects (batch-invariant in fp32 on the CPU, tested).

    max_streams: a bound on live streams (a server must not grow without limit); adding one more
        raises ``RuntimeError``: ``remove`` idle ones first.
    """

    def __init__(self, model: EnhancerModel, stream: Optional[StreamConfig] = None, max_streams: int = 64):
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        self.model = model
        self.stream_config = stream if stream is not None else model.config.stream
        self.max_streams = max_streams
        self._streams: Dict[Hashable, StreamingEnhancer] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._streams

    def keys(self) -> List[Hashable]:
        return list(self._streams)

    def stream(self, key: Hashable) -> StreamingEnhancer:
        """The per-stream state for ``key``, created on first use."""
        if key not in self._streams:
            if len(self._streams) >= self.max_streams:
                raise RuntimeError(f"too many streams ({self.max_streams}); remove idle streams first")
            self._streams[key] = StreamingEnhancer(self.model, self.stream_config)
        return self._streams[key]

    def reset(self, key: Hashable) -> None:
        """Forget the history of one stream (it keeps its slot)."""
        if key in self._streams:
            self._streams[key].reset()

    def remove(self, key: Hashable) -> None:
        """Drop a stream and its history."""
        self._streams.pop(key, None)

    def step_many(self, frames: Mapping[Hashable, torch.Tensor]) -> Dict[Hashable, torch.Tensor]:
        """Enhance one frame for each of several streams.

        frames: stream key -> ``[1, 3, H, W]`` (or ``[3, H, W]``) float in [0, 1].
        Returns stream key -> ``[1, 3, H, W]`` float32 in [0, 1] on 8-bit levels. A bad frame raises
        ValueError/TypeError naming its stream before any stream's history changes.
        """
        checked: Dict[Hashable, torch.Tensor] = {}
        for key, frame in frames.items():
            state = self.stream(key)
            try:
                frame = state.check_input(frame)
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"stream {key!r}: {exc}") from exc
            if frame.shape[0] != 1:
                raise ValueError(f"stream {key!r}: one frame per stream per call, got batch {frame.shape[0]}")
            checked[key] = frame

        groups: Dict[Tuple, List[Hashable]] = defaultdict(list)
        for key, frame in checked.items():
            groups[(tuple(frame.shape), len(self._streams[key].references()))].append(key)

        outputs: Dict[Hashable, torch.Tensor] = {}
        with torch.inference_mode():
            for keys in groups.values():
                states = [self._streams[k] for k in keys]
                image = frame_to_model(torch.cat([checked[k] for k in keys]), self.model.dtype)
                per_stream_refs = [s.references() for s in states]
                references = [torch.cat(level) for level in zip(*per_stream_refs)]
                decoded, latent = run_model_step(self.model, self.stream_config.layout, image, references)
                enhanced = model_to_frame(decoded)
                for index, (key, state) in enumerate(zip(keys, states)):
                    state.remember(enhanced[index:index + 1], latent[index:index + 1])
                    outputs[key] = enhanced[index:index + 1]
        return {key: outputs[key] for key in frames}
