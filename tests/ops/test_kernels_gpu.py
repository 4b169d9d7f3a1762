"""The CUDA kernels against their torch references, on a GPU (skipped without CUDA and cupy).

Every test draws fresh random inputs (the seed is in the failure message), with odd sizes and
non-contiguous strides, poisons the outputs first (NaN, or two different byte patterns for uint8)
to prove every element is written, and bounds the kernel's error against a float64 oracle (the
reference on float64 inputs) by twice PyTorch's own error for the same computation in the same
low-precision dtype (its eager composition in that dtype), floored at one rounding of the largest
value (no result stored in that dtype can do better).

Measured worst cases of error / (PyTorch's error) are written beside each bound. Set
SIMHARMON_GPU_REPORT=path.json to write every measurement of a run.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F

from simharmon.ops import (
    kernels_available,
    masked_blend,
    mean_shift,
    pack,
    reproject,
    reproject_warp,
    temporal_blend,
    unpack,
    warp,
)
from simharmon.ops.fuse import _band, launch_blend, launch_mean_shift, launch_temporal_blend
from simharmon.ops.pack import LAYOUTS, launch_pack, launch_unpack, pack_reference, unpack_reference
from simharmon.ops.reproject import (
    launch_reproject,
    launch_reproject_warp,
    reproject_reference,
    reproject_warp_reference,
)
from simharmon.ops.warp import launch_warp, warp_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (torch.cuda.is_available() and kernels_available()), reason="needs a CUDA device and cupy"),
]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
N, C, H, W = 3, 5, 37, 53  # odd sizes: partial blocks and tiles everywhere
DEVICE = "cuda"
MEASURED = []


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    path = os.environ.get("SIMHARMON_GPU_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump({"device": torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE, "torch": torch.__version__, "cases": MEASURED}, fh,
                      indent=1)


def fresh(shape, seed, scale=1.0, dtype=torch.float32):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    return (torch.randn(shape, generator=gen, device=DEVICE) * scale).to(dtype)


def new_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


def strided(t: torch.Tensor) -> torch.Tensor:
    """The same values with transposed H/W strides (not contiguous)."""
    view = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not view.is_contiguous() and torch.equal(view, t)
    return view


def poisoned(shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)


def max_err(x: torch.Tensor, oracle: torch.Tensor) -> float:
    return float((x.double() - oracle.double()).abs().max())


def check_bound(op, dtype, seed, kernel_out, oracle, torch_lowp):
    """kernel error <= 2 x PyTorch's error in the same dtype (floored at one rounding); recorded."""
    err, torch_err = max_err(kernel_out, oracle), max_err(torch_lowp, oracle)
    floor = 0.5 * torch.finfo(kernel_out.dtype).eps * float(oracle.abs().max())
    MEASURED.append({"op": op, "dtype": str(dtype), "seed": seed, "kernel_err": err, "torch_err": torch_err,
                     "ratio": err / torch_err if torch_err else None})
    assert err <= max(2 * torch_err, floor), f"{op} {dtype} seed={seed}: error {err:.3g} > 2 x torch {torch_err:.3g}"


def assert_written(out: torch.Tensor, op: str, seed: int):
    assert not torch.isnan(out).any(), f"{op} seed={seed}: some outputs were never written"


def sample_grid(sx, sy, height, width):
    return torch.stack([2 * sx / (width - 1) - 1, 2 * sy / (height - 1) - 1], dim=-1)


# Worst case of kernel_err / torch_err measured on the H100 (tolerance: 2):
# warp: not yet measured: needs GPU
@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_warp(dtype, padding):
    seed = new_seed()
    image = strided(fresh((N, C, H, W), seed, dtype=dtype))
    flow = strided(fresh((N, 2, H, W), seed + 1, scale=6.0))
    out, valid = poisoned((N, C, H, W), dtype), poisoned((N, 1, H, W), torch.float32)
    launch_warp(image, flow, padding, out, valid)
    assert_written(out, "warp", seed)
    assert_written(valid, "warp valid", seed)
    oracle, oracle_valid = warp_reference(image.double(), flow.double(), padding)
    ys, xs = torch.meshgrid(torch.arange(H, device=DEVICE), torch.arange(W, device=DEVICE), indexing="ij")
    grid = sample_grid(xs + flow[:, 0], ys + flow[:, 1], H, W).to(dtype)
    torch_lowp = F.grid_sample(image, grid, padding_mode=padding, align_corners=True)
    check_bound("warp", dtype, seed, out, oracle, torch_lowp)
    assert max_err(valid, oracle_valid) <= 1e-5  # fp32 sample positions (~4e-6 px at x = 52)
    # same fp32 arithmetic as the torch reference on this device: expected bit-identical, 1 ulp of slack
    torch.testing.assert_close(out, warp_reference(image, flow, padding)[0], rtol=torch.finfo(dtype).eps, atol=1e-6)
    assert torch.equal(warp(image, flow, padding)[0], out)  # the public op takes the kernel path


