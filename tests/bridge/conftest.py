"""Fixtures for bridge tests (helpers live in bridge_helpers.py, importable by name)."""

import pytest
import torch
from bridge_helpers import ipc_dir  # noqa: F401


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Run torch single-threaded here: these tests move small frames, and on a small CI machine
    shared with other processes torch's parallel regions stall (10x slower steps of the tiny model).
    Restored after each test, so other suites keep torch's default."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
