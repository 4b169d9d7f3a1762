"""The streaming enhancer against naive loops that recompute everything every step."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from simharmon.config import load_config
from simharmon.io.pixels import uint8_hwc_to_frame
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime.stream import StreamingEnhancer

NUM_FRAMES = 12
HEIGHT, WIDTH = 32, 48


def smooth_frames(num=NUM_FRAMES, seed=0):
    """Moving smooth colour patterns as uint8 [H, W, 3] (not noise: the VAE should see structure)."""
    gen = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    phases = gen.uniform(0, 2 * np.pi, size=(3, 2))
    frames = []
    for t in range(num):
        chans = [0.5 + 0.4 * np.sin(xx / (5 + c) + 0.3 * t + phases[c, 0]) * np.cos(yy / (7 - c) + phases[c, 1])
                 for c in range(3)]
        frames.append(np.clip(np.stack(chans, -1) * 255, 0, 255).astype(np.uint8))
    return frames


@pytest.fixture(scope="module")
def model():
    return build_enhancer(load_config("tiny"), seed=3)


def run_stream(model, frames, **stream_changes):
    enhancer = StreamingEnhancer(model, dataclasses.replace(model.config.stream, **stream_changes))
    return [enhancer.step(uint8_hwc_to_frame(f)) for f in frames]


def naive_release_loop(model, frames, folder, offsets=(1, 2, 3, 4)):
    """The release's inference loop: PNGs on disk, the full clip re-encoded, all frames decoded."""
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    in_dir, out_dir = folder / "in", folder / "out"
    in_dir.mkdir()
    out_dir.mkdir()
    written, outputs = [], []
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(in_dir / f"{index:03d}.png")
    for index in range(len(frames)):
        current = to_tensor(Image.open(in_dir / f"{index:03d}.png").convert("RGB")).unsqueeze(0)
        if len(written) >= max(offsets):
            refs = [to_tensor(Image.open(written[-o]).convert("RGB")).unsqueeze(0) for o in offsets]
            clip = torch.stack([current] + refs, dim=2)
        else:
            clip = current.unsqueeze(2)
        with torch.no_grad():
            video = model.decode(model.denoise(model.encode(clip)))  # decodes every frame
        assert video.shape[2] == clip.shape[2]
        image = torch.clamp(video[0, :, 0].float() * 0.5 + 0.5, 0.0, 1.0)
        path = out_dir / f"{index:03d}.png"
        transforms.ToPILImage()(image).save(path)
        written.append(path)
        outputs.append(np.asarray(Image.open(path)))
    return outputs


