"""A rig: N same-size cameras that always step together, as one full bucket with fixed history slots.

``Engine.open(num_streams, width, height)`` gives a :class:`StreamGroup`. Each camera owns a slot
of the engine's history pool; every step is one batched forward of the bucket's built step. On
CUDA the group has its own CUDA stream, pinned host buffers and non-blocking copies, and the
per-frame path never calls ``torch.cuda.synchronize()``: ``submit`` returns a :class:`FrameResult`
that waits on this frame's event only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..io.pixels import check_uint8_frames
from .buckets import Bucket, check_resolution
from .inputs import NO_MASK, FrameInputs, gather_inputs, normalize_inputs
from .static import StaticStep

if TYPE_CHECKING:  # the engine constructs groups
    from .engine import Engine

__all__ = ["FrameResult", "StreamGroup"]

FramesIn = Union[np.ndarray, torch.Tensor]


class FrameResult:
    """The pending output of one :meth:`StreamGroup.submit`.

    passthrough: ``"no_mask"`` when the rig's frames passed through unchanged (a mask-reading model
    without masks), else None.
    """

    def __init__(self, group: StreamGroup, slot: int, generation: int, event, tensor: torch.Tensor,
                 timing: Optional[Sequence] = None, passthrough: Optional[str] = None) -> None:
        self._group, self._slot, self._generation = group, slot, generation
        self._event, self._tensor, self._timing = event, tensor, timing
        self.passthrough = passthrough

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
                               f"{self._group.engine.config.output_slots} submissions (EngineConfig.output_slots)")
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
                "download": computed.elapsed_time(done), "total": start.elapsed_time(done)}


class StreamGroup:
    """N same-size streams enhanced in one batched forward per step; see the module docstring."""

    def __init__(self, engine: Engine, num_streams: int, width: int, height: int, output: str,
                 record_timing: bool) -> None:
        cfg = engine.config
        if not 1 <= num_streams <= cfg.max_cameras:
            raise ValueError(f"num_streams must be in 1..{cfg.max_cameras} (EngineConfig.max_cameras), got {num_streams}")
        if output not in ("host", "device"):
            raise ValueError(f"output must be 'host' or 'device', got {output!r}")
        engine.check_size(width, height)
        check_resolution(width, height, cfg.resolutions, engine.pixel_multiple)
        self.engine, self.num_streams, self.width, self.height = engine, num_streams, width, height
        self.output = output
        self.frames_seen = 0
        self.pool = engine.pool(width, height)
        self.slots: List[int] = [self.pool.take() for _ in range(num_streams)]
        self._steps: Dict[Tuple[int, bool], StaticStep] = {}
        self._cuda = engine.device.type == "cuda"
        slots = cfg.output_slots
        self._generations = [0] * slots
        self._next_out = 0
        shape = (num_streams, height, width, 3)
        self.stream = None
        if self._cuda:
            self.stream = torch.cuda.Stream(engine.device)
            self._graph_pool = torch.cuda.graph_pool_handle()  # this group's graphs never run concurrently
            self._in_host = [torch.empty(shape, dtype=torch.uint8).pin_memory() for _ in range(2)]
            self._in_done = [torch.cuda.Event() for _ in range(2)]
            self._in_used = [False, False]
            self._next_in = 0
            if output == "host":
                self._out_host = [torch.empty(shape, dtype=torch.uint8).pin_memory() for _ in range(slots)]
            self._out_done = [torch.cuda.Event() for _ in range(slots)]
            self._timing = ([tuple(torch.cuda.Event(enable_timing=True) for _ in range(4)) for _ in range(slots)]
                            if record_timing else None)
        elif record_timing:
            raise ValueError("record_timing needs a CUDA device (CUDA events)")

    def close(self) -> None:
        """Give the rig's history slots back to the engine."""
        for slot in self.slots:
            self.pool.give_back(slot)
        self.slots = []

    # -- history --------------------------------------------------------------------------------
    def reference_offsets(self) -> List[int]:
        """Ring offsets to condition on in the next step (empty = non-temporal step)."""
        return list(self.pool.history.offsets(self.slots[0]))

    def bucket(self, num_refs: int, advances: bool = False) -> Bucket:
        """This group's shape bucket for a step with ``num_refs`` references."""
        return Bucket(self.width, self.height, self.num_streams, num_refs, self.engine.stream_config.layout, advances,
                      "uint8")

    def reset(self) -> None:
        """Forget every stream's history (buffers and built steps are kept)."""
        for slot in self.slots:
            self.pool.history.clear(slot)
        self.frames_seen = 0

    def _step(self, num_refs: int, advances: bool) -> StaticStep:
        key = (num_refs, advances)
        if key not in self._steps:
            self._steps[key] = self.engine.static_step(self.bucket(num_refs, advances), self.stream,
                                                       getattr(self, "_graph_pool", None))
        return self._steps[key]

    def _check(self, frames: FramesIn) -> torch.Tensor:
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        frames = check_uint8_frames(frames)
        expected = (self.num_streams, self.height, self.width, 3)
        if tuple(frames.shape) != expected:
            raise ValueError(f"frames must be uint8 {list(expected)} for this group, got {list(frames.shape)}")
        return frames

    def _inputs(self, given: dict) -> FrameInputs:
        raw = {k: v for k, v in given.items() if v is not None}
        engine = self.engine
        has_history = self.pool.history.available(self.slots[0]) > 0
        return gather_inputs(engine.stream_config, self.num_streams, self.height, self.width, engine.device,
                             has_history=has_history, **normalize_inputs(raw, self.height, self.width))

    # -- the per-frame path ---------------------------------------------------------------------
    def submit(self, frames: FramesIn, **inputs) -> FrameResult:
        """Enqueue one step for all streams: ``frames`` uint8 ``[N, H, W, 3]``. Returns without waiting.

        inputs: per-frame inputs with the batch axis N (``mask [N, 1, H, W]``, ``flow``, ``depth``,
        ``intrinsics``, ``pose``; ``inputs.FrameInputs``), as the stream options read them. Without a
        mask a mask-reading model passes the frames through (``FrameResult.passthrough``).
        """
        frames = self._check(frames)
        frame_inputs = self._inputs(inputs)
        slot = self._next_out
        self._next_out = (slot + 1) % len(self._generations)
        self._generations[slot] += 1
        if self.engine.reads_masks and frame_inputs.mask is None:
            self.reset()
            return FrameResult(self, slot, self._generations[slot], None, frames.clone(), passthrough=NO_MASK)
        positions = self.pool.history.positions(self.slots[0])
        advances = self.engine.stream_config.history_warp != "off" and \
            self.pool.history.available(self.slots[0]) > 0  # fmt: skip
        step = self._step(len(positions), advances)
        rows = [positions] * self.num_streams
        if not self._cuda:
            with torch.inference_mode():
                step.load([frames[i:i + 1] for i in range(self.num_streams)], self.slots, rows,
                          [frame_inputs.row(i) for i in range(self.num_streams)])
                step.run()
            self._stepped()
            return FrameResult(self, slot, self._generations[slot], None, step.output.clone())
        return self._submit_cuda(step, frames, frame_inputs, rows, slot)

    def _stepped(self) -> None:
        self.pool.history.stepped(self.slots)
        self.frames_seen += 1

    def _submit_cuda(self, step: StaticStep, frames: torch.Tensor, frame_inputs: FrameInputs, rows, slot: int):
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
            if timing is not None:
                timing[0].record(stream)
            step.load([source[k:k + 1] for k in range(self.num_streams)], self.slots, rows,
                      [frame_inputs.row(k) for k in range(self.num_streams)])
            if not frames.is_cuda:
                self._in_done[i].record(stream)
            else:
                frames.record_stream(stream)
            if timing is not None:
                timing[1].record(stream)
            step.run()
            if timing is not None:
                timing[2].record(stream)
            if self.output == "host":
                out = self._out_host[slot]
                out.copy_(step.output, non_blocking=True)
            else:
                out = step.output.clone()
            done = timing[3] if timing is not None else self._out_done[slot]
            done.record(stream)
        self._stepped()
        return FrameResult(self, slot, self._generations[slot], done, out, timing)

    def step(self, frames: FramesIn, **inputs) -> torch.Tensor:
        """``submit(frames, **inputs).result()``."""
        return self.submit(frames, **inputs).result()

    def prime(self, history: Sequence[FramesIn], inputs: Optional[Sequence[dict]] = None) -> None:
        """Seed every stream's history with previous OUTPUT frames uint8 ``[N, H, W, 3]``, oldest first."""
        self.reset()
        if self._cuda:  # the ring is written on the caller's stream, after this group's pending steps
            torch.cuda.current_stream(self.engine.device).wait_stream(self.stream)
        for index, frames in enumerate(history):
            frames = self._check(frames).to(self.engine.device)
            given = {k: v for k, v in (inputs[index] if inputs else {}).items() if k != "mask"}
            frame_inputs = self._inputs(given)
            advances = self.engine.stream_config.history_warp != "off" and \
                self.pool.history.available(self.slots[0]) > 0  # fmt: skip
            core = self.engine.step_module(self.bucket(0, advances))
            slots = torch.tensor(self.slots, device=self.engine.device)
            with torch.inference_mode():
                self.pool.history.scatter(slots, core.remember(frames, self.pool.history.gather(slots), frame_inputs))
            self._stepped()
        if self._cuda:
            self.stream.wait_stream(torch.cuda.current_stream(self.engine.device))
