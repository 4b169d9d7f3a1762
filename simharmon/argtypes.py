"""argparse value types shared by the subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["positive_int", "positive_float", "add_model_arguments", "add_execution_arguments"]

BACKENDS = ("auto", "eager", "compile", "cudagraph", "tensorrt")  # config.ENGINE_BACKENDS (tested equal)


def positive_int(text: str) -> int:
    """An integer >= 1, or an argparse error naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number > 0, or an argparse error naming the value."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--weights`` and ``--config``: what the runtime factory loads (the same rules at every front door)."""
    parser.add_argument("--weights", type=Path, action="append", default=[], metavar="PATH",
                        help="checkpoint file; repeat for a DiT plus tokenizer pair. Without --weights and "
                             "--config: the bundled default model; with --config alone: random (untrained) weights")
    parser.add_argument("--config", default=None, metavar="NAME_OR_YAML",
                        help="preset name (tiny, cosmos-0.6b) or YAML file; default: the config carried by the "
                             "weights")


def add_execution_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--backend``: where and how the engine runs."""
    parser.add_argument("--device", default="auto", metavar="cpu|cuda",
                        help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="engine backend (default auto: cudagraph over compile on CUDA, eager on the CPU)")
