"""A logged drive: one or more cameras, each a time-ordered frame sequence with optional extras.

Every reader (our drive folder, a video, a frame folder, MCAP, drivestudio) returns a
:class:`Drive`. Frames are uint8 ``[H, W, 3]`` RGB numpy arrays; optional per-frame layers are

* ``gt``: the ground-truth frame, uint8 ``[H, W, 3]``;
* ``mask``: the inserted actor's mask, float32 ``[H, W]`` in [0, 1] (1 = actor);
* ``depth``: float32 ``[H, W]`` metres along the optical axis (inf / 0 / NaN = no surface);
* ``pose``: camera-to-world float64 ``[4, 4]``, OpenCV camera axes (x right, y down, z forward);
* ``flow``: for frame t < T-1, ``(F_{t->t+1}, F_{t+1->t})``, each float32 ``[H, W, 2]`` (dx, dy px).

Camera names double as folder names in outputs, so they are restricted to ``[A-Za-z0-9._-]``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from .frame_sources import FrameSource

__all__ = [
    "LAYERS",
    "DriveError",
    "Intrinsics",
    "CameraInfo",
    "DriveInfo",
    "Drive",
    "FrameSourceDrive",
    "safe_camera_name",
    "check_image",
]

LAYERS = ("gt", "mask", "depth", "pose", "flow")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
Item = Tuple[int, str, np.ndarray]


class DriveError(ValueError):
    """A drive is malformed: missing or corrupt files, inconsistent metadata."""


def safe_camera_name(text: str) -> str:
    """A camera name usable as a folder name: runs of other characters become ``_``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return name or "camera"


