"""Strict loading of every published checkpoint layout, on synthetic files built here.

Key names come from the model (whose key set is checked against the published tables in
test_dit.py / test_wan_vae.py); the extras each real file carries are added as COSMOS.md 4 says.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from simharmon.config import load_config
from simharmon.models.checkpoints import CheckpointError, read_checkpoint
from simharmon.models.enhancer import build_enhancer, export_safetensors


@pytest.fixture(scope="module")
def tiny():
    return load_config("tiny")


def random_state(module, seed):
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if value.is_floating_point():
            state[key] = torch.randn(value.shape, generator=gen, dtype=value.dtype)
        else:
            state[key] = value.clone() + 3  # counters: any value must round-trip
    return state


def te_extra_state(num_blocks):
    """The Transformer Engine metadata entries a Cosmos model.pt may carry (COSMOS.md 1.2)."""
    empty = torch.tensor(list(b"\x80\x04}\x94."), dtype=torch.uint8)  # pickled {}: 5 bytes
    keys = [f"blocks.{i}.{attn}.{norm}._extra_state" for i in range(num_blocks)
            for attn in ("self_attn", "cross_attn") for norm in ("q_norm", "k_norm")]
    keys += ["t_embedding_norm._extra_state"]
    keys += [f"blocks.{i}.{attn}.attn_op._extra_state" for i in range(num_blocks) for attn in ("self_attn", "cross_attn")]
    return {k: empty.clone() for k in keys}


@pytest.fixture(scope="module")
def reference_model(tiny):
    return build_enhancer(tiny, seed=1)


@pytest.fixture(scope="module")
def live_and_ema(reference_model):
    return random_state(reference_model.dit, 11), random_state(reference_model.dit, 12)


@pytest.fixture(scope="module")
def vae_state(reference_model):
    return random_state(reference_model.tokenizer, 13)


def assert_state_equal(module, state):
    own = module.state_dict()
    assert set(own) == set(state)
    for key, value in state.items():
        assert torch.equal(own[key], value.to(own[key].dtype)), key


def save_harmonizer_pkl(path, live, ema, vae, prefix=("net.", "net_ema.")):
    unet = {prefix[0] + k: v for k, v in live.items()}
    unet.update({prefix[1] + k: v for k, v in ema.items()})
    torch.save({
        "state_dict_unet": unet,
        "state_dict_vae": vae,
        "optimizer": {"state": {}, "param_groups": [{"lr": 2e-5}]},
        "net_disc": None,
        "optimizer_disc": None,
    }, path)


def test_harmonizer_pkl_live_and_ema(tmp_path, tiny, live_and_ema, vae_state):
    live, ema = live_and_ema
    path = tmp_path / "diffusion_harmonizer.pkl"
    save_harmonizer_pkl(path, live, ema, vae_state)

    model = build_enhancer(tiny, path)
    assert_state_equal(model.dit, live)
    assert_state_equal(model.tokenizer, vae_state)
    parts = read_checkpoint(path)
    assert parts.format == "harmonizer" and parts.layout == "release"
    assert len(parts.ignored["unchosen EMA weights"]) == len(ema)
    assert set(parts.ignored["harmonizer training state"]) == {"optimizer", "net_disc", "optimizer_disc"}

    model_ema = build_enhancer(tiny, path, use_ema=True)
    assert_state_equal(model_ema.dit, ema)


def test_harmonizer_pkl_with_dit_prefix_and_skip_convs(tmp_path, tiny, live_and_ema, reference_model):
    live, ema = live_and_ema
    skip_config = tiny.replace(tokenizer=dataclasses.replace(tiny.tokenizer, skip_connections=True))
    skip_model = build_enhancer(skip_config)
    vae = random_state(skip_model.tokenizer, 21)
    assert any(k.startswith("decoder.skip_conv_8") for k in vae)
    path = tmp_path / "new_layout.pkl"
    save_harmonizer_pkl(path, live, ema, vae, prefix=("dit.", "dit_ema."))

    model = build_enhancer(tiny, path)  # config says no skips: the file's skip convs switch them on
    assert model.config.tokenizer.skip_connections
    assert_state_equal(model.tokenizer, vae)
    assert_state_equal(model.dit, live)


def test_cosmos_model_pt_with_extras_and_tokenizer_pth(tmp_path, tiny, live_and_ema, vae_state):
    live, ema = live_and_ema
    dit_file = {"net." + k: v.bfloat16() if v.is_floating_point() else v for k, v in live.items()}
    dit_file.update({"net." + k: v for k, v in te_extra_state(tiny.dit.num_blocks).items()})
    torch.save(dit_file, tmp_path / "model.pt")
    torch.save(vae_state, tmp_path / "tokenizer.pth")

    parts = read_checkpoint(tmp_path / "model.pt")
    assert parts.format == "cosmos-dit"
    assert len(parts.ignored["transformer-engine _extra_state"]) == 6 * tiny.dit.num_blocks + 1  # 4 RMSNorm + 2 attn_op per block, + t_embedding_norm

    model = build_enhancer(tiny, [tmp_path / "model.pt", tmp_path / "tokenizer.pth"])
    assert_state_equal(model.dit, {k: v.bfloat16().float() if v.is_floating_point() else v for k, v in live.items()})
    assert_state_equal(model.tokenizer, vae_state)

    with pytest.raises(CheckpointError, match="no tokenizer weights"):
        build_enhancer(tiny, tmp_path / "model.pt")


def test_model_pt_without_deterministic_buffers_loads(tmp_path, tiny, live_and_ema, vae_state):
    live, _ = live_and_ema
    optional = [k for k in live if k.startswith(("accum_", "pos_embedder."))]
    assert len(optional) == 7
    torch.save({"net." + k: v for k, v in live.items() if k not in optional}, tmp_path / "model.pt")
    torch.save(vae_state, tmp_path / "tokenizer.pth")
    model = build_enhancer(tiny, [tmp_path / "model.pt", tmp_path / "tokenizer.pth"])
    assert sorted(model.load_reports[0].defaulted) == sorted(optional)


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_mismatch_fails_with_key_listing(tmp_path, tiny, live_and_ema, vae_state, damage):
    live = dict(live_and_ema[0])
    if damage == "missing":
        del live["blocks.1.mlp.layer2.weight"]
        needle = "1 missing: blocks.1.mlp.layer2.weight"
    elif damage == "unexpected":
        live["blocks.9.mlp.layer2.weight"] = torch.zeros(3)
        needle = "1 unexpected: blocks.9.mlp.layer2.weight"
    else:
        live["final_layer.linear.weight"] = torch.zeros(3, 3)
        needle = "1 wrong-shaped: final_layer.linear.weight"
    path = tmp_path / "bad.pkl"
    save_harmonizer_pkl(path, live, live, vae_state)
    with pytest.raises(CheckpointError) as info:
        build_enhancer(tiny, path)
    assert needle in str(info.value)

    model = build_enhancer(tiny, path, strict=False)  # told to go on: reports instead
    assert not model.load_reports[0].ok


def test_unknown_prefix_and_top_level_entries_fail(tmp_path, tiny, live_and_ema, vae_state):
    live, _ = live_and_ema
    torch.save({"state_dict_unet": {"net." + k: v for k, v in live.items()} | {"logvar.weight": torch.zeros(1)},
                "state_dict_vae": vae_state}, tmp_path / "a.pkl")
    with pytest.raises(CheckpointError, match="outside the known prefixes"):
        read_checkpoint(tmp_path / "a.pkl")
    torch.save({"state_dict_unet": {}, "state_dict_vae": vae_state, "scheduler": 1}, tmp_path / "b.pkl")
    with pytest.raises(CheckpointError, match="unknown top-level entries"):
        read_checkpoint(tmp_path / "b.pkl")
    torch.save({"foo.bar": torch.zeros(1)}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="unknown checkpoint layout"):
        read_checkpoint(tmp_path / "c.pt")


def test_missing_and_corrupt_files(tmp_path, tiny, live_and_ema, vae_state):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        build_enhancer(tiny, tmp_path / "nope.pkl")
    path = tmp_path / "ok.pkl"
    save_harmonizer_pkl(path, *live_and_ema, vae_state)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="found a truncated or damaged zip archive"):
        read_checkpoint(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="expected a safetensors file .*; found unrecognised binary data"):
        read_checkpoint(garbage)


def test_safetensors_export_round_trip(tmp_path, tiny, live_and_ema, vae_state):
    path = tmp_path / "ok.pkl"
    save_harmonizer_pkl(path, *live_and_ema, vae_state)
    model = build_enhancer(tiny.replace(name="exported"), path)
    export_safetensors(model, tmp_path / "model.safetensors")
    again = build_enhancer(weights=tmp_path / "model.safetensors")  # config comes from the file
    assert again.config == model.config
    assert_state_equal(again.dit, model.dit.state_dict())
    assert_state_equal(again.tokenizer, model.tokenizer.state_dict())
    assert not list(tmp_path.glob(".*.tmp"))
