"""CosmosDiT: state-dict layout (COSMOS.md 1.2), numerics against diffusers, and input validation."""

from __future__ import annotations

import math

import pytest
import torch

from simharmon.config import DiTConfig, load_config, preset_path
from simharmon.models.dit import CosmosDiT
from simharmon.models.dit_layers import RopePosition3D

TINY = DiTConfig(model_channels=64, num_blocks=2, num_heads=2, crossattn_emb_channels=32, adaln_lora_dim=16)
BUFFERS = (
    "accum_video_sample_counter",
    "accum_image_sample_counter",
    "accum_iteration",
    "accum_train_in_hours",
    "pos_embedder.seq",
    "pos_embedder.dim_spatial_range",
    "pos_embedder.dim_temporal_range",
)


def _randomize(net: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial weights: Linear ~ N(0, 1/fan_in), RMSNorm weights ~ 1 + 0.5 N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.5 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[1]))


def _rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.double() - ref.double()).norm() / ref.double().norm()).item()


# ----------------------------------------------------------------------------- layout


def _cosmos_0p6b() -> DiTConfig:
    # By path: load_config("cosmos-0.6b") treats ".6b" as a file suffix and does not find the preset.
    return load_config(preset_path("cosmos-0.6b")).dit


def _published_layout(d=1280, blocks=20, ctx=1024, lora=256, mlp=5120, head=64, patch_in=68, patch_out=64):
    """The table of COSMOS.md 1.2 (0.6B defaults), written from the document, not from our module."""
    table = {
        "accum_video_sample_counter": [],
        "accum_image_sample_counter": [],
        "accum_iteration": [],
        "accum_train_in_hours": [],
        "x_embedder.proj.1.weight": [d, patch_in],
        "pos_embedder.seq": [128],
        "pos_embedder.dim_spatial_range": [10],
        "pos_embedder.dim_temporal_range": [12],
        "t_embedder.1.linear_1.weight": [d, d],
        "t_embedder.1.linear_2.weight": [3 * d, d],
        "final_layer.linear.weight": [patch_out, d],
        "final_layer.adaln_modulation.1.weight": [lora, d],
        "final_layer.adaln_modulation.2.weight": [2 * d, lora],
        "t_embedding_norm.weight": [d],
    }
    for i in range(blocks):
        p = f"blocks.{i}."
        for attn, kv_in in (("self_attn", d), ("cross_attn", ctx)):
            table[p + f"{attn}.q_proj.weight"] = [d, d]
            table[p + f"{attn}.q_norm.weight"] = [head]
            table[p + f"{attn}.k_proj.weight"] = [d, kv_in]
            table[p + f"{attn}.k_norm.weight"] = [head]
            table[p + f"{attn}.v_proj.weight"] = [d, kv_in]
            table[p + f"{attn}.output_proj.weight"] = [d, d]
        table[p + "mlp.layer1.weight"] = [mlp, d]
        table[p + "mlp.layer2.weight"] = [d, mlp]
        for sub in ("self_attn", "cross_attn", "mlp"):
            table[p + f"adaln_modulation_{sub}.1.weight"] = [lora, d]
            table[p + f"adaln_modulation_{sub}.2.weight"] = [3 * d, lora]
    return table


def test_cosmos_0p6b_layout_matches_published_table():
    cfg = _cosmos_0p6b()
    with torch.device("meta"):
        net = CosmosDiT(cfg)
    params = list(net.parameters())
    assert len(params) == 407
    assert sum(p.numel() for p in params) == 597_536_000
    sd = net.state_dict()
    assert len(sd) == 414
    assert not any(k.endswith("_extra_state") for k in sd)
    expected = _published_layout()
    assert len(expected) == 414
    assert set(sd) == set(expected)
    for key, shape in expected.items():
        assert list(sd[key].shape) == shape, key
    persistent_buffers = {k for k, _ in net.named_buffers()}
    assert persistent_buffers == set(BUFFERS)
    for key in BUFFERS[:3]:
        assert sd[key].dtype == torch.int64
    assert sd["accum_train_in_hours"].dtype == torch.float32
    assert sum(p.numel() for n, p in net.named_parameters() if n.startswith("blocks.0.")) == 29_491_456


