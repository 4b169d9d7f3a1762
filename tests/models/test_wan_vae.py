"""Tests of the Wan2.1 tokenizer: diffusers oracle, checkpoint layout, causality, skips, errors."""

from __future__ import annotations

import re
from typing import Dict, Tuple

import pytest
import torch

from simharmon.config import TokenizerConfig
from simharmon.models.wan_vae import WanTokenizer

TINY = TokenizerConfig(base_dim=8)
# A second layout: other stage widths, 1 residual block, temporal downsampling in stages 0-1.
ALT = TokenizerConfig(base_dim=8, dim_mult=(1, 2, 2, 4), num_res_blocks=1, temporal_downsample=(True, True, False))
TINY_SKIPS = TokenizerConfig(base_dim=8, skip_connections=True)

# Relative L2 error vs diffusers in fp32. Measured (torch 2.14.1, CPU): encode 1.1e-7..1.5e-7,
# decode 6.1e-7..1.2e-6 over the cases below.
ORACLE_RTOL = 1e-5


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Random weights everywhere (gammas too), scaled so activations stay O(1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)


def _tokenizer(config: TokenizerConfig, seed: int = 0) -> WanTokenizer:
    model = WanTokenizer(config).eval()
    _randomize(model, seed)
    with torch.no_grad():
        # Keep decoded values inside (-1, 1): diffusers clamps its output, ours is not clamped.
        model.decoder.head[2].weight.mul_(0.2)
        model.decoder.head[2].bias.mul_(0.2)
    return model


def _video(t: int, h: int = 32, w: int = 48, b: int = 1, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, t, h, w, generator=gen) * 2 - 1


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# --------------------------------------------------------------------------- diffusers oracle

_RES_RENAME = {"residual.0.gamma": "norm1.gamma", "residual.2": "conv1", "residual.3": "norm2",
               "residual.6": "conv2", "shortcut": "conv_shortcut"}  # fmt: skip


def _res_name(rest: str) -> str:
    for old, new in _RES_RENAME.items():
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest  # resample.* / time_conv.* keep their names


def _to_diffusers_key(key: str, num_res_blocks: int) -> str:
    """Wan ``VAE_`` name -> diffusers ``AutoencoderKLWan`` name (facts: scripts/convert_wan_to_diffusers.py)."""
    top = {"conv1.": "quant_conv.", "conv2.": "post_quant_conv."}
    for old, new in top.items():
        if key.startswith(old):
            return new + key[len(old):]
    part, rest = key.split(".", 1)  # encoder / decoder
    m = re.match(r"(conv1|head\.0|head\.2|middle\.(\d)|downsamples\.(\d+)|upsamples\.(\d+))\.(.*)", rest)
    assert m is not None, key
    what, tail = m.group(1), m.group(5)
    if what == "conv1":
        return f"{part}.conv_in.{tail}"
    if what == "head.0":
        return f"{part}.norm_out.{tail}"
    if what == "head.2":
        return f"{part}.conv_out.{tail}"
    if m.group(2) is not None:  # middle: [resnet 0, attention 0, resnet 1]
        i = int(m.group(2))
        if i == 1:
            return f"{part}.mid_block.attentions.0.{tail}"
        return f"{part}.mid_block.resnets.{i // 2}.{_res_name(tail)}"
    if m.group(3) is not None:  # encoder: flat list with the same indices
        return f"{part}.down_blocks.{m.group(3)}.{_res_name(tail)}"
    # Decoder: each stage has num_res_blocks + 1 residual blocks, then (but the last) an upsampler.
    n = int(m.group(4))
    stage, pos = divmod(n, num_res_blocks + 2)
    if pos == num_res_blocks + 1:
        return f"{part}.up_blocks.{stage}.upsamplers.0.{tail}"
    return f"{part}.up_blocks.{stage}.resnets.{pos}.{_res_name(tail)}"


