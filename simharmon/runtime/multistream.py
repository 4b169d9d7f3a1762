"""Many independent streams (cameras, simulators) served by one model in batched forward passes."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import torch

from ..config import StreamConfig
from ..io.pixels import frame_to_model
from ..models.enhancer import EnhancerModel
from .inputs import FrameInputs
from .stream import StepPlan, StreamingEnhancer, finish_output, run_model_step

__all__ = ["INPUT_NAMES", "MultiStreamEnhancer"]

INPUT_NAMES = ("flow", "depth", "pose", "intrinsics", "mask")  # StreamingEnhancer.step's per-frame keywords


class MultiStreamEnhancer:
    """Independent streams, each with its own history ring, batched when their shapes agree.

    Frames of streams with the same size and the same number of available references run as one
    forward pass of batch N; the results equal N separate ``StreamingEnhancer.step`` calls up to
    floating-point batching effects (batch-invariant in fp32 on the CPU, tested). Per-frame renderer
    inputs (``step_many``'s ``inputs``) go through each stream's own ``check_step`` / ``plan_step`` /
    ``remember`` (validation, history warping, region masks) and the batch's ``finish_output``.
    With ``history_warp`` in the per-frame layout, each stream's current latent is encoded by its
    own ``plan_step`` (batch 1) before the batched forward.

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

    def step_many(self, frames: Mapping[Hashable, torch.Tensor],
                  inputs: Optional[Mapping[Hashable, Mapping[str, Optional[torch.Tensor]]]] = None,
                  ) -> Dict[Hashable, torch.Tensor]:
        """Enhance one frame for each of several streams.

        frames: stream key -> ``[1, 3, H, W]`` (or ``[3, H, W]``) float in [0, 1].
        inputs: stream key -> the per-frame renderer inputs of that stream's frame, as the keywords of
            ``StreamingEnhancer.step`` (``flow`` ``[1, 2, H, W]``, ``depth`` ``[1, 1, H, W]``, ``pose``
            ``[1, 4, 4]`` current -> previous camera, ``intrinsics`` ``[1, 3, 3]``, ``mask``
            ``[1, 1, H, W]``; ``inputs.FrameInputs`` gives the conventions). Needed by the stream
            options ``history_warp`` / ``region_latent`` / ``region_pixel``; a missing key means none.
        Returns stream key -> ``[1, 3, H, W]`` float32 in [0, 1] on 8-bit levels, equal to separate
        ``StreamingEnhancer.step`` calls with the same inputs up to floating-point batching effects.
        A bad frame or input raises ValueError/TypeError naming its stream before any stream's history
        changes.
        """
        inputs = {} if inputs is None else inputs
        stray = [key for key in inputs if key not in frames]
        if stray:
            raise ValueError(f"stream {stray[0]!r}: inputs given for a stream without a frame in this call")
        checked = {key: self._check(key, frame, inputs.get(key)) for key, frame in frames.items()}

        outputs: Dict[Hashable, torch.Tensor] = {}
        with torch.inference_mode():
            images = {key: frame_to_model(frame, self.model.dtype) for key, (frame, _) in checked.items()}
            plans = {key: self._streams[key].plan_step(images[key], frame_inputs)
                     for key, (_, frame_inputs) in checked.items()}
            groups: Dict[Tuple, List[Hashable]] = defaultdict(list)
            for key, plan in plans.items():
                signature = (tuple(images[key].shape), len(plan.references), plan.current_latent is None,
                             plan.region_mask is None, plan.condition_mask is None)
                groups[signature].append(key)
            for keys in groups.values():
                outputs.update(self._run_group(keys, checked, images, plans))
        return {key: outputs[key] for key in frames}

    def _check(self, key: Hashable, frame: torch.Tensor,
               given: Optional[Mapping[str, Optional[torch.Tensor]]]) -> Tuple[torch.Tensor, FrameInputs]:
        """Validate one stream's frame and inputs: (frame ``[1, 3, H, W]`` on the device, ``FrameInputs``)."""
        state = self.stream(key)
        try:
            unknown = sorted(set(given or ()) - set(INPUT_NAMES))
            if unknown:
                raise TypeError(f"unknown per-frame inputs {unknown}; expected some of {list(INPUT_NAMES)}")
            frame, frame_inputs = state.check_step(frame, **dict(given or {}))
            if frame.shape[0] != 1:
                raise ValueError(f"one frame per stream per call, got batch {frame.shape[0]}")
        except (ValueError, TypeError) as exc:
            hint = ("" if given is not None or not state.stream.needs_frame_inputs
                    else " (per-frame inputs go in step_many(frames, inputs={key: {...}}))")
            raise type(exc)(f"stream {key!r}: {exc}{hint}") from exc
        return frame, frame_inputs

    def _run_group(self, keys: List[Hashable], checked: Mapping, images: Mapping,
                   plans: Mapping[Hashable, StepPlan]) -> Dict[Hashable, torch.Tensor]:
        """One batched forward for streams whose shapes and plans agree; remembers and returns outputs."""
        group_plans = [plans[k] for k in keys]
        references = [_batch(level) for level in zip(*(p.references for p in group_plans))]
        current_latent = None if group_plans[0].current_latent is None else _batch(
            [p.current_latent for p in group_plans])
        region_mask = None if group_plans[0].region_mask is None else _batch([p.region_mask for p in group_plans])
        condition_mask = None if group_plans[0].condition_mask is None else _batch(
            [p.condition_mask for p in group_plans])
        decoded, latent = run_model_step(self.model, self.stream_config.layout, _batch([images[k] for k in keys]),
                                         references, current_latent=current_latent, region_mask=region_mask,
                                         region_band=self.stream_config.region_band, condition_mask=condition_mask)
        if self.stream_config.region_pixel or self.stream_config.guided_output:  # per stream: its own frame
            enhanced = [finish_output(self.stream_config, decoded[i:i + 1], checked[k][0], checked[k][1].mask)
                        for i, k in enumerate(keys)]
        else:
            whole = finish_output(self.stream_config, decoded, None, None)
            enhanced = [whole[i:i + 1] for i in range(len(keys))]
        outputs = {}
        for index, key in enumerate(keys):
            output = enhanced[index]
            self._streams[key].remember(output, latent[index:index + 1], checked[key][1])
            outputs[key] = output
        return outputs


def _batch(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate one-item batches along dim 0 (no copy for a single stream)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors))
