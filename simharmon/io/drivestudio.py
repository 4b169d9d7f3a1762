"""The drivestudio processed-scene layout (e.g. ``data/waymo/processed/training/023/``), read as a drive.

The layout, as drivestudio's preprocessing writes it:

* ``images/{t:03d}_{cam}.jpg``: camera ``cam`` at timestep ``t`` (a camera is an id such as ``0``);
* ``intrinsics/{cam}.txt``: ``f_u f_v c_u c_v k1 k2 p1 p2 k3`` (one value per line); the
  distortion is ignored, as drivestudio itself does;
* ``extrinsics/{cam}.txt``: the 4x4 camera-to-ego matrix in the dataset's axes
  (x forward, y left, z up);
* ``ego_pose/{t:03d}.txt``: the 4x4 ego-to-world matrix;
* ``dynamic_masks/all/{t:03d}_{cam}.png`` (or ``fine_dynamic_masks/all/``): dynamic-object masks,
  used as actor masks.

Poses are returned camera-to-world with OpenCV camera axes: ``ego_pose[t] @ extrinsics[cam] @
A`` with A mapping OpenCV axes (x right, y down, z forward) to the dataset's (drivestudio's
Waymo loader does the same). They are relative to the first timestep, as drivestudio's loaders
use them. The frame rate is not stored there: 10 fps (Waymo) unless told otherwise. Cameras are
named ``cam<id>``; there is no ground truth, depth or flow.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
from PIL import Image

from .drive import CameraInfo, Drive, DriveError, DriveInfo, Intrinsics, check_image
from .frame_sources import FrameReadError, load_image_rgb

__all__ = ["DriveStudioDrive", "is_drivestudio_scene", "DRIVESTUDIO_FPS"]

DRIVESTUDIO_FPS = 10.0
_IMAGE = re.compile(r"^(\d+)_(\w+)\.(jpg|jpeg|png)$", re.IGNORECASE)
# OpenCV camera axes -> dataset axes (x forward, y left, z up).
OPENCV_TO_DATASET = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
PathLike = Union[str, Path]


def is_drivestudio_scene(path: PathLike) -> bool:
    """Whether ``path`` looks like a drivestudio processed scene (``images/`` and ``ego_pose/``)."""
    path = Path(path)
    return (path / "images").is_dir() and (path / "ego_pose").is_dir()


def _matrix(path: Path, shape, what: str) -> np.ndarray:
    """Numbers of a text file reshaped to ``shape`` (None: any count, flat)."""
    if not path.is_file():
        raise DriveError(f"{what} not found: {path}")
    try:
        values = np.loadtxt(path, dtype=np.float64)
    except ValueError as exc:
        raise DriveError(f"cannot parse {what} {path}: {exc}") from exc
    if not np.isfinite(values).all():
        raise DriveError(f"{what} {path} holds non-finite numbers")
    if shape is None:
        return values.reshape(-1)
    if values.size != int(np.prod(shape)):
        raise DriveError(f"{what} {path} must hold {int(np.prod(shape))} numbers, got {values.size}")
    return values.reshape(shape)


class DriveStudioDrive(Drive):
    """Read a drivestudio processed scene folder."""

    def __init__(self, root: PathLike, fps: float = DRIVESTUDIO_FPS, mask_dir: Optional[str] = None):
        self.root = Path(root)
        if not is_drivestudio_scene(self.root):
            raise DriveError(f"{self.root} is not a drivestudio scene (needs images/ and ego_pose/)")
        files: Dict[str, Dict[int, Path]] = {}
        for entry in (self.root / "images").iterdir():
            match = _IMAGE.match(entry.name)
            if match:
                files.setdefault(match.group(2), {})[int(match.group(1))] = entry
        if not files:
            raise DriveError(f"no images named {{t:03d}}_{{cam}}.jpg in {self.root / 'images'}")
        steps = sorted(set().union(*[set(v) for v in files.values()]))
        for cam, found in files.items():
            missing = [t for t in steps if t not in found]
            if missing:
                raise DriveError(f"camera {cam}: images missing for timesteps {missing[:5]} in {self.root / 'images'}")
        self.steps = steps
        self._files = {cam: [found[t] for t in steps] for cam, found in sorted(files.items())}
        if mask_dir is None:
            mask_dir = next((d for d in ("fine_dynamic_masks/all", "dynamic_masks/all") if (self.root / d).is_dir()), None)
        self.mask_dir = self.root / mask_dir if mask_dir else None

        self._ego = [_matrix(self.root / "ego_pose" / f"{t:03d}.txt", (4, 4), "ego pose") for t in steps]
        origin_inverse = np.linalg.inv(self._ego[0])
        cameras, self._poses = [], {}
        self._names = {}
        for cam in self._files:
            name = f"cam{cam}"
            self._names[name] = cam
            first = self._read(self._files[cam][0])
            intrinsics = None
            path = self.root / "intrinsics" / f"{cam}.txt"
            if path.is_file():
                values = _matrix(path, None, "intrinsics")
                if values.size < 4:
                    raise DriveError(f"intrinsics {path} needs at least f_u f_v c_u c_v")
                intrinsics = Intrinsics(*values[:4])
            extrinsic = self.root / "extrinsics" / f"{cam}.txt"
            if extrinsic.is_file():
                cam_to_ego = _matrix(extrinsic, (4, 4), "extrinsics") @ OPENCV_TO_DATASET
                self._poses[name] = [origin_inverse @ ego @ cam_to_ego for ego in self._ego]
            cameras.append(CameraInfo(name, int(first.shape[1]), int(first.shape[0]), intrinsics))
        self.info = DriveInfo(name=self.root.name, fps=fps, cameras=tuple(cameras), kind="drivestudio",
                              path=str(self.root.resolve()))

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        try:
            return load_image_rgb(path)
        except (FileNotFoundError, FrameReadError) as exc:
            raise DriveError(str(exc)) from exc

    def frame_names(self, camera: str) -> List[str]:
        self.camera(camera)
        return [f"{t:03d}" for t in self.steps]

    def frame_count(self, camera: str) -> int:
        self.camera(camera)
        return len(self.steps)

    def read_frame(self, camera: str, index: int) -> np.ndarray:
        self._check_index(camera, index)
        path = self._files[self._names[camera]][index]
        return check_image(self._read(path), self.camera(camera), f"image {path}")

    def _mask_path(self, camera: str, index: int) -> Optional[Path]:
        if self.mask_dir is None:
            return None
        return self.mask_dir / f"{self.steps[index]:03d}_{self._names[camera]}.png"

    def has(self, layer: str, camera: str) -> bool:
        super().has(layer, camera)
        self.camera(camera)
        if layer == "pose":
            return camera in self._poses
        if layer == "mask":
            return self.mask_dir is not None and all(self._mask_path(camera, i).is_file() for i in range(len(self.steps)))
        return False

    def read_mask(self, camera: str, index: int) -> Optional[np.ndarray]:
        if not self.has("mask", camera):
            return None
        self._check_index(camera, index)
        path, info = self._mask_path(camera, index), self.camera(camera)
        try:
            with Image.open(path) as picture:
                mask = np.asarray(picture.convert("L"), dtype=np.float32)
        except (OSError, SyntaxError) as exc:
            raise DriveError(f"cannot read mask {path}: {exc}") from exc
        if mask.shape != (info.height, info.width):
            raise DriveError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]}, the images are {info.width}x{info.height}")
        return (mask > 0).astype(np.float32)  # drivestudio masks are 0 / 255

    def read_pose(self, camera: str, index: int) -> Optional[np.ndarray]:
        if not self.has("pose", camera):
            return None
        self._check_index(camera, index)
        return self._poses[camera][index].copy()
