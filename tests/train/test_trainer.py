"""The training loop: learning on a fixed batch, bit-exact resume, schedule, export, CLI, DDP path."""

import json
import socket

import numpy as np
import pytest
import torch

from simharmon.cli import main
from simharmon.config import ConfigError
from simharmon.models.enhancer import build_enhancer
from simharmon.train.config import load_train_config
from simharmon.train.trainer import Trainer


def _fixed_batch_loss(trainer):
    with torch.no_grad():
        return float(trainer.pair_losses(0)["l2"])


def test_few_steps_reduce_the_loss_on_a_fixed_batch(make_config, tmp_path):
    # Full-size crops of a one-pair manifest: every step sees the same batch.
    manifest = json.loads(open(make_config().manifest).read())
    key = sorted(manifest["train"])[0]
    root = make_config().manifest.rsplit("/", 1)[0]
    entry = {k: f"{root}/{v}" for k, v in manifest["train"][key].items() if k != "prompt"}
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"train": {key: {**entry, "prompt": "x"}}, "test": {}}))
    trainer = Trainer(make_config(manifest=str(one), temporal_manifest=None, crop=(64, 48), batch_size=1,
                                  lr=2e-3), progress=False)
    before = _fixed_batch_loss(trainer)
    for _ in range(6):
        trainer.train_step()
    after = _fixed_batch_loss(trainer)
    assert after < 0.8 * before, (before, after)


def _weights(trainer):
    return {**{f"model.{k}": v.clone() for k, v in trainer.model.state_dict().items()},
            **{f"ema.{k}": v.clone() for k, v in trainer.ema.items()}}


def test_resume_is_bit_exact(make_config, tmp_path):
    config = make_config(out=str(tmp_path / "a"), steps=3)
    straight = Trainer(config, progress=False)
    records = straight.run(export=False)
    assert [r["kind"] for r in records] == ["pair", "temporal", "pair"]
    assert all(r["temporal"] >= 0 for r in records if r["kind"] == "temporal")

    first = Trainer(make_config(out=str(tmp_path / "b"), steps=3), progress=False)
    first.run(steps=2, export=False)
    assert first.latest_checkpoint().name == "step_0000002.pt"
    second = Trainer(make_config(out=str(tmp_path / "b"), steps=3), progress=False)
    assert second.resume("auto") and second.step == 2
    second.run(export=False)

    expected, got = _weights(straight), _weights(second)
    assert expected.keys() == got.keys()
    changed = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not changed, f"resumed run differs in {changed[:5]}"
    fresh = Trainer(make_config(out=str(tmp_path / "c")), progress=False)
    assert any(not torch.equal(v, _weights(fresh)[k]) for k, v in expected.items()), "training changed nothing"


def test_schedule_pretrains_then_alternates(make_config):
    trainer = Trainer(make_config(pretrain_steps=3, temporal_every=2), progress=False)
    assert [trainer.is_temporal(s) for s in range(7)] == [False, False, False, True, False, True, False]
    trainer.sequences = None
    assert not any(trainer.is_temporal(s) for s in range(7))


