"""Our drive folder format (docs/DRIVE_FORMAT.md): reader, writer and converter.

A drive folder holds ``drive.json`` (name, fps, frame count, cameras with size and intrinsics,
and the relative path of each camera's layers) and, per camera, frames (numbered images or one
video file), and optionally ground-truth frames, actor masks, depth, poses and flow. Everything
a writer produces is lossless (PNG, compressed .npz, text with round-trip float precision), so
writing a drive and reading it back gives identical arrays. ``drive.json`` is written last, so
a folder without it is not (yet) a drive.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image
from tqdm import tqdm

from .atomic import atomic_path, atomic_save_png, atomic_write_bytes, atomic_write_json
from .drive import CameraInfo, Drive, DriveError, DriveInfo, Intrinsics, check_image
from .frame_sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, FrameReadError, VideoFrameSource, load_image_rgb

__all__ = ["DRIVE_FILE", "DRIVE_FORMAT", "FolderDrive", "DriveFolderWriter", "write_drive", "is_drive_folder"]

DRIVE_FILE = "drive.json"
DRIVE_FORMAT = "simharmon-drive"
DRIVE_VERSION = 1
CAMERA_KEYS = {"name", "width", "height", "intrinsics", "frames", "gt", "masks", "depth", "poses", "flow"}
TOP_KEYS = {"format", "version", "name", "fps", "frame_count", "cameras", "source"}
PathLike = Union[str, Path]


def frame_stem(index: int) -> str:
    """File stem of frame ``index`` in every per-frame folder: ``000000``, ``000001``, ..."""
    return f"{index:06d}"


def is_drive_folder(path: PathLike) -> bool:
    """Whether ``path`` is a folder holding a ``drive.json``."""
    return (Path(path) / DRIVE_FILE).is_file()


def _numbered_files(folder: Path, count: int, extensions: Sequence[str], what: str) -> List[Path]:
    """The files ``000000.<ext>`` ... for ``count`` frames, checking none is missing or doubled."""
    if not folder.is_dir():
        raise DriveError(f"{what} folder not found: {folder}")
    found: Dict[str, Path] = {}
    for entry in folder.iterdir():
        if entry.suffix.lower() in extensions and not entry.name.startswith("."):
            if entry.stem in found:
                raise DriveError(f"{what}: both {found[entry.stem].name} and {entry.name} in {folder}")
            found[entry.stem] = entry
    files, missing = [], []
    for index in range(count):
        path = found.get(frame_stem(index))
        if path is None:
            missing.append(frame_stem(index))
        files.append(path)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DriveError(f"{what}: {len(missing)} of {count} files missing in {folder} ({shown}; "
                         f"expected names like 000000{extensions[0]})")
    return files


def _read_poses(path: Path, count: int) -> np.ndarray:
    if not path.is_file():
        raise DriveError(f"poses file not found: {path}")
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DriveError(f"cannot parse poses {path}: {exc}") from exc
    if values.shape != (count, 16):
        raise DriveError(f"poses {path} must have {count} rows of 16 numbers (row-major 4x4), got {list(values.shape)}")
    poses = values.reshape(count, 4, 4)
    if not np.isfinite(poses).all() or not np.allclose(poses[:, 3], [0.0, 0.0, 0.0, 1.0]):
        raise DriveError(f"poses {path}: every pose must be finite with last row 0 0 0 1")
    return poses


def _load_npz(path: Path, keys: Sequence[str]) -> Dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise DriveError(f"{path} lacks array(s) {missing} (has {data.files})")
            return {k: np.asarray(data[k]) for k in keys}
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, DriveError):
            raise
        raise DriveError(f"cannot read {path}: {exc} (corrupt?)") from exc


class FolderDrive(Drive):
    """Read a drive folder (``drive.json`` plus per-camera files)."""

    def __init__(self, root: PathLike):
        self.root = Path(root)
        meta_path = self.root / DRIVE_FILE
        if not meta_path.is_file():
            raise DriveError(f"{self.root} is not a drive folder: {DRIVE_FILE} not found")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DriveError(f"cannot parse {meta_path}: {exc}") from exc
        self.meta = self._validate(meta, meta_path)
        cameras = []
        self._layers: Dict[str, Dict[str, Any]] = {}
        count = self.meta["frame_count"]
        for entry in self.meta["cameras"]:
            intrinsics = Intrinsics.from_dict(entry["intrinsics"], f"{meta_path}: camera {entry.get('name')!r} intrinsics") \
                if entry.get("intrinsics") is not None else None
            camera = CameraInfo(entry["name"], entry["width"], entry["height"], intrinsics)
            cameras.append(camera)
            self._layers[camera.name] = self._open_layers(camera, entry, count)
        self.info = DriveInfo(name=self.meta["name"], fps=self.meta["fps"], cameras=tuple(cameras), kind="folder",
                              path=str(self.root.resolve()), extra={"source": self.meta.get("source")})
        self._count = count

    @staticmethod
    def _validate(meta: Any, where: Path) -> Dict[str, Any]:
        if not isinstance(meta, dict) or meta.get("format") != DRIVE_FORMAT:
            raise DriveError(f"{where} is not a simharmon drive (\"format\" must be {DRIVE_FORMAT!r})")
        if meta.get("version") != DRIVE_VERSION:
            raise DriveError(f"{where}: unsupported drive version {meta.get('version')!r} (this reader: {DRIVE_VERSION})")
        unknown = set(meta) - TOP_KEYS
        if unknown:
            raise DriveError(f"{where}: unknown keys {sorted(unknown)}")
        for key in ("name", "fps", "frame_count", "cameras"):
            if key not in meta:
                raise DriveError(f"{where}: missing {key!r}")
        count = meta["frame_count"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise DriveError(f"{where}: frame_count must be a positive integer, got {count!r}")
        if not isinstance(meta["cameras"], list) or not meta["cameras"]:
            raise DriveError(f"{where}: cameras must be a non-empty list")
        for entry in meta["cameras"]:
            if not isinstance(entry, dict):
                raise DriveError(f"{where}: each camera must be an object, got {entry!r}")
            unknown = set(entry) - CAMERA_KEYS
            if unknown:
                raise DriveError(f"{where}: camera {entry.get('name')!r} has unknown keys {sorted(unknown)}")
            for key in ("name", "width", "height", "frames"):
                if key not in entry:
                    raise DriveError(f"{where}: camera {entry.get('name')!r} lacks {key!r}")
        return meta

    def _resolve(self, relative: Any, what: str) -> Path:
        if not isinstance(relative, str) or not relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise DriveError(f"{self.root / DRIVE_FILE}: {what} must be a relative path inside the drive, got {relative!r}")
        return self.root / relative

    def _open_layers(self, camera: CameraInfo, entry: Dict[str, Any], count: int) -> Dict[str, Any]:
        where = f"camera {camera.name!r}"
        layers: Dict[str, Any] = {}
        frames = self._resolve(entry["frames"], f"{where} frames")
        if frames.is_file() and frames.suffix.lower() in VIDEO_EXTENSIONS:
            try:
                video = VideoFrameSource(frames)
                frames_in_video = len(video)
            except FrameReadError as exc:
                raise DriveError(str(exc)) from exc
            if frames_in_video != count:
                raise DriveError(f"{where}: video {frames} has {frames_in_video} frames, drive.json says {count}")
            layers["video"] = video
        else:
            layers["frames"] = _numbered_files(frames, count, IMAGE_EXTENSIONS, f"{where} frames")
        if entry.get("gt") is not None:
            layers["gt"] = _numbered_files(self._resolve(entry["gt"], f"{where} gt"), count, IMAGE_EXTENSIONS,
                                           f"{where} ground truth")
        if entry.get("masks") is not None:
            layers["mask"] = _numbered_files(self._resolve(entry["masks"], f"{where} masks"), count, (".png",),
                                             f"{where} masks")
        if entry.get("depth") is not None:
            layers["depth"] = _numbered_files(self._resolve(entry["depth"], f"{where} depth"), count, (".npz", ".npy"),
                                              f"{where} depth")
        if entry.get("flow") is not None:
            layers["flow"] = _numbered_files(self._resolve(entry["flow"], f"{where} flow"), count - 1, (".npz",),
                                             f"{where} flow")
        if entry.get("poses") is not None:
            layers["pose"] = _read_poses(self._resolve(entry["poses"], f"{where} poses"), count)
        return layers

    # -- Drive interface ------------------------------------------------------------------------
    def frame_names(self, camera: str) -> List[str]:
        self.camera(camera)
        return [frame_stem(i) for i in range(self._count)]

    def frame_count(self, camera: str) -> int:
        self.camera(camera)
        return self._count

    def has(self, layer: str, camera: str) -> bool:
        super().has(layer, camera)
        return layer in self._layers[self.camera(camera).name]

    def _image(self, path: Path, camera: CameraInfo, what: str) -> np.ndarray:
        try:
            image = load_image_rgb(path)
        except FileNotFoundError as exc:
            raise DriveError(str(exc)) from exc
        except FrameReadError as exc:
            raise DriveError(str(exc)) from exc
        return check_image(image, camera, f"{what} {path}")

    def read_frame(self, camera: str, index: int) -> np.ndarray:
        info = self.camera(camera)
        self._check_index(camera, index, self._count)
        layers = self._layers[camera]
        if "video" in layers:
            return check_image(layers["video"].read(index), info, f"frame {index} of {layers['video'].path}")
        return self._image(layers["frames"][index], info, "frame")

    def iter_frames(self, camera: str, start: int = 0):
        layers = self._layers[self.camera(camera).name]
        if "video" not in layers:
            yield from super().iter_frames(camera, start)
            return
        info = self.camera(camera)
        for index, _name, image in layers["video"].iter_from(start):  # one decode pass, not one per frame
            yield index, frame_stem(index), check_image(image, info, f"frame {index} of {layers['video'].path}")

    def read_gt(self, camera: str, index: int) -> Optional[np.ndarray]:
        if not self.has("gt", camera):
            return None
        self._check_index(camera, index, self._count)
        return self._image(self._layers[camera]["gt"][index], self.camera(camera), "ground truth")

    def read_mask(self, camera: str, index: int) -> Optional[np.ndarray]:
        if not self.has("mask", camera):
            return None
        self._check_index(camera, index, self._count)
        path, info = self._layers[camera]["mask"][index], self.camera(camera)
        try:
            with Image.open(path) as picture:
                picture.load()
                if picture.mode not in ("L", "1"):
                    raise DriveError(f"mask {path} must be an 8-bit greyscale PNG, got mode {picture.mode}")
                mask = np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
        except (OSError, SyntaxError) as exc:
            raise DriveError(f"cannot read mask {path}: {exc} (corrupt?)") from exc
        if mask.shape != (info.height, info.width):
            raise DriveError(f"mask {path} is {mask.shape[1]}x{mask.shape[0]}, camera is {info.width}x{info.height}")
        return mask

    def read_depth(self, camera: str, index: int) -> Optional[np.ndarray]:
        if not self.has("depth", camera):
            return None
        self._check_index(camera, index, self._count)
        path, info = self._layers[camera]["depth"][index], self.camera(camera)
        if path.suffix == ".npz":
            depth = _load_npz(path, ["depth"])["depth"]
        else:
            try:
                depth = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise DriveError(f"cannot read depth {path}: {exc} (corrupt?)") from exc
        if depth.shape != (info.height, info.width) or not np.issubdtype(depth.dtype, np.floating):
            raise DriveError(f"depth {path} must be float [{info.height}, {info.width}], got {depth.dtype} "
                             f"{list(depth.shape)}")
        return depth.astype(np.float32, copy=False)

    def read_pose(self, camera: str, index: int) -> Optional[np.ndarray]:
        if not self.has("pose", camera):
            return None
        self._check_index(camera, index, self._count)
        return self._layers[camera]["pose"][index].copy()

    def read_flow(self, camera: str, index: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        if not self.has("flow", camera) or index >= self._count - 1:
            return None
        self._check_index(camera, index, self._count)
        path, info = self._layers[camera]["flow"][index], self.camera(camera)
        arrays = _load_npz(path, ["forward", "backward"])
        for key, array in arrays.items():
            if array.shape != (info.height, info.width, 2) or not np.issubdtype(array.dtype, np.floating):
                raise DriveError(f"flow {path} [{key}] must be float [{info.height}, {info.width}, 2], got "
                                 f"{array.dtype} {list(array.shape)}")
        return arrays["forward"].astype(np.float32, copy=False), arrays["backward"].astype(np.float32, copy=False)


# -- writing ------------------------------------------------------------------------------------


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as temp:
        with open(temp, "wb") as handle:
            np.savez_compressed(handle, **arrays)  # zip entries carry a fixed date: same arrays, same bytes


def _mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask.astype(np.uint8) * 255
    if mask.dtype == np.uint8:
        return mask
    if not np.isfinite(mask).all() or mask.min(initial=0) < 0 or mask.max(initial=0) > 1:
        raise DriveError("a float mask must be finite and in [0, 1]")
    return np.floor(mask.astype(np.float64) * 255.0 + 0.5).astype(np.uint8)


class DriveFolderWriter:
    """Write a drive folder frame by frame; :meth:`finish` writes ``drive.json`` last.

    cameras: the cameras (size, intrinsics). Layers are declared by writing them: a layer must be
    written for every frame (flow: every frame but the last) of a camera, or :meth:`finish` fails.
    overwrite: replace an existing drive folder at ``root`` (a non-drive, non-empty folder is
    always refused).
    """

    def __init__(self, root: PathLike, name: str, fps: float, cameras: Sequence[CameraInfo], overwrite: bool = False,
                 source: Optional[Dict[str, Any]] = None):
        self.root = Path(root)
        if self.root.exists():
            if not self.root.is_dir():
                raise DriveError(f"{self.root} exists and is not a folder")
            if any(self.root.iterdir()):
                if not (overwrite and is_drive_folder(self.root)):
                    raise DriveError(f"{self.root} is not empty; choose a new folder"
                                     + (" (only an existing drive folder can be overwritten)" if overwrite else
                                        " or pass overwrite=True to replace a drive there"))
                shutil.rmtree(self.root)
        self.info = DriveInfo(name=name, fps=fps, cameras=tuple(cameras), kind="folder", path=str(self.root))
        self.source = source
        self._written: Dict[str, Dict[str, set]] = {c.name: {} for c in self.info.cameras}
        self._poses: Dict[str, np.ndarray] = {}

    def _camera(self, name: str) -> CameraInfo:
        for camera in self.info.cameras:
            if camera.name == name:
                return camera
        raise KeyError(f"no camera {name!r}; cameras: {[c.name for c in self.info.cameras]}")

    def _mark(self, camera: str, layer: str, index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise ValueError(f"frame index must be a non-negative integer, got {index!r}")
        self._written[camera].setdefault(layer, set()).add(int(index))

    def write_frame(self, camera: str, index: int, image: np.ndarray) -> None:
        """Frame ``index``: uint8 ``[H, W, 3]`` (PNG)."""
        info = self._camera(camera)
        atomic_save_png(self.root / camera / "frames" / f"{frame_stem(index)}.png", check_image(image, info, "frame"))
        self._mark(camera, "frames", index)

    def write_gt(self, camera: str, index: int, image: np.ndarray) -> None:
        """Ground-truth frame ``index``: uint8 ``[H, W, 3]`` (PNG)."""
        info = self._camera(camera)
        atomic_save_png(self.root / camera / "gt" / f"{frame_stem(index)}.png", check_image(image, info, "ground truth"))
        self._mark(camera, "gt", index)

    def write_mask(self, camera: str, index: int, mask: np.ndarray) -> None:
        """Actor mask ``index``: ``[H, W]`` bool, uint8, or float in [0, 1] (8-bit greyscale PNG)."""
        info = self._camera(camera)
        pixels = _mask_to_uint8(mask)
        if pixels.shape != (info.height, info.width):
            raise DriveError(f"mask must be [{info.height}, {info.width}], got {list(pixels.shape)}")
        with atomic_path(self.root / camera / "masks" / f"{frame_stem(index)}.png") as temp:
            Image.fromarray(np.ascontiguousarray(pixels), mode="L").save(temp, format="PNG", compress_level=9)
        self._mark(camera, "masks", index)

    def write_depth(self, camera: str, index: int, depth: np.ndarray) -> None:
        """Depth ``index``: float ``[H, W]`` metres (float32 in a compressed .npz)."""
        info = self._camera(camera)
        depth = np.asarray(depth)
        if depth.shape != (info.height, info.width) or not np.issubdtype(depth.dtype, np.floating):
            raise DriveError(f"depth must be float [{info.height}, {info.width}], got {depth.dtype} {list(depth.shape)}")
        _save_npz(self.root / camera / "depth" / f"{frame_stem(index)}.npz", depth=depth.astype(np.float32))
        self._mark(camera, "depth", index)

    def write_flow(self, camera: str, index: int, forward: np.ndarray, backward: np.ndarray) -> None:
        """Flow between frames ``index`` and ``index + 1``: two float ``[H, W, 2]`` arrays (pixels)."""
        info = self._camera(camera)
        for what, array in (("forward", forward), ("backward", backward)):
            array = np.asarray(array)
            if array.shape != (info.height, info.width, 2) or not np.issubdtype(array.dtype, np.floating):
                raise DriveError(f"{what} flow must be float [{info.height}, {info.width}, 2], got {array.dtype} "
                                 f"{list(array.shape)}")
        _save_npz(self.root / camera / "flow" / f"{frame_stem(index)}.npz",
                  forward=np.asarray(forward, dtype=np.float32), backward=np.asarray(backward, dtype=np.float32))
        self._mark(camera, "flow", index)

    def set_poses(self, camera: str, poses: np.ndarray) -> None:
        """All camera-to-world poses of ``camera``: float ``[T, 4, 4]`` (written as text at :meth:`finish`)."""
        self._camera(camera)
        poses = np.asarray(poses, dtype=np.float64)
        if poses.ndim != 3 or poses.shape[1:] != (4, 4) or not np.isfinite(poses).all():
            raise DriveError(f"poses must be finite [T, 4, 4], got {list(poses.shape)}")
        self._poses[camera] = poses.copy()

    def finish(self, frame_count: int) -> Path:
        """Check every layer is complete for ``frame_count`` frames, write the poses and ``drive.json``."""
        if frame_count < 1:
            raise DriveError("a drive needs at least one frame")
        entries = []
        for camera in self.info.cameras:
            written = self._written[camera.name]
            entry: Dict[str, Any] = {"name": camera.name, "width": camera.width, "height": camera.height,
                                     "intrinsics": camera.intrinsics.to_dict() if camera.intrinsics else None}
            for layer, key in (("frames", "frames"), ("gt", "gt"), ("masks", "masks"), ("depth", "depth"),
                               ("flow", "flow")):
                expected = set(range(frame_count - 1 if layer == "flow" else frame_count))
                have = written.get(layer)
                if have is None:
                    if layer == "frames":
                        raise DriveError(f"camera {camera.name!r} has no frames")
                    continue
                if have != expected:
                    missing = sorted(expected - have)[:5]
                    extra = sorted(have - expected)[:5]
                    raise DriveError(f"camera {camera.name!r}: {layer} incomplete for {frame_count} frames "
                                     f"(missing {missing}, beyond the end {extra})")
                entry[key] = f"{camera.name}/{layer}"
            if camera.name in self._poses:
                poses = self._poses[camera.name]
                if len(poses) != frame_count:
                    raise DriveError(f"camera {camera.name!r}: {len(poses)} poses for {frame_count} frames")
                text = "\n".join(" ".join(repr(float(v)) for v in pose.reshape(-1)) for pose in poses) + "\n"
                atomic_write_bytes(self.root / camera.name / "poses.txt", text.encode("ascii"))
                entry["poses"] = f"{camera.name}/poses.txt"
            entries.append(entry)
        meta: Dict[str, Any] = {"format": DRIVE_FORMAT, "version": DRIVE_VERSION, "name": self.info.name,
                                "fps": self.info.fps, "frame_count": int(frame_count), "cameras": entries}
        if self.source is not None:
            meta["source"] = self.source
        atomic_write_json(self.root / DRIVE_FILE, meta)
        return self.root


def write_drive(drive: Drive, root: PathLike, overwrite: bool = False, progress: bool = False) -> Path:
    """Copy ``drive`` (any reader) into our folder format at ``root``, with every layer it has.

    All cameras must have the same number of frames (a shared clock).
    """

    counts = {name: drive.frame_count(name) for name in drive.cameras}
    if len(set(counts.values())) != 1:
        raise DriveError(f"cameras have different frame counts {counts}; the folder format needs one frame count")
    count = next(iter(counts.values()))
    writer = DriveFolderWriter(root, drive.info.name, drive.info.fps, drive.info.cameras, overwrite=overwrite,
                               source={"converted_from": drive.info.kind, "path": drive.info.path})
    bar = tqdm(total=count * len(counts), unit="frame", desc="write drive", disable=not progress)
    for name in drive.cameras:
        poses = []
        for index, _stem, image in drive.iter_frames(name):
            writer.write_frame(name, index, image)
            for layer, read, write in (("gt", drive.read_gt, writer.write_gt), ("mask", drive.read_mask, writer.write_mask),
                                       ("depth", drive.read_depth, writer.write_depth)):
                if drive.has(layer, name):
                    write(name, index, read(name, index))
            if drive.has("flow", name) and index < count - 1:
                writer.write_flow(name, index, *drive.read_flow(name, index))
            if drive.has("pose", name):
                poses.append(drive.read_pose(name, index))
            bar.update(1)
        if poses:
            writer.set_poses(name, np.stack(poses))
    bar.close()
    return writer.finish(count)


