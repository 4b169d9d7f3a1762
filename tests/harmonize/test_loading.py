"""Strict loading of the DiffHarmony folder layouts, on synthetic checkpoints with the published keys."""

import json

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file, save_file

from simharmon.harmonize.models import HarmonyVAE, harmony_vae_config, load_component, load_components
from simharmon.harmonize.models.presets import sd15_inpaint_unet, sd_vae, tiny_unet, tiny_vae
from simharmon.models.checkpoints import CheckpointError

from .helpers import write_release


def _public(config):
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _meta_shapes(build):
    with torch.device("meta"):
        module = build()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_tiny_presets_have_the_published_keys():
    """Same topology: the tiny configs' state-dict keys are exactly the published models' keys."""
    published_unet = _meta_shapes(lambda: UNet2DConditionModel.from_config(_public(sd15_inpaint_unet())))
    tiny = _meta_shapes(lambda: UNet2DConditionModel.from_config(_public(tiny_unet())))
    assert set(tiny) == set(published_unet)
    assert published_unet["conv_in.weight"] == (320, 9, 3, 3)
    published_vae = _meta_shapes(lambda: AutoencoderKL.from_config(_public(sd_vae())))
    assert set(_meta_shapes(lambda: AutoencoderKL.from_config(_public(tiny_vae())))) == set(published_vae)
    cvae = _meta_shapes(lambda: HarmonyVAE(_public(harmony_vae_config(sd_vae()))))
    # The ConditionVAE's own keys (from GitHub nicecv/DiffHarmony src/models/condition_vae.py, vae.py).
    assert cvae["conditional_encoder.add_conv_in.weight"] == (128, 1, 3, 3)
    assert cvae["conditional_encoder.conv_in.weight"] == (128, 3, 3, 3)
    assert cvae["latent_skip_conv.weight"] == (4, 4, 1, 1)
    assert cvae["conditional_encoder.mid_block_skip_conv.weight"] == (512, 512, 1, 1)
    skips = sorted(k for k in cvae if k.startswith("conditional_encoder.down_block_skip_convs.") and k.endswith("weight"))
    assert len(skips) == 12  # conv_in + 4 blocks x 2 resnets + 3 downsamplers = the decoder's 12 resnets
    assert cvae["conditional_encoder.down_block_skip_convs.3.weight"] == (256, 128, 1, 1)  # block 0's downsample
    for key in published_vae:
        assert key in cvae and cvae[key] == published_vae[key]
        if key.startswith("encoder."):
            assert cvae["conditional_" + key] == published_vae[key]


def test_release_folder_loads_exactly(tmp_path):
    unet, vae, harmony, embeds = write_release(tmp_path)
    comps = load_components([tmp_path])
    for ours, theirs in ((comps.unet, unet), (comps.vae, vae), (comps.harmony_vae, harmony)):
        a, b = ours.state_dict(), theirs.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(comps.prompt_embeds, embeds)
    assert all(r.ok for r in comps.reports)


def test_component_folders_in_any_order_and_cvae_alias(tmp_path):
    write_release(tmp_path, cvae_name="cvae")
    comps = load_components([tmp_path / "cvae", tmp_path / "unet", tmp_path / "vae"])
    assert comps.harmony_vae is not None and comps.prompt_embeds is None


def test_two_unets_rejected(tmp_path):
    write_release(tmp_path)
    with pytest.raises(CheckpointError, match="two unet components"):
        load_components([tmp_path, tmp_path / "unet"])


def _rewrite(path, edit):
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("conv_in.weight"), r"1 missing: conv_in.weight"),
    (lambda s: s.__setitem__("extra.weight", torch.zeros(1)), r"1 unexpected: extra.weight"),
    (lambda s: s.__setitem__("conv_in.weight", torch.zeros(8, 4, 3, 3)), r"wrong-shaped: conv_in.weight \(file \[8, 4, 3, 3\]"),
])
def test_unet_mismatch_names_keys(tmp_path, edit, message):
    write_release(tmp_path)
    _rewrite(tmp_path / "unet" / "diffusion_pytorch_model.safetensors", edit)
    with pytest.raises(CheckpointError, match=message):
        load_components([tmp_path])


def test_harmony_vae_missing_skip_conv_named(tmp_path):
    write_release(tmp_path)
    _rewrite(tmp_path / "condition_vae" / "diffusion_pytorch_model.safetensors",
             lambda s: s.pop("conditional_encoder.down_block_skip_convs.5.weight"))
    with pytest.raises(CheckpointError, match="conditional_encoder.down_block_skip_convs.5.weight"):
        load_components([tmp_path])


def test_corrupt_and_truncated_files(tmp_path):
    write_release(tmp_path)
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_components([tmp_path])
    (tmp_path / "vae" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="vae/config.json: not a readable JSON"):
        load_component(tmp_path / "vae")
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": "CLIPTextModel"}))
    with pytest.raises(CheckpointError, match="_class_name 'CLIPTextModel' is not one of"):
        load_component(tmp_path / "vae")


def test_bin_weights_and_wrong_kind(tmp_path):
    write_release(tmp_path)
    folder = tmp_path / "vae"
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(state, folder / "diffusion_pytorch_model.bin")
    module, report, _ = load_component(folder, expect=("vae",))
    assert report.ok and isinstance(module, AutoencoderKL)
    with pytest.raises(CheckpointError, match=r"holds a AutoencoderKL \(vae\), expected unet"):
        load_component(folder, expect=("unet",))
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable torch weights file"):
        load_component(folder)
    (folder / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match="no weights file"):
        load_component(folder)


def test_deprecated_vae_attention_names_are_renamed_and_reported(tmp_path):
    _, vae, _, _ = write_release(tmp_path)
    path = tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

    def to_old(state):
        for key in list(state):
            for new, old in renames.items():
                if ".attentions." in key and f".{new}." in key:
                    state[key.replace(f".{new}.", f".{old}.")] = state.pop(key)
    _rewrite(path, to_old)
    assert any(".query." in k for k in load_file(str(path)))
    module, report, comp = load_component(tmp_path / "vae")
    assert len(comp.renamed) == 16  # 4 tensors x (weight, bias) x (encoder, decoder) mid attention
    assert all(torch.equal(module.state_dict()[k], v) for k, v in vae.state_dict().items())


def test_sharded_index(tmp_path):
    write_release(tmp_path)
    folder = tmp_path / "unet"
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    keys = sorted(state)
    half = len(keys) // 2
    save_file({k: state[k] for k in keys[:half]}, str(folder / "part-1.safetensors"))
    save_file({k: state[k] for k in keys[half:]}, str(folder / "part-2.safetensors"))
    index = {"weight_map": {k: ("part-1.safetensors" if i < half else "part-2.safetensors") for i, k in enumerate(keys)}}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    module, report, _ = load_component(folder)
    assert report.ok
    (folder / "part-2.safetensors").unlink()
    with pytest.raises(CheckpointError, match="shard part-2.safetensors is missing"):
        load_component(folder)


def test_prompt_embeds_shape_checked(tmp_path):
    write_release(tmp_path)
    save_file({"prompt_embeds": torch.zeros(2, 3)}, str(tmp_path / "prompt_embeds.safetensors"))
    with pytest.raises(CheckpointError, match=r"prompt_embeds must be \[1, L, D\]"):
        load_components([tmp_path])


def test_missing_paths(tmp_path):
    with pytest.raises(CheckpointError, match="weights not found"):
        load_components([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither a component folder"):
        load_components([tmp_path / "empty"])
