"""The ``run.json`` record of an output folder, and what a re-run may resume from it.

An output folder ``OUT`` holds ``frames/<name>.png`` (one enhanced frame per input frame),
optionally ``enhanced.mp4``, and ``run.json``, which says what produced the frames: the input,
the weights and the full config. A re-run with the same identity resumes after the last
contiguous output; a re-run with a different identity is refused unless told to overwrite.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..io.atomic import TEMP_MARKER, atomic_write_json

__all__ = [
    "RUN_FILE",
    "FRAMES_DIR",
    "MP4_FILE",
    "RUN_FORMAT",
    "IncompatibleRunError",
    "RunRecord",
    "read_run_record",
    "check_resumable",
    "completed_prefix",
    "clear_outputs",
    "remove_stale_temp_files",
]

RUN_FILE = "run.json"
FRAMES_DIR = "frames"
MP4_FILE = "enhanced.mp4"
RUN_FORMAT = "simharmon-enhance-run"
IDENTITY_KEYS = ("input", "weights", "config")  # what must match for a resume


class IncompatibleRunError(ValueError):
    """The output folder belongs to a different run (other input, weights or config)."""


@dataclass
class RunRecord:
    """What ``run.json`` stores. ``weights`` is a path, a list of paths, or ``"untrained"``."""

    input: str
    weights: Any
    config: Dict[str, Any]
    input_kind: str = "folder"
    device: str = "cpu"
    fps: float = 30.0
    frame_count: int = 0  # frames in the input
    target_count: int = 0  # frames this run aims to enhance (--max-frames)
    completed: int = 0  # contiguous outputs present in frames/
    status: str = "running"  # running, interrupted, failed, partial, complete
    mp4: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    run_format: str = RUN_FORMAT  # the format tag; another command (replay) uses its own
    file: str = RUN_FILE
    # Where the frames are, relative to the output folder: one folder, or one per camera (replay);
    # only folders that exist when the record is written are named.
    frames_dir: Optional[str] = FRAMES_DIR
    frames_dirs: Optional[Dict[str, str]] = None

    def identity(self) -> Dict[str, Any]:
        """The fields a resumed run must share with the run that wrote the folder."""
        return {key: getattr(self, key) for key in IDENTITY_KEYS}

    def to_json(self) -> Dict[str, Any]:
        """JSON-serializable mapping (with format tag and update time)."""
        data = {
            "format": self.run_format,
            "version": 1,
            "input": self.input,
            "input_kind": self.input_kind,
            "weights": self.weights,
            "device": self.device,
            "fps": self.fps,
            "frame_count": self.frame_count,
            "target_count": self.target_count,
            "completed": self.completed,
            "status": self.status,
            "mp4": self.mp4,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": self.config,
        }
        data.update(self.extra)
        return data

    def save(self, out_dir: Path) -> None:
        """Write ``out_dir/<file>`` (``run.json``) atomically."""
        data = self.to_json()
        out_dir = Path(out_dir)
        if self.frames_dir is not None and (out_dir / self.frames_dir).is_dir():
            data["frames_dir"] = self.frames_dir
        if self.frames_dirs is not None:
            data["frames_dirs"] = {k: v for k, v in self.frames_dirs.items() if (out_dir / v).is_dir()}
        atomic_write_json(out_dir / self.file, data)


def read_run_record(out_dir: Path, file: str = RUN_FILE, run_format: str = RUN_FORMAT,
                    command: str = "simharmon enhance") -> Optional[Dict[str, Any]]:
    """The parsed ``file`` (``run.json``) of ``out_dir``, or None when there is none.

    Raises IncompatibleRunError when it is unreadable or was not written by ``command`` (``run_format``).
    """
    path = Path(out_dir) / file
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IncompatibleRunError(
            f"{path} is unreadable ({exc}); pass --overwrite to start over in {out_dir}"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != run_format:
        raise IncompatibleRunError(
            f"{path} was not written by '{command}'; pass --overwrite to replace it, or choose another --out"
        )
    return data


def _config_differences(old: Any, new: Any, prefix: str = "config") -> List[str]:
    """Dotted names of the config entries that differ (at most a few levels deep)."""
    if isinstance(old, dict) and isinstance(new, dict):
        found: List[str] = []
        for key in sorted(set(old) | set(new), key=str):
            found += _config_differences(old.get(key), new.get(key), f"{prefix}.{key}")
        return found
    return [] if old == new else [f"{prefix} ({old!r} -> {new!r})"]


def check_resumable(existing: Dict[str, Any], record: RunRecord, out_dir: Path) -> None:
    """Raise IncompatibleRunError, saying what differs, if ``existing`` is not the same run as ``record``."""
    wanted = record.identity()
    problems = []
    for key in ("input", "weights"):
        if existing.get(key) != wanted[key]:
            problems.append(f"{key}: the folder has {existing.get(key)!r}, this run has {wanted[key]!r}")
    # JSON turns tuples into lists: compare both through JSON.
    old_config = json.loads(json.dumps(existing.get("config")))
    new_config = json.loads(json.dumps(wanted["config"]))
    differences = _config_differences(old_config, new_config)
    if differences:
        shown = ", ".join(differences[:5]) + (f" and {len(differences) - 5} more" if len(differences) > 5 else "")
        problems.append(f"config differs: {shown}")
    if problems:
        raise IncompatibleRunError(
            f"{out_dir} holds outputs of a different run, so it cannot be resumed:\n  - "
            + "\n  - ".join(problems)
            + "\nPass --overwrite to discard those outputs and start over, or choose another --out."
        )


def completed_prefix(frames_dir: Path, names: Sequence[str], limit: Optional[int] = None) -> int:
    """How many of ``names`` (from the first) already have ``frames_dir/<name>.png``, stopping at the first gap."""
    count = 0
    for name in names[: len(names) if limit is None else limit]:
        if not (frames_dir / f"{name}.png").is_file():
            break
        count += 1
    return count


def remove_stale_temp_files(directory: Path) -> int:
    """Delete temporary files left by a hard kill (``.<stem>.<hex>.tmp<ext>``); returns how many."""
    removed = 0
    if directory.is_dir():
        for entry in directory.glob(f".*{TEMP_MARKER}.*"):
            if entry.is_file():
                entry.unlink()
                removed += 1
    return removed


def clear_outputs(out_dir: Path) -> None:
    """Remove what 'enhance' writes in ``out_dir`` (frames/*.png, enhanced.mp4, run.json), nothing else."""
    frames_dir = out_dir / FRAMES_DIR
    if frames_dir.is_dir():
        for entry in frames_dir.glob("*.png"):
            entry.unlink()
        remove_stale_temp_files(frames_dir)
    for name in (MP4_FILE, RUN_FILE):
        path = out_dir / name
        if path.is_file():
            path.unlink()
    remove_stale_temp_files(out_dir)