def test_buffer_values_and_rope_frequencies_0p6b():
    cfg = _cosmos_0p6b()
    pe = RopePosition3D(cfg.head_dim, 128, 120, 120, 4.0, 4.0, 1.0)
    assert torch.equal(pe.seq, torch.arange(128, dtype=torch.float32))
    assert torch.allclose(pe.dim_spatial_range, torch.arange(10) / 10.0)
    assert torch.allclose(pe.dim_temporal_range, torch.arange(12) / 12.0)
    freq_t, freq_h, freq_w = pe.frequencies()
    # Values printed in COSMOS.md 1.5.
    doc_h = [1, 0.341275, 0.116469, 0.0397478, 0.0135649, 0.00462937, 0.00157989, 0.000539177, 0.000184008, 6.27972e-05]
    assert torch.allclose(freq_h, torch.tensor(doc_h, dtype=torch.float64), rtol=2e-5, atol=0)
    assert torch.equal(freq_h, freq_w)
    assert freq_t[0] == 1 and abs(freq_t[1].item() - 0.464159) < 1e-6 and abs(freq_t[-1].item() - 0.000215443) < 1e-9
    # Angle layout [t, h, w] x 2 for the token at (t, h, w) = (1, 2, 3) of a (2, 3, 4) grid.
    ang = pe.angles(2, 3, 4)
    assert ang.shape == (24, 64)
    row = ang[1 * 12 + 2 * 4 + 3]
    half = torch.cat([1 * freq_t, 2 * freq_h, 3 * freq_w])
    assert torch.allclose(row, torch.cat([half, half]))


def test_rope_table_is_cached():
    net = CosmosDiT(TINY)
    a = net.rope((2, 3, 5))
    assert net.rope((2, 3, 5)) is a
    assert a[0].dtype == torch.float32 and a[0].shape == (30, TINY.head_dim)
    assert net.rope((1, 3, 5)) is not a


def test_patchify_and_unpatchify_feature_order():
    net = CosmosDiT(TINY)
    # Patch-embed input feature index = c*4 + m*2 + n (c slowest), COSMOS.md 1.3 step 2.
    x = torch.arange(17 * 4, dtype=torch.float32).reshape(1, 17, 1, 2, 2)  # value = c*4 + m*2 + n
    feats = net.x_embedder.proj[0](x)
    assert torch.equal(feats.flatten(), torch.arange(68, dtype=torch.float32))
    # Unpatchify output feature index = p1*32 + p2*16 + c (c fastest), COSMOS.md 1.3 step 7.
    out = net.unpatchify(torch.arange(64, dtype=torch.float32).reshape(1, 1, 64), (1, 1, 1))
    for p1 in range(2):
        for p2 in range(2):
            for c in range(16):
                assert out[0, c, 0, p1, p2].item() == p1 * 32 + p2 * 16 + c


# ----------------------------------------------------------------------------- diffusers oracle

