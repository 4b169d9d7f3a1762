"""Atomic file writes: a file appears under its final name complete, or not at all.

Everything is first written to a temporary file in the target's directory (same filesystem, so
``os.replace`` is an atomic rename), flushed to disk with ``fsync``, then renamed onto the target.
On any failure the temporary file is removed. A reader, or a resumed run after a crash or Ctrl-C,
therefore never sees a half-written frame, video or JSON file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np
from PIL import Image

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_save_png", "atomic_write_json", "TEMP_MARKER"]

PathLike = Union[str, os.PathLike]
# Temporary files are named ".<stem>.<random>.tmp<suffix>": hidden, recognisable, and keeping the
# target's extension so libraries that pick a format from the name (PyAV, PIL) still do.
TEMP_MARKER = ".tmp"


def _create_temp(target: Path) -> Path:
    """Create an empty, exclusive temporary file next to ``target`` (mode 0o666 minus the umask)."""
    for _ in range(100):
        name = f".{target.stem}.{secrets.token_hex(4)}{TEMP_MARKER}{target.suffix}"
        candidate = target.with_name(name)
        try:
            # os.open honours the umask, unlike tempfile.mkstemp's fixed 0o600.
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"could not create a temporary file next to {target}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself; not possible on every platform, so best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed onto ``path``.

    The temporary file lives in the same directory as ``path`` (created if missing) and keeps its
    extension, e.g. ``out/.enhanced.1a2b3c4d.tmp.mp4`` for ``out/enhanced.mp4``. If the ``with``
    body raises (including KeyboardInterrupt), the temporary file is deleted, ``path`` is left
    untouched, and the exception propagates.

    Example::

        with atomic_path("out/video.mp4") as tmp:
            write_something(tmp)
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot write a file over the directory {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _create_temp(target)
    try:
        yield temp
        if not temp.is_file():
            raise FileNotFoundError(f"temporary file {temp} for {target} disappeared before it could be renamed")
        _fsync_file(temp)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes-like, got {type(data).__name__}")
    with atomic_path(path) as temp:
        with open(temp, "wb") as handle:
            handle.write(data)


def atomic_save_png(path: PathLike, image: np.ndarray, compress_level: int = 6) -> None:
    """Save ``image``, a uint8 ``[H, W, 3]`` RGB numpy array, as a PNG at ``path`` atomically.

    The PNG bytes depend only on the pixels and ``compress_level`` (no timestamps or metadata),
    so identical frames give byte-identical files.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image must have shape [H, W, 3] with H, W > 0, got {list(image.shape)}")
    if not str(path).lower().endswith(".png"):
        raise ValueError(f"atomic_save_png writes PNG files; the path should end in .png, got {path}")
    picture = Image.fromarray(np.ascontiguousarray(image))  # uint8 [H, W, 3] -> RGB
    with atomic_path(path) as temp:
        picture.save(temp, format="PNG", compress_level=compress_level)


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON to ``path`` atomically (fails before writing if not serializable)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
