"""Independent streams on the engine: slots, static batch buckets, per-frame inputs, errors.

Each stream's outputs are compared with a separate ``StreamingEnhancer`` on the same (optimized)
model and the same inputs; both run the one ``StepCore``, so a difference comes from the batching,
padding and slot bookkeeping under test, or from floating point: CPU matrix products and
convolutions are not batch-invariant (measured: 2e-7 relative in the DiT's x0 when a second stream
shares the batch, which flipped one 8-bit level on 0.07 % of values in the flow case). So a stream
batched with others may differ by one level on a few values; alone it is bit-identical. Each case
also checks that its inputs change the result, so a path that dropped them would fail.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from simharmon.config import EngineConfig, load_config
from simharmon.io.pixels import quantize_like_release
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime import stages
from simharmon.runtime import step as step_module
from simharmon.runtime.buckets import plan_batches
from simharmon.runtime.engine import Engine
from simharmon.runtime.stream import StreamingEnhancer
from tests.batch_effects import assert_batched_equal

H, W = 16, 32
FRAMES = 3


@pytest.fixture(scope="module")
def model():
    return build_enhancer(load_config("tiny"), seed=7)


def engine_for(model, stream=None, **config):
    return Engine(model, EngineConfig(device="cpu", **config), stream)


def frames_for(seed, count=FRAMES, height=H, width=W):
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, height, width, generator=gen)
    return [quantize_like_release((base + 0.04 * t).clamp(0, 1)) for t in range(count)]


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


def test_plan_batches():
    sizes = (1, 2, 4, 8)
    assert plan_batches(1, sizes, 0.25) == [(1, 1)]
    assert plan_batches(3, sizes, 0.25) == [(4, 3)]  # one padded row is a quarter of the batch
    assert plan_batches(5, sizes, 0.25) == [(4, 4), (1, 1)]
    assert plan_batches(7, sizes, 0.25) == [(8, 7)]
    assert plan_batches(20, sizes, 0.25) == [(8, 8), (8, 8), (4, 4)]
    assert plan_batches(3, sizes, 0.0) == [(2, 2), (1, 1)]
    assert sum(n for _, n in plan_batches(37, (2, 4), 0.25)) == 37


def test_streams_that_come_and_go_equal_separate_streams(model):
    """Three streams (one of another size, one skipping a frame), batched into padded buckets."""
    cams = {"cam0": frames_for(0, 5), "cam1": frames_for(1, 5), "cam2": frames_for(3, 5),
            "small": frames_for(2, 5, 16, 16)}
    engine = engine_for(model)
    batched = {k: [] for k in cams}
    for t in range(5):
        step = {k: v[t] for k, v in cams.items() if not (k == "cam1" and t == 2)}  # cam1 skips a frame
        for k, result in engine.step_many(step).items():
            assert result.error is None and result.passthrough is None
            batched[k].append(result.output)
    assert any(b.num_streams == 4 for b in engine.buckets), "three same-size streams fill a padded bucket of 4"
    for key, frames in cams.items():
        single = StreamingEnhancer(engine.model)
        expected = [single.step(f) for t, f in enumerate(frames) if not (key == "cam1" and t == 2)]
        assert len(expected) == len(batched[key])
        for t, (a, b) in enumerate(zip(batched[key], expected)):
            assert torch.equal(a, b), f"{key} frame {t}"


def cases():
    """(stream changes, per-stream inputs by frame index)."""
    return {
        "region_pixel": (dict(layout="per_frame", region_pixel=True, region_pixel_band=2),
                         {"a": lambda t: {"mask": box_mask(2, 3)}, "b": lambda t: {"mask": box_mask(8, 20 - t)}}),
        "region_latent_release": (dict(layout="release", offsets=(1, 2, 3, 4), region_latent=True, region_band=0),
                                  {"a": lambda t: {"mask": box_mask(0, 0)}, "b": lambda t: {"mask": box_mask(8, 24)}}),
        "mask_condition_guided": (dict(layout="per_frame", mask_condition=True, guided_output=True, guided_radius=3),
                                  {"a": lambda t: {"mask": box_mask(1, 1, 8)}, "b": lambda t: {"mask": box_mask(6, 16)}}),
        "flow": (dict(layout="per_frame", history_warp="flow"),
                 {"a": lambda t: {"flow": torch.zeros(1, 2, H, W) if t else None},
                  "b": lambda t: {"flow": torch.full((1, 2, H, W), 1.5 * t) if t else None}}),
        "depth": (dict(layout="per_frame", history_warp="depth"),
                  {"a": lambda t: depth_inputs(t, 0.0), "b": lambda t: depth_inputs(t, 1.6)}),
    }


@pytest.mark.parametrize("name", list(cases()))
def test_batched_streams_with_inputs_match_separate_streams(name, monkeypatch):
    changes, inputs_of = cases()[name]
    base = load_config("tiny")
    config = dataclasses.replace(base.stream, **{"history": "partial", "offsets": (1, 2), **changes})
    model = build_enhancer(base.replace(stream=config), seed=7)
    frames = {"a": frames_for(1), "b": frames_for(2)}
    engine = engine_for(model)
    aligned = []  # (references as stored, as aligned) of every warped step

    def recording(mode, references, *args, **kwargs):
        out = stages.align_references(mode, references, *args, **kwargs)
        aligned.append((references.clone(), out.clone()))
        return out

    monkeypatch.setattr(step_module, "align_references", recording)
    batched = {key: [] for key in frames}
    for t in range(FRAMES):
        results = engine.step_many({key: seq[t] for key, seq in frames.items()},
                                   {key: inputs_of[key](t) for key in frames})
        for key, result in results.items():
            assert result.error is None, result.error
            batched[key].append(result.output)
    assert all(b.num_streams == 2 for b in engine.buckets)  # both streams in one step every time

    plain = dataclasses.replace(config, history_warp="off", region_pixel=False, region_latent=False,
                                mask_condition=False, guided_output=False)
    for key, seq in frames.items():
        single = StreamingEnhancer(engine.model, config)
        expected = [single.step(f, **{k: v for k, v in inputs_of[key](t).items() if v is not None})
                    for t, f in enumerate(seq)]
        for t, (a, b) in enumerate(zip(batched[key], expected)):
            assert_batched_equal(a, b, f"{key} frame {t}")
        unconditioned = [StreamingEnhancer(engine.model, plain).step(f) for f in seq[:1]] + \
            [None] * (len(seq) - 1)  # fmt: skip
        if not changes.get("history_warp"):
            assert (unconditioned[0] - expected[0]).abs().max() > 2 / 255, "the mask must matter"
    if changes.get("history_warp"):  # the moving camera's history is resampled; the static one's is not
        stored, warped = aligned[FRAMES - 2]  # the engine's last step: both streams in one batch
        assert torch.equal(stored[0], warped[0])  # stream a: zero flow, or the identity pose
        assert float((stored[1] - warped[1]).abs().max()) > 0.01, "the motion inputs must change the references"


def test_region_pixel_keeps_the_input_outside_the_band(model):
    config = dataclasses.replace(model.config.stream, layout="per_frame", history="partial", offsets=(1,),
                                 region_pixel=True, region_pixel_band=2)
    engine = engine_for(model, config)
    seqs = {"a": frames_for(3), "b": frames_for(4)}
    masks = {"a": box_mask(2, 2), "b": box_mask(10, 26)}
    for t in range(2):
        out = engine.step_many({k: v[t] for k, v in seqs.items()}, {k: {"mask": masks[k]} for k in seqs})
        for key, mask in masks.items():
            near = torch.nn.functional.max_pool2d(mask, 2 * 3 + 1, stride=1, padding=3)[0, 0] > 0  # band 2 + 1
            assert torch.equal(out[key].output[0][:, ~near], seqs[key][t][0][:, ~near])
            assert not torch.equal(out[key].output[0][:, near], seqs[key][t][0][:, near])


def test_input_errors_name_the_problem_and_change_no_history(model):
    config = dataclasses.replace(model.config.stream, layout="per_frame", history="partial", history_warp="flow")
    engine = engine_for(model, config)
    reference = StreamingEnhancer(engine.model, config)
    frames = frames_for(5, 2)
    zero = {"flow": torch.zeros(1, 2, H, W)}
    first = engine.step_many({"a": frames[0], "b": frames[0]})
    reference.step(frames[0])
    bad = engine.step_many({"a": frames[1], "b": frames[1]}, {"a": zero})
    assert bad["a"].error is None and "needs the per-frame input flow" in bad["b"].error
    assert bad["b"].output is None and first["b"].error is None
    assert "unknown per-frame inputs ['normals']" in engine.step_many(
        {"b": frames[1]}, {"b": {"normals": torch.zeros(1, 3, H, W)}})["b"].error
    assert "shape" in engine.step_many({"b": frames[1]}, {"b": {"flow": torch.zeros(1, 2, H, W + 1)}})["b"].error
    assert "started at 32x16" in engine.step_many({"b": torch.rand(1, 3, 32, 32)})["b"].error
    # b's history is as it was after frame 0: its next good step equals the reference's second step
    good = engine.step_many({"b": frames[1]}, {"b": zero})["b"]
    assert torch.equal(good.output, reference.step(frames[1], **zero))
    ignored = engine.step_many({"b": frames[1]}, {"b": {**zero, "mask": torch.ones(1, 1, H, W)}})["b"]
    assert ignored.error is None  # inputs no option reads are not taken (the bridge promises that)


def test_stream_bound_and_slots_are_reused(model):
    engine = engine_for(model, max_streams=2)
    frame = torch.rand(1, 3, H, W)
    assert all(r.error is None for r in engine.step_many({"a": frame, "b": frame}).values())
    assert "too many streams" in engine.step_many({"c": frame})["c"].error
    engine.remove("b")
    assert engine.step_many({"c": frame})["c"].error is None
    assert sorted(engine.keys()) == ["a", "c"]
    engine.reset("a")
    fresh = StreamingEnhancer(engine.model).step(frame)
    assert torch.equal(engine.step_many({"a": frame})["a"].output, fresh)


def test_uint8_and_float_frames_give_the_same_levels(model):
    engine = engine_for(model)
    frames = frames_for(8)
    for frame in frames:
        u8 = (frame[0] * 255).round().to(torch.uint8).permute(1, 2, 0)
        results = engine.step_many({"float": frame, "uint8": u8})
        as_levels = results["uint8"].output.permute(2, 0, 1).float() / 255
        assert results["uint8"].output.dtype == torch.uint8 and results["uint8"].output.shape == (H, W, 3)
        assert torch.equal(as_levels, results["float"].output[0])


def test_prime_resumes_a_stream_exactly(model):
    engine = engine_for(model)
    frames = frames_for(9, 7)
    outputs = [engine.step_many({"cam": f})["cam"].output for f in frames]
    resumed = engine_for(model)
    resumed.prime("cam", outputs[1:5])
    assert torch.equal(resumed.step_many({"cam": frames[5]})["cam"].output, outputs[5])
