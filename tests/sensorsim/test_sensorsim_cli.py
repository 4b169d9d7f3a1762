"""`simharmon proxy sensorsim` as a process: ready line, a render through it, clean exit on SIGINT."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np

from simharmon.sensorsim.images import PNG, decode_image
from simharmon.sensorsim.protos import common_pb2, sensorsim_pb2_grpc
from simharmon.sensorsim.testing import FakeRenderer, render_request

REPO = Path(__file__).resolve().parents[2]


def test_proxy_command_serves_and_stops(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(2)]
    fake = FakeRenderer({"front": frames})
    upstream = fake.start()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "simharmon", "proxy", "sensorsim", "--listen", "127.0.0.1:0", "--upstream", upstream,
         "--config", "tiny", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()  # blocks until ready (or the process ends)
        match = re.search(r"ready on (\S+) -> (\S+) \(masks: none", line)
        assert match and match.group(2) == upstream, (line, process.stderr.read() if process.poll() is not None else "")
        with grpc.insecure_channel(match.group(1)) as channel:
            stub = sensorsim_pb2_grpc.SensorsimServiceStub(channel)
            assert stub.get_version(common_pb2.Empty(), timeout=30).version_id == "fake-renderer 1.0"
            returned = stub.render_rgb(render_request("cli", "front", 0, height=32, width=32), timeout=120)
            assert decode_image(returned.image_bytes, PNG, 32, 32).shape == (32, 32, 3)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert "stopped (1 enhanced, 0 passed through, 0 errors)" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        fake.stop()
