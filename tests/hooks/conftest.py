"""Hooks tests run torch single-threaded (see tests/bridge/conftest.py for why)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
