import pytest
import torch

from simharmon.config import load_config
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime.multistream import MultiStreamEnhancer
from simharmon.runtime.stream import StreamingEnhancer


@pytest.fixture(scope="module")
def model():
    return build_enhancer(load_config("tiny"), seed=5)


def frames_for(seed, count, height=32, width=48):
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, height, width, generator=gen)
    return [(base + 0.05 * t).clamp(0, 1) for t in range(count)]


def test_batched_streams_match_separate_streams(model):
    cams = {"cam0": frames_for(0, 7), "cam1": frames_for(1, 7), "small": frames_for(2, 7, 16, 32)}
    multi = MultiStreamEnhancer(model)
    batched = {k: [] for k in cams}
    for t in range(7):
        step = {k: v[t] for k, v in cams.items() if not (k == "cam1" and t == 2)}  # cam1 skips a frame
        for k, out in multi.step_many(step).items():
            batched[k].append(out)
    for key, frames in cams.items():
        single = StreamingEnhancer(model)
        expected = [single.step(f) for t, f in enumerate(frames) if not (key == "cam1" and t == 2)]
        assert len(expected) == len(batched[key])
        for a, b in zip(batched[key], expected):
            torch.testing.assert_close(a, b, rtol=0, atol=1.01 / 255)
            assert (a != b).float().mean() < 1e-3  # only quantization-boundary flips


def test_bad_frame_names_its_stream_and_bounds(model):
    multi = MultiStreamEnhancer(model, max_streams=2)
    with pytest.raises(ValueError, match="stream 'b'"):
        multi.step_many({"a": torch.rand(1, 3, 32, 48), "b": torch.rand(1, 3, 30, 48)})
    multi.step_many({"a": torch.rand(1, 3, 32, 48)})
    with pytest.raises(RuntimeError, match="too many streams"):
        multi.step_many({"c": torch.rand(1, 3, 32, 48)})
    multi.remove("b")
    multi.step_many({"c": torch.rand(1, 3, 32, 48)})
    assert sorted(multi.keys()) == ["a", "c"]
