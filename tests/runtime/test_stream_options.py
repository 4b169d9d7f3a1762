"""The optional stream features of issue 4 (all off by default) on the tiny enhancer.

Each option is checked for its defining effect against an independent computation: a static scene
with zero flow changes nothing, pixels outside the mask band are the input's, an empty mask gives
the VAE round trip of the input, and the uint8 path equals the float path bit for bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from simharmon.config import ConfigError, EngineConfig, StreamConfig, config_from_dict, config_to_dict, load_config
from simharmon.io.pixels import frame_to_model, frame_to_uint8_hwc, model_to_frame, uint8_hwc_to_frame
from simharmon.models.enhancer import build_enhancer
from simharmon.ops import masked_blend
from simharmon.runtime.engine import Engine
from simharmon.runtime.stages import model_forward
from simharmon.runtime.stream import StreamingEnhancer

H, W = 16, 32


@pytest.fixture(scope="module")
def model():
    return build_enhancer(load_config("tiny"), seed=11)


def uint8_frames(count, seed=0, channels=3):
    gen = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    out = []
    for t in range(count):
        chans = [0.5 + 0.4 * np.sin(xx / (4 + c) + 0.4 * t + c) * np.cos(yy / (5 - c) + 0.2 * c) for c in range(3)]
        if channels == 4:
            chans.append(gen.uniform(0, 1, (H, W)).astype(np.float32))
        out.append((np.clip(np.stack(chans, -1), 0, 1) * 255).astype(np.uint8))
    return out


def stream(model, **changes):
    return StreamingEnhancer(model, dataclasses.replace(model.config.stream, history="partial", **changes))


def box_mask(top=4, left=8, size=6):
    mask = torch.zeros(1, 1, H, W)
    mask[..., top:top + size, left:left + size] = 1.0
    return mask


def test_config_defaults_are_off_and_validated():
    default = StreamConfig()
    assert default.history_warp == "off" and not default.region_latent and not default.region_pixel
    assert not default.needs_frame_inputs
    assert StreamConfig(region_pixel=True).needs_frame_inputs
    from simharmon.config import MAX_REGION_BAND
    from simharmon.ops import MAX_BAND
    assert MAX_REGION_BAND == MAX_BAND
    for bad, match in [({"history_warp": "optical"}, "history_warp"), ({"depth_tolerance": 0.0}, "depth_tolerance"),
                       ({"region_band": 33}, "region_band"), ({"region_pixel_band": -1}, "region_pixel_band"),
                       ({"region_latent": 1}, "region_latent")]:
        with pytest.raises(ConfigError, match=match):
            StreamConfig(**bad)
    yaml_like = {"stream": {"history_warp": "depth", "region_pixel": True, "region_pixel_band": 5}}
    loaded = config_from_dict(yaml_like).stream
    assert (loaded.history_warp, loaded.region_pixel, loaded.region_pixel_band) == ("depth", True, 5)
    assert config_from_dict(config_to_dict(config_from_dict(yaml_like))).stream == loaded


@pytest.mark.parametrize("layout", ["release", "per_frame"])
def test_static_scene_with_zero_flow_changes_nothing(model, layout):
    # the release layout re-encodes a 5-frame clip per step (slow on the CPU): one temporal step suffices
    frames = [uint8_hwc_to_frame(f) for f in uint8_frames(2 if layout == "release" else 3)]
    plain, warped = stream(model, layout=layout), stream(model, layout=layout, history_warp="flow")
    zero = torch.zeros(1, 2, H, W)
    for index, frame in enumerate(frames):
        a = plain.step(frame)
        b = warped.step(frame, flow=zero if index else None)  # no motion input needed on the first frame
        assert torch.equal(a, b), f"frame {index}"


def test_identity_pose_with_consistent_depth_is_close_to_no_warp(model):
    frames = [uint8_hwc_to_frame(f) for f in uint8_frames(3)]
    plain, warped = stream(model, layout="per_frame"), stream(model, layout="per_frame", history_warp="depth")
    depth, k = torch.full((1, 1, H, W), 6.0), torch.tensor([[20.0, 0, 15.5], [0, 20.0, 7.5], [0, 0, 1]])
    for frame in frames:
        a = plain.step(frame)
        b = warped.step(frame, depth=depth, intrinsics=k, pose=torch.eye(4))
        torch.testing.assert_close(a, b, rtol=0, atol=1.01 / 255)  # sub-ulp resampling may flip a level
        assert (a != b).float().mean() < 0.02


def test_flow_warping_changes_the_output_of_a_moving_scene(model):
    frames = [uint8_hwc_to_frame(f) for f in uint8_frames(3)]
    plain, warped = stream(model, layout="per_frame"), stream(model, layout="per_frame", history_warp="flow")
    flow = torch.full((1, 2, H, W), 8.0)  # one latent cell
    outs = [(plain.step(f), warped.step(f, flow=flow)) for f in frames]
    assert torch.equal(*outs[0])  # no history yet
    assert not torch.equal(*outs[1])


def test_region_pixel_keeps_the_input_outside_the_band(model):
    frames = [uint8_hwc_to_frame(f) for f in uint8_frames(2)]
    band, mask = 3, box_mask()
    plain, limited = stream(model), stream(model, region_pixel=True, region_pixel_band=band)
    weight = masked_blend(torch.ones(1, 1, H, W), torch.zeros(1, 1, H, W), mask, band)  # the band, by the op
    outside, inside = (weight == 0).expand(1, 3, H, W), (weight == 1).expand(1, 3, H, W)
    assert outside.any() and inside.any() and ((weight > 0) & (weight < 1)).any()
    for frame in frames:
        expected = plain.step(frame)
        out = limited.step(frame, mask=mask)
        assert torch.equal(out[outside], frame[outside])  # well-reconstructed pixels: bit-exact input
        assert torch.equal(out[inside], expected[inside])  # the actor: the enhancer's output
        assert not torch.equal(out, expected)


def test_region_latent_keeps_the_input_latent(model):
    frame = uint8_hwc_to_frame(uint8_frames(1)[0])
    image = frame_to_model(frame, model.dtype)
    mask = torch.zeros(1, 1, H, W)
    mask[..., 0:8, 8:16] = 1.0  # latent cell (0, 1)
    limited = dataclasses.replace(model.config.stream, region_latent=True, region_band=1)
    with torch.inference_mode():
        _, full = model_forward(model, model.config.stream, image, None)
        decoded, kept = model_forward(model, limited, image, None, mask=mask)
        source = model.encode(image.unsqueeze(2))[:, :, 0].float()
        roundtrip = model.decode(source.unsqueeze(2))[:, :, 0].float()
    assert torch.equal(kept[..., 0, 1], full[..., 0, 1])  # on the mask: the enhancer's latent
    assert torch.equal(kept[..., :, 3], source[..., :, 3])  # two cells away: the input latent
    # the whole stream with an empty mask is the VAE round trip of the input
    out = stream(model, region_latent=True).step(frame, mask=torch.zeros(1, 1, H, W))
    assert torch.equal(out, model_to_frame(roundtrip))
    with torch.inference_mode():
        assert torch.equal(stream(model, region_latent=True).step(frame, mask=torch.ones(1, 1, H, W)),
                           stream(model).step(frame))


@pytest.mark.parametrize("layout,image_layout", [("release", "rgb"), ("per_frame", "bgra")])
def test_step_uint8_equals_the_float_path(model, layout, image_layout):
    frames = uint8_frames(3, channels=3 if image_layout == "rgb" else 4)
    order = [0, 1, 2] if image_layout == "rgb" else [2, 1, 0]
    plain, fused = stream(model, layout=layout), stream(model, layout=layout)
    for index, hwc in enumerate(frames):
        expected = frame_to_uint8_hwc(plain.step(uint8_hwc_to_frame(hwc[..., order])))[0]
        out = fused.step_uint8(hwc, image_layout)
        assert out.dtype == torch.uint8 and out.shape == hwc.shape
        assert np.array_equal(out[..., order].numpy(), expected), f"frame {index}"
        if image_layout == "bgra":
            assert (out[..., 3] == 255).all()


def test_step_uint8_with_region_pixel(model):
    hwc = uint8_frames(1)[0]
    mask = box_mask(size=4)
    out = stream(model, region_pixel=True, region_pixel_band=2).step_uint8(torch.from_numpy(hwc)[None], mask=mask)
    expected = frame_to_uint8_hwc(stream(model, region_pixel=True, region_pixel_band=2)
                                  .step(uint8_hwc_to_frame(hwc), mask=mask))
    assert np.array_equal(out.numpy(), expected)
    assert np.array_equal(out[0, :, 20:].numpy(), hwc[:, 20:])  # far from the box: the input


def test_prime_resumes_a_warped_stream_exactly(model):
    frames = [uint8_hwc_to_frame(f) for f in uint8_frames(4)]
    flows = [None] + [torch.full((1, 2, H, W), 0.5 * t) for t in range(1, 4)]
    config = dict(layout="per_frame", offsets=(1, 2), history_warp="flow")
    full = stream(model, **config)
    outputs = [full.step(f, flow=fl) for f, fl in zip(frames, flows)]
    resumed = stream(model, **config)
    resumed.prime(outputs[1:3], inputs=[{"flow": flows[1]}, {"flow": flows[2]}])
    assert torch.equal(resumed.step(frames[3], flow=flows[3]), outputs[3])


def test_bad_inputs_are_named(model):
    frame = torch.rand(1, 3, H, W)
    warped = stream(model, history_warp="flow")
    warped.step(frame)
    with pytest.raises(ValueError, match="needs the per-frame input flow"):
        warped.step(frame)
    with pytest.raises(ValueError, match=r"flow must have shape \[B, 2, 16, 32\]"):
        warped.step(frame, flow=torch.zeros(1, 2, H, W + 1))
    with pytest.raises(ValueError, match="mask was given, but no enabled stream option uses it"):
        stream(model).step(frame, mask=box_mask())
    with pytest.raises(ValueError, match="depth"):
        stream(model, history_warp="depth").step(frame)
    with pytest.raises(ValueError, match="prime"):
        warped.prime([frame])
    with pytest.raises(ValueError, match="shape"):
        stream(model).step_uint8(np.zeros((H, W, 4), np.uint8), "rgb")


def test_a_frame_without_a_mask_passes_through_at_the_stream_and_the_engine(model, caplog):
    """One meaning of "no mask": the frame comes back unchanged with the flag, and history restarts."""
    frames = [uint8_hwc_to_frame(f) for f in uint8_frames(3)]
    limited = stream(model, region_pixel=True)
    limited.step(frames[0], mask=box_mask())
    out = limited.step(frames[1])
    assert torch.equal(out, frames[1]) and limited.last_passthrough == "no_mask"
    fresh = stream(model, region_pixel=True).step(frames[2], mask=box_mask())
    assert torch.equal(limited.step(frames[2], mask=box_mask()), fresh)  # the history restarted
    assert limited.last_passthrough is None
    engine = Engine(model, EngineConfig(device="cpu"), dataclasses.replace(model.config.stream, region_pixel=True))
    hwc = torch.from_numpy(uint8_frames(1)[0])
    result = engine.step_many({"cam": hwc})["cam"]
    assert result.passthrough == "no_mask" and result.output is hwc and result.error is None
    assert "passes through unchanged" in caplog.text
    out = Engine(model, EngineConfig(device="cpu")).step_many({"cam": torch.rand(1, 3, H, W)})["cam"]  # defaults
    assert out.output.shape == (1, 3, H, W) and out.passthrough is None
