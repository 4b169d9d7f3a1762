import dataclasses

import pytest

from simharmon.config import (
    ConfigError,
    DiTConfig,
    EnhancerConfig,
    StreamConfig,
    TokenizerConfig,
    config_from_dict,
    load_config,
    save_config,
)


def test_presets_load_with_published_shapes():
    cosmos = load_config("cosmos-0.6b")
    assert (cosmos.dit.model_channels, cosmos.dit.num_blocks, cosmos.dit.num_heads) == (1280, 20, 20)
    assert cosmos.dit.head_dim == 64 and cosmos.dit.adaln_lora_dim == 256
    assert cosmos.dit.crossattn_emb_channels == 1024 and cosmos.denoiser.null_text_tokens == 512
    assert (cosmos.dit.rope_h_extrapolation_ratio, cosmos.dit.rope_t_extrapolation_ratio) == (4.0, 1.0)
    assert cosmos.tokenizer == TokenizerConfig()  # published Wan2.1 tokenizer
    assert cosmos.denoiser.sigma == 0.25 and cosmos.pixel_multiple == 16
    assert cosmos.stream.layout == "release" and cosmos.stream.offsets == (1, 2, 3, 4)
    tiny = load_config("tiny")
    assert tiny.untrained and tiny.dit.model_channels < 128


@pytest.mark.parametrize("name", ["tiny", "cosmos-0.6b"])
def test_yaml_round_trip(tmp_path, name):
    config = load_config(name)
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config


def test_configs_are_frozen():
    config = load_config("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.dit.num_blocks = 3


@pytest.mark.parametrize("bad, match", [
    ({"stream": {"layout": "sideways"}}, "stream.layout"),
    ({"stream": {"offsets": [0, 1]}}, "offsets must be >= 1"),
    ({"stream": {"offsets": [1, 1]}}, "distinct"),
    ({"dit": {"num_heads": 7}}, "divisible"),
    ({"denoiser": {"timestep": 1000}}, "timestep"),
    ({"tokenizer": {"temporal_downsample": [True]}}, "temporal_downsample"),
    ({"tokenizer": {"z_dim": 8}}, "latent_mean"),
    ({"dtype": "float64"}, "dtype"),
    ({"stream": {"layout": "release", "offsets": [1, 2]}}, "multiple of 4"),
    ({"dit": {"no_such_field": 1}}, "invalid config"),
    ({"dit": {"num_blocks": "many"}}, "invalid config"),
])
def test_invalid_values_are_rejected(bad, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(bad)


def test_missing_preset_and_file():
    with pytest.raises(ConfigError, match="no preset named"):
        load_config("nonexistent")
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/x.yaml")


def test_direct_construction_validates():
    with pytest.raises(ConfigError):
        StreamConfig(history="sometimes")
    with pytest.raises(ConfigError, match="channels"):
        EnhancerConfig(dit=DiTConfig(in_channels=8, out_channels=8))


def test_cli_backend_choices_are_the_engine_backends():
    from simharmon.argtypes import BACKENDS
    from simharmon.config import ENGINE_BACKENDS

    assert BACKENDS == ENGINE_BACKENDS
