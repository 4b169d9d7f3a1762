"""The runtime engine: optimized, compiled steps over static buffers, for one or many cameras.

    engine = Engine(model, EngineConfig(backend="cudagraph", dtype="bfloat16"))
    rig = engine.open(num_streams=6, width=1024, height=576)   # 6 cameras, one ring each
    handle = rig.submit(frames)      # uint8 [6, 576, 1024, 3], host (numpy/torch) or CUDA tensor
    enhanced = handle.result()       # uint8 [6, 576, 1024, 3]; waits on this frame's event only

A :class:`StreamGroup` is N streams of one size that step together (a camera rig): one batched
forward per step, each stream with its own history ring. Shapes are static per bucket
(resolution, N, number of references); each bucket's step is built lazily, once, by the backend.
On CUDA every group has its own CUDA stream, pinned host buffers and non-blocking copies; the
per-frame path never calls ``torch.cuda.synchronize()``.

For streams that do NOT step together, :meth:`Engine.multistream` gives a
:class:`MultiStreamEnhancer` running the same optimized model (eager, dynamic shapes).
"""

from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..config import EngineConfig, StreamConfig
from ..models.enhancer import DTYPES, EnhancerModel
from .backends import EagerRunner, GraphRunner, Runner, build_core, require_backend
from .buckets import Bucket, BucketCache, check_resolution
from .compiled_step import CoreFn, StaticState, StepCore
from .fused_io import check_uint8_frames
from .multistream import MultiStreamEnhancer
from .optimize import OptimizedEnhancer

__all__ = ["Engine", "StreamGroup", "FrameResult"]

FramesIn = Union[np.ndarray, torch.Tensor]


class Engine:
    """Owns the optimized model (cast to the engine dtype, on the engine device) and the per-bucket steps.

    model: a built EnhancerModel; if its device or dtype differ from the config's, a converted
        copy is used and the caller's model is left as it is.
    stream: temporal settings (layout, offsets, history policy); defaults to ``model.config.stream``.
    """

    def __init__(self, model: EnhancerModel, config: Optional[EngineConfig] = None,
                 stream: Optional[StreamConfig] = None) -> None:  # fmt: skip
        self.config = config if config is not None else EngineConfig()
        self.stream_config = stream if stream is not None else model.config.stream
        self.device = torch.device(self.config.device)
        if self.device.type == "cuda" and self.device.index is None and torch.cuda.is_available():
            self.device = torch.device("cuda", torch.cuda.current_device())
        require_backend(self.config.backend, self.device)
        if getattr(self.stream_config, "needs_frame_inputs", False):
            raise ValueError("stream options history_warp / region_latent / region_pixel / mask_condition need "
                             "per-frame renderer inputs, which the engine does not take; use StreamingEnhancer.step "
                             "for them")
        if getattr(self.stream_config, "colour_transform", "off") != "off":
            raise ValueError("stream option colour_transform is not implemented in the engine's fused output path; "
                             "use StreamingEnhancer / MultiStreamEnhancer for it")
        if getattr(self.stream_config, "guided_output", False):
            raise ValueError("stream option guided_output is not implemented in the engine's fused output path; "
                             "use StreamingEnhancer / MultiStreamEnhancer for it")
        if self.stream_config.num_refs > self.config.max_history:
            raise ValueError(f"stream has {self.stream_config.num_refs} references; engine.max_history is "
                             f"{self.config.max_history}")  # fmt: skip
        dtype = DTYPES[self.config.dtype]
        if model.device != self.device or model.dtype != dtype:
            model = copy.deepcopy(model).to(device=self.device, dtype=dtype)
        self.model = model
        self.fast = OptimizedEnhancer(model, self.config.optimizations).prepare()
        self._cores: BucketCache[CoreFn] = BucketCache()
        self._step_modules: BucketCache[StepCore] = BucketCache()

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the engine's model."""
        return self.model.dtype

    @property
    def backend(self) -> str:
        """EngineConfig.backend."""
        return self.config.backend

    @property
    def buckets(self) -> List[Bucket]:
        """Buckets whose step has been built so far."""
        return self._cores.keys()

    def step_module(self, bucket: Bucket) -> StepCore:
        """The (eager) :class:`StepCore` of a bucket, built once."""
        return self._step_modules.get(bucket, lambda: StepCore(
            self.fast, bucket.layout, bucket.num_refs, bucket.height, bucket.width,
            self.stream_config.reference_latent, keep_history=self._history_capacity() > 0).eval())

    def core(self, bucket: Bucket, example: Optional[StaticState] = None) -> CoreFn:
        """The backend's callable for a bucket, built on first use and cached."""
        cfg = self.config
        return self._cores.get(bucket, lambda: build_core(
            cfg.backend, self.step_module(bucket), freezing=cfg.inductor_freezing,
            compile_for_graph=cfg.cudagraph_compile, example=example, use_refs=bucket.num_refs > 0))

    def _history_capacity(self) -> int:
        return 0 if self.stream_config.history == "none" else self.stream_config.history_length

    def open(self, num_streams: int = 1, width: int = 1024, height: int = 576, output: str = "host",
             record_timing: bool = False) -> StreamGroup:  # fmt: skip
        """A group of ``num_streams`` same-size streams stepping together (each with its own history).

        output: "host" (results in pinned CPU memory) or "device" (results stay on the engine device).
        record_timing: CUDA only: time upload / compute / download of every step with events.
        """
        return StreamGroup(self, num_streams, width, height, output, record_timing)

    def multistream(self, max_streams: int = 64) -> MultiStreamEnhancer:
        """Independent streams (dynamic batching by shape) over the same optimized model, eager."""
        return MultiStreamEnhancer(self.fast, self.stream_config, max_streams=max_streams)


