"""`simharmon fleet --local` as a process: ready line, frames through the unchanged protocol, clean stop.

Runs after test_fleet_cluster.py's cluster is gone (one local Ray cluster at a time on this machine).
"""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simharmon.bridge import BridgeClient, ClientConfig

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_fleet_local_serves_and_stops_cleanly():
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "simharmon", "fleet", "--local", "--engine", "identity", "--replicas", "2",
         "--cpus-per-replica", "0.25", "--bind", "tcp://127.0.0.1:*", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()  # blocks until ready (or the process ends)
        match = re.search(r"ready on (tcp://\S+) \(2 replicas; engine: fleet of identity", line)
        assert match, (line, process.stderr.read() if process.poll() is not None else "")
        image = np.random.default_rng(0).integers(0, 256, (16, 32, 3), dtype=np.uint8)
        with BridgeClient(ClientConfig(match.group(1), sim="cli", timeout_s=60)) as client:
            for camera in ("a", "b", "c"):
                reply = client.enhance(image, camera=camera)
                assert reply.kind == "result" and np.array_equal(reply.image, image)  # identity stand-in
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err[-2000:]
        assert out.rstrip().endswith("simharmon fleet: stopped")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    leftover = subprocess.run(["pgrep", "-f", "ray/core/src/ray/raylet/raylet"], capture_output=True, text=True)
    assert not leftover.stdout.strip(), "a raylet outlived `simharmon fleet --local`"
