"""Static shape buckets: every compiled or captured step has fixed shapes, keyed by a :class:`Bucket`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Generic, Sequence, Tuple, TypeVar

__all__ = ["Bucket", "BucketCache", "check_resolution"]

T = TypeVar("T")


@dataclass(frozen=True)
class Bucket:
    """Shapes of one step: frame size, streams batched, references on the time axis, layout.

    V (``history_frames``) = 1 + num_refs frames: on the VAE's time axis in the release layout, as
    latent frames in the per-frame layout.
    """

    width: int
    height: int
    num_streams: int
    num_refs: int
    layout: str

    def __post_init__(self) -> None:
        if min(self.width, self.height, self.num_streams) < 1 or self.num_refs < 0:
            raise ValueError(f"invalid bucket {self}")
        if self.layout not in ("release", "per_frame"):
            raise ValueError(f"bucket layout must be 'release' or 'per_frame', got {self.layout!r}")

    @property
    def history_frames(self) -> int:
        """V: frames (release) or latent frames (per-frame) on the time axis."""
        return 1 + self.num_refs

    def describe(self) -> str:
        """Short text, e.g. '1024x576 N=1 V=5 release'."""
        return f"{self.width}x{self.height} N={self.num_streams} V={self.history_frames} {self.layout}"


def check_resolution(width: int, height: int, allowed: Sequence[Tuple[int, int]], multiple: int) -> None:
    """Raise ValueError unless (width, height) is one of the configured buckets and a multiple of ``multiple``."""
    if (width, height) not in tuple(allowed):
        listed = ", ".join(f"{w}x{h}" for w, h in allowed)
        raise ValueError(
            f"frame size {width}x{height} has no shape bucket; configured buckets (WxH): {listed} "
            "(add it to EngineConfig.resolutions)"
        )
    if width % multiple or height % multiple:
        raise ValueError(f"bucket {width}x{height} is not a multiple of {multiple} (VAE stride times DiT patch)")


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
