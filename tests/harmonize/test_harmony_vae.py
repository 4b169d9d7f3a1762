"""Harmony-VAE: DiffHarmony++'s initialization, skip wiring and training recipe."""

import pytest
import torch
from diffusers import AutoencoderKL

from simharmon.harmonize.models import HarmonyVAE
from simharmon.harmonize.models.presets import tiny_vae
from simharmon.harmonize.train import TrainSettings, train_harmony_vae

from .helpers import randomize


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    model = AutoencoderKL.from_config({k: v for k, v in tiny_vae().items() if not k.startswith("_")})
    return randomize(model, 1, 0.02).eval()


def _inputs(seed=0, size=32):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(2, 3, size, size, generator=gen) * 2 - 1
    mask = (torch.rand(2, 1, size, size, generator=gen) > 0.5).float()
    return image, mask


def test_from_vae_is_the_vae_and_the_condition_path_starts_as_identity(vae):
    model = HarmonyVAE.from_vae(vae).eval()
    image, mask = _inputs()
    assert torch.count_nonzero(model.conditional_encoder.add_conv_in.weight) == 0  # mask weights start at zero
    assert torch.equal(model.conditional_encoder.conv_in.weight, vae.encoder.conv_in.weight)
    with torch.no_grad():
        z = model.encode(image)
        assert torch.equal(z, vae.encode(image).latent_dist.mode())
        plain = model.decode(z)
        assert torch.equal(plain, vae.decode(z).sample)
        # Zero skip convs: the condition changes nothing at initialization, bit for bit.
        assert torch.equal(model.decode_with_condition(z, torch.cat([image, mask], 1)), plain)


def test_each_skip_reaches_the_decoder(vae):
    model = HarmonyVAE.from_vae(vae).eval()
    image, mask = _inputs(1)
    cond = torch.cat([image, mask], 1)
    with torch.no_grad():
        z = model.encode(image)
        base = model.decode_with_condition(z, cond)
        convs = list(model.conditional_encoder.down_block_skip_convs) + [
            model.conditional_encoder.mid_block_skip_conv, model.latent_skip_conv]
        for conv in convs:
            conv.bias.fill_(0.05)
            assert not torch.equal(model.decode_with_condition(z, cond), base)
            conv.bias.zero_()
        # The mask input matters once its weights are not zero.
        model.conditional_encoder.add_conv_in.weight.fill_(0.1)
        model.latent_skip_conv.bias.fill_(0.0)
        model.conditional_encoder.mid_block_skip_conv.weight.normal_(0, 0.1)
        a = model.decode_with_condition(z, cond)
        b = model.decode_with_condition(z, torch.cat([image, 1 - mask], 1))
        assert not torch.equal(a, b)


def test_training_changes_only_condition_encoder_decoder_and_zero_convs(vae):
    model = HarmonyVAE.from_vae(vae)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    real, mask = _inputs(2)
    comp = real.clone()
    comp[:, :, 8:24, 8:24] = comp[:, :, 8:24, 8:24] * 0.5 + 0.3
    log = train_harmony_vae(model, real, comp, mask, TrainSettings(steps=6, batch=2, lr=1e-3, log_every=3))
    assert len(log) == 2
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed, "training changed nothing"
    frozen = ("encoder.", "quant_conv.", "post_quant_conv.")
    assert not [k for k in changed if k.startswith(frozen)]
    assert any(k.startswith("conditional_encoder.") for k in changed)
    assert any(k.startswith("decoder.") for k in changed)
    assert any(k.startswith("latent_skip_conv.") for k in changed)