def _diffusers_twin(model: WanTokenizer):
    diffusers = pytest.importorskip("diffusers")
    cfg = model.config
    ref = diffusers.AutoencoderKLWan(
        base_dim=cfg.base_dim, z_dim=cfg.z_dim, dim_mult=list(cfg.dim_mult), num_res_blocks=cfg.num_res_blocks,
        temperal_downsample=list(cfg.temporal_downsample), latents_mean=list(cfg.latent_mean),
        latents_std=list(cfg.latent_std),
    ).eval()
    ours = model.state_dict()
    mapped = {_to_diffusers_key(k, cfg.num_res_blocks): v for k, v in ours.items()}
    assert len(mapped) == len(ours), "key map is not injective"
    theirs = ref.state_dict()
    assert set(mapped) == set(theirs), (sorted(set(mapped) ^ set(theirs)))[:10]
    for k, v in mapped.items():
        assert v.shape == theirs[k].shape, (k, v.shape, theirs[k].shape)
    ref.load_state_dict(mapped, strict=True)
    return ref


def _stats(cfg: TokenizerConfig) -> Tuple[torch.Tensor, torch.Tensor]:
    shape = (1, cfg.z_dim, 1, 1, 1)
    return torch.tensor(cfg.latent_mean).view(shape), torch.tensor(cfg.latent_std).view(shape)


@pytest.mark.parametrize(
    "config,frames",
    [(TINY, 1), (TINY, 5), (TINY, 9), (ALT, 1), (ALT, 5)],
    ids=["tiny-T1", "tiny-T5", "tiny-T9", "alt-T1", "alt-T5"],
)
def test_matches_diffusers(config: TokenizerConfig, frames: int) -> None:
    model = _tokenizer(config, seed=frames)
    ref = _diffusers_twin(model)
    mean, std = _stats(config)
    video = _video(frames, h=32 if frames < 9 else 16, w=48 if frames < 9 else 24)
    with torch.no_grad():
        ours = model.encode(video)
        want = (ref.encode(video).latent_dist.mode() - mean) / std
        h, w = video.shape[3] // 8, video.shape[4] // 8
        assert ours.shape == want.shape == (1, config.z_dim, model.latent_frames(frames), h, w)
        assert _rel(ours, want) <= ORACLE_RTOL

        latents = torch.randn(ours.shape, generator=torch.Generator().manual_seed(7))
        decoded = model.decode(latents)
        ref_decoded = ref.decode(latents * std + mean).sample
        assert decoded.abs().max() < 1.0  # so diffusers' clamp is a no-op and the comparison is fair
        assert decoded.shape == ref_decoded.shape == video.shape
        assert _rel(decoded, ref_decoded) <= ORACLE_RTOL


# --------------------------------------------------------------------------- layout (COSMOS.md 3.4)


