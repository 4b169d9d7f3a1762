"""Fixtures for the SensorsimService proxy tests: small frames, a fake renderer on loopback."""

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Small frames on a shared 2-core machine: torch's parallel regions only stall here."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
