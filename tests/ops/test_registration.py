"""The ops as torch.library custom ops: opcheck, torch.compile(fullgraph=True), and CPU dispatch."""

from __future__ import annotations

import pytest
import torch
from torch.library import opcheck

import simharmon.ops as ops
from simharmon.ops import _cuda


def sample_args():
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(2, 3, 7, 9, generator=gen)
    other = torch.randn(2, 3, 7, 9, generator=gen)
    flow = torch.randn(2, 2, 7, 9, generator=gen) * 2
    mask = (torch.rand(2, 1, 7, 9, generator=gen) > 0.7).float()
    depth = torch.rand(2, 1, 7, 9, generator=gen) + 2
    k = torch.tensor([[8.0, 0, 4.0], [0, 8.0, 3.0], [0, 0, 1]]).repeat(2, 1, 1)
    pose = torch.eye(4).repeat(2, 1, 1)
    pose[:, 0, 3] = 0.1
    hwc = torch.randint(0, 256, (2, 7, 9, 4), generator=gen, dtype=torch.uint8)
    return image, other, flow, mask, depth, k, pose, hwc


def op_cases():
    image, other, flow, mask, depth, k, pose, hwc = sample_args()
    s = torch.ops.simharmon
    return [
        (s.warp.default, (image, flow, "border")),
        (s.reproject.default, (depth, k, pose, depth * 1.01, None, 0.05)),
        (s.reproject_warp.default, (image, depth, k, pose, depth, k, 0.05, "zeros")),
        (s.masked_blend.default, (image, other, mask, 2)),
        (s.mean_shift.default, (image, other, mask)),
        (s.temporal_blend.default, (image, other, mask, 0.5)),
        (s.pack.default, (hwc, "bgra", torch.bfloat16)),
        (s.unpack.default, (image, "rgba", "nearest")),
    ]


@pytest.mark.parametrize("op,args", op_cases(), ids=lambda v: getattr(v, "__name__", ""))
def test_opcheck(op, args):
    opcheck(op, args)  # schema, fake tensor, AOT dispatch (static and dynamic shapes)


def pipeline(image, other, flow, mask, depth, k, pose, hwc):
    """Every op, chained with no torch glue in between (inductor then only orders the extern calls)."""
    warped, valid = ops.warp(image, flow, "zeros")
    fused = ops.temporal_blend(ops.pack(hwc, "bgra"), warped, valid, 1.0)
    fused = ops.masked_blend(fused, ops.mean_shift(fused, other, mask), mask, band=1)
    flow2, valid2 = ops.reproject(depth, k, pose, depth)
    moved, _ = ops.warp(fused, flow2, "border")
    reprojected, _ = ops.reproject_warp(moved, depth, k, pose, depth)
    return ops.unpack(ops.temporal_blend(moved, reprojected, valid2, 0.5), "rgb", "nearest")


def test_compile_fullgraph_matches_eager():
    args = sample_args()
    compiled = torch.compile(pipeline, fullgraph=True)  # inductor; the ops run their CPU references
    assert torch.equal(compiled(*args), pipeline(*args))


def test_cpu_tensors_take_the_reference_path(monkeypatch):
    image, other, flow, mask, *_ = sample_args()
    assert not _cuda.use_kernels(image, flow)
    monkeypatch.setenv("SIMHARMON_NO_KERNELS", "1")
    assert not ops.kernels_available()
    assert torch.equal(ops.warp(image, flow)[0], ops.warp_reference(image, flow)[0])
    assert torch.equal(ops.masked_blend(image, other, mask, 3), ops.masked_blend_reference(image, other, mask, 3))


def test_kernel_sources_are_self_contained():
    for name in ("warp", "reproject", "fuse", "pack"):
        text = _cuda.kernel_source(name)
        assert '#include "' not in text and "#pragma once" not in text
        assert "from_f32" in text  # the header's helpers were inlined


def test_launch_constants_match_the_cuda_source():
    import re

    from simharmon.ops import fuse

    text = (_cuda.kernels_dir() / "fuse.cu").read_text()
    define = {k: int(v) for k, v in re.findall(r"#define (\w+) (\d+)", text)}
    assert fuse._BLEND_BLOCK == (define["BLEND_BX"], define["BLEND_BY"])
    assert fuse._SHIFT_THREADS == define["SHIFT_THREADS"]
    bx, by, r = define["BLEND_BX"], define["BLEND_BY"], fuse.MAX_BAND
    assert 4 * ((bx + 2 * r) * (by + 2 * r) + (2 * r + 1) ** 2) <= 48 * 1024  # default dynamic smem limit
