"""stream.mask_condition: the actor mask reaches the DiT's padding-mask channel (the bundled model).

Checked against a hand-written forward (encode, denoise with the mask, decode), against the
unconditioned model (an absent mask is the zeros Cosmos feeds), and through every runner that
steps a stream: the optimized wrapper, batched multi-stream and the trainer's forward.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from simharmon.config import ConfigError, EngineConfig, load_config
from simharmon.io.pixels import frame_to_model, model_to_frame, quantize_like_release
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime.engine import Engine
from simharmon.runtime.inputs import latent_mask
from simharmon.runtime.optimize import OptimizedEnhancer
from simharmon.runtime.stream import StreamingEnhancer
from simharmon.train.trainer import condition_mask
from tests.batch_effects import assert_batched_equal

H, W = 32, 48  # latent grid 4 x 6, patch grid 2 x 3


def _config(**stream):
    base = load_config("tiny")
    options = dict(layout="per_frame", offsets=(1, 2), history="partial", mask_condition=True)
    options.update(stream)
    return base.replace(stream=dataclasses.replace(base.stream, **options))


@pytest.fixture(scope="module")
def model():
    return build_enhancer(_config(), seed=5)


def _frames(count, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(1, 3, H, W, generator=gen) for _ in range(count)]


def _mask(top=5, left=9, size=11):
    mask = torch.zeros(1, 1, H, W)
    mask[..., top:top + size, left:left + size] = 1.0
    return mask


def test_needs_the_padding_mask_channel():
    base = load_config("tiny")
    with pytest.raises(ConfigError, match="concat_padding_mask"):
        base.replace(dit=dataclasses.replace(base.dit, concat_padding_mask=False),
                     stream=dataclasses.replace(base.stream, mask_condition=True))
    assert _config().stream.needs_frame_inputs and _config().stream.uses_mask


def test_first_step_matches_hand_computation(model):
    frame, mask = _frames(1)[0], _mask()
    out = StreamingEnhancer(model).step(frame, mask=mask)
    with torch.inference_mode():
        latent = model.encode(frame_to_model(frame, model.dtype).unsqueeze(2))
        cells = torch.nn.functional.max_pool2d(mask, 8)  # a latent cell the mask touches is 1
        x0 = model.denoise(latent, condition_mask=cells)
        expected = quantize_like_release(model_to_frame(model.decode(x0[:, :, :1])[:, :, 0].float()))
    assert torch.equal(out, expected)


def test_mask_changes_the_output_an_empty_mask_is_zeros_and_no_mask_passes_through(model):
    frame = _frames(1)[0]
    with_mask = StreamingEnhancer(model).step(frame, mask=_mask())
    empty = StreamingEnhancer(model).step(frame, mask=torch.zeros(1, 1, H, W))
    plain = build_enhancer(_config(mask_condition=False), seed=5)
    unconditioned = StreamingEnhancer(plain).step(frame)
    assert torch.equal(empty, unconditioned)
    assert (with_mask - empty).abs().max() > 1e-3
    stream = StreamingEnhancer(model)
    assert torch.equal(stream.step(frame), frame) and stream.last_passthrough == "no_mask"


def test_history_steps_use_each_frames_mask(model):
    frames, masks = _frames(4, seed=1), [_mask(top=t, left=2 * t) for t in range(4)]
    stream = StreamingEnhancer(model)
    outputs = [stream.step(f, mask=m) for f, m in zip(frames, masks)]
    # Re-run by hand: the ring holds the re-encoded outputs, the DiT sees the current mask.
    ring = []
    with torch.inference_mode():
        for t, (frame, mask) in enumerate(zip(frames, masks)):
            current = model.encode(frame_to_model(frame, model.dtype).unsqueeze(2))
            refs = [ring[-o] if o <= len(ring) else ring[0] for o in (1, 2)] if ring else []
            x0 = model.denoise(torch.cat([current, *refs], dim=2), condition_mask=latent_mask(mask, 8))
            out = quantize_like_release(model_to_frame(model.decode(x0[:, :, :1])[:, :, 0].float()))
            assert torch.equal(out, outputs[t]), t
            ring.append(model.encode(frame_to_model(out, model.dtype).unsqueeze(2)))


def test_optimized_wrapper_keeps_the_mask(model):
    frames, mask = _frames(3, seed=2), _mask()
    plain = StreamingEnhancer(model)
    fast = StreamingEnhancer(OptimizedEnhancer(model).prepare())
    for frame in frames:
        a, b = plain.step(frame, mask=mask), fast.step(frame, mask=mask)
        # Outputs sit on 8-bit levels; float rounding may move a value by one level.
        assert (a - b).abs().max() <= 1 / 255 + 1e-6
        assert (a != b).float().mean() < 0.01


def test_engine_batches_masks(model):
    frames = {"a": _frames(2, seed=3), "b": _frames(2, seed=4)}
    masks = {"a": _mask(), "b": _mask(top=1, left=20, size=6)}
    engine = Engine(model, EngineConfig(device="cpu"))
    single = {k: StreamingEnhancer(engine.model) for k in frames}
    for t in range(2):
        got = engine.step_many({k: v[t] for k, v in frames.items()}, {k: {"mask": masks[k]} for k in frames})
        for key in frames:
            expected = single[key].step(frames[key][t], mask=masks[key])
            # batched with the other stream: one 8-bit level on a few values (tests/batch_effects.py)
            assert_batched_equal(got[key].output, expected, (key, t))
        if t == 0:  # the masks matter beyond that tolerance, so a mix-up of streams would fail
            swapped = StreamingEnhancer(engine.model).step(frames["a"][0], mask=masks["b"])
            assert float((swapped - got["a"].output).abs().max()) > 2 / 255


def test_trainer_forward_feeds_the_same_mask(model):
    mask = _mask()
    assert torch.equal(condition_mask(model, mask), latent_mask(mask, 8))
    plain = build_enhancer(_config(mask_condition=False), seed=5)
    assert condition_mask(plain, mask) is None and condition_mask(model, None) is None
