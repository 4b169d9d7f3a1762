"""masked_blend / mean_shift / temporal_blend against their defining formulas, computed independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simharmon.ops import (
    MAX_BAND,
    masked_blend,
    masked_blend_reference,
    mean_shift,
    mean_shift_reference,
    temporal_blend,
    temporal_blend_reference,
)
from simharmon.ops.fuse import _band


def band_weight_bruteforce(mask: np.ndarray, radius: int) -> np.ndarray:
    """w(p) = max over ALL mask pixels q within distance R of m(q) * (1 - |q - p| / (R + 1)), float64."""
    m = np.clip(np.nan_to_num(mask.astype(np.float64), nan=0.0), 0, 1)
    n, _, height, width = m.shape
    w = np.zeros_like(m)
    for b in range(n):
        qy, qx = np.nonzero(m[b, 0] > 0)
        for y in range(height):
            for x in range(width):
                dist = np.sqrt((qy - y) ** 2 + (qx - x) ** 2)
                near = dist <= radius
                if near.any():
                    w[b, 0, y, x] = np.max(m[b, 0, qy[near], qx[near]] * (1 - dist[near] / (radius + 1)))
    return w


def case(seed, n=2, c=3, height=11, width=15, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, c, height, width, generator=gen).to(dtype)
    b = torch.randn(n, c, height, width, generator=gen).to(dtype)
    mask = torch.zeros(n, 1, height, width)
    mask[0, 0, 3:6, 4:9] = 1.0
    mask[0, 0, 5, 9] = 0.5
    if n > 1:
        mask[1, 0, 0:2, 10:15] = torch.rand(2, 5, generator=gen)
    return a, b, mask


@pytest.mark.parametrize("band", [0, 1, 3])
@pytest.mark.parametrize("fn", [masked_blend, masked_blend_reference])
def test_blend_matches_formula(fn, band):
    a, b, mask = case(0)
    out = fn(a, b, mask, band)
    w = band_weight_bruteforce(mask.numpy(), band)
    expected = w * a.double().numpy() + (1 - w) * b.double().numpy()
    np.testing.assert_allclose(out.double().numpy(), expected, rtol=0, atol=2e-6)
    far = np.broadcast_to(w == 0, expected.shape)
    inner = np.broadcast_to(w == 1, expected.shape)
    assert far.any() and inner.any() and (~far & ~inner).any()  # all three regions occur
    assert np.array_equal(out.numpy()[far], b.numpy()[far])  # outside the band: b, bit-exact
    assert np.array_equal(out.numpy()[inner], a.numpy()[inner])  # on the mask: a, bit-exact


def test_blend_band_reaches_exactly_radius_pixels():
    a, b = torch.ones(1, 1, 1, 12), torch.zeros(1, 1, 1, 12)
    mask = torch.zeros(1, 1, 1, 12)
    mask[..., 0] = 1
    out = masked_blend(a, b, mask, band=4)[0, 0, 0]
    torch.testing.assert_close(out[:6], torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2, 0.0]))  # 1 - d / 5
    assert (out[5:] == 0).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_blend_low_precision_non_contiguous(dtype):
    a, b, mask = case(1, c=4, height=9, width=20, dtype=dtype)
    a_nc = a.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    b_nc = torch.stack([b, b], dim=2).flatten(1, 2)[:, ::2]  # every other channel of an interleaved copy
    assert not a_nc.is_contiguous() and not b_nc.is_contiguous() and torch.equal(b_nc, b)
    mask = mask.to(dtype)
    out = masked_blend(a_nc, b_nc, mask, band=2)
    assert out.dtype == dtype and out.is_contiguous()
    w = band_weight_bruteforce(mask.float().numpy(), 2)
    expected = w * a.double().numpy() + (1 - w) * b.double().numpy()
    ulp = torch.finfo(dtype).eps * np.abs(expected)
    assert (np.abs(out.double().numpy() - expected) <= 0.5 * ulp + 1e-6).all()


def test_blend_mask_values_are_clamped_and_nan_is_zero():
    a, b, _ = case(2, n=1)
    mask = torch.full((1, 1, 11, 15), 3.0)
    mask[..., :5] = float("nan")
    mask[..., 5:8] = -2.0
    out = masked_blend(a, b, mask)
    assert torch.equal(out[..., :8], b[..., :8]) and torch.equal(out[..., 8:], a[..., 8:])
    assert torch.equal(masked_blend(a, b, mask > 0), out)  # bool masks read as 0 / 1


def test_mean_shift_matches_formula_and_moves_the_foreground_mean():
    a, b, mask = case(3, c=5)
    for fn in (mean_shift, mean_shift_reference):
        out = fn(a, b, mask)
        m = mask.double().numpy()
        av, bv = a.double().numpy(), b.double().numpy()
        mean_fg = (m * av).sum((2, 3)) / m.sum((2, 3))
        mean_bg = ((1 - m) * bv).sum((2, 3)) / (1 - m).sum((2, 3))
        expected = av + (mean_bg - mean_fg)[:, :, None, None]
        np.testing.assert_allclose(out.double().numpy(), expected, rtol=0, atol=1e-6)
        shifted_fg = (m * out.double().numpy()).sum((2, 3)) / m.sum((2, 3))
        np.testing.assert_allclose(shifted_fg, mean_bg, rtol=0, atol=1e-6)


def test_mean_shift_empty_region_is_no_shift():
    a, b, _ = case(4, dtype=torch.bfloat16)
    assert torch.equal(mean_shift(a, b, torch.zeros(2, 1, 11, 15)), a)  # no foreground
    assert torch.equal(mean_shift(a, b, torch.ones(2, 1, 11, 15)), a)  # no background


def test_mean_shift_non_contiguous_low_precision():
    a, b, mask = case(5, c=3, dtype=torch.float16)
    a_nc = a.transpose(2, 3).contiguous().transpose(2, 3)
    out = mean_shift(a_nc, b[:, [2, 1, 0]][:, [2, 1, 0]], mask)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, mean_shift_reference(a, b, mask), rtol=0, atol=0)


@pytest.mark.parametrize("fn", [temporal_blend, temporal_blend_reference])
def test_temporal_blend_matches_formula(fn):
    cur, hist, _ = case(6)
    valid = torch.rand(2, 1, 11, 15, generator=torch.Generator().manual_seed(6))
    valid[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 2.0, float("nan")])
    out = fn(cur, hist, valid, 0.75)
    v = np.clip(np.nan_to_num(valid.double().numpy()), 0, 1) * 0.75
    np.testing.assert_allclose(out.double().numpy(), (1 - v) * cur.double().numpy() + v * hist.double().numpy(),
                               rtol=0, atol=2e-6)
    assert torch.equal(fn(cur, hist, valid, 0.0), cur)
    assert torch.equal(fn(cur, hist, torch.ones_like(valid), 1.0), hist)


def test_bad_arguments():
    a, b, mask = case(7)
    with pytest.raises(ValueError, match=r"mask must have shape \[N, 1, H, W\]"):
        masked_blend(a, b, mask.expand(2, 3, 11, 15))
    with pytest.raises(ValueError, match=r"b must have shape \[N, C, H, W\] with N=2, C=3, H=11, W=15"):
        masked_blend(a, b[..., :-1], mask)
    with pytest.raises(TypeError, match="a and b must have the same dtype"):
        masked_blend(a, b.double(), mask)
    with pytest.raises(ValueError, match="band must be an int"):
        masked_blend(a, b, mask, MAX_BAND + 1)
    with pytest.raises(ValueError, match="band must be an int"):
        masked_blend(a, b, mask, 1.5)
    with pytest.raises(TypeError, match="mask must have dtype"):
        mean_shift(a, b, mask.to(torch.int32))
    with pytest.raises(ValueError, match="alpha must be a number in"):
        temporal_blend(a, b, mask, 1.5)
    with pytest.raises(ValueError, match="valid must have shape"):
        temporal_blend(a, b, mask[0])


def test_band_falloff_is_the_kernels_ieee_fp32():
    """The reference's falloff 1 - sqrt(d2) / (R + 1) in IEEE fp32, as fuse.cu computes it (sqrtf and
    __fdiv_rn are correctly rounded there). The host build of the kernel found it 1 ulp off at some
    distances (d2 = 37: torch's CPU fp32 sqrt rounds down), so blends differed in the last bit."""
    radius = 32
    mask = torch.zeros(1, 1, 2 * radius + 1, 2 * radius + 1)
    mask[..., radius, radius] = 1.0
    w = _band(mask, radius)[0, 0]
    for dy in range(radius + 1):
        for dx in range(radius + 1):
            d2 = dx * dx + dy * dy
            if d2 <= radius * radius:
                f32 = np.float32
                expected = f32(1.0) - f32(np.sqrt(f32(d2))) / f32(radius + 1)
                assert w[radius + dy, radius + dx].item() == float(expected), d2
