"""Post-render hooks: structure preserved, no copies or host transfers, real model results."""

import dataclasses
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

from simharmon.bridge.processor import IdentityStandIn
from simharmon.config import load_config
from simharmon.hooks import DictAdapter, ImageAdapter, PostRenderHook, post_render_hook
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime import RuntimeSpec, build_runtime
from simharmon.runtime.stream import StreamingEnhancer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundled_engine():
    return build_runtime(RuntimeSpec(device="cpu"))


@pytest.fixture(scope="module")
def tiny():
    """The tiny model with history "partial", so the second frame already uses the first."""
    config = load_config("tiny")
    return build_enhancer(config.replace(stream=dataclasses.replace(config.stream, history="partial")), seed=11)


def same_storage(a, b):
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def test_identity_chw_batch_is_returned_without_copies():
    hook = PostRenderHook(IdentityStandIn(pixel_multiple=1))
    image = torch.rand(3, 3, 8, 12)
    out = hook(image)
    assert out.shape == image.shape and same_storage(out, image) and torch.equal(out, image)
    depth, mask = torch.rand(3, 1, 8, 12), torch.ones(3, 1, 8, 12)
    out = hook((image, depth, mask))
    assert isinstance(out, tuple) and out[1] is depth and out[2] is mask and same_storage(out[0], image)


def test_identity_hwc_and_dict_outputs_keep_their_layout():
    hook = PostRenderHook(IdentityStandIn(pixel_multiple=1), ImageAdapter("hwc"))
    image = torch.rand(8, 12, 3)
    out = hook(image)
    assert out.shape == (8, 12, 3) and same_storage(out, image) and torch.equal(out, image)
    hook = PostRenderHook(IdentityStandIn(pixel_multiple=1), DictAdapter("rgb", mask_key="opacity"))
    render = {"rgb": image, "depth": torch.rand(8, 12, 1), "opacity": torch.rand(8, 12, 1), "extra": 3}
    out = hook(render)
    assert set(out) == set(render) and out["depth"] is render["depth"] and out["opacity"] is render["opacity"]
    assert torch.equal(out["rgb"], image) and out is not render


def test_bad_outputs_are_refused_clearly():
    hook = PostRenderHook(IdentityStandIn(pixel_multiple=1))
    with pytest.raises(TypeError, match="floating-point"):
        hook(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        hook(torch.rand(4, 8, 8))
    with pytest.raises(KeyError, match="'rgb'"):
        PostRenderHook(IdentityStandIn(), DictAdapter())({"image": torch.rand(8, 8, 3)})
    with pytest.raises(TypeError, match="expected an Engine"):
        PostRenderHook(object())


def test_real_model_cameras_are_separate_streams(tiny, monkeypatch):
    cams = [torch.rand(1, 3, 16, 32, generator=torch.Generator().manual_seed(s)) for s in range(2)]
    hook = PostRenderHook(tiny, stream="test")  # a built model: the factory makes its engine
    refs = [StreamingEnhancer(hook.engine.model) for _ in cams]

    @hook.wrap
    def render(step):
        return torch.cat([(c + 0.03 * step).clamp(0, 1) for c in cams])

    assert render.__name__ == "render"
    for step in range(2):
        expected = torch.cat([ref.step((c + 0.03 * step).clamp(0, 1)) for ref, c in zip(refs, cams)])
        with monkeypatch.context() as patch:  # no host round trip inside the hook
            for name in ("cpu", "numpy", "tolist"):
                patch.setattr(torch.Tensor, name, lambda *a, _n=name, **k: pytest.fail(f"hook called .{_n}()"))
            out = render(step)
        assert out.shape == (2, 3, 16, 32) and out.dtype == torch.float32
        diff = (out - expected).abs()  # two cameras share a batch: one level on a few values at most
        assert float(diff.max()) <= 1.01 / 255 and float((diff > 0).float().mean()) < 0.01
    assert len(hook.engine.keys()) == 2
    hook.reset()
    fresh = [StreamingEnhancer(hook.engine.model) for _ in cams]
    again = render(0)
    first = torch.cat([ref.step(c) for ref, c in zip(fresh, cams)])
    assert float((again - first).abs().max()) <= 1.01 / 255  # the history restarted


def test_hook_passes_masks_and_flags_frames_without_one(bundled_engine):
    """The bundled model through the hook: a render with a mask is enhanced, one without passes through."""
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 144, 256, generator=gen)
    mask = torch.zeros(1, 1, 144, 256)
    mask[..., 40:100, 80:180] = 1.0
    hook = PostRenderHook(bundled_engine, stream="masked")
    out = hook((image, None, mask))[0]
    assert hook.last_passthrough == [None]
    assert not torch.equal(out[..., 40:100, 80:180], image[..., 40:100, 80:180])  # the actor: enhanced
    # outside the actor: the input, on 8-bit levels (region_pixel, band 0)
    assert float((out[..., :30, :] - image[..., :30, :]).abs().max()) < 1 / 255
    bare = PostRenderHook(bundled_engine, stream="bare")
    passed = bare(image)
    assert bare.last_passthrough == ["no_mask"] and torch.equal(passed, image)


def test_decorator_form(tiny):
    @post_render_hook(IdentityStandIn(pixel_multiple=1), ImageAdapter("hwc"))
    def render():
        return torch.full((8, 8, 3), 0.5)

    assert torch.equal(render(), torch.full((8, 8, 3), 0.5)) and isinstance(render.hook, PostRenderHook)


def test_example_runs_with_the_bundled_model(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["post_render_hook.py", "--frames", "2", "--cameras", "2"])
    runpy.run_path(str(REPO / "examples" / "post_render_hook.py"), run_name="__main__")
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert len(steps) == 2 and "simharmon-default" in out
    for line in steps:
        actor = float(re.search(r"actor ([0-9.]+)", line).group(1))
        background = float(re.search(r"background ([0-9.]+)", line).group(1))
        # the background is the render itself, only quantized to 8-bit levels (< 1 level)
        assert "colors [2, 144, 256, 5]" in line and actor > 2.0 and background < 1.0
        assert "depth kept True" in line and "passthrough [None, None]" in line
