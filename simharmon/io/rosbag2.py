"""rosbag2 folders: ``metadata.yaml`` plus the bag's ``.mcap`` files (storage ``mcap``).

``metadata.yaml`` (``rosbag2_bagfile_information``) names the storage plugin and the bag's files,
relative to the folder, in recording order. Only the MCAP storage is read: a sqlite3 bag can be
converted with ``ros2 bag convert``, and a file-compressed bag (``compression_mode: FILE``)
decompressed first. A folder without ``metadata.yaml`` that holds ``.mcap`` files (a bag whose
recorder was killed before writing it) is read from those files, in name order.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Union

import yaml

from .drive import DriveError
from .frame_sources import natural_sort_key

__all__ = ["METADATA_FILE", "is_rosbag2_folder", "rosbag2_files"]

METADATA_FILE = "metadata.yaml"


def _mcap_names(folder: Path) -> List[Path]:
    return sorted((p for p in folder.glob("*.mcap") if p.is_file()), key=lambda p: natural_sort_key(p.name))


def is_rosbag2_folder(path: Union[str, Path]) -> bool:
    """Whether ``path`` is a folder with a rosbag2 ``metadata.yaml``, or with ``.mcap`` files."""
    path = Path(path)
    return path.is_dir() and ((path / METADATA_FILE).is_file() or bool(_mcap_names(path)))


def rosbag2_files(folder: Union[str, Path]) -> List[Path]:
    """The MCAP files of the rosbag2 folder ``folder``, in recording order (DriveError if unreadable)."""
    folder = Path(folder)
    metadata = folder / METADATA_FILE
    if not metadata.is_file():
        files = _mcap_names(folder)
        if not files:
            raise DriveError(f"{folder} has neither {METADATA_FILE} nor .mcap files: not a rosbag2 folder")
        return files
    try:
        document = yaml.safe_load(metadata.read_text(encoding="utf-8"))
        info = document["rosbag2_bagfile_information"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError) as exc:
        raise DriveError(f"cannot read {metadata}: {exc} (not a rosbag2 metadata file?)") from exc
    if not isinstance(info, dict):
        raise DriveError(f"{metadata}: rosbag2_bagfile_information must be a mapping")
    storage = str(info.get("storage_identifier", ""))
    if storage != "mcap":
        raise DriveError(f"{folder}: rosbag2 storage {storage!r} is not supported; only 'mcap' (convert the bag "
                         "with `ros2 bag convert` and an output storage_id of mcap)")
    if str(info.get("compression_mode", "") or "").upper() == "FILE":
        raise DriveError(f"{folder}: the bag's files are compressed whole ({info.get('compression_format')!r}); "
                         "decompress them first (MCAP's own chunk compression is read as is)")
    names = info.get("relative_file_paths") or [entry.get("path") for entry in info.get("files") or []
                                                if isinstance(entry, dict)]
    if not names:
        raise DriveError(f"{metadata} lists no files (relative_file_paths)")
    files = []
    for name in names:
        path = (folder / str(name)).resolve()
        if folder.resolve() not in path.parents:
            raise DriveError(f"{metadata}: file {name!r} is outside the bag folder")
        if not path.is_file():
            raise DriveError(f"{metadata} lists {name!r} but {path} does not exist")
        files.append(path)
    return files
