"""warp / warp_reference against F.grid_sample (align_corners=True), the independent computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from simharmon.ops import warp, warp_reference


def grid_sample_warp(image, flow, padding):
    """The same warp through grid_sample: pixel positions normalized with align_corners=True."""
    n, _, height, width = image.shape
    ys, xs = torch.meshgrid(torch.arange(height, dtype=flow.dtype), torch.arange(width, dtype=flow.dtype),
                            indexing="ij")
    gx = 2 * (xs + flow[:, 0]) / (width - 1) - 1
    gy = 2 * (ys + flow[:, 1]) / (height - 1) - 1
    grid = torch.stack([gx, gy], dim=-1)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode=padding, align_corners=True)
    valid = F.grid_sample(torch.ones_like(image[:, :1]), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=True)
    return out, valid


def random_case(seed, n=2, c=3, height=7, width=11, scale=4.0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(n, c, height, width, generator=gen, dtype=dtype)
    flow = torch.randn(n, 2, height, width, generator=gen, dtype=dtype) * scale
    return image, flow


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("fn", [warp, warp_reference])
def test_matches_grid_sample_fp64(fn, padding):
    image, flow = random_case(0, height=9, width=13)
    out, valid = fn(image, flow, padding)
    expected, expected_valid = grid_sample_warp(image, flow, padding)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(valid, expected_valid, rtol=0, atol=1e-12)
    # not vacuous: some samples leave the image, some straddle its edge
    assert (valid == 0).any() and ((valid > 0) & (valid < 1)).any() and (valid == 1).any()


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_fp32_and_non_contiguous_inputs(padding):
    image, flow = random_case(1, n=3, c=5, height=6, width=17, dtype=torch.float32)
    image_nc = image.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # transposed strides
    flow_nc = torch.cat([flow, flow], dim=3)[..., ::2]  # a strided view
    assert not image_nc.is_contiguous() and not flow_nc.is_contiguous()
    out, valid = warp(image_nc, flow_nc, padding)
    assert out.is_contiguous() and valid.dtype == torch.float32
    expected, expected_valid = grid_sample_warp(image.double(), flow_nc.double(), padding)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-6)
    torch.testing.assert_close(valid.double(), expected_valid, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_is_fp32_math_then_one_rounding(dtype):
    image, flow = random_case(2, height=5, width=8, dtype=torch.float32)
    image = image.to(dtype)
    out, _ = warp(image, flow)
    assert out.dtype == dtype
    expected, _ = grid_sample_warp(image.double(), flow.double(), "zeros")
    # one rounding of an fp32-accurate result: at most half an ulp of the dtype, plus fp32 noise
    ulp = torch.finfo(dtype).eps * expected.abs().clamp_min(torch.finfo(dtype).tiny)
    assert ((out.double() - expected).abs() <= 0.5 * ulp + 1e-6).all()


def test_zero_flow_is_the_identity_bit_exactly():
    image, _ = random_case(3, dtype=torch.float32)
    for padding in ("zeros", "border"):
        out, valid = warp(image, torch.zeros(2, 2, 7, 11), padding)
        assert torch.equal(out, image)
        assert torch.equal(valid, torch.ones(2, 1, 7, 11))


def test_integer_shift_moves_pixels():
    image = torch.arange(2 * 1 * 4 * 6, dtype=torch.float32).view(2, 1, 4, 6)
    flow = torch.zeros(2, 2, 4, 6)
    flow[:, 0] = 2.0  # sample two columns to the right
    out, valid = warp(image, flow)
    assert torch.equal(out[..., :4], image[..., 2:])
    assert torch.equal(out[..., 4:], torch.zeros(2, 1, 4, 2))
    assert torch.equal(valid[..., 4:], torch.zeros(2, 1, 4, 2))
    out_b, _ = warp(image, flow, "border")
    assert torch.equal(out_b[..., 4:], image[..., 5:].expand(2, 1, 4, 2))


def test_non_finite_flow_gives_zero_and_invalid():
    image, flow = random_case(4, dtype=torch.float32)
    flow[0, 0, 1, 2] = float("nan")
    flow[1, 1, 3, 4] = float("inf")
    flow[1, 0, 0, 0] = 1e30  # far outside, finite
    for padding in ("zeros", "border"):
        out, valid = warp(image, flow, padding)
        assert torch.isfinite(out).all()
        assert valid[0, 0, 1, 2] == 0 and valid[1, 0, 3, 4] == 0 and valid[1, 0, 0, 0] == 0
        assert (out[0, :, 1, 2] == 0).all() and (out[1, :, 3, 4] == 0).all()
    assert torch.equal(warp(image, flow, "border")[0][1, :, 0, 0], image[1, :, 0, -1])  # clamped to the edge


def test_bad_arguments():
    image, flow = random_case(5, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"flow must have shape \[N, 2, H, W\]"):
        warp(image, flow[:, :1])
    with pytest.raises(ValueError, match="N=2"):
        warp(image, flow[:1])
    with pytest.raises(ValueError, match=r"image must have shape \[N, C, H, W\]"):
        warp(image[0], flow)
    with pytest.raises(TypeError, match="image must have dtype"):
        warp(image.to(torch.int32), flow)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        warp(image.numpy(), flow)
    with pytest.raises(ValueError, match="padding must be one of"):
        warp(image, flow, "reflection")
    with pytest.raises(ValueError, match="empty dimension"):
        warp(image[:, :0], flow)