def camera_case(seed):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    depth = torch.rand(N, 1, H, W, generator=gen, device=DEVICE) * 6 + 2
    k = torch.tensor([[40.0, 0, 26.3], [0, 41.0, 18.2], [0, 0, 1]], device=DEVICE).repeat(N, 1, 1)
    pose = torch.eye(4, device=DEVICE).repeat(N, 1, 1)
    angle = torch.rand(N, generator=gen, device=DEVICE) * 0.1 - 0.05
    pose[:, 0, 0], pose[:, 0, 2], pose[:, 2, 0], pose[:, 2, 2] = angle.cos(), angle.sin(), -angle.sin(), angle.cos()
    pose[:, :3, 3] = torch.rand(N, 3, generator=gen, device=DEVICE) - 0.5
    prev_depth = depth.flip(-1) * (1 + 0.01 * torch.rand(N, 1, H, W, generator=gen, device=DEVICE))
    return depth, k, pose, prev_depth


# reproject (flow, fp32): not yet measured: needs GPU
def test_reproject():
    seed = new_seed()
    depth, k, pose, prev_depth = camera_case(seed)
    flow, valid = poisoned((N, 2, H, W), torch.float32), poisoned((N, 1, H, W), torch.float32)
    launch_reproject(strided(depth), k, pose, prev_depth, None, 0.05, flow, valid)
    assert_written(flow, "reproject", seed)
    assert_written(valid, "reproject valid", seed)
    oracle_flow, oracle_valid = reproject_reference(depth.double(), k.double(), pose.double(), prev_depth.double(),
                                                    rel_tol=0.05)
    torch_flow, torch_valid = reproject_reference(depth, k, pose, prev_depth, rel_tol=0.05)  # torch in fp32
    agree = (valid > 0) == (oracle_valid > 0)
    torch_agree = (torch_valid > 0) == (oracle_valid > 0)
    both = (agree & torch_agree).expand(N, 2, H, W)
    check_bound("reproject", torch.float32, seed, flow[both], oracle_flow[both], torch_flow[both])
    # discrete decisions may flip only where fp32 rounding straddles a threshold, as often as torch's do
    assert int((~agree).sum()) <= 2 * int((~torch_agree).sum()) + 2, f"seed={seed}"
    assert torch.equal(reproject(depth, k, pose, prev_depth, rel_tol=0.05)[0], flow)


# reproject_warp: not yet measured: needs GPU
@pytest.mark.parametrize("dtype", DTYPES)
def test_reproject_warp(dtype):
    seed = new_seed()
    depth, k, pose, prev_depth = camera_case(seed)
    source = strided(fresh((N, C, H, W), seed + 2, dtype=dtype))
    out, valid = poisoned((N, C, H, W), dtype), poisoned((N, 1, H, W), torch.float32)
    launch_reproject_warp(source, depth, k, pose, prev_depth, None, 0.05, "border", out, valid)
    assert_written(out, "reproject_warp", seed)
    assert_written(valid, "reproject_warp valid", seed)
    oracle, _ = reproject_warp_reference(source.double(), depth.double(), k.double(), pose.double(),
                                         prev_depth.double(), rel_tol=0.05, padding="border")
    flow, _ = reproject_reference(depth, k, pose)
    ys, xs = torch.meshgrid(torch.arange(H, device=DEVICE), torch.arange(W, device=DEVICE), indexing="ij")
    grid = sample_grid(xs + flow[:, 0], ys + flow[:, 1], H, W).to(dtype)
    torch_lowp = F.grid_sample(source, grid, padding_mode="border", align_corners=True)
    check_bound("reproject_warp", dtype, seed, out, oracle, torch_lowp)


def fuse_case(seed, dtype):
    a = strided(fresh((N, C, H, W), seed, dtype=dtype))
    b = fresh((N, 2 * C, H, W), seed + 1, dtype=dtype)[:, ::2]  # channel stride 2
    gen = torch.Generator(device=DEVICE).manual_seed(seed + 2)
    mask = (torch.rand(N, 1, H, W, generator=gen, device=DEVICE) > 0.93).float()
    mask[0] = 0.0  # one item without foreground: zero shift, blend = b
    return a, b, mask