_TOP_LEVEL = {
    "x_embedder.proj.1.weight": "patch_embed.proj.weight",
    "t_embedder.1.linear_1.weight": "time_embed.t_embedder.linear_1.weight",
    "t_embedder.1.linear_2.weight": "time_embed.t_embedder.linear_2.weight",
    "t_embedding_norm.weight": "time_embed.norm.weight",
    "final_layer.linear.weight": "proj_out.weight",
    "final_layer.adaln_modulation.1.weight": "norm_out.linear_1.weight",
    "final_layer.adaln_modulation.2.weight": "norm_out.linear_2.weight",
}
_BLOCK_MODULES = {
    "self_attn.q_proj": "attn1.to_q",
    "self_attn.k_proj": "attn1.to_k",
    "self_attn.v_proj": "attn1.to_v",
    "self_attn.output_proj": "attn1.to_out.0",
    "self_attn.q_norm": "attn1.norm_q",
    "self_attn.k_norm": "attn1.norm_k",
    "cross_attn.q_proj": "attn2.to_q",
    "cross_attn.k_proj": "attn2.to_k",
    "cross_attn.v_proj": "attn2.to_v",
    "cross_attn.output_proj": "attn2.to_out.0",
    "cross_attn.q_norm": "attn2.norm_q",
    "cross_attn.k_norm": "attn2.norm_k",
    "mlp.layer1": "ff.net.0.proj",
    "mlp.layer2": "ff.net.2",
    "adaln_modulation_self_attn.1": "norm1.linear_1",
    "adaln_modulation_self_attn.2": "norm1.linear_2",
    "adaln_modulation_cross_attn.1": "norm2.linear_1",
    "adaln_modulation_cross_attn.2": "norm2.linear_2",
    "adaln_modulation_mlp.1": "norm3.linear_1",
    "adaln_modulation_mlp.2": "norm3.linear_2",
}


def _to_diffusers_key(key: str) -> str:
    """Our (official Cosmos) key -> diffusers CosmosTransformer3DModel key (facts of their converter)."""
    if key in _TOP_LEVEL:
        return _TOP_LEVEL[key]
    _, index, rest = key.split(".", 2)
    module, param = rest.rsplit(".", 1)
    return f"transformer_blocks.{index}.{_BLOCK_MODULES[module]}.{param}"


@pytest.fixture(scope="module")
def oracle_pair():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ours = CosmosDiT(TINY).eval()
    _randomize(ours, seed=1)
    theirs = diffusers.CosmosTransformer3DModel(
        in_channels=16,
        out_channels=16,
        num_attention_heads=TINY.num_heads,
        attention_head_dim=TINY.head_dim,
        num_layers=TINY.num_blocks,
        mlp_ratio=TINY.mlp_ratio,
        text_embed_dim=TINY.crossattn_emb_channels,
        adaln_lora_dim=TINY.adaln_lora_dim,
        max_size=(128, 240, 240),
        patch_size=(1, 2, 2),
        rope_scale=(1.0, 4.0, 4.0),  # (t, h, w) = Cosmos-2.0 text2image
        concat_padding_mask=True,
        extra_pos_embed_type=None,
    ).eval()
    mapped = {_to_diffusers_key(k): v for k, v in ours.state_dict().items() if k not in BUFFERS}
    theirs.load_state_dict(mapped, strict=True)
    # diffusers builds the q/k RMSNorms with Attention's default eps 1e-5; Cosmos uses 1e-6.
    for block in theirs.transformer_blocks:
        for attn in (block.attn1, block.attn2):
            attn.norm_q.eps = attn.norm_k.eps = 1e-6
    return ours, theirs


def _run_pair(ours, theirs, x, t, ctx, mask):
    """diffusers takes timestep [B] (the same flow time t, unscaled, as its Cosmos2 pipeline passes)
    and a batch-1 padding mask (it repeats the mask by the batch size); fps=None = image RoPE."""
    with torch.no_grad():
        a = ours(x, t, ctx, mask.expand(x.shape[0], -1, -1, -1))
        b = theirs(hidden_states=x, timestep=t, encoder_hidden_states=ctx, padding_mask=mask, return_dict=False)[0]
    return a, b


