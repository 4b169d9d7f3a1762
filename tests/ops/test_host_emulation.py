"""The host emulation of CUDA (kernels/host/cuda_host.hpp) on kernels written to test it.

The kernels are in tests/ops/host_emulation/emulation.cu: shuffles, block votes and shared memory
against their definitions, in every thread order; the storage conversions of common.cuh against
torch's (round to nearest even, NaN); and broken kernels and launches that must be rejected with
a message, not run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from kernel_cases import host_skip  # tests/ops, on sys.path

from simharmon.ops import _cuda, _host

FOLDER = Path(__file__).resolve().parent / "host_emulation"
ORDERS = ("forward", "reverse", "shuffled")

pytestmark = host_skip()


def run(name, grid, block, args, shared_mem=0, order="forward"):
    with _host.launch_options(order=order, seed=11):
        _host.launch("emulation", name, grid, block, args, shared_mem, folder=FOLDER)


@pytest.mark.parametrize("order", ORDERS)
def test_shuffles_follow_their_definitions(order):
    out = torch.full((2 * 64 * 5,), -7, dtype=torch.int32)
    run("shuffles", (2,), (64,), (_cuda.ptr(out),), order=order)
    got = out.view(2, 64, 5)
    v = [t * t for t in range(64)]
    for t in range(64):
        warp, lane = t // 32, t % 32
        same_warp = [v[warp * 32 + i] for i in range(32)]
        down = same_warp[lane + 3] if lane + 3 < 32 else v[t]
        up = same_warp[lane - 5] if lane >= 5 else v[t]
        expected = [down, up, same_warp[lane ^ 9], same_warp[(t * 7) & 31], sum(same_warp) if lane == 0 else -1]
        for block in range(2):
            assert got[block, t].tolist() == expected, f"thread {t} of block {block} ({order})"


@pytest.mark.parametrize("k", [1, 2, 3, 64, 65])
def test_block_votes(k):
    out = torch.full((3 * 3,), -7, dtype=torch.int32)
    run("votes", (3,), (16, 4), (_cuda.ptr(out), _cuda.i32(k)), order="reverse")
    count = (64 + k - 1) // k
    assert out.view(3, 3).tolist() == [[1, int(k == 1), count]] * 3


@pytest.mark.parametrize("order", ORDERS)
def test_a_barrier_orders_shared_memory(order):
    x = torch.randn(3 * 96)
    out = torch.full_like(x, float("nan"))
    run("reverse_block", (3,), (96,), (_cuda.ptr(x), _cuda.ptr(out), _cuda.i32(1)), shared_mem=96 * 4, order=order)
    assert torch.equal(out, x.view(3, 96).flip(1).reshape(-1))


def test_a_missing_barrier_shows_as_a_race():
    """Without the barrier, which values a thread reads depends on the order: poison in both."""
    x = torch.randn(96)
    results = []
    for order in ("forward", "reverse"):
        out = torch.zeros_like(x)
        run("reverse_block", (1,), (96,), (_cuda.ptr(x), _cuda.ptr(out), _cuda.i32(0)), shared_mem=96 * 4, order=order)
        results.append(out)
    forward, reverse = results
    assert torch.isnan(forward[:48]).all() and torch.equal(forward[48:], x.flip(0)[48:])
    assert torch.isnan(reverse[48:]).all() and torch.equal(reverse[:48], x.flip(0)[:48])


def test_unwritten_dynamic_shared_memory_reads_as_nan():
    out = torch.zeros(64)
    run("read_unwritten_shared", (1,), (64,), (_cuda.ptr(out),), shared_mem=64 * 4)
    assert torch.isnan(out).all()


def test_a_barrier_that_not_every_thread_reaches_is_reported():
    out = torch.zeros(64, dtype=torch.int32)
    with pytest.raises(_host.HostKernelError, match=r"divergent_barrier: block \(0, 0, 0\): deadlock: 32 threads wait "
                                                    r"at a block barrier, 0 at a warp barrier, 32 have exited"):
        run("divergent_barrier", (1,), (64,), (_cuda.ptr(out),))


def test_a_shuffle_mask_must_hold_every_calling_lane():
    out = torch.zeros(32, dtype=torch.int32)
    with pytest.raises(_host.HostKernelError, match="mask 0x0000ffff that omits the calling lane 31"):
        run("bad_mask", (1,), (32,), (_cuda.ptr(out),), order="reverse")
    with pytest.raises(_host.HostKernelError, match=r"thread \(15, 0, 0\): shuffle reads lane 16, which is not in"):
        run("bad_mask", (1,), (32,), (_cuda.ptr(out),), order="forward")  # lanes 0-15 pass the barrier first


def test_launch_arguments_must_match_the_kernel():
    out = torch.zeros(64, dtype=torch.int32)
    with pytest.raises(_host.HostKernelError, match=r"votes: argument 1 must be i4 .*got i8"):
        run("votes", (1,), (64,), (_cuda.ptr(out), _cuda.i64(3)))
    with pytest.raises(_host.HostKernelError, match=r"votes: argument 0 must be p8 .*got i4"):
        run("votes", (1,), (64,), (_cuda.i32(0), _cuda.i32(3)))
    with pytest.raises(_host.HostKernelError, match="votes: takes 2 arguments, got 1"):
        run("votes", (1,), (64,), (_cuda.ptr(out),))
    with pytest.raises(_host.HostKernelError, match="has no kernel 'vote'"):
        run("vote", (1,), (64,), (_cuda.ptr(out), _cuda.i32(3)))


def test_launch_limits_of_the_hardware():
    x = torch.zeros(2048)
    with pytest.raises(_host.HostKernelError, match=r"block size 1025 is outside \[1, 1024\]"):
        run("read_unwritten_shared", (1,), (1025,), (_cuda.ptr(x),))
    with pytest.raises(_host.HostKernelError, match="exceeds the 48 KiB"):
        run("read_unwritten_shared", (1,), (32,), (_cuda.ptr(x),), shared_mem=48 * 1024 + 4)
    with pytest.raises(_host.HostKernelError, match="declares no extern __shared__"):
        args = [_cuda.ptr(x), *[_cuda.i64(1)] * 4, _cuda.ptr(x), _cuda.ptr(x), _cuda.ptr(x), *[_cuda.i32(1)] * 5]
        _host.launch("warp", "warp_f32", (1,), (32,), args, shared_mem=16)


def test_widening_every_16_bit_pattern():
    out_h, out_b = torch.zeros(65536), torch.zeros(65536)
    run("widen_all", (256,), (256,), (_cuda.ptr(out_h), _cuda.ptr(out_b)))
    bits = torch.arange(65536, dtype=torch.int32).to(torch.int16)
    for got, dtype in ((out_h, torch.float16), (out_b, torch.bfloat16)):
        want = bits.view(dtype).float()
        nan = torch.isnan(want)
        assert torch.equal(torch.isnan(got), nan), dtype
        assert torch.equal(got[~nan].view(torch.int32), want[~nan].view(torch.int32)), dtype  # -0.0 included


def narrowing_inputs() -> torch.Tensor:
    """float32 values where rounding to 16 bits is hard: every 16-bit value, the midpoints between
    neighbours (ties), one fp32 ulp either side of them, the overflow and subnormal edges, NaNs."""
    halves = torch.arange(65536, dtype=torch.int32).to(torch.int16)
    values = []
    for dtype in (torch.float16, torch.bfloat16):
        v = halves.view(dtype).float()
        v = v[torch.isfinite(v)].unique()
        mid = (v[:-1].double() + v[1:].double()) / 2
        mid32 = mid.float()  # exact: a midpoint of 16-bit neighbours has few enough bits
        assert torch.equal(mid32.double(), mid)
        bits = mid32.view(torch.int32)
        values += [v, mid32, (bits + 1).view(torch.float32), (bits - 1).view(torch.float32)]
    gen = torch.Generator().manual_seed(0)
    random_bits = torch.randint(-(2**31), 2**31 - 1, (1 << 20,), generator=gen, dtype=torch.int64).to(torch.int32)
    specials = torch.tensor([0.0, -0.0, 65504.0, 65519.99609375, 65520.0, 65536.0, 2.0**-24, 2.0**-25,
                             2.0**-25 * 1.0000001, 2.0**-14, float("inf"), -float("inf")])
    nans = torch.tensor([0x7FC00000, 0x7F800001, -0x00400000, 0x7FFFFFFF], dtype=torch.int64).to(torch.int32)
    return torch.cat(values + [random_bits.view(torch.float32), specials, nans.view(torch.float32)])


def test_narrowing_rounds_to_nearest_even_like_the_hardware():
    x = narrowing_inputs()
    n = x.numel()
    h = torch.zeros(n, dtype=torch.int16)
    b = torch.zeros(n, dtype=torch.int16)
    back_h, back_b = torch.zeros(n), torch.zeros(n)
    run("convert", (_cuda.blocks(n),), (256,), (_cuda.ptr(x), _cuda.ptr(h), _cuda.ptr(b), _cuda.ptr(back_h),
                                                _cuda.ptr(back_b), _cuda.i64(n)))
    nan = torch.isnan(x)
    for got, dtype in ((h, torch.float16), (b, torch.bfloat16)):
        want = x.to(dtype).view(torch.int16)  # torch: round to nearest even
        diff = (got != want) & ~nan
        assert not diff.any(), f"{dtype}: {x[diff][:5].tolist()} -> {got[diff][:5].tolist()}, torch {want[diff][:5].tolist()}"
        assert torch.isnan(got.view(dtype)[nan]).all()
    # cvt.rn.f16.f32 gives the canonical NaN for every NaN input (so does cuda_fp16's host path)
    assert (h[nan].int() & 0xFFFF == 0x7FFF).all()
    # bf16 keeps the sign and the top payload bits, quieted (as the kernel's own code says)
    u = x[nan].view(torch.int32).numpy().astype(np.uint32)
    assert np.array_equal(b[nan].numpy().astype(np.uint16), ((u >> 16) | 0x40).astype(np.uint16))
    assert torch.equal(back_h[~nan], x[~nan].to(torch.float16).float())
    assert torch.equal(back_b[~nan], x[~nan].to(torch.bfloat16).float())
