"""stream.colour_transform: the output latent read as a colour-transform grid applied to the input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from simharmon.config import ConfigError, EngineConfig, StreamConfig, load_config
from simharmon.models.denoiser import rectified_flow_coefficients
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime.colour import apply_colour_transform, quantize_nearest, transform_coefficients
from simharmon.runtime.engine import Engine
from simharmon.runtime.optimize import OptimizedEnhancer
from simharmon.runtime.stages import finish_output, model_forward
from simharmon.runtime.stream import StreamingEnhancer
from simharmon.train.trainer import StepModule

H, W = 32, 48


def _bilinear(grid: torch.Tensor, y: int, x: int, height: int, width: int) -> torch.Tensor:
    """Value of ``grid [B, C, h, w]`` at pixel (y, x) of a height x width frame: half-pixel centres, edges clamped."""
    h, w = grid.shape[-2:]
    sy = min(max((y + 0.5) * h / height - 0.5, 0.0), h - 1)
    sx = min(max((x + 0.5) * w / width - 0.5, 0.0), w - 1)
    y0, fy, x0, fx = int(sy), sy - int(sy), int(sx), sx - int(sx)
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    return ((1 - fy) * ((1 - fx) * grid[:, :, y0, x0] + fx * grid[:, :, y0, x1])
            + fy * ((1 - fx) * grid[:, :, y1, x0] + fx * grid[:, :, y1, x1]))


def _written_out(frame: torch.Tensor, coefficients: torch.Tensor, smooth: bool = False) -> torch.Tensor:
    """The transform pixel by pixel in float64: out_c = I_c + sum_k M[c,k] B_k + b_c + q_c B_c (1 - B_c),
    clamped, with B = I, or (smooth) B = the bilinearly upsampled means of the grid's cells."""
    frame, coefficients = frame.double(), coefficients.double()
    b, _, height, width = frame.shape
    h, w = coefficients.shape[-2:]
    sh, sw = height // h, width // w
    means = torch.stack([torch.stack([frame[:, :, i * sh:(i + 1) * sh, j * sw:(j + 1) * sw].mean((2, 3))
                                      for j in range(w)], -1) for i in range(h)], -2)  # [B, 3, h, w]
    out = torch.empty_like(frame)
    for y in range(height):
        for x in range(width):
            g = _bilinear(coefficients, y, x, height, width)  # [B, 15]
            pixel = frame[:, :, y, x]  # [B, 3]
            base = _bilinear(means, y, x, height, width) if smooth else pixel
            matrix = g[:, :9].reshape(b, 3, 3)
            value = pixel + (matrix @ base.unsqueeze(-1))[..., 0] + g[:, 9:12] + g[:, 12:15] * base * (1 - base)
            out[:, :, y, x] = value.clamp(0, 1)
    return out