# masked_blend: not yet measured: needs GPU
@pytest.mark.parametrize("band", [0, 3, 32])
@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_blend(dtype, band):
    seed = new_seed()
    a, b, mask = fuse_case(seed, dtype)
    out = poisoned((N, C, H, W), dtype)
    launch_blend(a, b, mask, band, out)
    assert_written(out, "masked_blend", seed)
    w = _band(mask, band)
    oracle = w.double() * a.double() + (1 - w.double()) * b.double()
    w_lowp = w.to(dtype)
    check_bound("masked_blend", dtype, seed, out, oracle, w_lowp * a + (1 - w_lowp) * b)
    assert torch.equal(out[0], b[0])  # empty mask: exactly b
    torch.testing.assert_close(out, masked_blend(a, b, mask, band), rtol=0, atol=0)


# mean_shift: not yet measured: needs GPU
@pytest.mark.parametrize("dtype", DTYPES)
def test_mean_shift(dtype):
    seed = new_seed()
    a, b, mask = fuse_case(seed, dtype)
    out = poisoned((N, C, H, W), dtype)
    launch_mean_shift(a, b, mask, out)
    assert_written(out, "mean_shift", seed)
    m = mask.double()
    oracle = a.double() + ((1 - m) * b.double()).sum((2, 3), keepdim=True) / (1 - m).sum((2, 3), keepdim=True) \
        - (m * a.double()).sum((2, 3), keepdim=True) / m.sum((2, 3), keepdim=True).clamp_min(1e-300)
    oracle[0] = a[0].double()  # no foreground: no shift
    ml = mask.to(dtype)
    torch_lowp = a + ((1 - ml) * b).sum((2, 3), keepdim=True) / (1 - ml).sum((2, 3), keepdim=True) \
        - (ml * a).sum((2, 3), keepdim=True) / ml.sum((2, 3), keepdim=True)
    torch_lowp[0] = a[0]
    check_bound("mean_shift", dtype, seed, out, oracle, torch_lowp)
    assert torch.equal(mean_shift(a, b, mask), out)


# temporal_blend: not yet measured: needs GPU
@pytest.mark.parametrize("dtype", DTYPES)
def test_temporal_blend(dtype):
    seed = new_seed()
    cur, hist, _ = fuse_case(seed, dtype)
    valid = torch.rand(N, 1, H, W, generator=torch.Generator(device=DEVICE).manual_seed(seed), device=DEVICE)
    out = poisoned((N, C, H, W), dtype)
    launch_temporal_blend(cur, hist, valid, 0.8, out)
    assert_written(out, "temporal_blend", seed)
    w = 0.8 * valid.double()
    oracle = (1 - w) * cur.double() + w * hist.double()
    w_lowp = (0.8 * valid).to(dtype)
    check_bound("temporal_blend", dtype, seed, out, oracle, (1 - w_lowp) * cur + w_lowp * hist)
    assert torch.equal(temporal_blend(cur, hist, valid, 0.8), out)


