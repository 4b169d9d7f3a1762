"""A fixed-capacity ring buffer of tensors that stays on the model's device."""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["TensorRing"]


class TensorRing:
    """Holds the ``capacity`` most recent tensors of one shape in a preallocated device buffer.

    ``get(1)`` is the newest entry, ``get(k)`` the one pushed k - 1 pushes before it. Storage is
    allocated on the first push, so the ring takes the shape, dtype and device of what it holds,
    and later pushes are plain in-place copies (no allocation in the per-frame path).
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"ring capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._storage: Optional[torch.Tensor] = None
        self._next = 0  # slot the next push writes
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def full(self) -> bool:
        return self._count == self.capacity

    def clear(self) -> None:
        """Forget every entry (the storage is kept for reuse)."""
        self._next = 0
        self._count = 0

    def push(self, item: torch.Tensor) -> None:
        """Copy ``item`` in as the newest entry, evicting the oldest when full."""
        if self._storage is None or self._storage.shape[1:] != item.shape or self._storage.dtype != item.dtype \
                or self._storage.device != item.device:
            if self._count:
                raise ValueError(
                    f"ring holds tensors of shape {list(self._storage.shape[1:])} ({self._storage.dtype}); "
                    f"got {list(item.shape)} ({item.dtype}); clear() it first"
                )
            self._storage = torch.empty((self.capacity, *item.shape), dtype=item.dtype, device=item.device)
        self._storage[self._next].copy_(item)
        self._next = (self._next + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)

    def get(self, offset: int) -> torch.Tensor:
        """The entry pushed ``offset`` pushes ago (1 = newest); a view into the ring's storage."""
        if not 1 <= offset <= self._count:
            raise IndexError(f"offset {offset} out of range: the ring holds {self._count} entries")
        return self._storage[(self._next - offset) % self.capacity]
