"""The engine's rigs (cameras that always step together) against StreamingEnhancer, on the CPU, tiny config, fp32."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch

from simharmon.config import ConfigError, EngineConfig, OptimizationConfig, StreamConfig, load_config
from simharmon.io.pixels import uint8_hwc_to_frame
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime import backends as backends_module
from simharmon.runtime.backends import BackendUnavailable, require_backend
from simharmon.runtime.engine import Engine
from simharmon.runtime.optimize import OptimizedEnhancer
from simharmon.runtime.rig import FrameResult, StreamGroup
from simharmon.runtime.static import StaticStep
from simharmon.runtime.stream import StreamingEnhancer

H, W = 32, 48
NONE = OptimizationConfig.none()


def cpu_config(**changes) -> EngineConfig:
    return EngineConfig(**{"device": "cpu", "dtype": "float32", "resolutions": ((W, H), (32, 16)), **changes})


def camera_frames(count: int, cameras: int = 1, seed: int = 0) -> list:
    """Smooth moving patterns, uint8 [cameras, H, W, 3] per step (structure, not noise)."""
    gen = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    phase = gen.uniform(0, 2 * np.pi, size=(cameras, 3))
    out = []
    for t in range(count):
        cams = [np.stack([0.5 + 0.4 * np.sin(xx / (5 + c) + 0.3 * t + phase[k, c]) * np.cos(yy / (7 - c))
                          for c in range(3)], -1) for k in range(cameras)]  # fmt: skip
        out.append(torch.from_numpy((np.clip(np.stack(cams), 0, 1) * 255).astype(np.uint8)))
    return out


def reference_outputs(model, frames, stream=None) -> list:
    """StreamingEnhancer.step on the same frames, as uint8 [H, W, 3] (its outputs are on 8-bit levels)."""
    enhancer = StreamingEnhancer(model, stream)
    return [(enhancer.step(uint8_hwc_to_frame(f))[0].permute(1, 2, 0) * 255).round().to(torch.uint8) for f in frames]


def assert_matches(got, expected, exact: bool) -> None:
    """Exact, or at most one level off at quantization boundaries (fp32 reordering) on < 0.2% of values."""
    assert len(got) == len(expected)
    for index, (a, b) in enumerate(zip(got, expected)):
        diff = (a.int() - b.int()).abs()
        if exact:
            assert torch.equal(a, b), f"frame {index}: {int((diff > 0).sum())} values differ"
        else:
            assert int(diff.max()) <= 1, f"frame {index}"
            assert (diff > 0).float().mean() < 2e-3, f"frame {index}"


@pytest.fixture(scope="module")
def model():
    return build_enhancer(load_config("tiny"), seed=3)


@pytest.fixture(scope="module")
def frames():
    return camera_frames(7)  # frames 0..3 non-temporal (history "full"), 4..6 with V = 5


@pytest.fixture(scope="module")
def release_reference(model, frames):
    return reference_outputs(model, frames)


def test_plain_engine_is_bitwise_streaming_enhancer(model, frames, release_reference):
    group = Engine(model, cpu_config(optimizations=NONE)).open(1, W, H)
    assert_matches([group.step(f)[0] for f in frames], release_reference, exact=True)
    assert group.frames_seen == len(frames)


def test_bf16_engine_uses_a_converted_copy(model, frames):
    stream = StreamConfig(history="none")
    engine = Engine(model, cpu_config(dtype="bfloat16"), stream)
    assert engine.model is not model and engine.dtype == torch.bfloat16 and model.dtype == torch.float32
    out = engine.open(1, W, H).step(frames[0])[0]
    fp32 = reference_outputs(model, frames[:1], stream)[0]
    diff = (out.int() - fp32.int()).abs().float()
    # bf16 rounding, not a different computation: measured mean 0.46, max 6 levels.
    assert diff.mean() < 1.0 and diff.max() <= 12


def test_optimized_engine_matches_streaming_enhancer(model, frames, release_reference):
    engine = Engine(model, cpu_config())
    group = engine.open(1, W, H)
    out = [group.step(f)[0] for f in frames]
    assert_matches(out, release_reference, exact=False)
    # Lazily built buckets: V = 1 while the history fills, then V = 1 + 4.
    assert sorted(b.history_frames for b in engine.buckets) == [1, 5]
    nontemporal = reference_outputs(model, frames[4:5], dataclasses.replace(model.config.stream, history="none"))
    assert not torch.equal(out[4], nontemporal[0]), "history had no effect"


@pytest.mark.parametrize("history", ["full", "partial"])
def test_per_frame_layout_matches(model, history):
    stream = dataclasses.replace(model.config.stream, layout="per_frame", history=history, offsets=(1, 2))
    frames = camera_frames(4, seed=1)
    expected = reference_outputs(model, frames, stream)
    group = Engine(model, cpu_config(), stream).open(1, W, H)
    assert_matches([group.step(f)[0] for f in frames], expected, exact=False)
    plain = Engine(model, cpu_config(optimizations=NONE), stream).open(1, W, H)
    assert_matches([plain.step(f)[0] for f in frames], expected, exact=True)


def test_optimized_model_is_a_drop_in_for_the_streaming_classes(model, frames, release_reference):
    fast = OptimizedEnhancer(model)
    out = [StreamingEnhancer(fast).step(uint8_hwc_to_frame(frames[0]))]
    engine = Engine(model, cpu_config())
    out += [engine.step_many({"cam": uint8_hwc_to_frame(frames[0])})["cam"].output]
    for frame in out:
        assert_matches([(frame[0].permute(1, 2, 0) * 255).round().to(torch.uint8)], release_reference[:1], exact=False)


def test_cameras_are_batched_with_their_own_rings(model):
    cams = camera_frames(6, cameras=2, seed=2)
    expected = [reference_outputs(model, [f[k] for f in cams]) for k in range(2)]
    engine = Engine(model, cpu_config())
    group = engine.open(2, W, H)
    out = [group.step(f) for f in cams]
    entries = group.pool.history.state.entries
    assert entries.shape == (engine.config.max_streams + 1, 4, 3, H, W) and len(set(group.slots)) == 2
    for k in range(2):
        assert_matches([o[k] for o in out], expected[k], exact=False)
    assert not torch.equal(out[-1][0], out[-1][1])
    # A second group of the same bucket reuses the built step; a new camera count is a new bucket.
    before = len(engine.buckets)
    engine.open(2, W, H).step(cams[0])
    assert len(engine.buckets) == before
    engine.open(1, W, H).step(cams[0][:1])
    assert len(engine.buckets) == before + 1


def test_prime_resumes_exactly(model, frames, release_reference):
    group = Engine(model, cpu_config()).open(1, W, H)
    full = [group.step(f) for f in frames]
    resumed = Engine(model, cpu_config()).open(1, W, H)
    resumed.prime(full[1:5])
    for a, b in zip([resumed.step(f) for f in frames[5:]], full[5:]):
        assert torch.equal(a, b)
    group.reset()
    assert group.reference_offsets() == [] and torch.equal(group.step(frames[0]), full[0])


def test_inputs_and_results_are_checked(model, frames):
    engine = Engine(model, cpu_config(output_slots=2))
    with pytest.raises(ValueError, match="no shape bucket"):
        engine.open(1, 64, 64)
    with pytest.raises(ValueError, match="max_cameras"):
        engine.open(9, W, H)
    group = engine.open(1, W, H)
    with pytest.raises(ValueError, match=r"\[1, 32, 48, 3\]"):
        group.step(torch.zeros(2, H, W, 3, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        group.step(torch.zeros(1, H, W, 3))
    first = group.submit(frames[0].numpy())  # numpy input works too
    assert isinstance(first, FrameResult) and first.ready()
    group.submit(frames[1])
    group.submit(frames[2])  # the third submission reuses the first one's slot
    with pytest.raises(RuntimeError, match="reused"):
        first.result()
    masked = Engine(model, cpu_config(), dataclasses.replace(model.config.stream, region_pixel=True)).open(1, W, H)
    result = masked.submit(frames[0])  # a mask-reading model without a mask: the frames pass through
    assert result.passthrough == "no_mask" and torch.equal(result.result(), frames[0])


def test_configs_validate():
    with pytest.raises(ConfigError, match="backend"):
        EngineConfig(backend="onnx")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        EngineConfig(backend="cudagraph", device="cpu")
    with pytest.raises(ConfigError, match="max_history"):
        EngineConfig(max_history=5)
    with pytest.raises(ConfigError, match="bool"):
        OptimizationConfig(fused_io=1)
    assert OptimizationConfig().enabled() and not OptimizationConfig.none().enabled()
    assert EngineConfig(resolutions=[[1024, 576]]).resolutions == ((1024, 576),)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors on a machine without CUDA")
@pytest.mark.parametrize("backend", ["cudagraph", "tensorrt"])
def test_gpu_backends_fail_clearly_without_cuda(model, backend):
    with pytest.raises(BackendUnavailable, match="needs a CUDA device"):
        Engine(model, EngineConfig(backend=backend, device="cuda", dtype="float32"))


def test_tensorrt_missing_says_how_to_install(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(backends_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendUnavailable, match=r"pip install 'simharmon\[tensorrt\]'"):
        require_backend("tensorrt", torch.device("cuda"))


def test_per_frame_path_never_synchronizes_the_device():
    for fn in (StreamGroup.submit, StreamGroup._submit_cuda, StaticStep._run, StaticStep.load, FrameResult.result,
               Engine.step_many, Engine._run_chunk):
        assert "torch.cuda.synchronize" not in inspect.getsource(fn)


@pytest.mark.slow
def test_compile_backend_matches_eager(model, tmp_path_factory, monkeypatch):
    """torch.compile (inductor, freezing) against eager: one static bucket, V = 1 (about a minute on 2 cores)."""
    # A cache of our own: a shared inductor directory can be cleaned by other processes mid-compile.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.getbasetemp().parent / "simharmon-inductor"))
    stream = StreamConfig(history="none")
    frames = camera_frames(3, seed=4)
    expected = reference_outputs(model, frames, stream)
    group = Engine(model, cpu_config(backend="compile"), stream).open(1, W, H)
    assert_matches([group.step(f)[0] for f in frames], expected, exact=False)