def as_uint8(frame):
    return (frame[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def test_outputs_are_not_degenerate(model):
    """Guards the exactness tests below: saturated or constant outputs would make them vacuous."""
    out = run_stream(model, smooth_frames(4), history="none")
    values = torch.stack(out)
    saturated = ((values == 0) | (values == 1)).float().mean().item()
    assert saturated < 0.5, f"{saturated:.0%} of output values are saturated"
    assert values.std().item() > 0.01


def test_release_layout_matches_naive_release_loop(model, tmp_path):
    frames = smooth_frames()
    streamed = [as_uint8(f) for f in run_stream(model, frames, layout="release", history="full")]
    naive = naive_release_loop(model, frames, tmp_path)
    for index, (a, b) in enumerate(zip(streamed, naive)):
        np.testing.assert_array_equal(a, b, err_msg=f"frame {index}")
    nontemporal = [as_uint8(f) for f in run_stream(model, frames, layout="release", history="none")]
    assert all(np.array_equal(a, b) for a, b in zip(streamed[:4], nontemporal[:4]))
    assert not any(np.array_equal(a, b) for a, b in zip(streamed[4:], nontemporal[4:])), "history had no effect"


def naive_per_frame_loop(model, frames, offsets=(1, 2, 3, 4), full=True):
    """Eq. 2 without a latent ring: every reference is re-encoded from its output frame each step."""
    outputs = []
    for frame in frames:
        image = uint8_hwc_to_frame(frame) * 2 - 1
        latents = [model.encode(image.unsqueeze(2))]
        if outputs and (not full or len(outputs) >= max(offsets)):
            for offset in offsets:
                ref = outputs[-min(offset, len(outputs))] * 2 - 1
                latents.append(model.encode(ref.unsqueeze(2)))
        with torch.no_grad():
            x0 = model.denoise(torch.cat(latents, dim=2))
            decoded = model.decode(x0[:, :, :1])[:, :, 0]
        out = torch.clamp(decoded * 0.5 + 0.5, 0, 1).mul(255).to(torch.uint8).float() / 255
        outputs.append(out)
    return outputs


@pytest.mark.parametrize("history", ["full", "partial"])
def test_per_frame_layout_matches_naive_reencoding_loop(model, history):
    frames = smooth_frames()
    streamed = run_stream(model, frames, layout="per_frame", history=history)
    naive = naive_per_frame_loop(model, frames, full=history == "full")
    for index, (a, b) in enumerate(zip(streamed, naive)):
        torch.testing.assert_close(a, b, rtol=0, atol=1.01 / 255, msg=f"frame {index}")
    # Levels may differ only where fp32 rounding straddles a quantization boundary: almost nowhere.
    differing = sum(int((a != b).sum()) for a, b in zip(streamed, naive))
    assert differing <= 1e-3 * NUM_FRAMES * 3 * HEIGHT * WIDTH


def test_partial_history_conditions_from_the_second_frame(model):
    frames = smooth_frames(6)
    full = run_stream(model, frames, layout="per_frame", history="full")
    partial = run_stream(model, frames, layout="per_frame", history="partial")
    assert torch.equal(full[0], partial[0])
    assert not torch.equal(full[1], partial[1])


def test_output_latent_reference_is_a_different_approximation(model):
    frames = smooth_frames(3)
    exact = run_stream(model, frames, layout="per_frame", history="partial", reference_latent="reencode")
    fast = run_stream(model, frames, layout="per_frame", history="partial", reference_latent="output")
    assert torch.equal(exact[0], fast[0])  # no history yet
    assert not torch.equal(exact[1], fast[1])  # x0 is not encode(decode(x0))


@pytest.mark.parametrize("layout", ["release", "per_frame"])
def test_prime_resumes_exactly(model, layout):
    frames = smooth_frames(9)
    full = run_stream(model, frames, layout=layout, history="full")
    resumed = StreamingEnhancer(model, dataclasses.replace(model.config.stream, layout=layout, history="full"))
    resumed.prime(full[6 - resumed.history_length:6])
    tail = [resumed.step(uint8_hwc_to_frame(f)) for f in frames[6:]]
    for a, b in zip(tail, full[6:]):
        assert torch.equal(a, b)


def test_offsets_are_configurable(model):
    frames = smooth_frames(8)
    a = run_stream(model, frames, layout="per_frame", history="full", offsets=(1, 3))
    b = run_stream(model, frames, layout="per_frame", history="full", offsets=(1, 2))
    assert torch.equal(a[1], b[1])  # both still non-temporal
    assert not torch.equal(a[2], b[2])  # b has its 2 references at frame 2, a waits for offset 3


def test_bad_inputs(model):
    enhancer = StreamingEnhancer(model)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        enhancer.step(torch.rand(1, 4, 32, 48))
    with pytest.raises(TypeError, match="floating-point"):
        enhancer.step(torch.zeros(1, 3, 32, 48, dtype=torch.uint8))
    with pytest.raises(ValueError, match="multiples of 16"):
        enhancer.step(torch.rand(1, 3, 40, 48))
    enhancer.step(torch.rand(1, 3, 32, 48))
    with pytest.raises(ValueError, match="mixed resolutions"):
        enhancer.step(torch.rand(1, 3, 48, 48))
    enhancer.reset()
    enhancer.step(torch.rand(1, 3, 48, 48))


def test_decoder_skip_connections_are_applied(model):
    """A checkpoint with skip convolutions must run with them (Harmonizer --vae_skip_connection)."""
    config = model.config.replace(tokenizer=dataclasses.replace(model.config.tokenizer, skip_connections=True))
    skip_model = build_enhancer(config, seed=3)
    with torch.no_grad():
        for index in range(9):
            getattr(skip_model.tokenizer.decoder, f"skip_conv_{index}").weight.normal_(0, 0.05)
    frame = uint8_hwc_to_frame(smooth_frames(1)[0])
    out = StreamingEnhancer(skip_model, dataclasses.replace(config.stream, history="none")).step(frame)

    with torch.no_grad():  # by hand: encode with skips, denoise, decode latent 0 with the same skips
        latents, skips = skip_model.tokenizer.encode((frame * 2 - 1).unsqueeze(2), return_skips=True)
        decoded = skip_model.tokenizer.decode(skip_model.denoise(latents)[:, :, :1], skips=skips)[:, :, 0]
        without = skip_model.tokenizer.decode(skip_model.denoise(latents)[:, :, :1])[:, :, 0]
    expected = torch.clamp(decoded * 0.5 + 0.5, 0, 1).mul(255).to(torch.uint8).float() / 255
    assert torch.equal(out, expected)
    assert not torch.equal(out, torch.clamp(without * 0.5 + 0.5, 0, 1).mul(255).to(torch.uint8).float() / 255)
