"""Every CUDA source in kernels/ must compile, so a broken kernel fails CI even on a machine with no GPU.

* nvcc: each ``kernels/*.cu`` to a cubin for sm_90a (H100), warnings as errors. Skipped when nvcc is
  not installed, except under CI (``CI=true``), where a missing nvcc is a failure.
* NVRTC: the exact text the runtime hands to cupy (local headers inlined) through libnvrtc, which
  the CUDA builds of torch ship; skipped when no libnvrtc is found.
"""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simharmon.ops._cuda import COMPILE_OPTIONS, DTYPE_SUFFIX, kernel_names, kernel_source, kernels_dir

ARCH = "sm_90a"
SOURCES = sorted(kernels_dir().glob("*.cu"))
EMULATION_TESTS = sorted((Path(__file__).resolve().parent / "ops" / "host_emulation").glob("*.cu"))


def _nvcc() -> str:
    path = shutil.which("nvcc")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nvcc is not installed: CI must compile kernels/*.cu (install the CUDA toolkit's nvcc)")
        pytest.skip("nvcc not installed")
    return path


def test_there_are_kernels():
    assert {p.stem for p in SOURCES} >= {"warp", "reproject", "fuse", "pack"}


@pytest.mark.parametrize("source", SOURCES + EMULATION_TESTS, ids=lambda p: p.name)
def test_nvcc_compiles(source, tmp_path):
    """Also the kernels that test the host emulation: they must be valid CUDA, or they test nothing real."""
    cmd = [_nvcc(), f"-arch={ARCH}", "-cubin", "-std=c++17", "--Werror", "all-warnings", "-I", str(kernels_dir()),
           "-o", str(tmp_path / f"{source.stem}.cubin"), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / f"{source.stem}.cubin").stat().st_size > 0


def _libnvrtc():
    patterns = [os.path.join(p, "nvidia", "**", "libnvrtc.so*") for p in sys.path if p]
    patterns += ["/usr/local/cuda/lib64/libnvrtc.so*", "/usr/local/cuda/targets/*/lib/libnvrtc.so*"]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern, recursive=True)):
            if "builtins" in path or "alt" in os.path.basename(path):
                continue
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_nvrtc_compiles_runtime_text(source):
    lib = _libnvrtc()
    if lib is None:
        pytest.skip("libnvrtc not found")
    text = kernel_source(source.stem)
    assert '#include "' not in text  # self-contained: cupy's cache key covers the headers
    program = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(program), text.encode(), source.name.encode(), 0, None, None) == 0
    options = [o.encode() for o in COMPILE_OPTIONS] + [f"--gpu-architecture={ARCH}".encode()]
    try:
        status = lib.nvrtcCompileProgram(program, len(options), (ctypes.c_char_p * len(options))(*options))
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(program, log)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))
    assert status == 0, log.value.decode(errors="replace")


def test_every_kernel_is_launched_by_an_op():
    """Each ``extern "C"`` kernel (per dtype, NAME_f32 ...) is named by some launcher in simharmon/ops."""
    python = "\n".join(p.read_text() for p in (Path(__file__).resolve().parents[1] / "simharmon" / "ops").glob("*.py"))
    for source in SOURCES:
        names = kernel_names(source.stem)
        assert names, f"{source.name}: no kernels found"
        for name in names:
            base, _, suffix = name.rpartition("_")
            per_dtype = suffix in DTYPE_SUFFIX.values() and f'f"{base}_{{' in python
            assert f'"{name}"' in python or per_dtype, f"{source.name}: kernel {name} is never launched"
