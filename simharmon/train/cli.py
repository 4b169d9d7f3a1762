"""``simharmon train --config configs/train-*.yaml``: argument setup and handler (registered in cli.py).

Multi-GPU: ``torchrun --nproc_per_node=N -m simharmon train --config ...`` (see ``distributed.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .config import load_train_config
from .trainer import Trainer

__all__ = ["HELP", "configure", "run"]

HELP = "train an enhancer on curated pairs (single-step recipe; resumable; DDP under torchrun)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the train arguments; each option overrides the YAML's field of the same name."""
    parser.add_argument("--config", type=Path, required=True, metavar="YAML", help="training config, e.g. "
                        "configs/train-default.yaml")
    parser.add_argument("--manifest", default=None, metavar="JSON", help="pairs manifest (from simharmon curate)")
    parser.add_argument("--temporal-manifest", default=None, metavar="JSON", help="temporal.json (from --temporal)")
    parser.add_argument("--out", default=None, metavar="DIR", help="run folder: checkpoints, log.jsonl, model.safetensors")
    parser.add_argument("--steps", type=int, default=None, metavar="N")
    parser.add_argument("--device", default=None, metavar="auto|cpu|cuda")
    parser.add_argument("--vgg-weights", default=None, metavar="PATH", help="local torchvision vgg16 state dict")
    parser.add_argument("--raft-weights", default=None, metavar="PATH", help="local torchvision raft_large state dict")
    parser.add_argument("--resume", default="auto", metavar="auto|never|PATH",
                        help="continue from the newest checkpoint in OUT (auto, the default), a file, or start over")
    parser.add_argument("--no-export", action="store_true", help="do not write OUT/model.safetensors at the end")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Train; prints where the outputs went. Returns the exit code."""

    overrides = {key: value for key, value in (
        ("manifest", args.manifest), ("temporal_manifest", args.temporal_manifest), ("out", args.out),
        ("steps", args.steps), ("device", args.device), ("vgg_weights", args.vgg_weights),
        ("raft_weights", args.raft_weights)) if value is not None}
    config = load_train_config(args.config, overrides)
    trainer = Trainer(config, progress=not args.no_progress)
    if args.resume != "never" and trainer.resume(args.resume):
        print(f"resumed at step {trainer.step}")
    records = trainer.run(export=not args.no_export)
    if trainer.dist.is_main:
        last = records[-1] if records else {}
        print(f"trained to step {trainer.step} (last loss {last.get('loss', float('nan')):.4g}); outputs in {trainer.out}")
    return 0
