"""Fleet settings and the stream router's hashing (no Ray cluster)."""

import argparse
import dataclasses

import pytest

from simharmon.cli import build_parser
from simharmon.config import ConfigError
from simharmon.fleet.cli import overrides
from simharmon.fleet.config import FleetConfig, load_fleet_config
from simharmon.fleet.replica import rendezvous


def test_presets_load_and_validate():
    local = load_fleet_config("fleet-local")
    assert local.replicas == 2 and local.gpus_per_replica == 0 and local.autoscaling is None
    gpu = load_fleet_config("fleet-gpu")
    assert gpu.gpus_per_replica == 1 and gpu.autoscaling["max_replicas"] == 8


@pytest.mark.parametrize("fields,match", [
    ({"replicas": 0}, "replicas"),
    ({"engine": "other"}, "engine"),
    ({"engine": "identity", "config": "tiny"}, "identity"),
    ({"min_replicas": 1}, "both"),
    ({"min_replicas": 3, "max_replicas": 4, "replicas": 2}, "min_replicas <= replicas"),
    ({"request_timeout_s": 0}, "request_timeout_s"),
])
def test_bad_settings_are_named(fields, match):
    with pytest.raises(ValueError, match=match):
        FleetConfig(**fields)


def test_yaml_with_an_unknown_key_is_refused(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text("replicas: 2\nreplicaz: 3\n")
    with pytest.raises(ConfigError, match="replicaz"):
        load_fleet_config(path)


def test_command_line_overrides_the_preset():
    args = build_parser().parse_args(["fleet", "--local", "--replicas", "3", "--config", "tiny", "--bind",
                                      "tcp://127.0.0.1:7000"])
    assert isinstance(args, argparse.Namespace)
    config = dataclasses.replace(load_fleet_config(args.preset), **overrides(args))
    assert (config.replicas, config.config, config.bind) == (3, "tiny", ["tcp://127.0.0.1:7000"])
    assert config.device == "cpu"  # from the preset


def test_rendezvous_moves_only_the_streams_of_a_removed_replica():
    replicas = ["r1", "r2", "r3"]
    keys = [f"sim/cam{i}#{i}" for i in range(200)]
    before = {k: rendezvous(k, replicas) for k in keys}
    assert set(before.values()) == set(replicas)  # spread over all replicas
    after = {k: rendezvous(k, ["r1", "r3"]) for k in keys}
    assert all(after[k] == before[k] for k in keys if before[k] != "r2")