def _expected_layout(skips: bool = False) -> Dict[str, Tuple[int, ...]]:
    """The published key table of COSMOS.md 3.4 (and 3.8), written out from its templates."""
    out: Dict[str, Tuple[int, ...]] = {}

    def conv(p: str, o: int, i: int, *k: int) -> None:
        out[f"{p}.weight"], out[f"{p}.bias"] = (o, i, *k), (o,)

    def res(p: str, i: int, o: int) -> None:
        out[f"{p}.residual.0.gamma"] = (i, 1, 1, 1)
        conv(f"{p}.residual.2", o, i, 3, 3, 3)
        out[f"{p}.residual.3.gamma"] = (o, 1, 1, 1)
        conv(f"{p}.residual.6", o, o, 3, 3, 3)
        if i != o:
            conv(f"{p}.shortcut", o, i, 1, 1, 1)

    def attn(p: str, d: int) -> None:
        out[f"{p}.norm.gamma"] = (d, 1, 1)
        conv(f"{p}.to_qkv", 3 * d, d, 1, 1)
        conv(f"{p}.proj", d, d, 1, 1)

    conv("encoder.conv1", 96, 3, 3, 3, 3)
    for i in (0, 1):
        res(f"encoder.downsamples.{i}", 96, 96)
    conv("encoder.downsamples.2.resample.1", 96, 96, 3, 3)
    res("encoder.downsamples.3", 96, 192)
    res("encoder.downsamples.4", 192, 192)
    conv("encoder.downsamples.5.resample.1", 192, 192, 3, 3)
    conv("encoder.downsamples.5.time_conv", 192, 192, 3, 1, 1)
    res("encoder.downsamples.6", 192, 384)
    for i in (7, 9, 10):
        res(f"encoder.downsamples.{i}", 384, 384)
    conv("encoder.downsamples.8.resample.1", 384, 384, 3, 3)
    conv("encoder.downsamples.8.time_conv", 384, 384, 3, 1, 1)
    for part in ("encoder", "decoder"):
        res(f"{part}.middle.0", 384, 384)
        attn(f"{part}.middle.1", 384)
        res(f"{part}.middle.2", 384, 384)
    out["encoder.head.0.gamma"] = (384, 1, 1, 1)
    conv("encoder.head.2", 32, 384, 3, 3, 3)
    conv("conv1", 32, 32, 1, 1, 1)
    conv("conv2", 16, 16, 1, 1, 1)
    conv("decoder.conv1", 384, 16, 3, 3, 3)
    for i in (0, 1, 2, 5, 6):
        res(f"decoder.upsamples.{i}", 384, 384)
    for i in (3, 7):
        conv(f"decoder.upsamples.{i}.resample.1", 192, 384, 3, 3)
        conv(f"decoder.upsamples.{i}.time_conv", 768, 384, 3, 1, 1)
    res("decoder.upsamples.4", 192, 384)
    for i in (8, 9, 10):
        res(f"decoder.upsamples.{i}", 192, 192)
    conv("decoder.upsamples.11.resample.1", 96, 192, 3, 3)
    for i in (12, 13, 14):
        res(f"decoder.upsamples.{i}", 96, 96)
    out["decoder.head.0.gamma"] = (96, 1, 1, 1)
    conv("decoder.head.2", 3, 96, 3, 3, 3)
    if skips:
        for k, ch in enumerate((384,) * 5 + (192,) * 2 + (96,) * 2):
            out[f"decoder.skip_conv_{k}.weight"] = (ch, ch, 1, 1, 1)
    return out


def _numel(shapes) -> int:
    total = 0
    for s in shapes:
        total += torch.Size(s).numel()
    return total


def test_published_layout_on_meta() -> None:
    with torch.device("meta"):
        model = WanTokenizer(TokenizerConfig())
    sd = model.state_dict()
    got = {k: tuple(v.shape) for k, v in sd.items()}
    want = _expected_layout()
    assert len(got) == 194 and _numel(got.values()) == 126_892_531
    assert set(got) == set(want), sorted(set(got) ^ set(want))
    assert got == want
    # Per-part checksums of COSMOS.md 3.4.
    for prefix, count, numel in (("encoder.", 84, 53_595_872), ("decoder.", 106, 73_295_331)):
        part = [s for k, s in got.items() if k.startswith(prefix)]
        assert (len(part), _numel(part)) == (count, numel), prefix
    # The latent statistics are buffers that are not saved.
    assert {n for n, _ in model.named_buffers()} == {"latent_mean", "latent_std"}


def test_skip_layout_on_meta() -> None:
    with torch.device("meta"):
        model = WanTokenizer(TokenizerConfig(skip_connections=True))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = _expected_layout(skips=True)
    assert got == want
    extra = [s for k, s in got.items() if "skip_conv" in k]
    assert len(extra) == 9 and _numel(extra) == 829_440


def test_latent_stats_follow_config_and_dtype() -> None:
    model = WanTokenizer(TINY)
    mean, std = _stats(TINY)
    assert torch.equal(model.latent_mean, mean) and torch.equal(model.latent_std, std)
    model = model.to(torch.bfloat16)
    assert model.latent_std.dtype == torch.bfloat16
    assert model.latent_mean[0, 0].item() == -0.7578125  # bf16-rounded, as Cosmos uses it (COSMOS.md 3.5)
    with torch.device("meta"):
        meta = WanTokenizer(TINY)
    meta = meta.to_empty(device="cpu")
    meta.reset_latent_stats()
    assert torch.equal(meta.latent_mean, mean) and torch.equal(meta.latent_std, std)