def test_config_validation(make_config, tmp_path):
    with pytest.raises(ConfigError, match="multiple"):
        make_config(crop=(40, 32)).enhancer_config()
    with pytest.raises(ConfigError, match="temporal_frames"):
        make_config(temporal_frames=2)
    with pytest.raises(ConfigError, match="raft_weights"):
        make_config(flow_source="raft")
    bad = tmp_path / "bad.yaml"
    bad.write_text("manifest: x.json\nlearning_rate: 1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_train_config(bad)
    preset = load_train_config("configs/train-default.yaml")
    assert preset.enhancer_config().stream.layout == "per_frame" and preset.crop == (192, 112) and preset.crop_on_mask
    assert preset.enhancer_config().stream.colour_transform == "smooth_affine_curve" and preset.extra_manifests


def test_cli_trains_resumes_and_exports(make_config, tmp_path, capsys):
    config = make_config(steps=2, pretrain_steps=0, batch_size=1)
    yaml = tmp_path / "train.yaml"
    from omegaconf import OmegaConf

    from simharmon.train.config import train_config_to_dict

    yaml.write_text(OmegaConf.to_yaml(train_config_to_dict(config)))
    out = tmp_path / "cli-run"
    assert main(["train", "--config", str(yaml), "--out", str(out), "--no-progress"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "log.jsonl").is_file()
    assert main(["train", "--config", str(yaml), "--out", str(out), "--steps", "3", "--no-progress"]) == 0
    assert "resumed at step 2" in capsys.readouterr().out
    model = build_enhancer(weights=out / "model.safetensors")
    assert model.config.stream.layout == "per_frame" and not model.config.untrained
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 1


def test_export_holds_the_ema_weights(make_config, tmp_path):
    trainer = Trainer(make_config(steps=2), progress=False)
    trainer.run(export=False)
    path = trainer.export(tmp_path / "m.safetensors")
    model = build_enhancer(weights=path)
    named = dict(model.named_parameters())
    for name, value in trainer.ema.items():
        assert torch.equal(named[name], value), name
    assert any(not torch.equal(v, dict(trainer.model.named_parameters())[k]) for k, v in trainer.ema.items())


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.filterwarnings("ignore:Grad strides do not match")  # DDP perf note on 1x1 conv grads
def test_ddp_single_process_matches_plain_training(make_config, tmp_path):
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("no gloo backend")
    plain = Trainer(make_config(out=str(tmp_path / "plain"), steps=2), progress=False)
    plain.run(export=False)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        wrapped = Trainer(make_config(out=str(tmp_path / "ddp"), steps=2), progress=False)
        assert wrapped.dist.active and type(wrapped.forward).__name__ == "DistributedDataParallel"
        wrapped.run(export=False)
    finally:
        dist.destroy_process_group()
    for key, value in _weights(plain).items():
        assert torch.equal(value, _weights(wrapped)[key]), key
    np.testing.assert_equal(plain.step, wrapped.step)


def test_raft_flow_path_matches_data_flow_with_an_oracle(make_config):
    """Without stored flow the temporal loss uses RAFT on the targets; an oracle stands in for RAFT here."""
    from simharmon.train.data import SequenceSet

    trainer = Trainer(make_config(batch_size=1), progress=False)
    with torch.no_grad():
        expected = float(trainer.clip_losses(1)["temporal"])
        data = trainer.sequences
        flows = {}  # the stored constant flow per sequence, served by the oracle in call order
        trainer.sequences = SequenceSet(trainer.config.temporal_manifest, need_flow=False)
        clip = data.batch(trainer._rng(1, 1), 1, trainer.config.crop, trainer.config.temporal_frames)
        flows["fw"], flows["bw"] = clip.flow_fw[-1][0], clip.flow_bw[-1][0]
        calls = []

        def oracle(a, b):
            calls.append(1)
            return (flows["fw"] if len(calls) == 1 else flows["bw"]).permute(1, 2, 0).numpy()

        trainer.raft = oracle
        got = float(trainer.clip_losses(1)["temporal"])
    assert expected > 0 and len(calls) == 2 and got == expected


def test_release_layout_temporal_step_and_checkpoint_retention(make_config, tmp_path):
    trainer = Trainer(make_config(model_overrides={}, steps=3, pretrain_steps=0, temporal_every=1, batch_size=1,
                                  checkpoint_every=1, keep_checkpoints=2, out=str(tmp_path / "rel")), progress=False)
    assert trainer.model.config.stream.layout == "release"
    records = trainer.run(export=False)
    assert all(r["kind"] == "temporal" and np.isfinite(r["temporal"]) for r in records)
    kept = sorted(p.name for p in trainer.checkpoint_dir.glob("step_*.pt"))
    assert kept == ["step_0000002.pt", "step_0000003.pt"]
    assert trainer.latest_checkpoint().name == "step_0000003.pt"


def test_mask_conditioned_training_with_foreground_loss(make_config, tmp_path):
    """The bundled model's recipe: the DiT reads the mask, the loss adds the foreground term."""
    overrides = {"stream": {"layout": "per_frame", "offsets": [1, 2], "history": "partial", "mask_condition": True,
                            "region_pixel": True, "region_pixel_band": 2}}
    trainer = Trainer(make_config(model_overrides=overrides, foreground_weight=1.0, steps=3), progress=False)
    records = trainer.run(export=False)
    assert {r["kind"] for r in records} == {"pair", "temporal"}
    assert all(np.isfinite(r["foreground"]) and r["foreground"] > 0 for r in records)
    # The mask channel is the patch embedding's last input channel: its weights got gradients.
    weight = trainer.model.dit.x_embedder.proj[1].weight  # [D, (C + 1) * p * p]
    grad = weight.grad.view(weight.shape[0], -1, 4)  # input features are (channel, patch position)
    assert grad[:, -1].abs().sum() > 0


def test_export_checkpoint_equals_trainer_export(make_config, tmp_path):
    from safetensors.torch import load_file

    from simharmon.train.trainer import export_checkpoint

    trainer = Trainer(make_config(steps=2, checkpoint_every=2), progress=False)
    trainer.run(export=False)
    a = trainer.export(tmp_path / "a.safetensors")
    b = export_checkpoint(trainer.latest_checkpoint(), tmp_path / "b.safetensors")
    sa, sb = load_file(str(a)), load_file(str(b))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        export_checkpoint(tmp_path / "missing.pt", tmp_path / "c.safetensors")
    # Output post-processing may be switched on at export; what the network sees may not.
    c = export_checkpoint(trainer.latest_checkpoint(), tmp_path / "c.safetensors", stream_changes={"guided_output": True})
    assert build_enhancer(weights=c).config.stream.guided_output
    with pytest.raises(ValueError, match="change what the network was trained on"):
        export_checkpoint(trainer.latest_checkpoint(), tmp_path / "d.safetensors", stream_changes={"offsets": (1,)})


def test_resume_accepts_a_checkpoint_from_before_an_option_existed(make_config, tmp_path):
    """A stream option added later takes its default; a real difference is still refused."""
    trainer = Trainer(make_config(steps=2, checkpoint_every=2), progress=False)
    trainer.run(export=False)
    path = trainer.latest_checkpoint()
    state = torch.load(path, weights_only=True)
    del state["model_config"]["stream"]["guided_output"]  # as written before the option existed
    torch.save(state, path)
    assert Trainer(make_config(steps=2, checkpoint_every=2), progress=False).resume("auto")
    state["model_config"]["stream"]["offsets"] = [1]
    torch.save(state, path)
    with pytest.raises(ValueError, match="different model config"):
        Trainer(make_config(steps=2, checkpoint_every=2), progress=False).resume("auto")


def test_temporal_crop_sizes_the_temporal_batches(make_config):
    trainer = Trainer(make_config(temporal_crop=(32, 16), steps=2), progress=False)
    clip = trainer.sequences.batch(np.random.default_rng(0), 2, trainer.config.temporal_crop, 3)
    assert clip.inputs.shape[-2:] == (16, 32)
    assert [r["kind"] for r in trainer.run(export=False)] == ["pair", "temporal"]
    with pytest.raises(ConfigError, match="temporal_crop 40x16 must be a multiple"):
        make_config(temporal_crop=(40, 16)).enhancer_config()


def test_pooled_manifests_and_crops_on_the_mask(curated):
    from simharmon.train.data import PairSet, SequenceSet

    one = PairSet(curated / "manifest.json")
    two = PairSet([curated / "manifest.json", curated / "manifest.json"])
    assert len(two) == 2 * len(one) and len(set(two.ids)) == len(two.ids)
    assert len(SequenceSet([curated / "temporal.json"] * 2)) == 2 * len(SequenceSet(curated / "temporal.json"))
    for seed in range(5):  # a 16x16 crop on the mask always holds some of it
        batch = two.batch(np.random.default_rng(seed), 4, (16, 16), on_mask=True)
        assert (batch.masks.flatten(1).amax(1) > 0).all()


def test_colour_transform_model_trains_and_resumes(make_config, tmp_path):
    overrides = {"tokenizer": {"decoder": False},
                 "stream": {"layout": "per_frame", "offsets": [1, 2], "history": "partial", "mask_condition": True, "region_pixel": True,
                            "region_pixel_band": 0, "colour_transform": "affine_curve"}}
    config = make_config(model_overrides=overrides, steps=3, pretrain_steps=1, crop_on_mask=True,
                         foreground_weight=1.0, out=str(tmp_path / "colour"), checkpoint_every=2)
    trainer = Trainer(config, progress=False)
    records = trainer.run(export=False)
    assert [r["kind"] for r in records] == ["pair", "temporal", "pair"]
    assert all(np.isfinite(r["loss"]) for r in records)
    resumed = Trainer(config.replace(steps=4), progress=False)
    assert resumed.resume() and resumed.step == 3