@pytest.mark.parametrize("smooth", [False, True])
def test_apply_matches_the_written_out_transform(smooth):
    gen = torch.Generator().manual_seed(0)
    frame = torch.rand(2, 3, H, W, generator=gen)
    coefficients = 0.3 * torch.randn(2, 15, H // 8, W // 8, generator=gen)
    got = apply_colour_transform(frame, coefficients, smooth=smooth)
    # float32 against float64: measured worst 4.8e-7.
    assert (got.double() - _written_out(frame, coefficients, smooth)).abs().max() < 2e-6


def test_smooth_transform_keeps_the_detail():
    gen = torch.Generator().manual_seed(8)
    frame = (0.5 + 0.2 * torch.rand(1, 3, H, W, generator=gen)).clamp(0, 1)
    coefficients = torch.zeros(1, 15, H // 8, W // 8)
    coefficients[:, [0, 4, 8]] = -0.4  # a strong darkening
    out = apply_colour_transform(frame, coefficients, smooth=True)
    detail = frame - torch.nn.functional.avg_pool2d(frame, 8).repeat_interleave(8, 2).repeat_interleave(8, 3)
    detail_out = out - torch.nn.functional.avg_pool2d(out, 8).repeat_interleave(8, 2).repeat_interleave(8, 3)
    assert out.mean() < frame.mean() - 0.15
    assert detail_out.square().mean() > 0.9 * detail.square().mean()  # plain affine_curve would give 0.36x
    with pytest.raises(ValueError, match="not a multiple"):
        apply_colour_transform(torch.rand(1, 3, 30, 48), torch.zeros(1, 15, 4, 6), smooth=True)


def test_zero_coefficients_give_the_input_and_a_gain_grid_scales_it():
    frame = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(1))
    zero = torch.zeros(1, 15, H // 8, W // 8)
    assert torch.equal(apply_colour_transform(frame, zero), frame)
    levels = torch.randint(0, 256, (1, 3, H, W), generator=torch.Generator().manual_seed(2)).float() / 255
    model_space = levels * 2 - 1
    assert torch.equal(quantize_nearest(apply_colour_transform(model_space * 0.5 + 0.5, zero)), levels)
    gain = zero.clone()
    gain[:, [0, 4, 8]] = -0.5  # M = -0.5 I: every channel halved
    assert torch.allclose(apply_colour_transform(frame, gain), frame * 0.5, atol=1e-6)


def test_coefficients_are_the_network_part_of_x0():
    gen = torch.Generator().manual_seed(3)
    latent, x0 = torch.randn(2, 16, 4, 6, generator=gen), torch.randn(2, 16, 4, 6, generator=gen)
    c_skip = rectified_flow_coefficients(0.25)[0]
    assert torch.allclose(transform_coefficients(x0, latent, c_skip), (x0 - 0.8 * latent)[:, :15])
    with pytest.raises(ValueError, match="one shape"):
        transform_coefficients(x0[:, :8], latent[:, :8], c_skip)
    with pytest.raises(ValueError, match="frame"):
        apply_colour_transform(torch.rand(1, 4, H, W), torch.zeros(1, 15, 4, 6))


def _config(**stream):
    config = load_config("tiny")
    return config.replace(tokenizer=dataclasses.replace(config.tokenizer, decoder=False),
                          stream=dataclasses.replace(config.stream, layout="per_frame", offsets=(1, 2), history="partial",
                                                     colour_transform="affine_curve", **stream))


def test_config_validation():
    with pytest.raises(ConfigError, match="colour_transform must be one of"):
        StreamConfig(colour_transform="lut")
    assert StreamConfig(colour_transform="smooth_affine_curve").colour_transform == "smooth_affine_curve"
    with pytest.raises(ConfigError, match="region_latent or guided_output"):
        StreamConfig(colour_transform="affine_curve", guided_output=True)
    config = load_config("tiny")
    with pytest.raises(ConfigError, match="needs stream.colour_transform"):
        config.replace(tokenizer=dataclasses.replace(config.tokenizer, decoder=False))


def test_model_step_applies_the_transform_without_decoding():
    model = build_enhancer(_config(), device="cpu", seed=0).eval()
    assert not any(name.startswith(("tokenizer.decoder.", "tokenizer.conv2.")) for name, _ in model.named_parameters())
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        got, x0 = model_forward(model, model.config.stream, image, None)
        latent = model.encode(image.unsqueeze(2))[:, :, 0]
        expected = apply_colour_transform(image * 0.5 + 0.5, (x0 - 0.8 * latent)[:, :15]) * 2 - 1
    assert torch.allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match="no decoder"):
        model.decode(x0.unsqueeze(2))


def test_stream_finishes_with_region_and_rounding_and_optimized_matches():
    model = build_enhancer(_config(mask_condition=True, region_pixel=True, region_pixel_band=0), device="cpu", seed=0).eval()
    gen = torch.Generator().manual_seed(5)
    frames = [torch.randint(0, 256, (1, 3, H, W), generator=gen).float() / 255 for _ in range(4)]
    mask = torch.zeros(1, 1, H, W)
    mask[..., 8:24, 12:36] = 1
    plain, fast = StreamingEnhancer(model), StreamingEnhancer(OptimizedEnhancer(model).prepare())
    for frame in frames:
        out = plain.step(frame, mask=mask)
        assert torch.equal(out[..., mask[0, 0] == 0], frame[..., mask[0, 0] == 0])  # background exact
        assert torch.equal(out, (out * 255).round() / 255)
        assert (fast.step(frame, mask=mask) - out).abs().max() <= 1 / 255 + 1e-6
    # finish_output, written out: model-space output to [0, 1], input outside the mask, rounded.
    decoded = torch.rand(1, 3, H, W, generator=gen) * 2 - 1
    finished = finish_output(model.config.stream, decoded, frames[0], mask)
    expected = ((decoded * 0.5 + 0.5) * mask + frames[0] * (1 - mask)).clamp(0, 1).mul(255).round().div(255)
    assert torch.equal(finished, expected)
    with pytest.raises(ValueError, match="differs from the model"):
        StreamingEnhancer(model, dataclasses.replace(model.config.stream, colour_transform="off"))
    # the engine runs it too (uint8 through the fused unpack with round-to-nearest): the stream's levels
    engine = Engine(model, EngineConfig(backend="eager", device="cpu", dtype="float32"))
    reference = StreamingEnhancer(engine.model)
    for frame in frames:
        u8 = (frame[0] * 255).round().to(torch.uint8).permute(1, 2, 0)
        got = engine.step_many({"cam": u8}, {"cam": {"mask": mask}})["cam"].output
        want = reference.step(frame, mask=mask)
        assert torch.equal(got.permute(2, 0, 1).float() / 255, want[0])


def test_training_forward_limits_to_the_region_and_has_gradients():
    model = build_enhancer(_config(mask_condition=True, region_pixel=True, region_pixel_band=0), device="cpu", seed=0)
    model.requires_grad_(True)
    image = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(6)) * 2 - 1
    mask = torch.zeros(2, 1, H, W)
    mask[..., 4:20, 8:40] = 1
    out = StepModule(model)(image, None, mask)
    assert torch.equal(out[mask.expand_as(out) == 0], image[mask.expand_as(image) == 0])
    out.square().mean().backward()
    assert model.dit.final_layer.linear.weight.grad.abs().sum() > 0