# --------------------------------------------------------------------------- causality


def test_frame_zero_is_causal() -> None:
    model = _tokenizer(TINY, seed=3)
    video = _video(9, h=16, w=24)
    with torch.no_grad():
        latents = model.encode(video)
        assert latents.shape[2] == 3
        # Latent 0 is frame 0 encoded alone; latents 0-1 are the first 5 frames.
        assert torch.equal(latents[:, :, :1], model.encode(video[:, :, :1]))
        assert torch.equal(latents[:, :, :2], model.encode(video[:, :, :5]))
        decoded = model.decode(latents)
        assert decoded.shape[2] == 9
        assert torch.equal(decoded[:, :, :1], model.decode(latents[:, :, :1]))
        assert torch.equal(decoded[:, :, :5], model.decode(latents[:, :, :2]))


def test_frame_helpers_and_batch() -> None:
    model = _tokenizer(TINY, seed=4)
    video = _video(1, b=2)
    with torch.no_grad():
        z = model.encode_frame(video[:, :, 0])
        assert z.shape == (2, 16, 4, 6)
        assert torch.equal(z, model.encode(video)[:, :, 0])
        assert torch.equal(model.decode_frame(z), model.decode(z.unsqueeze(2))[:, :, 0])
        # Batch entries are independent.
        torch.testing.assert_close(model.encode_frame(video[1:, :, 0]), z[1:], rtol=1e-5, atol=1e-6)


def test_dtype_contract() -> None:
    model = _tokenizer(TINY, seed=5).to(torch.bfloat16)
    video = _video(1, h=16, w=16)
    with torch.no_grad():
        z = model.encode(video)
        assert z.dtype == torch.float32
        assert model.decode(z).dtype == torch.float32
        assert model.encode(video.double()).dtype == torch.float64


# --------------------------------------------------------------------------- skip connections

# COSMOS.md 3.8, resolved table: skip_conv_k -> (decoder upsample index, encoder downsample index).
_SKIP_TABLE = [(0, 10), (1, 9), (2, 8), (5, 7), (6, 6), (8, 4), (10, 3), (12, 1), (14, 0)]


def _skip_model() -> WanTokenizer:
    model = _tokenizer(TINY_SKIPS, seed=6)
    with torch.no_grad():
        for k in range(9):  # make them matter (the Harmonizer initializes them to 1e-5)
            getattr(model.decoder, f"skip_conv_{k}").weight.mul_(0.3)
    return model


def test_skips_change_the_output_at_the_documented_places() -> None:
    model = _skip_model()
    with torch.no_grad():
        z, skips = model.encode_frame(_video(1)[:, :, 0], return_skips=True)
        assert len(skips) == 11
        assert torch.equal(z, model.encode_frame(_video(1)[:, :, 0]))
        plain = model.decode_frame(z)
        with_skips = model.decode_frame(z, skips=skips)
        assert (plain - with_skips).abs().max() > 1e-3

        # Hand check of every injection point: upsamples[d] receives the previous layer's output
        # plus skip_conv_k(encoder downsamples[e]).
        seen: Dict[str, torch.Tensor] = {}
        hooks = [model.decoder.middle[2].register_forward_hook(lambda m, i, o: seen.__setitem__("out-1", o))]
        for d, layer in enumerate(model.decoder.upsamples):
            hooks.append(layer.register_forward_pre_hook(lambda m, i, d=d: seen.__setitem__(f"in{d}", i[0])))
            hooks.append(layer.register_forward_hook(lambda m, i, o, d=d: seen.__setitem__(f"out{d}", o)))
        try:
            model.decode_frame(z, skips=skips)
        finally:
            for h in hooks:
                h.remove()
        injected = set()
        for k, (d, e) in enumerate(_SKIP_TABLE):
            expected = seen[f"out{d - 1}"] + getattr(model.decoder, f"skip_conv_{k}")(skips[e])
            torch.testing.assert_close(seen[f"in{d}"], expected, rtol=0, atol=0)
            injected.add(d)
        for d in set(range(len(model.decoder.upsamples))) - injected:
            assert torch.equal(seen[f"in{d}"], seen[f"out{d - 1}"])


