"""Build the C++ client with CMake and run its example render loop against a real `simharmon serve`.

Skips when the C++ toolchain or the headers (libzmq3-dev, cppzmq-dev, libmsgpack-cxx-dev) are
missing, except under CI (CI=true), where it fails instead: CI installs them.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from bridge_helpers import REPO, serve_process

CPP_DIR = REPO / "bindings" / "cpp"


def _unavailable(reason):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"C++ client cannot be built under CI: {reason}")
    pytest.skip(f"C++ client not built: {reason}")


@pytest.fixture(scope="module")
def render_loop():
    """Path of the built example (configured and built in a temp folder)."""
    if shutil.which("cmake") is None:
        _unavailable("cmake not found")
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        _unavailable("no C++ compiler found")
    build = Path(tempfile.mkdtemp(prefix="simharmon-cpp-"))
    try:
        configure = subprocess.run(["cmake", "-S", str(CPP_DIR), "-B", str(build)],
                                   capture_output=True, text=True, timeout=120)
        if configure.returncode != 0:
            _unavailable(f"cmake configure failed (missing libzmq3-dev / cppzmq-dev / libmsgpack-cxx-dev?):\n"
                         f"{configure.stdout[-2000:]}{configure.stderr[-2000:]}")
        built = subprocess.run(["cmake", "--build", str(build), "-j", "2"], capture_output=True, text=True, timeout=300)
        assert built.returncode == 0, f"C++ build failed:\n{built.stdout[-4000:]}{built.stderr[-4000:]}"
        yield build / "render_loop"
    finally:
        shutil.rmtree(build, ignore_errors=True)


def test_cpp_render_loop_against_a_real_server(render_loop):
    with serve_process("--engine", "identity", "--bind", "tcp://127.0.0.1:*", "--stats-interval-s", "0") as server:
        run = subprocess.run([str(render_loop), server.endpoints[0], "--frames", "12", "--cameras", "3",
                              "--expect-identity", "--timeout-ms", "10000"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"render_loop failed:\n{run.stdout}\n{run.stderr}"
        assert "render_loop: OK 12 frames x 3 cameras" in run.stdout
        assert "stand_in=1" in run.stdout
    # Failures surface as a non-zero exit within the timeout: no server there any more.
    missing = subprocess.run([str(render_loop), server.endpoints[0], "--frames", "1", "--timeout-ms", "500"],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "TIMEOUT" in missing.stderr