# pack: not yet measured: needs GPU
@pytest.mark.parametrize("layout", ["rgb", "bgra"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_pack(dtype, layout):
    seed = new_seed()
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    channels = LAYOUTS[layout][0]
    big = torch.randint(0, 256, (N, H + 2, W + 3, channels), generator=gen, device=DEVICE, dtype=torch.uint8)
    image = big[:, 1:-1, 2:-1]  # a crop: row stride (W + 3) * C
    out = poisoned((N, 3, H, W), dtype)
    launch_pack(image, layout, out)
    assert_written(out, "pack", seed)
    oracle = pack_reference(image.cpu(), layout, torch.float64).to(DEVICE)
    planes = image[..., list(LAYOUTS[layout][1])].permute(0, 3, 1, 2).to(dtype)
    check_bound("pack", dtype, seed, out, oracle, (planes / 255 - 0.5) / 0.5)
    # IEEE fp32 division as on the CPU: bit-identical to the CPU reference
    assert torch.equal(out.cpu(), pack_reference(image.cpu(), layout, dtype))
    assert torch.equal(pack(image, layout, dtype), out)


# unpack: exact (uint8 of the same fp32 arithmetic as the reference): not yet measured: needs GPU
@pytest.mark.parametrize("rounding", ["truncate", "nearest"])
@pytest.mark.parametrize("layout", ["rgb", "rgba", "bgra"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_unpack(dtype, layout, rounding):
    seed = new_seed()
    v = strided(fresh((N, 3, H, W), seed, scale=0.7, dtype=dtype))
    outs = []
    for poison in (0x00, 0xFF):
        out = torch.full((N, H, W, LAYOUTS[layout][0]), poison, dtype=torch.uint8, device=DEVICE)
        launch_unpack(v, layout, rounding, out)
        outs.append(out)
    assert torch.equal(outs[0], outs[1]), f"unpack seed={seed}: some outputs were never written"
    assert torch.equal(outs[0].cpu(), unpack_reference(v.cpu(), layout, rounding)), f"seed={seed}"
    oracle = unpack_reference(v.double(), layout, rounding)
    assert (outs[0].int() - oracle.int()).abs().max() <= 1
    assert torch.equal(unpack(v, layout, rounding), outs[0])


def pipeline(image, flow, mask, hwc, depth, k, pose):
    warped, valid = warp(image, flow, "border")
    fused = masked_blend(temporal_blend(pack(hwc, "bgra"), warped, valid), image, mask, 2)
    moved, valid2 = reproject_warp(mean_shift(fused, image, mask), depth, k, pose, depth)
    return unpack(temporal_blend(fused, moved, valid2), "rgb", "nearest"), reproject(depth, k, pose)[0]


def pipeline_inputs(seed):
    depth, k, pose, _ = camera_case(seed)
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    hwc = torch.randint(0, 256, (N, H, W, 4), generator=gen, device=DEVICE, dtype=torch.uint8)
    return (fresh((N, 3, H, W), seed), fresh((N, 2, H, W), seed + 1, 3.0), (fresh((N, 1, H, W), seed + 2) > 1).float(),
            hwc, depth, k, pose)


def test_no_host_sync_and_side_streams():
    args = pipeline_inputs(new_seed())
    expected = pipeline(*args)  # also compiles and loads every kernel
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            got = pipeline(*args)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    side.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_cuda_graph_capture_and_replay():
    args = pipeline_inputs(new_seed())
    pipeline(*args)  # warm-up: kernels compiled and loaded outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = pipeline(*args)
    fresh_args = pipeline_inputs(new_seed())
    for dst, src in zip(args, fresh_args):
        dst.copy_(src)
    graph.replay()
    torch.cuda.synchronize()
    expected = pipeline(*fresh_args)
    assert all(torch.equal(a, b) for a, b in zip(static_out, expected))


def test_torch_compile_fullgraph_on_cuda():
    args = pipeline_inputs(new_seed())
    compiled = torch.compile(pipeline, fullgraph=True)
    assert all(torch.equal(a, b) for a, b in zip(compiled(*args), pipeline(*args)))


def test_stream_options_on_cuda():
    """The runtime options through the kernels: zero flow changes nothing, the band keeps the input."""
    from simharmon.config import load_config
    from simharmon.io.pixels import frame_to_uint8_hwc
    from simharmon.models.enhancer import build_enhancer
    from simharmon.runtime.stream import StreamingEnhancer

    model = build_enhancer(load_config("tiny"), seed=0, device=DEVICE)
    base = dict(layout="per_frame", offsets=(1, 2), history="partial")

    def enhancer(**changes):
        return StreamingEnhancer(model, model.config.stream.__class__(**base, **changes))

    gen = torch.Generator(device=DEVICE).manual_seed(new_seed())
    frames = [torch.randint(0, 256, (1, 3, 32, 48), generator=gen, device=DEVICE).float() / 255 for _ in range(3)]
    plain, warped = enhancer(), enhancer(history_warp="flow")
    zero = torch.zeros(1, 2, 32, 48, device=DEVICE)
    for index, frame in enumerate(frames):
        assert torch.equal(plain.step(frame), warped.step(frame, flow=zero if index else None))
    mask = torch.zeros(1, 1, 32, 48, device=DEVICE)
    mask[..., 8:16, 8:20] = 1
    out = enhancer(region_pixel=True, region_pixel_band=4).step(frames[0], mask=mask)
    assert torch.equal(out[..., 24:, :], frames[0][..., 24:, :]) and torch.equal(out[..., 30:], frames[0][..., 30:])
    # uint8 boundary: pack's IEEE division may differ from torch's on-device x / 255 in the last bit
    hwc = (frames[1][0].permute(1, 2, 0) * 255).round().to(torch.uint8)
    fused = enhancer().step_uint8(hwc)
    reference = torch.from_numpy(frame_to_uint8_hwc(enhancer().step(frames[1])))[0].to(DEVICE)
    assert (fused.int() - reference.int()).abs().max() <= 1
