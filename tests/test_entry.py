"""The command's entry point: a Ctrl-C while the imports load (the first second or more) ends it
with one line and exit code 130, never a KeyboardInterrupt traceback; --debug shows tracebacks."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _maps(pid):
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see when torch starts loading")
@pytest.mark.parametrize("argv", [["-m", "simharmon", "serve", "--engine", "identity", "--bind", "tcp://127.0.0.1:*"],
                                  ["-c", "import sys; from simharmon.__main__ import main; sys.exit(main())", "serve", "--engine", "identity",
                                   "--bind", "tcp://127.0.0.1:*"]])
def test_ctrl_c_while_torch_loads_prints_no_traceback(argv):
    """SIGINT as soon as torch's shared library is mapped, i.e. in the middle of the imports (both
    `python -m simharmon` and the console script's `simharmon.__main__:main`)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while "libtorch" not in _maps(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, "torch was never loaded"
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert proc.returncode == 130 and "interrupted" in err, (proc.returncode, err)


def test_the_console_script_uses_the_guarded_entry_point():
    scripts = (REPO / "pyproject.toml").read_text().split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert re.findall(r'^simharmon = "([^"]+)"', scripts, re.M) == ["simharmon.__main__:main"]


def test_import_simharmon_does_not_load_torch():
    code = "import sys, simharmon; print('torch' in sys.modules, simharmon.__version__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, timeout=60).stdout
    assert out.split()[0] == "False"
