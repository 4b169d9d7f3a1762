"""Static shape buckets: every built step has fixed shapes, keyed by a :class:`Bucket`.

Streams that do not step together are batched like a serving engine batches requests: the ready
streams of one resolution (and history state) are split into static batch sizes
(``EngineConfig.batch_sizes``, e.g. 1, 2, 4, 8), padding a batch up to the next size when that
wastes at most ``max_padding`` of it (:func:`plan_batches`), so a handful of built steps serves any
number of streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Generic, List, Sequence, Tuple, TypeVar

__all__ = ["Bucket", "BucketCache", "check_resolution", "plan_batches"]

T = TypeVar("T")


@dataclass(frozen=True)
class Bucket:
    """Shapes of one built step: frame size, streams batched, references, layout, history state, frame kind.

    V (``history_frames``) = 1 + num_refs frames: on the VAE's time axis in the release layout, as
    latent frames in the per-frame layout. ``advances``: history warping re-expresses the slots'
    existing history (they hold some). ``kind``: "uint8" or "float" frames.
    """

    width: int
    height: int
    num_streams: int
    num_refs: int
    layout: str
    advances: bool = False
    kind: str = "uint8"

    def __post_init__(self) -> None:
        if min(self.width, self.height, self.num_streams) < 1 or self.num_refs < 0:
            raise ValueError(f"invalid bucket {self}")
        if self.layout not in ("release", "per_frame"):
            raise ValueError(f"bucket layout must be 'release' or 'per_frame', got {self.layout!r}")
        if self.kind not in ("uint8", "float"):
            raise ValueError(f"bucket kind must be 'uint8' or 'float', got {self.kind!r}")

    @property
    def history_frames(self) -> int:
        """V: frames (release) or latent frames (per-frame) on the time axis."""
        return 1 + self.num_refs

    def describe(self) -> str:
        """Short text, e.g. '1024x576 N=1 V=5 release uint8'."""
        return f"{self.width}x{self.height} N={self.num_streams} V={self.history_frames} {self.layout} {self.kind}"


def check_resolution(width: int, height: int, allowed: Sequence[Tuple[int, int]], multiple: int) -> None:
    """Raise ValueError unless (width, height) is a multiple of ``multiple`` and, when ``allowed`` is not
    empty, one of the configured resolutions."""
    if width % multiple or height % multiple:
        raise ValueError(f"frame size {width}x{height} is not a multiple of {multiple} (VAE stride times DiT patch)")
    if allowed and (width, height) not in tuple(allowed):
        listed = ", ".join(f"{w}x{h}" for w, h in allowed)
        raise ValueError(f"frame size {width}x{height} has no shape bucket; configured resolutions (WxH): {listed} "
                         "(add it to EngineConfig.resolutions, or leave that empty to allow any size)")


def plan_batches(count: int, sizes: Sequence[int], max_padding: float) -> List[Tuple[int, int]]:
    """Split ``count`` ready streams into static batches: a list of (batch size, streams in it).

    Takes the largest size that fits, but pads up to the next size when the padding is at most
    ``max_padding`` of it (3 -> one batch of 4 with ``max_padding`` 0.25; 5 -> 4 + 1).
    """
    sizes = sorted(set(int(s) for s in sizes))
    plan: List[Tuple[int, int]] = []
    while count > 0:
        fitting = [s for s in sizes if s <= count]
        larger = [s for s in sizes if s >= count]
        if larger and (larger[0] - count) <= max_padding * larger[0]:
            plan.append((larger[0], count))
            break
        size = fitting[-1] if fitting else sizes[0]
        taken = min(size, count)
        plan.append((size, taken))
        count -= taken
    return plan


class BucketCache(Generic[T]):
    """Values built lazily, once per bucket (compiled steps, captured graphs)."""

    def __init__(self) -> None:
        self._items: Dict[Bucket, T] = {}

    def get(self, bucket: Bucket, build: Callable[[], T]) -> T:
        """The cached value for ``bucket``, built with ``build()`` on first use."""
        if bucket not in self._items:
            self._items[bucket] = build()
        return self._items[bucket]

    def __contains__(self, bucket: Bucket) -> bool:
        return bucket in self._items

    def __len__(self) -> int:
        return len(self._items)

    def keys(self):
        """The buckets built so far."""
        return list(self._items)