class FrameResult:
    """The pending output of one :meth:`StreamGroup.submit`."""

    def __init__(self, group: StreamGroup, slot: int, generation: int, event, tensor: torch.Tensor,
                 timing: Optional[Sequence] = None) -> None:  # fmt: skip
        self._group, self._slot, self._generation = group, slot, generation
        self._event, self._tensor, self._timing = event, tensor, timing

    def ready(self) -> bool:
        """True once the output is complete (never blocks)."""
        return self._event is None or self._event.query()

    def result(self, copy: bool = True) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]``: waits for this frame's event only.

        Host output: a CPU tensor (a copy unless ``copy=False``, then a view of a pinned buffer that
        is reused ``output_slots`` submissions later). Device output: the device tensor, ordered
        after the step on the caller's current stream without blocking the host.
        """
        if self._group._generations[self._slot] != self._generation:
            raise RuntimeError(f"this result's buffer was reused: read results within "
                               f"{self._group.engine.config.output_slots} submissions (EngineConfig.output_slots)")  # fmt: skip
        if self._event is not None:
            if self._tensor.is_cuda:
                current = torch.cuda.current_stream(self._tensor.device)
                current.wait_event(self._event)
                self._tensor.record_stream(current)
                return self._tensor
            self._event.synchronize()
        return self._tensor.clone() if copy else self._tensor

    def timings_ms(self) -> Dict[str, float]:
        """upload / compute / download / total milliseconds of this step (``record_timing`` groups)."""
        if self._timing is None:
            raise RuntimeError("open the group with record_timing=True (CUDA only) to time steps")
        start, uploaded, computed, done = self._timing
        done.synchronize()
        return {"upload": start.elapsed_time(uploaded), "compute": uploaded.elapsed_time(computed),
                "download": computed.elapsed_time(done), "total": start.elapsed_time(done)}  # fmt: skip


class StreamGroup:
    """N same-size streams enhanced in one batched forward per step; see the module docstring."""

    def __init__(self, engine: Engine, num_streams: int, width: int, height: int, output: str,
                 record_timing: bool) -> None:  # fmt: skip
        cfg, scfg = engine.config, engine.stream_config
        if not 1 <= num_streams <= cfg.max_cameras:
            raise ValueError(f"num_streams must be in 1..{cfg.max_cameras} (EngineConfig.max_cameras), got {num_streams}")
        if output not in ("host", "device"):
            raise ValueError(f"output must be 'host' or 'device', got {output!r}")
        check_resolution(width, height, cfg.resolutions, engine.model.config.pixel_multiple)
        self.engine, self.num_streams, self.width, self.height = engine, num_streams, width, height
        self.output = output
        self.frames_seen = 0
        device, dtype = engine.device, engine.dtype
        s = engine.model.config.tokenizer.spatial_compression
        entry = (3, height, width) if scfg.layout == "release" else (engine.model.config.tokenizer.z_dim, height // s, width // s)
        self.capacity = engine._history_capacity()
        self.state = StaticState(num_streams, height, width, entry, self.capacity, scfg.num_refs, dtype, device)
        self._runners: Dict[int, Runner] = {}
        self._cuda = device.type == "cuda"
        slots = cfg.output_slots
        self._generations = [0] * slots
        self._next_out = 0
        shape = (num_streams, height, width, 3)
        if self._cuda:
            self.stream = torch.cuda.Stream(device)
            self._pool = torch.cuda.graph_pool_handle()  # shared by this group's graphs (one stream: never concurrent)
            self._in_host = [torch.empty(shape, dtype=torch.uint8).pin_memory() for _ in range(2)]
            self._in_done = [torch.cuda.Event() for _ in range(2)]
            self._in_used = [False, False]
            self._next_in = 0
            if output == "host":
                self._out_host = [torch.empty(shape, dtype=torch.uint8).pin_memory() for _ in range(slots)]
            self._out_done = [torch.cuda.Event() for _ in range(slots)]
            self._timing = [tuple(torch.cuda.Event(enable_timing=True) for _ in range(4)) for _ in range(slots)] \
                if record_timing else None  # fmt: skip
        elif record_timing:
            raise ValueError("record_timing needs a CUDA device (CUDA events)")

    # -- history (same policy as StreamingEnhancer._reference_offsets) --------------------------------
    def reference_offsets(self) -> List[int]:
        """Ring offsets to condition on in the next step (empty = non-temporal step)."""
        scfg = self.engine.stream_config
        available = min(self.frames_seen, self.capacity)
        if scfg.history == "none" or available == 0:
            return []
        if scfg.history == "full":
            return list(scfg.offsets) if available >= scfg.history_length else []
        return [min(offset, available) for offset in scfg.offsets]

    def bucket(self, num_refs: int) -> Bucket:
        """This group's shape bucket for a step with ``num_refs`` references."""
        return Bucket(self.width, self.height, self.num_streams, num_refs, self.engine.stream_config.layout)

    def reset(self) -> None:
        """Forget every stream's history (buffers and compiled steps are kept)."""
        self.frames_seen = 0

    def _runner(self, num_refs: int) -> Runner:
        runner = self._runners.get(num_refs)
        if runner is None:
            bucket = self.bucket(num_refs)
            core = self.engine.core(bucket, example=self.state)
            if self.engine.backend == "cudagraph":
                runner = GraphRunner(self.state, core, num_refs > 0, self.stream, pool=self._pool)
            else:
                runner = EagerRunner(self.state, core, num_refs > 0)
            self._runners[num_refs] = runner
        return runner

    def _check(self, frames: FramesIn) -> torch.Tensor:
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        frames = check_uint8_frames(frames)
        expected = (self.num_streams, self.height, self.width, 3)
        if tuple(frames.shape) != expected:
            raise ValueError(f"frames must be uint8 {list(expected)} for this group, got {list(frames.shape)}")
        return frames

    # -- the per-frame path ---------------------------------------------------------------------------
    def submit(self, frames: FramesIn) -> FrameResult:
        """Enqueue one step for all streams: ``frames`` uint8 ``[N, H, W, 3]``. Returns without waiting."""
        frames = self._check(frames)
        positions = [o - 1 for o in self.reference_offsets()]  # ring index 0 = newest
        slot = self._next_out
        self._next_out = (slot + 1) % len(self._generations)
        self._generations[slot] += 1
        if not self._cuda:
            if positions:
                self.state.set_ref_index(positions)
            self.state.frames.copy_(frames)
            with torch.inference_mode():
                self._runner(len(positions))()
            self.frames_seen += 1
            return FrameResult(self, slot, self._generations[slot], None, self.state.output.clone())
        return self._submit_cuda(frames, positions, slot)

    def _submit_cuda(self, frames: torch.Tensor, positions: List[int], slot: int) -> FrameResult:
        timing = self._timing[slot] if self._timing is not None else None
        stream = self.stream
        if frames.is_cuda:
            stream.wait_stream(torch.cuda.current_stream(frames.device))  # the producer's writes first
            source = frames
        else:
            i = self._next_in
            self._next_in = 1 - i
            if self._in_used[i]:
                self._in_done[i].synchronize()  # the copy that last read this pinned buffer is done
            self._in_host[i].copy_(frames)
            self._in_used[i] = True
            source = self._in_host[i]
        with torch.inference_mode(), torch.cuda.stream(stream):
            if positions:  # in stream order: an earlier step may still be reading the index
                self.state.set_ref_index(positions)
            if timing is not None:
                timing[0].record(stream)
            self.state.frames.copy_(source, non_blocking=True)
            if not frames.is_cuda:
                self._in_done[i].record(stream)
            else:
                frames.record_stream(stream)
            if timing is not None:
                timing[1].record(stream)
            self._runner(len(positions))()
            if timing is not None:
                timing[2].record(stream)
            if self.output == "host":
                out = self._out_host[slot]
                out.copy_(self.state.output, non_blocking=True)
            else:
                out = self.state.output.clone()
            done = timing[3] if timing is not None else self._out_done[slot]
            done.record(stream)
        self.frames_seen += 1
        return FrameResult(self, slot, self._generations[slot], done, out, timing)

    def step(self, frames: FramesIn) -> torch.Tensor:
        """``submit(frames).result()``."""
        return self.submit(frames).result()

    def prime(self, history: Sequence[FramesIn]) -> None:
        """Seed every stream's history with previous OUTPUT frames uint8 ``[N, H, W, 3]``, oldest first."""
        self.reset()
        core = self.engine.step_module(self.bucket(0))
        if self._cuda:  # the ring is written on the caller's stream, after this group's pending steps
            torch.cuda.current_stream(self.engine.device).wait_stream(self.stream)
        for frames in history:
            frames = self._check(frames).to(self.engine.device)
            if self.capacity:
                with torch.inference_mode():
                    self.state.push(core.entry_from_image(core.pre(frames)))
            self.frames_seen += 1
        if self._cuda:
            self.stream.wait_stream(torch.cuda.current_stream(self.engine.device))
