"""Reading recorded frame sequences: a folder of images or a video file.

``open_frame_source(path)`` returns a :class:`FrameSource`; iterating it yields
``(index, name, image)`` with ``image`` a numpy uint8 ``[H, W, 3]`` RGB array. ``name`` is the
stem to use for the output file of that frame.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "DEFAULT_FOLDER_FPS",
    "FrameReadError",
    "FrameSource",
    "FolderFrameSource",
    "VideoFrameSource",
    "open_frame_source",
    "natural_sort_key",
    "load_image_rgb",
    "picture_to_rgb",
]

PathLike = Union[str, os.PathLike]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")
DEFAULT_FOLDER_FPS = 30.0
Item = Tuple[int, str, np.ndarray]


class FrameReadError(ValueError):
    """A frame (image file or video frame) exists but cannot be decoded."""


def natural_sort_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: ``frame2`` < ``frame10``; case-insensitive."""
    parts = re.split(r"([0-9]+)", name.lower())
    # (kind, value) pairs keep ints and strings from ever being compared with each other.
    key = tuple((0, int(part), len(part)) if part.isdigit() else (1, part) for part in parts if part)
    return key + ((2, name),)  # exact name last, so the order is total


def picture_to_rgb(picture: Image.Image) -> np.ndarray:
    """PIL image of any common mode -> uint8 ``[H, W, 3]``."""
    if picture.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: PIL's convert("RGB") clips instead of scaling, so scale by hand.
        values = np.asarray(picture, dtype=np.float64)
        maximum = 65535.0 if picture.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(np.floor(values * (255.0 / maximum) + 0.5), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if picture.mode == "P" and "transparency" in picture.info:
        picture = picture.convert("RGBA")
    if picture.mode != "RGB":
        picture = picture.convert("RGB")  # drops alpha: frames are opaque renders
    return np.asarray(picture, dtype=np.uint8).copy()


def load_image_rgb(path: PathLike) -> np.ndarray:
    """Read an image file as a uint8 ``[H, W, 3]`` RGB array.

    Raises FileNotFoundError if it is missing and FrameReadError (naming the file) if it cannot
    be decoded, e.g. a truncated or corrupt PNG/JPEG.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as picture:
            picture.load()  # decode now so truncation errors surface here, not later
            return picture_to_rgb(picture)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FrameReadError(f"cannot read image {path}: {exc} (corrupt, truncated or not an image?)") from exc


class FrameSource:
    """A finite, ordered sequence of RGB frames.

    Attributes: ``path`` (the input), ``kind`` ("folder" or "video"), ``fps`` (frames per second
    for writing a video; 30 for folders), ``names`` (one output file stem per frame).
    Iterating yields ``(index, name, image)``; ``iter_from(start)`` starts at a frame index (to
    resume); ``read(index)`` returns one frame.
    """

    kind = "frames"

    def __init__(self, path: Path, fps: float):
        self.path = path
        self.fps = float(fps)

    @property
    def names(self) -> List[str]:
        """Output file stem of each frame, in order."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.names)

    def iter_from(self, start: int = 0) -> Iterator[Item]:
        """Yield ``(index, name, image)`` for frames ``start, start + 1, ...``."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Item]:
        return self.iter_from(0)

    def read(self, index: int) -> np.ndarray:
        """The frame at ``index`` as uint8 ``[H, W, 3]``."""
        raise NotImplementedError

    def _check_start(self, start: int) -> None:
        if not 0 <= start <= len(self):
            raise IndexError(f"start index {start} out of range for {len(self)} frames in {self.path}")

    def _check_index(self, index: int) -> int:
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(f"frame index {index} out of range for {count} frames in {self.path}")
        return index

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, frames={len(self)}, fps={self.fps:g})"


class FolderFrameSource(FrameSource):
    """Frames stored as .png/.jpg/.jpeg files in one folder, in natural order of their names.

    Other files, sub-folders and hidden files (names starting with ".") are ignored. Images are
    decoded lazily, one per step.
    """

    kind = "folder"

    def __init__(self, directory: PathLike, fps: float = DEFAULT_FOLDER_FPS):
        directory = Path(directory)
        super().__init__(directory, fps)
        files = [
            entry for entry in directory.iterdir()
            if entry.suffix.lower() in IMAGE_EXTENSIONS and not entry.name.startswith(".") and entry.is_file()
        ]
        if not files:
            raise ValueError(f"no .png/.jpg/.jpeg frames in {directory}")
        files.sort(key=lambda entry: natural_sort_key(entry.name))
        seen = {}
        for entry in files:
            # Output files are named by stem, so frame1.png and frame1.jpg would collide.
            if entry.stem in seen:
                raise ValueError(
                    f"two frames in {directory} share the name {entry.stem!r}: {seen[entry.stem].name} and "
                    f"{entry.name}; rename one so every frame has a unique name"
                )
            seen[entry.stem] = entry
        self.files: List[Path] = files
        self._names = [entry.stem for entry in files]

    @property
    def names(self) -> List[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> np.ndarray:
        return load_image_rgb(self.files[self._check_index(index)])

    def iter_from(self, start: int = 0) -> Iterator[Item]:
        self._check_start(start)
        for index in range(start, len(self.files)):
            yield index, self._names[index], load_image_rgb(self.files[index])


class VideoFrameSource(FrameSource):
    """Frames decoded from the first video stream of a file with PyAV, converted to rgb24.

    The length is the stream's frame count when the container records it, otherwise it is
    counted by decoding the file once. Frames are named ``frame_000000``, ``frame_000001``, ...
    ``read(index)`` and ``iter_from(start)`` decode from the beginning (exact, not seek-based).
    """

    kind = "video"

    def __init__(self, path: PathLike):
        path = Path(path)
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise ValueError(f"{path} has no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate or stream.base_rate
                counted = int(stream.frames or 0)
        except av.error.FFmpegError as exc:
            raise FrameReadError(f"cannot open video {path}: {exc} (corrupt or unsupported format?)") from exc
        super().__init__(path, float(rate) if rate else DEFAULT_FOLDER_FPS)
        self.rate: Optional[Fraction] = Fraction(rate) if rate else None
        self._count: Optional[int] = counted if counted > 0 else None

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self._decode())
            if self._count == 0:
                raise FrameReadError(f"video {self.path} contains no decodable frames")
        return self._count

    @property
    def names(self) -> List[str]:
        return [f"frame_{index:06d}" for index in range(len(self))]

    def _decode(self) -> Iterator[np.ndarray]:
        index = 0
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"  # frame threading: faster decode, same frames
                for frame in container.decode(stream):
                    yield frame.to_ndarray(format="rgb24")
                    index += 1
        except av.error.FFmpegError as exc:
            raise FrameReadError(f"cannot decode frame {index} of video {self.path}: {exc}") from exc

    def read(self, index: int) -> np.ndarray:
        index = self._check_index(index)
        for position, image in enumerate(self._decode()):
            if position == index:
                return image
        raise FrameReadError(f"video {self.path} ended before frame {index}")

    def iter_from(self, start: int = 0) -> Iterator[Item]:
        self._check_start(start)
        for index, image in enumerate(self._decode()):
            if index >= start:
                yield index, f"frame_{index:06d}", image


def _describe_extensions(extensions: Sequence[str]) -> str:
    return "/".join(extensions)


def open_frame_source(path: PathLike) -> FrameSource:
    """Open a folder of .png/.jpg/.jpeg frames or a video file as a :class:`FrameSource`.

    Raises FileNotFoundError for a missing path, ValueError for an empty folder or an
    unsupported file type, and FrameReadError (a ValueError) for an undecodable video.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    if path.is_dir():
        return FolderFrameSource(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        raise ValueError(
            f"{path} is a single image; the input must be a folder of frames "
            f"({_describe_extensions(IMAGE_EXTENSIONS)}) or a video file"
        )
    if suffix not in VIDEO_EXTENSIONS:
        raise ValueError(
            f"unsupported input file type {suffix or '(no extension)'!r} for {path}; expected a folder of "
            f"{_describe_extensions(IMAGE_EXTENSIONS)} frames or a video ({_describe_extensions(VIDEO_EXTENSIONS)})"
        )
    return VideoFrameSource(path)
