"""Static buffers of one bucket, and the closure the backend runs over them.

A :class:`StaticStep` owns fixed-address buffers for N rows (frames, slot indices, reference
positions, per-frame inputs, output) and runs ``gather -> StepCore -> write back -> copy output``
over them: eagerly, through the compiled core, or replayed as one captured CUDA graph. Rows that a
step does not fill point at the pool's scratch slot with neutral inputs, so any number of ready
streams up to N runs in the same built step.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import Tensor

from ..config import StreamConfig
from .backends import GraphRunner
from .buckets import Bucket
from .history import HistoryPool, RingState
from .inputs import INPUT_NAMES, FrameInputs, used_inputs

__all__ = ["SlotPool", "StaticStep"]


class SlotPool:
    """A resolution's :class:`HistoryPool` plus its free-slot list; the last slot is scratch (padding rows)."""

    def __init__(self, stream: StreamConfig, max_streams: int, width: int, height: int, *, latent_channels: int,
                 spatial_compression: int, dtype: torch.dtype, device: torch.device) -> None:
        slots = max_streams + 1
        self.history = HistoryPool(stream, slots, height, width, latent_channels=latent_channels,
                                   spatial_compression=spatial_compression, dtype=dtype, device=device)
        self.scratch = slots - 1
        self._free = list(range(slots - 2, -1, -1))

    def take(self) -> int:
        """A free slot, its history cleared; RuntimeError when none is left."""
        if not self._free:
            raise RuntimeError(f"no free history slot ({self.history.slots - 1} streams of "
                               f"{self.history.width}x{self.history.height})")
        slot = self._free.pop()
        self.history.clear(slot)
        return slot

    def give_back(self, slot: int) -> None:
        """Return a slot to the free list."""
        self.history.clear(slot)
        self._free.append(slot)


class StaticStep:
    """Buffers of one bucket and its runner (see the module docstring).

    core_for: ``(bucket, example arguments) -> callable`` (the engine's built core for the bucket).
    backend: ``"cudagraph"`` captures the whole closure on ``cuda_stream`` (in ``graph_pool``).
    """

    def __init__(self, bucket: Bucket, pool: SlotPool, stream_config: StreamConfig, core_for, backend: str,
                 device: torch.device, cuda_stream=None, graph_pool=None) -> None:
        n, height, width = bucket.num_streams, bucket.height, bucket.width
        self.bucket, self.pool = bucket, pool
        if bucket.kind == "uint8":
            self.frames = torch.zeros((n, height, width, 3), dtype=torch.uint8, device=device)
        else:
            self.frames = torch.zeros((n, 3, height, width), dtype=torch.float32, device=device)
        self.slots = torch.full((n,), pool.scratch, dtype=torch.int64, device=device)
        self.positions = (torch.zeros((n, bucket.num_refs), dtype=torch.int64, device=device)
                          if bucket.num_refs else None)
        used = set(used_inputs(stream_config))
        eye = torch.eye(4, dtype=torch.float64, device=device)
        # Neutral padding values: no flow, unit depth, identity camera and motion, empty mask.
        self.inputs = FrameInputs(
            flow=torch.zeros((n, 2, height, width), device=device) if "flow" in used else None,
            depth=torch.ones((n, 1, height, width), device=device) if "depth" in used else None,
            intrinsics=eye[:3, :3].expand(n, 3, 3).clone() if "intrinsics" in used else None,
            pose=eye.expand(n, 4, 4).clone() if "pose" in used and bucket.advances else None,
            mask=torch.zeros((n, 1, height, width), device=device) if "mask" in used else None)
        self._cache: dict = {}
        self.core = core_for(bucket, self._arguments(pool.history.gather(self.slots)))
        self.output: Optional[Tensor] = None
        with torch.inference_mode():
            self._run()  # allocates the output buffer and builds (compiles) the core, on scratch rows
            self.run = GraphRunner(self._run, cuda_stream, pool=graph_pool) if backend == "cudagraph" else self._run

    def _arguments(self, state: RingState) -> tuple:
        i = self.inputs
        return (self.frames, self.positions, *state, i.mask, i.flow, i.depth, i.intrinsics, i.pose)

    def _run(self) -> None:
        """The captured unit: gather the slots' rings, step, write the rings back, copy the output."""
        out, *ring = self.core(*self._arguments(self.pool.history.gather(self.slots)))
        self.pool.history.scatter(self.slots, RingState(*ring))
        if self.output is None:
            self.output = torch.empty_like(out)
        self.output.copy_(out)

    def _index(self, rows: List[List[int]], like: Tensor) -> Tensor:
        """Host index rows -> a device tensor, cached per value (small: slots and positions repeat)."""
        key = (like.data_ptr(), tuple(map(tuple, rows)))
        cached = self._cache.get(key)
        if cached is None:
            if len(self._cache) > 4096:
                self._cache.clear()
            cached = self._cache[key] = torch.tensor(rows, dtype=torch.int64).to(like.device)
        return cached

    def load(self, frames: Sequence[Tensor], slots: Sequence[int], positions: Sequence[Sequence[int]],
             inputs: Sequence[FrameInputs]) -> None:
        """Fill the first ``len(frames)`` rows (each frame ``[1, ...]`` of this bucket's kind); pad the rest.

        Copies are non-blocking and ordered on the current stream, so a CUDA caller loads, runs
        and reads on one stream without a host synchronization.
        """
        n, size = len(frames), self.bucket.num_streams
        slot_rows = [list(slots) + [self.pool.scratch] * (size - n)]
        self.slots.copy_(self._index(slot_rows, self.slots)[0], non_blocking=True)
        if self.positions is not None:
            rows = [list(p) for p in positions] + [[0] * self.bucket.num_refs] * (size - n)
            self.positions.copy_(self._index(rows, self.positions), non_blocking=True)
        for index in range(n):
            self.frames[index:index + 1].copy_(frames[index], non_blocking=True)
            for name in INPUT_NAMES:
                target, value = getattr(self.inputs, name), getattr(inputs[index], name)
                if target is not None and value is not None:
                    target[index:index + 1].copy_(value, non_blocking=True)
