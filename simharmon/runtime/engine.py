"""The runtime engine: a history pool with one slot per stream, a scheduler of static batches, built steps.

    engine = Engine(model, EngineConfig(backend="cudagraph", dtype="bfloat16"))
    results = engine.step_many({"front": frame_a, "left": frame_b}, {"front": {"mask": mask_a}})
    results["front"].output          # same kind as given: uint8 [H, W, 3] or float [3, H, W] in [0, 1]
    rig = engine.open(num_streams=6, width=1024, height=576)   # 6 cameras that always step together
    enhanced = rig.submit(frames).result()                     # uint8 [6, 576, 1024, 3]

Streams are independent and arrive when they arrive (vLLM's KV cache is the model): each stream
key owns one slot of the :class:`~simharmon.runtime.history.HistoryPool` of its resolution;
``step_many`` groups the frames it is given by resolution, frame kind and history state, splits
each group into static batch sizes (``buckets.plan_batches``), and runs one built step per bucket
(:class:`~simharmon.runtime.step.StepCore` through the backend: eager, compiled, captured) over
static buffers that gather and write back the slots' rings. A rig of cameras that always step
together (:meth:`Engine.open`) is the special case of one full bucket with fixed slots, and on CUDA
has its own stream, pinned buffers and events: its per-frame path never synchronizes the device.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections import defaultdict
from typing import Any, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import torch

from ..config import EngineConfig, StreamConfig
from ..models.enhancer import DTYPES
from .backends import build_core, require_backend, resolve_backend
from .buckets import Bucket, BucketCache, check_resolution, plan_batches
from .inputs import NO_MASK, NO_MASK_MESSAGE, FrameInputs, PoseTracker, gather_inputs, normalize_inputs, used_inputs
from .optimize import OptimizedEnhancer
from .rig import StreamGroup
from .stages import history_capacity
from .static import SlotPool, StaticStep
from .step import StepCore, check_stream
from .stream import check_frame_size

__all__ = ["Engine", "StepResult"]

log = logging.getLogger("simharmon.runtime")

ENGINE_INPUTS = ("mask", "flow", "depth", "intrinsics", "pose", "camera_to_world")


@dataclasses.dataclass
class StepResult:
    """One stream's answer from :meth:`Engine.step_many`.

    output: the enhanced frame, of the kind and shape it was given (uint8 ``[H, W, 3]`` or float
        ``[3, H, W]`` in [0, 1], a leading batch axis of 1 kept); the input itself when passed through;
        None on error.
    passthrough: ``"no_mask"`` when the frame passed through unchanged (``inputs.NO_MASK``), else None.
    history_reset: the stream's history restarted before this frame (a passthrough, a pose that
        cannot be related to the history, an engine failure).
    error: why the frame was refused (its history untouched), else None.
    """

    output: Optional[torch.Tensor] = None
    passthrough: Optional[str] = None
    history_reset: bool = False
    error: Optional[str] = None


@dataclasses.dataclass
class _Ready:
    """A validated frame waiting for its bucket."""

    key: Hashable
    slot: int
    frames: torch.Tensor  # [1, ...] of its kind, on the engine's device
    inputs: FrameInputs
    positions: List[int]
    squeeze: bool
    camera_to_world: Any = None


@dataclasses.dataclass
class _Stream:
    """Host state of one stream key."""

    size: Tuple[int, int]  # (width, height)
    slot: int
    poses: PoseTracker
    told_no_mask: bool = False
    history_reset: bool = False


class Engine:
    """Owns the optimized model (cast to the engine dtype, on the engine device), the pools and the built steps.

    model: a built ``EnhancerModel``; if its device or dtype differ from the config's, a converted
        copy is used and the caller's model is left as it is.
    config: how to execute (backend, dtype, device, batch sizes, stream bound, optimizations).
    stream: temporal and output options; defaults to ``model.config.stream``. Every option works here.
    """

    stand_in = False

    def __init__(self, model, config: Optional[EngineConfig] = None, stream: Optional[StreamConfig] = None) -> None:
        self.config = config if config is not None else EngineConfig()
        self.stream_config = stream if stream is not None else model.config.stream
        self.device = torch.device(self.config.device)
        if self.device.type == "cuda" and self.device.index is None and torch.cuda.is_available():
            self.device = torch.device("cuda", torch.cuda.current_device())
        check_stream(model, self.stream_config)
        self.backend = resolve_backend(self.config.backend, self.device)
        require_backend(self.backend, self.device)
        if self.stream_config.num_refs > self.config.max_history:
            raise ValueError(f"stream has {self.stream_config.num_refs} references; engine.max_history is "
                             f"{self.config.max_history}")
        dtype = DTYPES[self.config.dtype] if self.config.dtype != "auto" else (
            model.dtype if self.device.type == "cpu" else torch.bfloat16)
        inner = getattr(model, "model", model)  # an OptimizedEnhancer wraps the model
        if inner.device != self.device or inner.dtype != dtype:
            inner = copy.deepcopy(inner).to(device=self.device, dtype=dtype)
        self.model = OptimizedEnhancer(inner, self.config.optimizations).prepare()
        self.weights: List[str] = list(getattr(inner, "weights", []) or [])
        config_ = inner.config
        self.name = str(config_.name)
        self.untrained = not self.weights or bool(config_.untrained)  # random weights whatever the preset claims
        self.pixel_multiple = int(config_.pixel_multiple)
        stride = config_.tokenizer.spatial_compression
        self.max_width, self.max_height = int(config_.dit.max_img_w * stride), int(config_.dit.max_img_h * stride)
        self.used_inputs: List[str] = list(used_inputs(self.stream_config))
        self.reads_masks = self.stream_config.uses_mask
        self._pools: Dict[Tuple[int, int], SlotPool] = {}
        self._streams: Dict[Hashable, _Stream] = {}
        self._cores: BucketCache = BucketCache()
        self._steps: Dict[Bucket, StaticStep] = {}
        self._graph_stream = torch.cuda.Stream(self.device) if self.backend == "cudagraph" else None
        self._graph_pool = torch.cuda.graph_pool_handle() if self.backend == "cudagraph" else None

    # -- facts ----------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the engine's model."""
        return self.model.dtype

    @property
    def buckets(self) -> List[Bucket]:
        """Buckets whose step has been built so far."""
        return self._cores.keys()

    def check_size(self, width: int, height: int) -> None:
        """Raise ValueError when the model cannot take ``width`` x ``height`` frames."""
        check_frame_size(self.model.config, height, width)
        check_resolution(width, height, self.config.resolutions, self.pixel_multiple)

    def describe(self) -> str:
        """One line: model, weights, stream options, backend, device, dtype."""
        weights = ", ".join(self.weights) if self.weights else "random (untrained) weights"
        return (f"{self.name} ({weights}); backend {self.backend} on {self.device}, {str(self.dtype).replace('torch.', '')}"
                f"; reads {', '.join(self.used_inputs) or 'no per-frame inputs'}")

    # -- built steps ----------------------------------------------------------------------------
    def step_module(self, bucket: Bucket) -> StepCore:
        """The (eager) :class:`StepCore` of a bucket."""
        return StepCore(self.model, self.stream_config, bucket.num_refs, bucket.advances, bucket.kind).eval()

    def core(self, bucket: Bucket, example: Optional[tuple] = None):
        """The backend's callable for a bucket, built on first use and cached."""
        cfg = self.config
        return self._cores.get(bucket, lambda: build_core(
            self.backend, self.step_module(bucket), freezing=cfg.inductor_freezing,
            compile_for_graph=cfg.cudagraph_compile, example=example))

    def pool(self, width: int, height: int) -> SlotPool:
        """The history pool of ``width`` x ``height`` streams (allocated on first use)."""
        key = (width, height)
        if key not in self._pools:
            tok = self.model.config.tokenizer
            self._pools[key] = SlotPool(self.stream_config, self.config.max_streams, width, height,
                                        latent_channels=tok.z_dim, spatial_compression=tok.spatial_compression,
                                        dtype=self.dtype, device=self.device)
        return self._pools[key]

    def static_step(self, bucket: Bucket, cuda_stream=None, graph_pool=None) -> StaticStep:
        """New static buffers (and, for cudagraph, a captured graph) for ``bucket`` over its pool."""
        return StaticStep(bucket, self.pool(bucket.width, bucket.height), self.stream_config, self.core, self.backend,
                          self.device, cuda_stream, graph_pool)

    def _static_step(self, bucket: Bucket) -> StaticStep:
        if bucket not in self._steps:
            self._steps[bucket] = self.static_step(bucket, self._graph_stream, self._graph_pool)
        return self._steps[bucket]

    # -- streams --------------------------------------------------------------------------------
    def __contains__(self, key: Hashable) -> bool:
        return key in self._streams

    def keys(self) -> List[Hashable]:
        """Keys of the streams that hold a slot."""
        return list(self._streams)

    def _admit(self, key: Hashable, width: int, height: int) -> _Stream:
        state = self._streams.get(key)
        if state is not None:
            if state.size != (width, height):
                w0, h0 = state.size
                raise ValueError(f"stream {key!r} started at {w0}x{h0}, this frame is {width}x{height}; reset or "
                                 "remove the stream to start a new history at the new size")
            return state
        if len(self._streams) >= self.config.max_streams:
            raise RuntimeError(f"too many streams ({self.config.max_streams}, EngineConfig.max_streams); remove idle "
                               "streams first")
        state = _Stream((width, height), self.pool(width, height).take(), PoseTracker())
        self._streams[key] = state
        return state

    def reset(self, key: Hashable) -> None:
        """Forget one stream's history (it keeps its slot); unknown keys are ignored."""
        state = self._streams.get(key)
        if state is not None:
            self._pools[state.size].history.clear(state.slot)
            state.poses.clear()

    def remove(self, key: Hashable) -> None:
        """Free a stream's slot and history; unknown keys are ignored."""
        state = self._streams.pop(key, None)
        if state is not None:
            self._pools[state.size].give_back(state.slot)

    # -- stepping -------------------------------------------------------------------------------
    def _frames(self, frame: Any) -> Tuple[torch.Tensor, str, bool]:
        """A frame as ``[1, ...]`` on the device, its kind, and whether it came without the batch axis."""
        if not isinstance(frame, torch.Tensor):
            raise TypeError(f"a frame must be a torch.Tensor (uint8 [H, W, 3] or float [3, H, W]), got "
                            f"{type(frame).__name__}")
        squeeze = frame.dim() == 3
        batch = frame.unsqueeze(0) if squeeze else frame
        if batch.dim() != 4 or batch.shape[0] != 1:
            raise ValueError(f"a frame must be uint8 [H, W, 3] or float [3, H, W] (one per stream), got "
                             f"{list(frame.shape)}")
        if batch.dtype == torch.uint8:
            if batch.shape[-1] != 3:
                raise ValueError(f"a uint8 frame must be [H, W, 3] RGB, got {list(frame.shape)}")
            return batch.to(self.device), "uint8", squeeze
        if not batch.is_floating_point() or batch.shape[1] != 3:
            raise ValueError(f"a frame must be uint8 [H, W, 3] or float [3, H, W] in [0, 1], got {batch.dtype} "
                             f"{list(frame.shape)}")
        return batch.to(self.device, torch.float32), "float", squeeze

    def _prepare(self, key: Hashable, frame: Any, given: Mapping[str, Any]) -> Tuple[Optional[_Ready], StepResult]:
        """Validate one stream's frame and inputs; (ready item, or None with its final result)."""
        unknown = sorted(set(given) - set(ENGINE_INPUTS))
        if unknown:
            raise TypeError(f"unknown per-frame inputs {unknown}; expected some of {list(ENGINE_INPUTS)}")
        frames, kind, squeeze = self._frames(frame)
        height, width = (frames.shape[1:3] if kind == "uint8" else frames.shape[2:])
        self.check_size(width, height)
        state = self._admit(key, width, height)
        history = self._pools[state.size].history
        raw = {k: v for k, v in given.items() if k in self.used_inputs and v is not None}
        c2w = given.get("camera_to_world")
        if self.stream_config.history_warp == "depth" and c2w is not None:
            if state.poses.broken(c2w):
                history.clear(state.slot)
                state.history_reset = True
            if "pose" not in raw:
                raw["pose"] = state.poses.relative(c2w, self.device)
        if self.reads_masks and raw.get("mask") is None:
            return None, self._pass_through(key, state, frame)
        inputs = gather_inputs(self.stream_config, 1, height, width, self.device,
                               has_history=history.available(state.slot) > 0,
                               **normalize_inputs(raw, height, width))
        return _Ready(key, state.slot, frames, inputs, history.positions(state.slot), squeeze, c2w), StepResult()

    def _pass_through(self, key: Hashable, state: _Stream, frame: torch.Tensor) -> StepResult:
        if not state.told_no_mask:
            log.warning("stream %r: " + NO_MASK_MESSAGE.format(name=self.name), key)
            state.told_no_mask = True
        self._pools[state.size].history.clear(state.slot)
        state.poses.clear()
        return StepResult(output=frame, passthrough=NO_MASK, history_reset=True)

    def step_many(self, frames: Mapping[Hashable, Any],
                  inputs: Optional[Mapping[Hashable, Mapping[str, Any]]] = None) -> Dict[Hashable, StepResult]:
        """Enhance one frame for each of several streams (each key its own history).

        frames: stream key -> uint8 ``[H, W, 3]`` RGB or float ``[3, H, W]`` in [0, 1] (a leading batch
            axis of 1 is allowed), any device.
        inputs: stream key -> per-frame inputs: ``mask`` (uint8 0..255, bool or float in [0, 1];
            ``[H, W]`` or ``[1, 1, H, W]``), ``flow``, ``depth``, ``intrinsics`` (``(fx, fy, cx, cy)``
            or 3x3), ``pose`` (current -> previous camera) or ``camera_to_world`` (absolute; the engine
            forms the relative pose); only those the stream options read are used (``used_inputs``).
        Returns key -> :class:`StepResult`. A bad frame or input gets ``error`` (its history untouched)
        without affecting the other streams; a frame without a mask for a mask-reading model passes
        through (``passthrough="no_mask"``).
        """
        inputs = inputs or {}
        results: Dict[Hashable, StepResult] = {}
        ready: List[_Ready] = []
        for key, frame in frames.items():
            try:
                item, result = self._prepare(key, frame, inputs.get(key) or {})
            except (ValueError, TypeError, RuntimeError) as exc:
                results[key] = StepResult(error=str(exc))
                continue
            results[key] = result
            if item is not None:
                ready.append(item)
        groups: Dict[tuple, List[_Ready]] = defaultdict(list)
        for item in ready:
            state = self._streams[item.key]
            advances = self.stream_config.history_warp != "off" and \
                self._pools[state.size].history.available(state.slot) > 0  # fmt: skip
            groups[(state.size, "uint8" if item.frames.dtype == torch.uint8 else "float", len(item.positions),
                    advances)].append(item)
        for (size, kind, num_refs, advances), items in groups.items():
            start = 0
            for batch, count in plan_batches(len(items), self.config.batch_sizes, self.config.max_padding):
                chunk = items[start:start + count]
                start += count
                bucket = Bucket(size[0], size[1], batch, num_refs, self.stream_config.layout, advances, kind)
                self._run_chunk(bucket, chunk, results)
        return results

    def _run_chunk(self, bucket: Bucket, chunk: List[_Ready], results: Dict[Hashable, StepResult]) -> None:
        try:
            step = self._static_step(bucket)
            with torch.inference_mode():
                step.load([i.frames for i in chunk], [i.slot for i in chunk], [i.positions for i in chunk],
                          [i.inputs for i in chunk])
                step.run()
                outputs = step.output[:len(chunk)].clone()
        except Exception as exc:  # the rings of these slots may be half-written: restart them
            log.exception("engine step failed for %d stream(s)", len(chunk))
            for item in chunk:
                self.reset(item.key)
                results[item.key] = StepResult(error=f"engine failure ({type(exc).__name__}: {exc}); this stream's "
                                                     "history restarts", history_reset=True)
            return
        pool = self._pools[(bucket.width, bucket.height)]
        for index, item in enumerate(chunk):
            state = self._streams[item.key]
            pool.history.stepped([state.slot])
            state.poses.commit(item.camera_to_world)
            out = outputs[index:index + 1]
            results[item.key] = StepResult(output=out[0] if item.squeeze else out, history_reset=state.history_reset)
            state.history_reset = False

    def prime(self, key: Hashable, outputs: Sequence[Any], inputs: Optional[Sequence[Mapping[str, Any]]] = None) -> None:
        """Seed one stream's history with its previous OUTPUT frames (same kinds as ``step_many``), oldest first.

        After priming with the last ``history_capacity`` outputs the next step continues exactly as
        the uninterrupted stream would (``reference_latent="output"`` re-encodes, approximate).
        inputs: with ``history_warp``, each output's per-frame inputs (``step_many``'s keys).
        """
        if self.stream_config.history_warp != "off" and (inputs is None or len(inputs) != len(outputs)):
            raise ValueError("prime: history_warp needs the per-frame inputs of every primed frame (inputs=[...])")
        self.reset(key)
        for index, frame in enumerate(outputs):
            frames, kind, _ = self._frames(frame)
            height, width = (frames.shape[1:3] if kind == "uint8" else frames.shape[2:])
            self.check_size(width, height)
            state = self._admit(key, width, height)
            history = self._pools[state.size].history
            given = {k: v for k, v in (inputs[index] if inputs else {}).items() if k != "mask"}
            c2w = given.pop("camera_to_world", None)
            if c2w is not None and "pose" not in given:
                given["pose"] = state.poses.relative(c2w, self.device)
            raw = {k: v for k, v in given.items() if k in self.used_inputs and v is not None}
            has_history = history.available(state.slot) > 0
            frame_inputs = gather_inputs(self.stream_config, 1, height, width, self.device, has_history=has_history,
                                         **normalize_inputs(raw, height, width))
            advances = has_history and self.stream_config.history_warp != "off"
            core = self.step_module(Bucket(width, height, 1, 0, self.stream_config.layout, advances, kind))
            slots = torch.tensor([state.slot], device=self.device)
            with torch.inference_mode():
                history.scatter(slots, core.remember(frames, history.gather(slots), frame_inputs))
            history.stepped([state.slot])
            state.poses.commit(c2w)

    def history_length(self) -> int:
        """Outputs a stream's history holds (what ``prime`` wants); 0 when non-temporal."""
        return history_capacity(self.stream_config)

    def open(self, num_streams: int = 1, width: int = 1024, height: int = 576, output: str = "host",
             record_timing: bool = False) -> StreamGroup:
        """A rig: ``num_streams`` same-size streams that always step together (each with its own history).

        output: "host" (results in pinned CPU memory) or "device" (results stay on the engine device).
        record_timing: CUDA only: time upload / compute / download of every step with events.
        """
        return StreamGroup(self, num_streams, width, height, output, record_timing)
