"""The kernel sources: where ``kernels/*.cu`` are, their self-contained text, and their kernel names."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional

from ..bundled import bundled_dir

__all__ = ["kernels_dir", "kernel_source", "kernel_names", "kernel_modules"]

_INCLUDE = re.compile(r'^#include "([A-Za-z0-9_]+\.cuh)"\s*$', re.MULTILINE)
# `extern "C" __global__ void [__launch_bounds__(...)] name(`, or `name_##NAME(` inside an
# instantiation macro that SIMHARMON_FOR_EACH_FLOAT expands once per storage type.
_KERNEL = re.compile(r'extern "C" __global__ void(?: __launch_bounds__\([^)]*\))?\s+(\w+?)(_##NAME)?\(')
_FOR_EACH_FLOAT = re.compile(r"#define SIMHARMON_FOR_EACH_FLOAT\(MACRO\)(.*)")
_SUFFIX = re.compile(r"MACRO\(\w+, (\w+)\)")


def kernels_dir() -> Path:
    """The folder of the ``.cu`` sources: ``$SIMHARMON_KERNELS_DIR``, else the bundled ``kernels/``."""
    override = os.environ.get("SIMHARMON_KERNELS_DIR")
    return Path(override) if override else bundled_dir("kernels")


def kernel_modules() -> List[str]:
    """Names of the kernel files (``warp`` for ``kernels/warp.cu``), sorted."""
    return sorted(p.stem for p in kernels_dir().glob("*.cu"))


def kernel_source(name: str, folder: Optional[Path] = None) -> str:
    """The text of ``kernels/<name>.cu`` (or ``folder/<name>.cu``) with its local headers inlined.

    Inlining makes the text self-contained, so cupy's on-disk cache (keyed by the source text) can
    never serve a binary built against an older header. Headers come from the same folder, else
    from ``kernels/``.
    """
    folder = Path(folder) if folder is not None else kernels_dir()
    shared = kernels_dir()

    def expand(text: str, seen: frozenset) -> str:
        def include(match: re.Match) -> str:
            header = match.group(1)
            if header in seen:
                return ""
            path = folder / header if (folder / header).is_file() else shared / header
            body = path.read_text().replace("#pragma once", "")
            return expand(body, seen | {header})

        return _INCLUDE.sub(include, text)

    return expand((folder / f"{name}.cu").read_text(), frozenset())


def kernel_names(name: str, folder: Optional[Path] = None) -> List[str]:
    """The ``extern "C"`` kernels of ``kernels/<name>.cu``, per-dtype instantiations expanded (``warp_f32``, ...)."""
    text = kernel_source(name, folder)
    suffixes = []
    match = _FOR_EACH_FLOAT.search(text)
    if match:
        suffixes = _SUFFIX.findall(match.group(1))
    names = []
    for base, templated in _KERNEL.findall(text):
        names += [f"{base}_{s}" for s in suffixes] if templated else [base]
    return names
