"""The history pool: one slot per stream, in preallocated device tensors (the only ring in simharmon).

Like a KV-cache pool, each stream owns one slot of ``slots``; a step gathers the slots of the
streams it runs (``gather``), the step module returns their updated rings, and ``scatter`` writes
them back in place, so the same buffers serve streams that come and go, and a static step (CUDA
graph) reads and writes fixed addresses. Per slot:

* ``entries [capacity, *entry]``: the ring, NEWEST FIRST (position 0 = the previous output):
  model-space frames ``[3, H, W]`` (release layout) or latents ``[C, h, w]`` (per-frame layout);
* with ``history_warp="flow"``: ``motion [capacity, 3, h, w]`` (cumulative backward flow to the
  entry's view, and its validity); with ``"depth"``: ``motion [capacity, 4, 4]`` float64 (newest
  camera -> the entry's), the entry's ``depth [capacity, 1, h, w]`` and ``intrinsics [capacity, 3, 3]``;
* on the host, ``count``: how many outputs the slot holds (up to ``capacity``).

``ring_state`` / :class:`RingState` is the tuple the step module takes and returns.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..config import StreamConfig
from .stages import history_capacity, reference_offsets, ring_stride

__all__ = ["RingState", "HistoryPool", "entry_shape"]


class RingState(NamedTuple):
    """A batch of slots' history tensors ``[N, capacity, ...]`` (None where the options keep none)."""

    entries: Optional[Tensor] = None
    motion: Optional[Tensor] = None
    depth: Optional[Tensor] = None
    intrinsics: Optional[Tensor] = None


def entry_shape(stream: StreamConfig, latent_channels: int, spatial_compression: int, height: int,
                width: int) -> Tuple[int, ...]:
    """Shape of one ring entry for frames of ``height`` x ``width``."""
    if stream.layout == "release":
        return (3, height, width)
    return (latent_channels, height // spatial_compression, width // spatial_compression)


class HistoryPool:
    """``slots`` stream histories for frames of one size (see the module docstring).

    stream: the temporal options (capacity, layout, history warping).
    latent_channels / spatial_compression: the tokenizer's; dtype: the ring entries' (the model's).
    """

    def __init__(self, stream: StreamConfig, slots: int, height: int, width: int, *, latent_channels: int,
                 spatial_compression: int, dtype: torch.dtype, device: torch.device | str) -> None:
        if slots < 1:
            raise ValueError(f"a history pool needs at least one slot, got {slots}")
        self.stream = stream
        self.slots, self.height, self.width = slots, height, width
        self.capacity = history_capacity(stream)
        self.device = torch.device(device)
        self.count: List[int] = [0] * slots
        stride = ring_stride(stream, spatial_compression)
        h, w = height // stride, width // stride
        state = RingState()
        if self.capacity:
            shape = entry_shape(stream, latent_channels, spatial_compression, height, width)
            entries = torch.zeros((slots, self.capacity, *shape), dtype=dtype, device=self.device)
            state = state._replace(entries=entries)
            if stream.history_warp == "flow":
                state = state._replace(motion=torch.zeros((slots, self.capacity, 3, h, w), device=self.device))
            elif stream.history_warp == "depth":
                eye = torch.eye(4, dtype=torch.float64, device=self.device)
                state = state._replace(
                    motion=eye.expand(slots, self.capacity, 4, 4).clone(),
                    depth=torch.ones((slots, self.capacity, 1, h, w), device=self.device),
                    intrinsics=eye[:3, :3].expand(slots, self.capacity, 3, 3).clone())
        self.state = state

    # -- host bookkeeping ----------------------------------------------------------------------
    def available(self, slot: int) -> int:
        """Past outputs that slot ``slot`` holds."""
        return self.count[slot]

    def offsets(self, slot: int) -> Tuple[int, ...]:
        """The reference offsets of slot ``slot``'s next step (``stages.reference_offsets``)."""
        return reference_offsets(self.stream, self.count[slot])

    def positions(self, slot: int) -> List[int]:
        """Ring positions (0 = newest) of those offsets."""
        return [offset - 1 for offset in self.offsets(slot)]

    def stepped(self, slots: Sequence[int]) -> None:
        """Record one output pushed to each of ``slots``."""
        for slot in slots:
            self.count[slot] = min(self.count[slot] + 1, self.capacity)

    def clear(self, slot: int) -> None:
        """Forget slot ``slot``'s history (its tensors are simply overwritten later)."""
        self.count[slot] = 0

    # -- device tensors ------------------------------------------------------------------------
    def gather(self, slots: Tensor) -> RingState:
        """The rings of ``slots`` (int64 ``[N]`` on the pool's device), as new tensors ``[N, capacity, ...]``."""
        return RingState(*(None if t is None else t.index_select(0, slots) for t in self.state))

    def scatter(self, slots: Tensor, new: RingState) -> None:
        """Write back the updated rings of ``slots`` (in place: capture-safe)."""
        for target, value in zip(self.state, new):
            if target is not None:
                target.index_copy_(0, slots, value.to(target.dtype))
