"""stream.guided_output: the decoded frame guided-filtered (runtime.guided) with the input as the guide."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from simharmon.config import ConfigError, EngineConfig, StreamConfig, load_config
from simharmon.io.pixels import quantize_like_release
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime.engine import Engine
from simharmon.runtime.guided import guided_filter
from simharmon.runtime.stages import finish_output
from simharmon.runtime.stream import StreamingEnhancer

H, W = 32, 48


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Window mean with reflect borders (float64)."""
    k = 2 * radius + 1
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    return F.avg_pool2d(padded, k, stride=1)


def _guided_reference(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s colour guided filter, written out: per window, a = (Sigma + eps U)^-1 cov(I, p)."""
    guide, src = guide.double(), src.double()
    mean_i, mean_p = _box(guide, radius), _box(src, radius)  # [B, 3, H, W]
    outer = guide.unsqueeze(1) * guide.unsqueeze(2)  # [B, 3, 3, H, W]
    b_, _, h, w = guide.shape
    sigma = _box(outer.reshape(b_, 9, h, w), radius).reshape(b_, 3, 3, h, w) - mean_i.unsqueeze(1) * mean_i.unsqueeze(2)
    cross = guide.unsqueeze(1) * src.unsqueeze(2)  # [B, out channel, guide channel, H, W]
    cov = _box(cross.reshape(b_, 9, h, w), radius).reshape(b_, 3, 3, h, w) - mean_p.unsqueeze(2) * mean_i.unsqueeze(1)
    system = sigma.permute(0, 3, 4, 1, 2) + eps * torch.eye(3, dtype=torch.float64)  # [B, H, W, 3, 3]
    a = torch.linalg.solve(system, cov.permute(0, 3, 4, 2, 1))  # [B, H, W, guide, out]
    a = a.permute(0, 4, 3, 1, 2)  # [B, out, guide, H, W]
    b = mean_p - (a * mean_i.unsqueeze(1)).sum(2)
    mean_a = _box(a.reshape(b_, 9, h, w), radius).reshape(b_, 3, 3, h, w)
    return (mean_a * guide.unsqueeze(1)).sum(2) + _box(b, radius)


def _pair(seed=0):
    gen = torch.Generator().manual_seed(seed)
    guide = torch.rand(2, 3, H, W, generator=gen)
    decoded = (0.7 * guide + 0.1 + 0.05 * torch.rand(2, 3, H, W, generator=gen)).clamp(0, 1)
    return guide, decoded


@pytest.mark.parametrize("radius,eps", [(1, 1e-3), (3, 1e-2), (7, 1e-4)])
def test_matches_the_written_out_filter(radius, eps):
    guide, decoded = _pair(radius)
    got = guided_filter(guide, decoded, radius, eps)
    # float32 box sums against float64: measured worst case 2.4e-6 here.
    assert (got.double() - _guided_reference(guide, decoded, radius, eps)).abs().max() < 2e-5


def test_reproduces_an_affine_colour_change_and_moves_with_the_content():
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    guide = torch.stack([0.5 + 0.3 * torch.sin(xx / (1.5 + c) + yy / (2.5 + c)) for c in range(3)])[None]
    gains, offsets = torch.tensor([1.3, 0.8, 0.6]).view(1, 3, 1, 1), torch.tensor([-0.1, 0.05, 0.2]).view(1, 3, 1, 1)
    target = guide * gains + offsets  # an exposure / white-balance change the model outputs exactly
    assert (guided_filter(guide, target, 4, 1e-5) - target).abs().max() < 2e-3  # measured 3.0e-4
    # Content moved by (3, 5) px gives the output moved by as much, away from the borders.
    gen = torch.Generator().manual_seed(7)
    decoded = (target + 0.05 * torch.rand(1, 3, H, W, generator=gen)).clamp(0, 1)
    out = guided_filter(guide, decoded, 2, 1e-3)
    moved = guided_filter(guide.roll((3, 5), (2, 3)), decoded.roll((3, 5), (2, 3)), 2, 1e-3)
    inner = (slice(None), slice(None), slice(8, H - 8), slice(10, W - 10))
    assert (moved.roll((-3, -5), (2, 3))[inner] - out[inner]).abs().max() < 1e-5


def test_finish_output_filters_then_pastes_the_input_outside_the_band():
    guide, decoded = _pair(1)
    mask = torch.zeros(2, 1, H, W)
    mask[..., 8:20, 10:30] = 1
    stream = StreamConfig(guided_output=True, guided_radius=2, region_pixel=True, region_pixel_band=2)
    out = finish_output(stream, decoded * 2 - 1, guide, mask)
    filtered = quantize_like_release(guided_filter(guide, decoded, 2, stream.guided_eps))
    assert torch.equal(out[..., 10:18, 14:26], filtered[..., 10:18, 14:26])  # inside the mask
    assert torch.equal(out[..., :4, :], quantize_like_release(guide)[..., :4, :])  # far outside: the input


def test_config_validation():
    with pytest.raises(ConfigError, match="guided_radius"):
        StreamConfig(guided_radius=0)
    with pytest.raises(ConfigError, match="guided_eps"):
        StreamConfig(guided_eps=0.0)


def test_stream_and_engine_agree():
    base = load_config("tiny")
    config = base.replace(stream=dataclasses.replace(base.stream, layout="per_frame", offsets=(1,), history="partial",
                                                     guided_output=True, guided_radius=3))
    model = build_enhancer(config, seed=2)
    gen = torch.Generator().manual_seed(4)
    frames = [torch.rand(1, 3, H, W, generator=gen) for _ in range(2)]
    engine = Engine(model, EngineConfig(device="cpu"))
    single = StreamingEnhancer(engine.model)
    plain = StreamingEnhancer(model, dataclasses.replace(config.stream, guided_output=False))
    for frame in frames:
        a = single.step(frame)
        b = engine.step_many({"cam": frame})["cam"].output
        assert torch.equal(a, b)
        assert not torch.equal(a, plain.step(frame))
