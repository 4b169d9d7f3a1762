"""The kernels on a GPU as the runtime uses them: no host sync, side streams, CUDA-graph capture,
torch.compile, the stream options (skipped without CUDA and cupy).

Each kernel against its reference, on the GPU and on the CPU host build, is in test_kernels.py.
"""

from __future__ import annotations

import pytest
import torch
from kernel_cases import GPU, H, N, W, camera_case, fresh, new_seed  # tests/ops, on sys.path

from simharmon.ops import masked_blend, mean_shift, pack, reproject, reproject_warp, temporal_blend, unpack, warp

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not GPU, reason="needs a CUDA device and cupy")]

DEVICE = "cuda"


def pipeline(image, flow, mask, hwc, depth, k, pose):
    warped, valid = warp(image, flow, "border")
    fused = masked_blend(temporal_blend(pack(hwc, "bgra"), warped, valid), image, mask, 2)
    moved, valid2 = reproject_warp(mean_shift(fused, image, mask), depth, k, pose, depth)
    return unpack(temporal_blend(fused, moved, valid2), "rgb", "nearest"), reproject(depth, k, pose)[0]


def pipeline_inputs(seed):
    depth, k, pose, _ = camera_case(seed, DEVICE)
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    hwc = torch.randint(0, 256, (N, H, W, 4), generator=gen, device=DEVICE, dtype=torch.uint8)
    return (fresh((N, 3, H, W), seed, DEVICE), fresh((N, 2, H, W), seed + 1, DEVICE, 3.0),
            (fresh((N, 1, H, W), seed + 2, DEVICE) > 1).float(), hwc, depth, k, pose)


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