@pytest.mark.parametrize(
    "case",
    [
        # name, batch, latent T, H, W, mask shape, zero context.  Measured relative error
        # (torch 2.14.1 CPU fp32, diffusers 0.42.1) in the trailing comments.
        ("zero_context", 1, 2, 6, 10, (1, 1, 6, 10), True),  # 2.61e-7
        ("random_context", 1, 2, 6, 10, (1, 1, 6, 10), False),  # 2.79e-7
        ("random_context_mask_resize_batch2", 2, 1, 8, 6, (1, 1, 64, 48), False),  # 2.61e-7
    ],
    ids=lambda c: c[0],
)
def test_matches_diffusers_fp32(oracle_pair, case):
    ours, theirs = oracle_pair
    _, batch, t_len, h, w, mask_shape, zero_ctx = case
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(batch, 16, t_len, h, w, generator=gen)
    t = torch.tensor([0.2, 0.7][:batch])
    ctx = torch.zeros(batch, 7, 32) if zero_ctx else torch.randn(batch, 7, 32, generator=gen)
    if zero_ctx:
        mask = torch.zeros(mask_shape)
    else:
        mask = (torch.rand(mask_shape, generator=gen) > 0.5).float()
    a, b = _run_pair(ours, theirs, x, t, ctx, mask)
    assert a.shape == b.shape == x.shape
    err = _rel_err(a, b)
    # Measured 2.6e-7 .. 2.8e-7 (see the case list); with diffusers' default q/k eps 1e-5 it is ~1e-6.
    assert err <= 1e-5, f"relative error {err:.3e}"
    if not zero_ctx:
        # The context must matter, so the cross-attention path really is compared.
        with torch.no_grad():
            a0 = ours(x, t, torch.zeros_like(ctx), mask.expand(batch, -1, -1, -1))
        assert _rel_err(a0, a) > 1e-3


def test_none_context_in_block_equals_zero_context():
    net = CosmosDiT(TINY).eval()
    _randomize(net, seed=3)
    block = net.blocks[0]
    tokens = torch.randn(1, 30, TINY.model_channels)
    t_emb, lora = net.embed_time(torch.tensor([[0.2]]))
    mod = block.modulation(t_emb, lora)
    rope = net.rope((2, 3, 5))
    with torch.no_grad():
        a = block(tokens, mod, torch.zeros(1, 5, TINY.crossattn_emb_channels), rope)
        b = block(tokens, mod, None, rope)
    assert torch.equal(a, b)


def test_bf16_forward_runs_and_keeps_dtype():
    net = CosmosDiT(TINY).eval()
    _randomize(net, seed=4)
    net = net.to(torch.bfloat16)
    x = torch.randn(1, 16, 1, 4, 6)
    with torch.no_grad():
        out = net(x, torch.tensor([0.2]), torch.zeros(1, 3, 32))
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    assert torch.isfinite(out.float()).all()


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def small_net():
    return CosmosDiT(DiTConfig(**{**TINY.__dict__, "max_img_h": 16, "max_img_w": 16, "max_frames": 4}))


@pytest.mark.parametrize(
    "shape, match",
    [
        ((16, 2, 6, 10), r"\[B, C, T, H, W\]"),
        ((1, 15, 2, 6, 10), "channels"),
        ((1, 16, 2, 7, 10), "divisible by the patch size"),
        ((1, 16, 2, 6, 9), "divisible by the patch size"),
        ((1, 16, 2, 18, 10), "RoPE table"),
        ((1, 16, 2, 6, 20), "RoPE table"),
        ((1, 16, 5, 6, 10), "RoPE table"),
    ],
)
def test_bad_latent_shapes(small_net, shape, match):
    with pytest.raises(ValueError, match=match):
        small_net(torch.zeros(shape), torch.zeros(1), torch.zeros(1, 4, 32))


def test_bad_condition_shapes(small_net):
    x = torch.zeros(1, 16, 1, 4, 4)
    with pytest.raises(ValueError, match="timesteps"):
        small_net(x, torch.zeros(2), torch.zeros(1, 4, 32))
    with pytest.raises(ValueError, match="timesteps"):
        small_net(x, torch.zeros(1, 2), torch.zeros(1, 4, 32))
    with pytest.raises(ValueError, match="crossattn_emb"):
        small_net(x, torch.zeros(1), torch.zeros(1, 4, 31))
    with pytest.raises(ValueError, match="crossattn_emb"):
        small_net(x, torch.zeros(1), torch.zeros(4, 32))
    with pytest.raises(ValueError, match="padding_mask"):
        small_net(x, torch.zeros(1), torch.zeros(1, 4, 32), padding_mask=torch.zeros(1, 2, 4, 4))