def _finite_positive(value, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DriveError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise DriveError(f"{name} must be a positive finite number, got {value!r}")
    return number


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (pixel centres at integer coordinates)."""

    fx: float
    fy: float
    cx: float
    cy: float

    def __post_init__(self):
        for key in ("fx", "fy"):
            object.__setattr__(self, key, _finite_positive(getattr(self, key), f"intrinsics.{key}"))
        for key in ("cx", "cy"):
            value = getattr(self, key)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise DriveError(f"intrinsics.{key} must be a number, got {value!r}") from None
            if not math.isfinite(value):
                raise DriveError(f"intrinsics.{key} must be finite, got {value!r}")
            object.__setattr__(self, key, value)

    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def to_dict(self) -> Dict[str, float]:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy}

    @classmethod
    def from_dict(cls, data, where: str = "intrinsics") -> Intrinsics:
        if not isinstance(data, dict) or set(data) != {"fx", "fy", "cx", "cy"}:
            raise DriveError(f"{where} must be an object with exactly fx, fy, cx, cy; got {data!r}")
        return cls(**data)


@dataclass(frozen=True)
class CameraInfo:
    """One camera: its name, frame size, (optional) intrinsics and label.

    label: how the user knows the camera when that is not its folder-safe name (a log's image
        topic); reports and metrics show :attr:`title`.
    """

    name: str
    width: int
    height: int
    intrinsics: Optional[Intrinsics] = None
    label: Optional[str] = None

    @property
    def title(self) -> str:
        """The label when there is one, else the name."""
        return self.label or self.name

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise DriveError(f"camera name {self.name!r} must match [A-Za-z0-9][A-Za-z0-9._-]* (it names folders)")
        for key in ("width", "height"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DriveError(f"camera {self.name!r}: {key} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class DriveInfo:
    """What a drive holds: a name, a frame rate and its cameras (in order)."""

    name: str
    fps: float
    cameras: Tuple[CameraInfo, ...]
    kind: str
    path: str
    extra: Dict[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "fps", _finite_positive(self.fps, "fps"))
        object.__setattr__(self, "cameras", tuple(self.cameras))
        if not self.cameras:
            raise DriveError(f"drive {self.path} has no cameras")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise DriveError(f"drive {self.path} has duplicate camera names: {names}")


def check_image(image: np.ndarray, camera: CameraInfo, what: str) -> np.ndarray:
    """Raise DriveError unless ``image`` is uint8 ``[camera.height, camera.width, 3]``."""
    expected = (camera.height, camera.width, 3)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != expected:
        got = f"{image.dtype} {list(image.shape)}" if isinstance(image, np.ndarray) else type(image).__name__
        raise DriveError(f"{what} must be uint8 {list(expected)} for camera {camera.name!r}, got {got}")
    return image


class Drive:
    """Base class of all drive readers (see the module docstring for the data conventions)."""

    info: DriveInfo

    @property
    def cameras(self) -> List[str]:
        """Camera names, in the drive's order."""
        return [c.name for c in self.info.cameras]

    @property
    def notes(self) -> List[str]:
        """What the reader wants the user to know about the drive (frames skipped, inputs ignored)."""
        return []

    def camera(self, name: str) -> CameraInfo:
        """The :class:`CameraInfo` of camera ``name`` (KeyError naming the cameras if unknown)."""
        for camera in self.info.cameras:
            if camera.name == name:
                return camera
        raise KeyError(f"no camera {name!r} in {self.info.path}; cameras: {self.cameras}")

    def find_camera(self, text: str) -> str:
        """The name of the camera called or labelled ``text`` (DriveError listing the cameras if none)."""
        for camera in self.info.cameras:
            if text in (camera.name, camera.label):
                return camera.name
        shown = ", ".join(c.name if c.label is None else f"{c.name} ({c.label})" for c in self.info.cameras)
        raise DriveError(f"no camera {text!r} in {self.info.path}; cameras: {shown}")

    def frame_names(self, camera: str) -> List[str]:
        """Output file stem of each frame of ``camera``, in time order."""
        raise NotImplementedError

    def frame_count(self, camera: str) -> int:
        return len(self.frame_names(camera))

    def iter_frames(self, camera: str, start: int = 0) -> Iterator[Item]:
        """Yield ``(index, name, image uint8 [H, W, 3])`` for frames ``start, start + 1, ...``."""
        names = self.frame_names(camera)
        if not 0 <= start <= len(names):
            raise IndexError(f"start {start} out of range for {len(names)} frames of camera {camera!r}")
        for index in range(start, len(names)):
            yield index, names[index], self.read_frame(camera, index)

    def read_frame(self, camera: str, index: int) -> np.ndarray:
        """Frame ``index`` of ``camera``: uint8 ``[H, W, 3]``."""
        raise NotImplementedError

    def _check_index(self, camera: str, index: int, count: Optional[int] = None) -> int:
        count = self.frame_count(camera) if count is None else count
        if not 0 <= index < count:
            raise IndexError(f"frame {index} out of range for {count} frames of camera {camera!r}")
        return index

    def has(self, layer: str, camera: str) -> bool:
        """Whether ``camera`` has the optional ``layer`` (one of LAYERS)."""
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}; layers: {LAYERS}")
        return False

    def read_gt(self, camera: str, index: int) -> Optional[np.ndarray]:
        """Ground-truth frame, uint8 ``[H, W, 3]``, or None."""
        return None

    def read_mask(self, camera: str, index: int) -> Optional[np.ndarray]:
        """Actor mask, float32 ``[H, W]`` in [0, 1], or None."""
        return None

    def read_depth(self, camera: str, index: int) -> Optional[np.ndarray]:
        """Depth in metres, float32 ``[H, W]``, or None."""
        return None

    def read_pose(self, camera: str, index: int) -> Optional[np.ndarray]:
        """Camera-to-world pose, float64 ``[4, 4]`` (OpenCV axes), or None."""
        return None

    def read_flow(self, camera: str, index: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """``(F_{t->t+1}, F_{t+1->t})`` for ``t = index``, each float32 ``[H, W, 2]``, or None."""
        return None

    def timestamps_ns(self, camera: str) -> Optional[List[int]]:
        """Capture time of each frame in nanoseconds, when the source records it."""
        return None

    def close(self) -> None:
        """Release open files (readers open files lazily; calling this is optional)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        counts = {name: self.frame_count(name) for name in self.cameras}
        return f"{type(self).__name__}({self.info.path!r}, kind={self.info.kind}, fps={self.info.fps:g}, frames={counts})"


class FrameSourceDrive(Drive):
    """A single-camera drive over a video file or a folder of frames (``frames_io``)."""

    def __init__(self, source: FrameSource, camera_name: Optional[str] = None, fps: Optional[float] = None):
        self.source = source
        first = source.read(0)
        name = safe_camera_name(camera_name or Path(source.path).stem or "camera")
        camera = CameraInfo(name=name, width=int(first.shape[1]), height=int(first.shape[0]))
        kind = "video" if source.kind == "video" else "frames"
        self.info = DriveInfo(name=name, fps=fps or source.fps, cameras=(camera,), kind=kind,
                              path=str(Path(source.path).resolve()))
        self._names = source.names

    def frame_names(self, camera: str) -> List[str]:
        self.camera(camera)
        return list(self._names)

    def frame_count(self, camera: str) -> int:
        self.camera(camera)
        return len(self._names)

    def read_frame(self, camera: str, index: int) -> np.ndarray:
        self._check_index(camera, index)
        return self.source.read(index)

    def iter_frames(self, camera: str, start: int = 0) -> Iterator[Item]:
        self.camera(camera)
        yield from self.source.iter_from(start)

