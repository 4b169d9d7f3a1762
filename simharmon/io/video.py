"""Writing frame sequences as MP4 with PyAV (H.264 when available, else MPEG-4 Part 2)."""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Iterable, Iterator, Optional, Union

import av
import numpy as np

from .atomic import atomic_path

__all__ = ["write_mp4", "pick_codec", "even_pad"]

PathLike = Union[str, os.PathLike]


def pick_codec() -> str:
    """``"libx264"`` when this PyAV/FFmpeg build can encode with it, else ``"mpeg4"``."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except (av.error.FFmpegError, ValueError):  # UnknownCodecError is a ValueError
        return "mpeg4"


def even_pad(image: np.ndarray) -> np.ndarray:
    """Pad a ``[H, W, 3]`` image to even H and W by repeating its last row/column (yuv420p needs even sizes)."""
    pad_h, pad_w = image.shape[0] % 2, image.shape[1] % 2
    if not (pad_h or pad_w):
        return image
    return np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _as_rate(fps: Union[int, float, Fraction]) -> Fraction:
    try:
        rate = Fraction(fps).limit_denominator(10000)  # 29.97002997 -> 30000/1001
    except (TypeError, ValueError) as exc:
        raise ValueError(f"fps must be a positive number, got {fps!r}") from exc
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return rate


def _checked_frames(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Validate every frame and check they all share the first frame's size."""
    size: Optional[tuple] = None
    for index, image in enumerate(frames):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            what = f"{image.dtype} {list(image.shape)}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"frame {index} must be a uint8 numpy array [H, W, 3], got {what}")
        if size is None:
            size = image.shape[:2]
        elif image.shape[:2] != size:
            raise ValueError(
                f"frame {index} is {image.shape[1]}x{image.shape[0]} but frame 0 is {size[1]}x{size[0]}; "
                "all frames of a video must share one size"
            )
        yield image


def write_mp4(
    path: PathLike,
    frames: Iterable[np.ndarray],
    fps: Union[int, float, Fraction] = 30,
    codec: Optional[str] = None,
    crf: int = 18,
) -> int:
    """Encode uint8 ``[H, W, 3]`` RGB frames into an MP4 at ``path``; returns the frame count.

    frames: a list or any iterable (consumed once, so a generator reading frames lazily keeps
        memory flat). Odd sizes are padded to even by edge repetition (yuv420p).
    codec: None picks libx264 when available, else mpeg4.
    crf: libx264 quality (lower is better; 18 is visually near-lossless).
    The file is written to a temporary ``.mp4`` next to ``path`` and renamed on success, so a
    failed or interrupted encode never leaves a broken file under ``path``.
    """
    rate = _as_rate(fps)
    codec = codec or pick_codec()
    iterator = _checked_frames(frames)
    first = next(iterator, None)
    if first is None:
        raise ValueError(f"no frames to write to {path}")
    first = even_pad(first)
    height, width = first.shape[:2]

    count = 0
    with atomic_path(path) as temp:
        # format="mp4" as well as the .mp4 temp suffix: the container never depends on the name.
        with av.open(str(temp), mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": str(crf)}
            else:
                stream.bit_rate = max(2_000_000, int(width * height * float(rate) * 0.25))
            for image in _chain(first, iterator):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(even_pad(image)), format="rgb24")
                container.mux(stream.encode(frame))
                count += 1
            container.mux(stream.encode(None))  # flush delayed frames
    return count


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest
