"""Where the files shipped beside the code live: the CUDA kernel sources and the config presets.

The repository keeps them in top-level ``kernels/`` and ``configs/`` (the source of truth); a wheel
installs them as ``simharmon/kernels`` and ``simharmon/configs`` (``setup.py`` maps the folders). This
module finds either, so the same lookup works from the source tree, an editable install and a wheel.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["bundled_dir"]

_PACKAGE = Path(__file__).resolve().parent


def bundled_dir(name: str) -> Path:
    """``simharmon/<name>`` of an installed wheel if present, else ``<name>/`` of the source tree."""
    installed = _PACKAGE / name
    return installed if installed.is_dir() else _PACKAGE.parent / name
