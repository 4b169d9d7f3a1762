"""Each exact optimization against the plain computation (tiny config, CPU, fp32).

Errors are relative L2, ||fast - plain|| / ||plain||. The values measured on the development
machine are written beside each tolerance; fp32 reordering alone gives errors of order 1e-7.
Each test also checks that the optimization is really active (else equality would be vacuous).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simharmon.config import ConfigError, OptimizationConfig, load_config
from simharmon.io.pixels import frame_to_model, model_to_frame, uint8_hwc_to_frame
from simharmon.models.denoiser import rectified_flow_coefficients
from simharmon.models.enhancer import build_enhancer
from simharmon.models.wan_vae_layers import CausalConv3d, FeatureCache
from simharmon.ops import pack, pack_reference, unpack, unpack_reference
from simharmon.runtime.fast_dit import FastDenoiser
from simharmon.runtime.fast_vae import FoldedConv, FoldedTokenizer

NONE = OptimizationConfig.none()
TOL = 1e-6  # relative; the measured errors below are all <= 2.1e-7


def only(name: str) -> OptimizationConfig:
    """Just one optimization on."""
    return dataclasses.replace(NONE, **{name: True})


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.double() - ref.double()).norm() / ref.double().norm()).item()


@pytest.fixture(scope="module")
def model():
    """Tiny enhancer with every parameter random (the default init zeroes the VAE attention proj)."""
    m = build_enhancer(load_config("tiny"), seed=1)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 1 or p[0].numel() == 1:  # norm gains and biases
                p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
    return m


def latents(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 16, frames, 4, 6, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- (1) modulation


@pytest.mark.parametrize("batch,frames,tol", [(1, 2, 0.0), (2, 5, TOL)])
def test_precomputed_modulation_matches_plain(model, batch, frames, tol):
    # Measured: batch 1 bit-exact; batch 2 1.3e-7 (the plain path computes [2, 1, D] rows).
    fast = FastDenoiser(model.denoiser, only("precompute_modulation"))
    x = latents(batch, frames)
    assert rel_err(fast(x), model.denoiser(x)) <= tol


def test_precomputed_modulation_is_computed_once(model):
    fast = FastDenoiser(model.denoiser, only("precompute_modulation"))
    x = latents(1, 1)
    before = fast(x)
    mods = fast.block_modulation
    assert mods.shape == (2, 3, 3, 1, 1, 64) and fast.final_modulation.shape == (2, 1, 1, 64)
    lin = model.dit.t_embedder[1].linear_2
    saved = lin.weight.detach().clone()
    try:
        with torch.no_grad():
            lin.weight.mul_(3.0)  # the plain path would change; the precomputed one does not
        assert torch.equal(fast(x), before)
        assert not torch.equal(model.denoiser(x), before)
        fast.prepare()
        assert not torch.equal(fast(x), before)
    finally:
        with torch.no_grad():
            lin.weight.copy_(saved)


# ----------------------------------------------------------------------------- (2) cross-attention


def test_null_cross_attention_is_skipped_exactly(model):
    # Measured: bit-exact (x + gate * 0 == x).
    fast = FastDenoiser(model.denoiser, only("skip_null_cross_attention"))
    assert fast.cross_attention_is_identity and fast.skips_cross_attention
    calls = []
    handle = model.dit.blocks[0].cross_attn.register_forward_hook(lambda *a: calls.append(1))
    try:
        x = latents(2, 2)
        out = fast(x)
        assert not calls, "cross-attention ran although it was skipped"
        model.denoiser(x)
        assert calls, "the plain path must run cross-attention (the hook works)"
    finally:
        handle.remove()
    assert torch.equal(out, model.denoiser(x))


def test_non_zero_condition_is_not_skipped(model):
    fast = FastDenoiser(model.denoiser, only("skip_null_cross_attention"))
    context = torch.zeros(1, 16, 32)
    context[0, 3, 5] = 0.5  # a single non-zero value must disable the skip
    fast.set_context(context)
    assert not fast.cross_attention_is_identity and not fast.skips_cross_attention
    x = latents(1, 2)
    c_skip, c_out, c_in, t = rectified_flow_coefficients(model.denoiser.sigma)
    velocity = model.dit(x * c_in, torch.full((1, 1), t), context)
    expected = c_skip * x + c_out * velocity
    assert rel_err(fast(x), expected) <= TOL  # measured: bit-exact
    assert rel_err(fast(x), model.denoiser(x)) > 1e-4, "the condition had no effect: test is vacuous"


# ----------------------------------------------------------------------------- (3) 2D folding


def test_folded_conv_is_the_last_kernel_slice():
    """Independent of CausalConv3d.forward: a 3D conv over [0, 0, x] with explicit zeros."""
    torch.manual_seed(0)
    conv = CausalConv3d(5, 7, 3, padding=1)
    x = torch.randn(2, 5, 9, 11)
    padded = torch.cat([torch.zeros(2, 5, 2, 9, 11), x.unsqueeze(2)], dim=2)
    want = F.conv3d(F.pad(padded, (1, 1, 1, 1)), conv.weight, conv.bias)[:, :, 0]
    assert rel_err(FoldedConv(conv)(x), want) <= TOL  # measured ~1e-7
    with pytest.raises(ValueError, match="cannot fold"):
        FoldedConv(CausalConv3d(5, 5, (3, 1, 1), stride=(2, 1, 1)))  # time_conv of downsample3d


@pytest.mark.parametrize("kernel,padding,stride", [(3, 1, 1), (1, 0, 1), ((3, 3, 3), (1, 1, 1), (1, 2, 2))])
def test_causal_conv_single_frame_path_matches_the_3d_convolution(kernel, padding, stride):
    """CausalConv3d training on one frame without history runs a 2D convolution: same values and
    gradients as the 3D convolution over [0, 0, x] (odd sizes; measured worst relative error 1.3e-7);
    without gradients (inference, FLOP counts) it runs the 3D convolution itself."""
    torch.manual_seed(1)
    conv = CausalConv3d(5, 7, kernel, padding=padding, stride=stride)
    x = torch.randn(2, 5, 1, 9, 11, requires_grad=True)
    pt = conv.time_pad
    ph, pw = conv.space_pad[2], conv.space_pad[0]
    want = F.conv3d(F.pad(x, (pw, pw, ph, ph, pt, 0)), conv.weight, conv.bias, conv.stride)
    got = conv(x)
    assert got.shape == want.shape and rel_err(got, want) <= TOL
    (grad_want,) = torch.autograd.grad(want.square().sum(), conv.weight)
    (grad_got,) = torch.autograd.grad(conv(x).square().sum(), conv.weight)
    assert rel_err(grad_got, grad_want) <= TOL
    calls = []
    plain = conv._conv_forward
    conv._conv_forward = lambda *args: calls.append(1) or plain(*args)  # counts the 3-D convolutions
    conv(x)
    assert not calls  # training: the 2-D form
    with torch.no_grad():
        assert rel_err(conv(x), want) <= TOL
    assert calls == [1]  # inference: the reference 3-D convolution
    del conv._conv_forward
    cache = FeatureCache()
    conv(x, cache)  # first chunk: folded; the cache keeps the frame for the next chunk as before
    if pt:
        assert torch.equal(cache.get(conv), x[:, :, -pt:].detach())


@pytest.mark.parametrize("frames", [1, 5, 9])
def test_folded_encode_matches_plain(model, frames):
    # Measured: T=1 1.9e-7, T=5 1.5e-7, T=9 1.4e-7 (later chunks continue from the folded cache).
    folded = FoldedTokenizer(model.tokenizer)
    video = torch.rand(2, 3, frames, 32, 48, generator=torch.Generator().manual_seed(frames)) * 2 - 1
    calls = []
    handles = [m.register_forward_hook(lambda *a: calls.append(1))
               for m in model.tokenizer.modules() if isinstance(m, CausalConv3d)]  # fmt: skip
    try:
        ours = folded.encode(video)
        if frames == 1:
            assert not calls, "a 3D convolution ran on a single-frame encode"
    finally:
        for h in handles:
            h.remove()
    assert rel_err(ours, model.tokenizer.encode(video)) <= TOL


@pytest.mark.parametrize("frames", [1, 2])
def test_folded_decode_matches_plain(model, frames):
    # Measured: T'=1 2.1e-7, T'=2 1.8e-7.
    z = latents(2, frames, seed=7)
    ours = FoldedTokenizer(model.tokenizer).decode(z)
    assert rel_err(ours, model.tokenizer.decode(z)) <= TOL


# ----------------------------------------------------------------------------- (4) latent 0 only


def test_decoding_latent_zero_alone_gives_frame_zero(model):
    # Measured: bit-exact (the decoder is causal; frame 0 is latent 0's first chunk).
    z = latents(1, 2, seed=3)
    full = model.tokenizer.decode(z)
    assert full.shape[2] == 5
    assert torch.equal(model.tokenizer.decode(z[:, :, :1])[:, :, 0], full[:, :, 0])


# ----------------------------------------------------------------------------- (5) last block


@pytest.mark.parametrize("batch,frames", [(1, 2), (2, 5)])
def test_last_block_frame_zero_only_matches_plain(model, batch, frames):
    # Measured: (1, 2) 4.5e-8; (2, 5) bit-exact.
    fast = FastDenoiser(model.denoiser, only("last_block_current_only"))
    x = latents(batch, frames, seed=frames)
    ours = fast(x)
    assert ours.shape == (batch, 16, 1, 4, 6)
    assert rel_err(ours, model.denoiser(x)[:, :, :1]) <= TOL


def test_optimization_switches_are_bools():
    with pytest.raises(ConfigError, match="bool"):
        OptimizationConfig(fused_io=1)


# ----------------------------------------------------------------------------- (6) fused I/O


def test_fused_pack_matches_plain_conversion_bitwise():
    every_level = torch.arange(256, dtype=torch.uint8).repeat(3 * 4).view(4, 16, 16, 3)
    rand = torch.randint(0, 256, (2, 24, 40, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for frames in (every_level, rand):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            want = frame_to_model(uint8_hwc_to_frame(frames), dtype)
            for packer in (pack, pack_reference):  # the op (kernel on CUDA) and its torch reference
                got = packer(frames, "rgb", dtype)
                assert got.dtype == dtype and got.is_contiguous() and torch.equal(got, want)


def test_fused_unpack_matches_release_quantization_bitwise():
    gen = torch.Generator().manual_seed(1)
    decoded = torch.rand(2, 3, 24, 40, generator=gen) * 3 - 1.5  # includes out-of-range values
    levels = torch.arange(256, dtype=torch.float32) / 255 * 2 - 1  # exactly on (or next to) level edges
    edges = torch.cat([levels, torch.nextafter(levels, torch.tensor(2.0)), torch.nextafter(levels, torch.tensor(-2.0))])
    decoded[0].view(-1)[: edges.numel()] = edges
    got = unpack(decoded, "rgb", "truncate")
    # Plain: model_to_frame (clamp, truncate to 8-bit levels, /255) then the float frame -> uint8.
    plain = model_to_frame(decoded).mul(255.0).round().to(torch.uint8).permute(0, 2, 3, 1)
    # Independent: the release's ToPILImage on the clamped [0, 1] image, per element in numpy float32.
    image = np.clip(decoded.numpy().astype(np.float32) * np.float32(0.5) + np.float32(0.5), 0, 1)
    release = (image * np.float32(255)).astype(np.uint8).transpose(0, 2, 3, 1)
    assert got.shape == (2, 24, 40, 3) and got.dtype == torch.uint8
    assert torch.equal(got, plain) and torch.equal(unpack_reference(decoded, "rgb", "truncate"), plain)
    np.testing.assert_array_equal(got.numpy(), release)
    for dtype in (torch.float32, torch.bfloat16):  # the ring entry equals the plain re-read frame
        assert torch.equal(pack(got, "rgb", dtype), frame_to_model(model_to_frame(decoded), dtype))
