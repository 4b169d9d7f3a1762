"""``open_drive(path)``: pick the reader for a drive folder, drivestudio scene, frame folder, video or MCAP."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from .drive import Drive, DriveError, FrameSourceDrive
from .drive_folder import FolderDrive, is_drive_folder
from .drivestudio import DriveStudioDrive, is_drivestudio_scene
from .frame_sources import open_frame_source

__all__ = ["DRIVE_KINDS", "open_drive", "detect_kind"]

DRIVE_KINDS = ("auto", "folder", "drivestudio", "frames", "video", "mcap")


def detect_kind(path: Union[str, Path]) -> str:
    """The drive kind of ``path`` (see DRIVE_KINDS); FileNotFoundError if it does not exist."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"drive not found: {path}")
    if path.is_dir():
        if is_drive_folder(path):
            return "folder"
        if is_drivestudio_scene(path):
            return "drivestudio"
        return "frames"
    if path.suffix.lower() == ".mcap":
        return "mcap"
    return "video"


def open_drive(path: Union[str, Path], kind: str = "auto", fps: Optional[float] = None) -> Drive:
    """Open ``path`` as a :class:`Drive`.

    kind: "auto" (detect: ``drive.json`` -> our folder format; ``images/`` + ``ego_pose/`` ->
        drivestudio; other folders -> a frame folder; ``.mcap`` -> MCAP; other files -> a video),
        or one of "folder", "drivestudio", "frames", "video", "mcap".
    fps: override the frame rate (frame folders default to 30, drivestudio to 10).
    Raises FileNotFoundError for a missing path and DriveError / ValueError for bad content.
    """
    if kind not in DRIVE_KINDS:
        raise ValueError(f"unknown drive kind {kind!r}; choose from {DRIVE_KINDS}")
    path = Path(path)
    detected = detect_kind(path)
    kind = detected if kind == "auto" else kind
    if kind == "folder":
        drive: Drive = FolderDrive(path)
    elif kind == "drivestudio":
        drive = DriveStudioDrive(path) if fps is None else DriveStudioDrive(path, fps=fps)
    elif kind == "mcap":
        from .drive_mcap import McapDrive  # needs the optional-at-import mcap package

        drive = McapDrive(path, fps=fps)
    elif kind in ("frames", "video"):
        if (kind == "frames") != path.is_dir():
            raise DriveError(f"{path} is not a {'folder' if kind == 'frames' else 'video file'}")
        drive = FrameSourceDrive(open_frame_source(path), fps=fps)
    else:  # pragma: no cover - guarded above
        raise ValueError(kind)
    if fps is not None and kind == "folder":
        from dataclasses import replace

        drive.info = replace(drive.info, fps=fps)
    return drive
