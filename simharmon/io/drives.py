"""``open_drive(path)``: pick the reader for a drive folder, drivestudio scene, frame folder, video, MCAP or rosbag2."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Union

from .drive import Drive, DriveError, FrameSourceDrive
from .drive_folder import FolderDrive, is_drive_folder
from .drive_mcap import McapDrive
from .drivestudio import DriveStudioDrive, is_drivestudio_scene
from .frame_sources import open_frame_source
from .log_topics import LogSelection
from .rosbag2 import is_rosbag2_folder

__all__ = ["DRIVE_KINDS", "LOG_KINDS", "open_drive", "detect_kind"]

DRIVE_KINDS = ("auto", "folder", "drivestudio", "frames", "video", "mcap", "rosbag2")
LOG_KINDS = ("mcap", "rosbag2")


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
        if is_rosbag2_folder(path):
            return "rosbag2"
        return "frames"
    if path.suffix.lower() == ".mcap":
        return "mcap"
    return "video"


def open_drive(path: Union[str, Path], kind: str = "auto", fps: Optional[float] = None,
               selection: Optional[LogSelection] = None) -> Drive:
    """Open ``path`` as a :class:`Drive`.

    kind: "auto" (detect: ``drive.json`` -> our folder format; ``images/`` + ``ego_pose/`` ->
        drivestudio; ``metadata.yaml`` or ``.mcap`` files -> a rosbag2 folder; other folders -> a
        frame folder; ``.mcap`` -> MCAP; other files -> a video), or one of DRIVE_KINDS.
    fps: override the frame rate (frame folders default to 30, drivestudio to 10).
    selection: camera and mask topics of a log (``mcap``, ``rosbag2``); an error for other kinds.
    Raises FileNotFoundError for a missing path and DriveError / ValueError for bad content.
    """
    if kind not in DRIVE_KINDS:
        raise ValueError(f"unknown drive kind {kind!r}; choose from {DRIVE_KINDS}")
    path = Path(path)
    detected = detect_kind(path)
    kind = detected if kind == "auto" else kind
    if selection is not None and not selection.empty and kind not in LOG_KINDS:
        raise DriveError(f"{path} is a {kind} drive: topics (--topic, --mask-topic) only apply to MCAP files and "
                         "rosbag2 folders")
    if kind == "folder":
        drive: Drive = FolderDrive(path)
    elif kind == "drivestudio":
        drive = DriveStudioDrive(path) if fps is None else DriveStudioDrive(path, fps=fps)
    elif kind in LOG_KINDS:
        if (kind == "rosbag2") != path.is_dir():
            raise DriveError(f"{path} is not a {'rosbag2 folder' if kind == 'rosbag2' else '.mcap file'}")
        drive = McapDrive(path, fps=fps, selection=selection)
    elif kind in ("frames", "video"):
        if (kind == "frames") != path.is_dir():
            raise DriveError(f"{path} is not a {'folder' if kind == 'frames' else 'video file'}")
        drive = FrameSourceDrive(open_frame_source(path), fps=fps)
    else:  # pragma: no cover - guarded above
        raise ValueError(kind)
    if fps is not None and kind == "folder":

        drive.info = replace(drive.info, fps=fps)
    return drive
