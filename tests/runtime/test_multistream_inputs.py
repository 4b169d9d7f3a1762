"""MultiStreamEnhancer with per-frame renderer inputs (issue 5): batched streams equal separate ones.

Each case runs two streams through one ``step_many`` per frame (checked to really batch) and
compares every output with a separate ``StreamingEnhancer.step`` given the same inputs, up to
floating-point batching effects; each case also checks that its inputs change the result, so a
multi-stream path that dropped them would fail.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import simharmon.runtime.multistream as multistream
import simharmon.runtime.stream as stream_module
from simharmon.config import load_config
from simharmon.io.pixels import quantize_like_release
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime.multistream import MultiStreamEnhancer
from simharmon.runtime.stream import StreamingEnhancer

H, W = 16, 32
FRAMES = 3


@pytest.fixture(scope="module")
def model():
    return build_enhancer(load_config("tiny"), seed=7)


@pytest.fixture
def calls(monkeypatch):
    """(batch size, references) of every forward pass, batched (step_many) or single (step)."""
    seen = []
    for module in (multistream, stream_module):
        original = module.run_model_step

        def recording(model, layout, image, references, _original=original, **kwargs):
            seen.append((image.shape[0], [r.clone() for r in references]))
            return _original(model, layout, image, references, **kwargs)

        monkeypatch.setattr(module, "run_model_step", recording)
    return seen


def frames_for(seed):
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, H, W, generator=gen)
    return [quantize_like_release((base + 0.04 * t).clamp(0, 1)) for t in range(FRAMES)]


def box_mask(top, left, size=4):
    mask = torch.zeros(1, 1, H, W)
    mask[..., top:top + size, left:left + size] = 1.0
    return mask


def depth_inputs(t, shift):
    """A fronto-parallel plane at 4 m, seen by a camera moving ``shift`` m along x per frame (f = 20 px)."""
    intrinsics = torch.tensor([[20.0, 0.0, (W - 1) / 2], [0.0, 20.0, (H - 1) / 2], [0.0, 0.0, 1.0]])
    pose = torch.eye(4, dtype=torch.float64)
    pose[0, 3] = shift  # current -> previous camera
    return {"depth": torch.full((1, 1, H, W), 4.0), "intrinsics": intrinsics, "pose": pose if t else None}


def cases():
    """(stream changes, per-stream inputs by frame index, inputs-free changes giving different results)."""
    return {
        "region_pixel": (dict(layout="per_frame", region_pixel=True, region_pixel_band=2),
                         {"a": lambda t: {"mask": box_mask(2, 3)}, "b": lambda t: {"mask": box_mask(8, 20 - t)}}),
        "region_latent_release": (dict(layout="release", offsets=(1, 2, 3, 4), region_latent=True, region_band=0),
                                  {"a": lambda t: {"mask": box_mask(0, 0)}, "b": lambda t: {"mask": box_mask(8, 24)}}),
        "flow": (dict(layout="per_frame", history_warp="flow"),
                 {"a": lambda t: {"flow": torch.zeros(1, 2, H, W) if t else None},
                  "b": lambda t: {"flow": torch.full((1, 2, H, W), 1.5 * t) if t else None}}),
        "depth": (dict(layout="per_frame", history_warp="depth"),
                  {"a": lambda t: depth_inputs(t, 0.0), "b": lambda t: depth_inputs(t, 1.6)}),
    }


@pytest.mark.parametrize("name", list(cases()))
def test_batched_streams_with_inputs_match_separate_streams(model, calls, name):
    changes, inputs_of = cases()[name]
    config = dataclasses.replace(model.config.stream, **{"history": "partial", "offsets": (1, 2), **changes})
    frames = {"a": frames_for(1), "b": frames_for(2)}
    multi = MultiStreamEnhancer(model, config)
    batched = {key: [] for key in frames}
    for t in range(FRAMES):
        step = {key: seq[t] for key, seq in frames.items()}
        outputs = multi.step_many(step, {key: inputs_of[key](t) for key in frames})
        for key, out in outputs.items():
            batched[key].append(out)
    assert [batch for batch, _ in calls] == [2] * FRAMES  # both streams in one forward pass every time
    last_batched_refs = [level[1:] for level in calls[-1][1]]  # stream b's references at the last step

    plain = dataclasses.replace(config, history_warp="off", region_pixel=False, region_latent=False)
    for key, seq in frames.items():
        single = StreamingEnhancer(model, config)
        expected = [single.step(f, **inputs_of[key](t)) for t, f in enumerate(seq)]
        for a, b in zip(batched[key], expected):
            torch.testing.assert_close(a, b, rtol=0, atol=1.01 / 255)
            assert (a != b).float().mean() < 1e-2  # only quantization-boundary flips
        without = StreamingEnhancer(model, plain)
        unconditioned = [without.step(f) for f in seq]
        if changes.get("history_warp") and key == "b":  # the moving camera: its history is warped
            unwarped_refs = calls[-1][1]
            gap = max(float((w - u).abs().max()) for w, u in zip(last_batched_refs, unwarped_refs))
            assert gap > 0.05, "the motion inputs must change the references the model sees"
        elif not changes.get("history_warp"):  # the mask limits the enhanced region
            assert (unconditioned[-1] - expected[-1]).abs().max() > 2 / 255, "the mask must matter"


def test_region_pixel_keeps_the_input_outside_the_band(model):
    config = dataclasses.replace(model.config.stream, layout="per_frame", history="partial", offsets=(1,),
                                 region_pixel=True, region_pixel_band=2)
    multi = MultiStreamEnhancer(model, config)
    seqs = {"a": frames_for(3), "b": frames_for(4)}
    masks = {"a": box_mask(2, 2), "b": box_mask(10, 26)}
    for t in range(2):
        out = multi.step_many({k: v[t] for k, v in seqs.items()}, {k: {"mask": masks[k]} for k in seqs})
        for key, mask in masks.items():
            near = torch.nn.functional.max_pool2d(mask, 2 * 3 + 1, stride=1, padding=3)[0, 0] > 0  # band 2 + 1
            assert torch.equal(out[key][0][:, ~near], seqs[key][t][0][:, ~near])
            assert not torch.equal(out[key][0][:, near], seqs[key][t][0][:, near])


def test_input_errors_name_their_stream_and_change_no_history(model):
    config = dataclasses.replace(model.config.stream, layout="per_frame", history="partial", history_warp="flow")
    multi = MultiStreamEnhancer(model, config)
    frame = torch.rand(1, 3, H, W)
    multi.step_many({"a": frame, "b": frame})
    seen = {key: multi.stream(key).frames_seen for key in ("a", "b")}
    with pytest.raises(ValueError, match=r"stream 'b'.*needs the per-frame input flow.*inputs=\{key"):
        multi.step_many({"a": frame, "b": frame}, {"a": {"flow": torch.zeros(1, 2, H, W)}})
    with pytest.raises(TypeError, match=r"stream 'a'.*unknown per-frame inputs \['normals'\]"):
        multi.step_many({"a": frame}, {"a": {"normals": torch.zeros(1, 3, H, W)}})
    with pytest.raises(ValueError, match=r"stream 'c'.*without a frame"):
        multi.step_many({"a": frame}, {"c": {}})
    with pytest.raises(ValueError, match=r"stream 'a'.*mask was given"):
        multi.step_many({"a": frame}, {"a": {"flow": torch.zeros(1, 2, H, W), "mask": torch.ones(1, 1, H, W)}})
    assert {key: multi.stream(key).frames_seen for key in ("a", "b")} == seen
    zero = {"flow": torch.zeros(1, 2, H, W)}
    out = multi.step_many({"a": frame, "b": frame}, {"a": zero, "b": zero})
    assert math.isfinite(float(out["a"].sum())) and out["b"].shape == (1, 3, H, W)
