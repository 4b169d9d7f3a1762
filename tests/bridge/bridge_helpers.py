"""Shared helpers for bridge tests: in-thread servers, `simharmon serve` subprocesses, raw sockets.

Everything is bounded in time and cleaned up: servers are stopped and joined, subprocesses are
terminated (then killed), sockets close with linger 0, ipc paths live in fresh temp folders.
"""

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from simharmon.bridge.config import ServerConfig
from simharmon.bridge.processor import IdentityStandIn
from simharmon.bridge.server import BridgeServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ipc_dir():
    """A short temp folder for ipc:// endpoints (socket paths must stay under ~100 bytes)."""
    path = tempfile.mkdtemp(prefix="shb-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running_server(engine=None, **config):
    """A BridgeServer in a background thread on an ephemeral loopback port (unless ``bind`` given)."""
    config.setdefault("bind", ("tcp://127.0.0.1:*",))
    config.setdefault("stats_interval_s", 0)
    config.setdefault("poll_interval_s", 0.02)
    server = BridgeServer(engine if engine is not None else IdentityStandIn(), ServerConfig(**config))
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout_s=10)
        assert server.stopped, "server did not shut down within 10 s"


@contextlib.contextmanager
def dealer(endpoint, timeout_ms=5000, **options):
    """A raw DEALER socket (for messages the real client would never send)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
    sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
    for key, value in options.items():
        sock.setsockopt(getattr(zmq, key), value)
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close(0)
        ctx.term()


def recv_header(sock):
    """Receive one reply; returns (header dict, remaining parts as bytes)."""
    parts = sock.recv_multipart()
    return msgpack.unpackb(parts[0], raw=False), parts[1:]


def frame_header(width=32, height=16, fmt="rgb8", **fields):
    header = {"version": 1, "type": "frame", "seq": 1, "sim": "s", "camera": "c", "frame": 0,
              "timestamp_us": 0, "width": width, "height": height, "format": fmt}
    header.update(fields)
    return header


def rgb8(height=16, width=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


class ServeProcess:
    """A `simharmon serve` subprocess; ``endpoints`` parsed from its ready line."""

    def __init__(self, args, ready_timeout_s=60.0):
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if "--torch-threads" not in args:
            args = [*args, "--torch-threads", "1"]  # see conftest.single_torch_thread
        self.proc = subprocess.Popen([sys.executable, "-m", "simharmon", "serve", *args], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.endpoints = self._wait_ready(ready_timeout_s)

    def _wait_ready(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        lines = []
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                lines.append(line)
                if "ready on" in line:
                    return line.split("ready on", 1)[1].split("(engine")[0].split()
            if self.proc.poll() is not None:
                break
        self.stop()
        raise AssertionError(f"simharmon serve did not become ready: stdout {lines!r} stderr {self.stderr!r}")

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout_s=15.0):
        """Stop it (signal, then kill after ``timeout_s``); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        out, err = self.proc.communicate(timeout=5)
        self.stdout, self.stderr = out, err
        return self.proc.returncode

    stderr = ""


@contextlib.contextmanager
def serve_process(*args, **kwargs):
    proc = ServeProcess(list(args), **kwargs)
    try:
        yield proc
    finally:
        proc.stop()
