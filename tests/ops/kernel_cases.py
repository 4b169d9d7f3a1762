"""Inputs and checks shared by the kernel tests, on the CPU host build and on a GPU.

Fresh random inputs on every run (the seed is in each failure message), odd sizes so that every
grid has partial blocks and tiles, non-contiguous strides. Outputs are poisoned (NaN, or for
uint8 two different byte patterns) so that an element the kernel never writes is caught, and
they sit inside a larger poisoned buffer whose guard zones must survive (a write out of bounds).
On the host every launch runs twice, with the block's threads in forward and in reverse order:
a kernel whose result depends on the order has a race (missing barrier, implicit lock-step).
"""

from __future__ import annotations

import os
from typing import Callable, List, Sequence

import pytest
import torch

from simharmon.ops import _host, kernels_available

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
N, C, H, W = 3, 5, 37, 53  # odd sizes: partial blocks and tiles everywhere
GUARD = 64  # poisoned elements before and after every output (a multiple of 4 bytes for any dtype)
GPU = torch.cuda.is_available() and kernels_available()


def host_skip():
    """Skip the host tests where no C++ compiler exists, except under CI (CI=true), where they must run."""
    return pytest.mark.skipif(not _host.host_kernels_available() and os.environ.get("CI") != "true",
                              reason="no C++ compiler for the host build of the kernels")


DEVICES = [
    pytest.param("cpu", id="host", marks=host_skip()),
    pytest.param("cuda", id="gpu", marks=[pytest.mark.gpu, pytest.mark.skipif(not GPU, reason="needs CUDA and cupy")]),
]


def new_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


def generator(seed: int, device: str) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def fresh(shape, seed, device, scale=1.0, dtype=torch.float32):
    return (torch.randn(shape, generator=generator(seed, device), device=device) * scale).to(dtype)


def strided(t: torch.Tensor) -> torch.Tensor:
    """The same values with transposed H/W strides (not contiguous)."""
    view = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not view.is_contiguous() and torch.equal(view, t)
    return view


def poisoned(shape, dtype, device, fill=float("nan")) -> torch.Tensor:
    """A contiguous output full of ``fill``, inside a buffer with GUARD poisoned elements either side."""
    numel = 1
    for s in shape:
        numel *= s
    buffer = torch.full((numel + 2 * GUARD,), fill, dtype=dtype, device=device)
    return buffer[GUARD:GUARD + numel].view(shape)


def guards_intact(out: torch.Tensor, fill=float("nan")) -> bool:
    buffer = out._base
    zones = torch.cat([buffer[:GUARD], buffer[-GUARD:]])
    if isinstance(fill, float) and fill != fill:
        return bool(torch.isnan(zones).all())
    return bool((zones == fill).all())


def assert_written(out: torch.Tensor, op: str, seed: int):
    assert not torch.isnan(out).any(), f"{op} seed={seed}: some outputs were never written"
    assert guards_intact(out), f"{op} seed={seed}: a write landed outside the output"


def run_launch(device: str, launcher: Callable, args: Sequence, outs: List[torch.Tensor], op: str, seed: int) -> None:
    """``launcher(*args, *outs)``; checks every output written and no write out of bounds.

    On the host, launches again in reverse thread order into fresh outputs: results must agree
    bit for bit (NaN included), or the kernel has a race.
    """
    launcher(*args, *outs)
    for out in outs:
        assert_written(out, op, seed)
    if device == "cpu":
        again = [poisoned(o.shape, o.dtype, device) for o in outs]
        with _host.launch_options(order="reverse"):
            launcher(*args, *again)
        for first, second in zip(outs, again):
            assert torch.equal(first, second), f"{op} seed={seed}: the result depends on the thread order (a race)"


def max_err(x: torch.Tensor, oracle: torch.Tensor) -> float:
    return float((x.double() - oracle.double()).abs().max())


def check_bound(measured: list, op, device, dtype, seed, kernel_out, oracle, torch_lowp):
    """kernel error <= 2 x PyTorch's error in the same dtype (floored at one rounding); recorded."""
    err, torch_err = max_err(kernel_out, oracle), max_err(torch_lowp, oracle)
    floor = 0.5 * torch.finfo(kernel_out.dtype).eps * float(oracle.abs().max())
    measured.append({"op": op, "device": device, "dtype": str(dtype), "seed": seed, "kernel_err": err,
                     "torch_err": torch_err, "ratio": err / torch_err if torch_err else None})  # fmt: skip
    assert err <= max(2 * torch_err, floor), f"{op} {dtype} seed={seed}: error {err:.3g} > 2 x torch {torch_err:.3g}"


def sample_grid(sx, sy, height, width):
    return torch.stack([2 * sx / (width - 1) - 1, 2 * sy / (height - 1) - 1], dim=-1)


def pixel_coords(device):
    return torch.meshgrid(torch.arange(H, device=device), torch.arange(W, device=device), indexing="ij")


def camera_case(seed, device):
    gen = generator(seed, device)
    depth = torch.rand(N, 1, H, W, generator=gen, device=device) * 6 + 2
    k = torch.tensor([[40.0, 0, 26.3], [0, 41.0, 18.2], [0, 0, 1]], device=device).repeat(N, 1, 1)
    pose = torch.eye(4, device=device).repeat(N, 1, 1)
    angle = torch.rand(N, generator=gen, device=device) * 0.1 - 0.05
    pose[:, 0, 0], pose[:, 0, 2], pose[:, 2, 0], pose[:, 2, 2] = angle.cos(), angle.sin(), -angle.sin(), angle.cos()
    pose[:, :3, 3] = torch.rand(N, 3, generator=gen, device=device) - 0.5
    prev_depth = depth.flip(-1) * (1 + 0.01 * torch.rand(N, 1, H, W, generator=gen, device=device))
    return depth, k, pose, prev_depth


def fuse_case(seed, dtype, device):
    a = strided(fresh((N, C, H, W), seed, device, dtype=dtype))
    b = fresh((N, 2 * C, H, W), seed + 1, device, dtype=dtype)[:, ::2]  # channel stride 2
    mask = (torch.rand(N, 1, H, W, generator=generator(seed + 2, device), device=device) > 0.93).float()
    mask[0] = 0.0  # one item without foreground: zero shift, blend = b
    return a, b, mask
