"""`simharmon serve` argument handling (the running server is tested in test_resilience.py)."""

import pytest

from simharmon.bridge.cli import build_processor
from simharmon.cli import SUBCOMMANDS, build_parser, main
from simharmon.models.bundled import BUNDLED_NAME
from simharmon.runtime.engine import Engine
from simharmon.runtime.optimize import OptimizedEnhancer


def test_serve_is_registered(capsys):
    assert "serve" in SUBCOMMANDS
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0 and "docs/PROTOCOL.md" in capsys.readouterr().out


@pytest.mark.parametrize("bind", ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://192.168.1.4:5555"])
def test_non_loopback_bind_is_refused(bind, capsys):
    assert main(["serve", "--engine", "identity", "--bind", bind]) == 1
    err = capsys.readouterr().err
    assert "simharmon serve: error: refusing to bind" in err and "--allow-remote" in err


def test_identity_engine_takes_no_model_options(capsys):
    assert main(["serve", "--engine", "identity", "--config", "tiny"]) == 1
    assert "--engine identity takes no --config" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--queue-depth", "0"], ["--stream-idle-s", "-1"], ["--engine", "fast"]])
def test_bad_values_are_usage_errors(args):
    with pytest.raises(SystemExit) as info:
        main(["serve", *args])
    assert info.value.code == 2


def test_model_engine_defaults_to_the_bundled_model():
    parser = build_parser()
    engine = build_processor(parser.parse_args(["serve"]))
    assert isinstance(engine, Engine) and engine.backend == "eager"  # auto, on the CPU
    assert not engine.untrained and engine.model.config.name == BUNDLED_NAME
    assert isinstance(engine.model, OptimizedEnhancer)
    assert "mask" in engine.used_inputs  # it reads the actor mask
    random = build_processor(parser.parse_args(["serve", "--config", "tiny"]))
    assert random.untrained and random.model.config.name == "tiny"
