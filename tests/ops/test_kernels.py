"""Every CUDA kernel against its torch reference: on the CPU from its own source (the host build,
``kernels/host``; always, in CI) and on a GPU (``-m gpu``; skipped without CUDA and cupy).

Inputs and output checks are in kernel_cases.py (fresh random odd-sized non-contiguous inputs,
poisoned and guarded outputs, on the host two thread orders). The error of each kernel against a
float64 oracle (the reference on float64 inputs) is bounded by twice PyTorch's own error for the
same computation in the same low-precision dtype (its eager composition in that dtype), floored at
one rounding of the largest value (no result stored in that dtype can do better).

Where the host and the GPU can differ: the kernels use _rn intrinsics for every fp32 product and
sum, so neither nvcc nor the host compiler fuses them and fp32 results are the same on both. The
exception is mean_shift's float64 sums, which nvcc contracts into FMAs (the host build does not);
that moves the sums by ~1e-16 relative, and the fp32 shift by at most one rounding (bounded below).
Reductions run in the same order on both (the emulation runs the kernel's own tree).

Measured worst cases of kernel_err / torch_err are written beside each bound ("host": these cases on
the CPU, 30 fresh seeds each: ``python benchmarks/kernel_errors.py --device cpu --repeats 30`` ->
benchmarks/results/kernel-errors-cpu-2026-12-03.json; "H100": the GPU run, not yet made, no GPU was lent).
A ratio of 1.00 in fp32 means the kernel does the same fp32 operations as torch's composition. Set SIMHARMON_KERNEL_REPORT=path.json
(or SIMHARMON_GPU_REPORT) to write every measurement of a run.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F
from kernel_cases import (  # tests/ops, on sys.path
    DEVICES,
    DTYPES,
    C,
    H,
    N,
    W,
    camera_case,
    check_bound,
    fresh,
    fuse_case,
    generator,
    guards_intact,
    max_err,
    new_seed,
    pixel_coords,
    poisoned,
    run_launch,
    sample_grid,
    strided,
)

from simharmon.ops import _host, masked_blend, mean_shift, pack, reproject, reproject_warp, temporal_blend, unpack, warp
from simharmon.ops._sources import kernel_modules, kernel_names
from simharmon.ops.fuse import _band, launch_blend, launch_mean_shift, launch_temporal_blend
from simharmon.ops.pack import LAYOUTS, launch_pack, launch_unpack, pack_reference, unpack_reference
from simharmon.ops.reproject import (
    launch_reproject,
    launch_reproject_warp,
    reproject_reference,
    reproject_warp_reference,
)
from simharmon.ops.warp import launch_warp, warp_reference

MEASURED = []


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    path = os.environ.get("SIMHARMON_KERNEL_REPORT") or os.environ.get("SIMHARMON_GPU_REPORT")
    if path:
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        with open(path, "w") as fh:
            json.dump({"gpu": gpu, "torch": torch.__version__, "cases": MEASURED}, fh, indent=1)


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


# warp: worst kernel_err / torch_err (tolerance 2): host fp32 1.01, fp16 0.010, bf16 0.017; H100: not yet measured
@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_warp(device, dtype, padding):
    seed = new_seed()
    image = strided(fresh((N, C, H, W), seed, device, dtype=dtype))
    flow = strided(fresh((N, 2, H, W), seed + 1, device, scale=6.0))
    out, valid = poisoned((N, C, H, W), dtype, device), poisoned((N, 1, H, W), torch.float32, device)
    run_launch(device, launch_warp, (image, flow, padding), [out, valid], "warp", seed)
    oracle, oracle_valid = warp_reference(image.double(), flow.double(), padding)
    ys, xs = pixel_coords(device)
    grid = sample_grid(xs + flow[:, 0], ys + flow[:, 1], H, W).to(dtype)
    torch_lowp = F.grid_sample(image, grid, padding_mode=padding, align_corners=True)
    check_bound(MEASURED, "warp", device, dtype, seed, out, oracle, torch_lowp)
    assert max_err(valid, oracle_valid) <= 1e-5  # fp32 sample positions (~4e-6 px at x = 52)
    # the same fp32 operations in the same order as the reference: bit-identical on the host (measured);
    # on a GPU against torch's CUDA ops, expected bit-identical, with the GPU test's 1 ulp of slack
    reference, reference_valid = warp_reference(image, flow, padding)
    if device == "cpu":
        assert torch.equal(out, reference) and torch.equal(valid, reference_valid), f"seed={seed}"
    else:
        torch.testing.assert_close(out, reference, rtol=torch.finfo(dtype).eps, atol=1e-6)
    assert torch.equal(warp(image, flow, padding)[0], out)  # the public op (GPU: the kernel path)


# reproject (flow, fp32): worst kernel_err / torch_err: host 1.00 (bit-identical to torch); H100: not yet measured
def test_reproject(device):
    seed = new_seed()
    depth, k, pose, prev_depth = camera_case(seed, device)
    flow, valid = poisoned((N, 2, H, W), torch.float32, device), poisoned((N, 1, H, W), torch.float32, device)
    run_launch(device, launch_reproject, (strided(depth), k, pose, prev_depth, None, 0.05), [flow, valid],
               "reproject", seed)
    oracle_flow, oracle_valid = reproject_reference(depth.double(), k.double(), pose.double(), prev_depth.double(),
                                                    rel_tol=0.05)
    torch_flow, torch_valid = reproject_reference(depth, k, pose, prev_depth, rel_tol=0.05)  # torch in fp32
    agree = (valid > 0) == (oracle_valid > 0)
    torch_agree = (torch_valid > 0) == (oracle_valid > 0)
    both = (agree & torch_agree).expand(N, 2, H, W)
    check_bound(MEASURED, "reproject", device, torch.float32, seed, flow[both], oracle_flow[both], torch_flow[both])
    # discrete decisions may flip only where fp32 rounding straddles a threshold, as often as torch's do
    assert int((~agree).sum()) <= 2 * int((~torch_agree).sum()) + 2, f"seed={seed}"
    assert torch.equal(reproject(depth, k, pose, prev_depth, rel_tol=0.05)[0], flow)
    assert torch.equal(reproject(depth, k, pose, prev_depth, rel_tol=0.05)[1], valid)


# reproject_warp: worst kernel_err / torch_err: host fp32 1.09, fp16 0.010, bf16 0.010; H100: not yet measured
@pytest.mark.parametrize("dtype", DTYPES)
def test_reproject_warp(device, dtype):
    seed = new_seed()
    depth, k, pose, prev_depth = camera_case(seed, device)
    source = strided(fresh((N, C, H, W), seed + 2, device, dtype=dtype))
    out, valid = poisoned((N, C, H, W), dtype, device), poisoned((N, 1, H, W), torch.float32, device)
    run_launch(device, launch_reproject_warp, (source, depth, k, pose, prev_depth, None, 0.05, "border"),
               [out, valid], "reproject_warp", seed)
    oracle, _ = reproject_warp_reference(source.double(), depth.double(), k.double(), pose.double(),
                                         prev_depth.double(), rel_tol=0.05, padding="border")
    flow, _ = reproject_reference(depth, k, pose)
    ys, xs = pixel_coords(device)
    grid = sample_grid(xs + flow[:, 0], ys + flow[:, 1], H, W).to(dtype)
    torch_lowp = F.grid_sample(source, grid, padding_mode="border", align_corners=True)
    check_bound(MEASURED, "reproject_warp", device, dtype, seed, out, oracle, torch_lowp)
    public = reproject_warp(source, depth, k, pose, prev_depth, rel_tol=0.05, padding="border")
    assert torch.equal(public[0], out) and torch.equal(public[1], valid), f"seed={seed}"


# masked_blend: worst kernel_err / torch_err: host fp32 1.00, fp16 0.78, bf16 0.69; H100: not yet measured
@pytest.mark.parametrize("band", [0, 3, 32])
@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_blend(device, dtype, band):
    seed = new_seed()
    a, b, mask = fuse_case(seed, dtype, device)
    out = poisoned((N, C, H, W), dtype, device)
    run_launch(device, launch_blend, (a, b, mask, band), [out], "masked_blend", seed)
    w = _band(mask, band)
    oracle = w.double() * a.double() + (1 - w.double()) * b.double()
    w_lowp = w.to(dtype)
    check_bound(MEASURED, "masked_blend", device, dtype, seed, out, oracle, w_lowp * a + (1 - w_lowp) * b)
    assert torch.equal(out[0], b[0])  # empty mask: exactly b
    assert torch.equal(masked_blend(a, b, mask, band), out), f"seed={seed}"  # host: bit-identical to the reference


# mean_shift: worst kernel_err / torch_err: host fp32 1.00, fp16 1.00, bf16 1.00; H100: not yet measured
@pytest.mark.parametrize("dtype", DTYPES)
def test_mean_shift(device, dtype):
    seed = new_seed()
    a, b, mask = fuse_case(seed, dtype, device)
    out = poisoned((N, C, H, W), dtype, device)
    run_launch(device, launch_mean_shift, (a, b, mask), [out], "mean_shift", seed)
    m = mask.double()
    oracle = a.double() + ((1 - m) * b.double()).sum((2, 3), keepdim=True) / (1 - m).sum((2, 3), keepdim=True) \
        - (m * a.double()).sum((2, 3), keepdim=True) / m.sum((2, 3), keepdim=True).clamp_min(1e-300)
    oracle[0] = a[0].double()  # no foreground: no shift
    ml = mask.to(dtype)
    torch_lowp = a + ((1 - ml) * b).sum((2, 3), keepdim=True) / (1 - ml).sum((2, 3), keepdim=True) \
        - (ml * a).sum((2, 3), keepdim=True) / ml.sum((2, 3), keepdim=True)
    torch_lowp[0] = a[0]
    check_bound(MEASURED, "mean_shift", device, dtype, seed, out, oracle, torch_lowp)
    public = mean_shift(a, b, mask)
    if device == "cuda":
        assert torch.equal(public, out)
    else:
        # the CPU reference sums in another order (torch's fp64 sum vs the kernel's per-thread strides,
        # warp tree and warps in order): the fp64 means agree to ~1e-16, so the fp32 shift can differ
        # by one rounding, and a + shift by one rounding of the result (measured on the host: 0, i.e.
        # bit-identical, over 30 seeds per dtype)
        eps = torch.finfo(dtype).eps
        assert max_err(public, out) <= eps * float(out.double().abs().max()), f"seed={seed}"


# temporal_blend: worst kernel_err / torch_err: host fp32 1.00, fp16 0.77, bf16 0.49; H100: not yet measured
@pytest.mark.parametrize("dtype", DTYPES)
def test_temporal_blend(device, dtype):
    seed = new_seed()
    cur, hist, _ = fuse_case(seed, dtype, device)
    valid = torch.rand(N, 1, H, W, generator=generator(seed, device), device=device)
    out = poisoned((N, C, H, W), dtype, device)
    run_launch(device, launch_temporal_blend, (cur, hist, valid, 0.8), [out], "temporal_blend", seed)
    w = 0.8 * valid.double()
    oracle = (1 - w) * cur.double() + w * hist.double()
    w_lowp = (0.8 * valid).to(dtype)
    check_bound(MEASURED, "temporal_blend", device, dtype, seed, out, oracle, (1 - w_lowp) * cur + w_lowp * hist)
    assert torch.equal(temporal_blend(cur, hist, valid, 0.8), out), f"seed={seed}"


# pack: worst kernel_err / torch_err: host fp32 1.00, fp16 0.50, bf16 0.50 (bit-identical to the CPU reference);
# H100: not yet measured
@pytest.mark.parametrize("layout", ["rgb", "bgra"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_pack(device, dtype, layout):
    seed = new_seed()
    channels = LAYOUTS[layout][0]
    big = torch.randint(0, 256, (N, H + 2, W + 3, channels), generator=generator(seed, device), device=device,
                        dtype=torch.uint8)
    image = big[:, 1:-1, 2:-1]  # a crop: row stride (W + 3) * C; bgra takes the 32-bit word loads
    out = poisoned((N, 3, H, W), dtype, device)
    run_launch(device, launch_pack, (image, layout), [out], "pack", seed)
    oracle = pack_reference(image.cpu(), layout, torch.float64).to(device)
    planes = image[..., list(LAYOUTS[layout][1])].permute(0, 3, 1, 2).to(dtype)
    check_bound(MEASURED, "pack", device, dtype, seed, out, oracle, (planes / 255 - 0.5) / 0.5)
    # IEEE fp32 division as on the CPU: bit-identical to the CPU reference
    assert torch.equal(out.cpu(), pack_reference(image.cpu(), layout, dtype))
    assert torch.equal(pack(image, layout, dtype), out)


# unpack: exact (uint8 of the same fp32 arithmetic as the reference) on the host; H100: not yet measured
@pytest.mark.parametrize("rounding", ["truncate", "nearest"])
@pytest.mark.parametrize("layout", ["rgb", "rgba", "bgra"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_unpack(device, dtype, layout, rounding):
    seed = new_seed()
    v = strided(fresh((N, 3, H, W), seed, device, scale=0.7, dtype=dtype))
    v[0, 0, 0, :3] = torch.tensor([float("nan"), 5.0, -5.0], dtype=dtype)  # NaN -> 0, clamping
    outs = []
    for poison, order in ((0x00, "forward"), (0xFF, "reverse")):  # the order matters on the host only
        out = poisoned((N, H, W, LAYOUTS[layout][0]), torch.uint8, device, fill=poison)
        with _host.launch_options(order=order):
            launch_unpack(v, layout, rounding, out)
        assert guards_intact(out, poison), f"unpack seed={seed}: a write landed outside the output"
        outs.append(out)
    assert torch.equal(outs[0], outs[1]), f"unpack seed={seed}: some outputs were never written (or a race)"
    assert torch.equal(outs[0].cpu(), unpack_reference(v.cpu(), layout, rounding)), f"seed={seed}"
    oracle = unpack_reference(v.double(), layout, rounding)
    assert (outs[0].int() - oracle.int()).abs().max() <= 1
    assert torch.equal(unpack(v, layout, rounding), outs[0])


def test_every_kernel_runs_on_the_host(monkeypatch):
    """Each kernel of kernels/*.cu, per dtype, is reached by a launcher above (a new kernel needs a test),
    and each launcher's argument list matches its kernel's parameters (the host launch checks kinds and widths)."""
    if not _host.host_kernels_available() and os.environ.get("CI") != "true":
        pytest.skip("no C++ compiler for the host build of the kernels")
    launched = set()
    real_launch = _host.launch

    def spy(module, name, *args, **kwargs):
        launched.add(name)
        return real_launch(module, name, *args, **kwargs)

    monkeypatch.setattr(_host, "launch", spy)
    depth, k, pose, prev = camera_case(1, "cpu")
    valid = torch.rand(N, 1, H, W)
    for dtype in DTYPES:
        x = fresh((N, C, H, W), 2, "cpu", dtype=dtype)
        launch_warp(x, torch.zeros(N, 2, H, W), "zeros", torch.empty_like(x), torch.empty(N, 1, H, W))
        launch_reproject_warp(x, depth, k, pose, prev, None, 0.05, "zeros", torch.empty_like(x), torch.empty_like(valid))
        launch_blend(x, x, valid, 2, torch.empty_like(x))
        launch_mean_shift(x, x, valid, torch.empty_like(x))
        launch_temporal_blend(x, x, valid, 0.5, torch.empty_like(x))
        launch_pack(torch.zeros(N, H, W, 4, dtype=torch.uint8), "rgba", torch.empty(N, 3, H, W, dtype=dtype))
        launch_unpack(x[:, :3], "rgb", "nearest", torch.empty(N, H, W, 3, dtype=torch.uint8))
    launch_reproject(depth, k, pose, prev, None, 0.05, torch.empty(N, 2, H, W), torch.empty_like(valid))
    assert launched == {name for module in kernel_modules() for name in kernel_names(module)}