def test_skip_errors() -> None:
    model = _skip_model()
    with torch.no_grad():
        z5, skips5 = model.encode(_video(5), return_skips=True)
        # Last chunk of a 5-frame clip has 2 frames at H/4, the first decoded chunk only 1.
        with pytest.raises(ValueError, match="does not broadcast"):
            model.decode(z5, skips=skips5)
        _, small = model.encode(_video(1, h=16, w=16), return_skips=True)
        with pytest.raises(ValueError, match="does not broadcast"):
            model.decode(z5[:, :, :1], skips=small)
        with pytest.raises(ValueError, match="11"):
            model.decode(z5[:, :, :1], skips=small[:5])
        plain = _tokenizer(TINY)
        with pytest.raises(ValueError, match="no skip convolutions"):
            plain.decode(z5[:, :, :1], skips=small)


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "video,match",
    [
        (torch.zeros(1, 3, 32, 48), "5-D"),
        (torch.zeros(1, 4, 1, 32, 48), "3 channels"),
        (torch.zeros(1, 3, 1, 32, 48, dtype=torch.int64), "floating"),
        (torch.zeros(1, 3, 1, 30, 48), "multiples of 8"),
        (torch.zeros(1, 3, 1, 32, 44), "multiples of 8"),
        (torch.zeros(1, 3, 6, 32, 48), "T=6"),
        (torch.zeros(1, 3, 0, 32, 48), "T >= 1"),
    ],
)
def test_encode_rejects_bad_video(video: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WanTokenizer(TINY).encode(video)


@pytest.mark.parametrize(
    "latents,match",
    [
        (torch.zeros(1, 16, 4, 6), "5-D"),
        (torch.zeros(1, 8, 1, 4, 6), "16 channels"),
        (torch.zeros(1, 16, 1, 4, 6, dtype=torch.int32), "floating"),
        (torch.zeros(1, 16, 0, 4, 6), "empty"),
    ],
)
def test_decode_rejects_bad_latents(latents: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WanTokenizer(TINY).decode(latents)


def test_frame_helpers_reject_bad_rank() -> None:
    model = WanTokenizer(TINY)
    with pytest.raises(ValueError, match="4-D"):
        model.encode_frame(torch.zeros(1, 3, 1, 32, 48))
    with pytest.raises(ValueError, match="4-D"):
        model.decode_frame(torch.zeros(1, 16, 1, 4, 6))


@pytest.mark.parametrize("shape", [(2, 7, 5, 9), (1, 3, 2, 6, 11), (3, 1, 4, 4)])
def test_normalize_channels_matches_f_normalize(shape) -> None:
    """The fast channel L2 normalization against F.normalize in float64 (the reference)."""
    import torch.nn.functional as F

    from simharmon.models.wan_vae_layers import normalize_channels

    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=gen, dtype=torch.float64) * 3
    x[0, :, 0] = 0.0  # zero vectors: eps clamp, no NaN
    reference = F.normalize(x, dim=1)
    assert torch.equal(torch.isfinite(normalize_channels(x)), torch.ones_like(x, dtype=torch.bool))
    assert (normalize_channels(x) - reference).abs().max() < 1e-14
    strided = x.transpose(-1, -2)  # non-contiguous
    assert (normalize_channels(strided) - F.normalize(strided, dim=1)).abs().max() < 1e-14
    # float32: measured worst case 1.2e-7 (one ulp of values <= 1); bfloat16 sums in float32.
    assert (normalize_channels(x.float()) - reference).abs().max() < 5e-7
    low = normalize_channels((x * 1e3).bfloat16())
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert (low.double() - reference).abs().max() < 1e-2
