"""Command-line interface: ``simharmon <command> ...`` (also ``python -m simharmon``).

Each subcommand is one ``configure`` function (adds its arguments) and one ``run`` function
(does the work, returns an exit code), registered in ``SUBCOMMANDS`` with :func:`subcommand`.
Expected failures (bad paths, bad input, incompatible output folders) are reported as one
``simharmon <command>: error: ...`` line and exit code 1; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .argtypes import positive_int as _positive_int

__all__ = ["main", "build_parser", "subcommand", "Subcommand", "SUBCOMMANDS"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Subcommand:
    """A registered subcommand: its help line, argument setup and handler."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS: Dict[str, Subcommand] = {}


def subcommand(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    """Decorator registering ``run(args) -> exit code`` as subcommand ``name``."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        if name in SUBCOMMANDS:
            raise ValueError(f"subcommand {name!r} registered twice")
        SUBCOMMANDS[name] = Subcommand(name=name, help=help, configure=configure, run=run)
        return run

    return register


def _user_error_types() -> tuple:
    """Exceptions reported as a one-line error instead of a traceback."""
    types: List[type] = [OSError, ValueError]
    try:  # checkpoint problems are RuntimeErrors; import lazily (pulls in torch)
        from .models.checkpoints import CheckpointError

        types.append(CheckpointError)
    except ImportError:
        pass
    return tuple(types)


# -- enhance ------------------------------------------------------------------------------------


def _configure_enhance(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="INPUT",
                        help="folder of .png/.jpg/.jpeg frames (natural name order) or a video file")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT",
                        help="output folder: OUT/frames/<name>.png, OUT/run.json, OUT/enhanced.mp4 with --mp4; "
                             "re-running with the same OUT resumes")
    parser.add_argument("--weights", type=Path, action="append", default=[], metavar="PATH",
                        help="checkpoint file; repeat for a DiT plus tokenizer pair. Without --weights and "
                             "--config: the bundled default model; with --config alone: random (untrained) weights")
    parser.add_argument("--config", default=None, metavar="NAME_OR_YAML",
                        help="preset name (tiny, cosmos-0.6b) or YAML file; default: the config carried by the "
                             "weights")
    parser.add_argument("--masks", type=Path, default=None, metavar="DIR",
                        help="inserted-actor masks, DIR/<frame name>.png (255 = actor), for models that read them "
                             "(the bundled default); without it they get empty masks and frames pass through")
    parser.add_argument("--plain", action="store_true",
                        help="run the plain model instead of the exact optimizations (equal up to float rounding)")
    parser.add_argument("--nontemporal", action="store_true",
                        help="enhance each frame alone (stream.history='none')")
    parser.add_argument("--mp4", action="store_true", help="also write OUT/enhanced.mp4 at the end")
    parser.add_argument("--device", default="auto", metavar="cpu|cuda",
                        help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    parser.add_argument("--max-frames", type=_positive_int, default=None, metavar="N",
                        help="enhance only the first N frames (a later run without it continues)")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard outputs of a different earlier run in OUT instead of refusing")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow full unpickling of checkpoints that weights-only loading refuses "
                             "(only for files you trust)")
    parser.add_argument("--ema", action="store_true",
                        help="load the DiT's EMA weights (net_ema.) of a Harmonizer checkpoint instead of the live ones")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


@subcommand("enhance", help="enhance a recorded frame folder or video (resumable)", configure=_configure_enhance)
def run_enhance(args: argparse.Namespace) -> int:
    """``simharmon enhance INPUT --out OUT ...``: see :func:`simharmon.replay.enhance.enhance_sequence`."""
    from .replay.enhance import EnhanceRequest, enhance_sequence

    request = EnhanceRequest(
        input=args.input, out=args.out, weights=list(args.weights), config=args.config,
        nontemporal=args.nontemporal, mp4=args.mp4, device=args.device, max_frames=args.max_frames,
        overwrite=args.overwrite, trust_checkpoint=args.trust_checkpoint, use_ema=args.ema,
        progress=not args.no_progress, masks=args.masks, plain=args.plain,
    )
    try:
        result = enhance_sequence(request)
    except KeyboardInterrupt:
        print("\nfinished frames are kept; re-run the same command to resume", file=sys.stderr)
        raise
    done = f"{result.completed}/{result.frame_count} frames in {result.frames_dir}"
    if result.resumed_from:
        done += f" ({result.resumed_from} from an earlier run)"
    print(f"enhanced {done} in {result.seconds:.1f}s")
    if result.mp4_path is not None:
        print(f"video: {result.mp4_path}")
    if result.untrained:
        print("reminder: the weights were random (untrained); these outputs are not meaningful enhancements")
    return 0


# -- replay (implemented in simharmon/replay/cli.py) --------------------------------------------

from .replay import cli as _replay_cli  # noqa: E402 - registered here, after the registry exists

subcommand("replay", help=_replay_cli.HELP, configure=_replay_cli.configure)(_replay_cli.run)

from .data import curate_cli as _curate_cli  # noqa: E402
from .harmonize import cli as _harmonize_cli  # noqa: E402


def _inverse_recipe(args: argparse.Namespace):
    """The inverse-harmonization curation recipe (imports diffusers only when it is asked for)."""
    from .harmonize.inverse import inverse_recipe_from_args

    return inverse_recipe_from_args(args)

from .train import cli as _train_cli  # noqa: E402

subcommand("curate", help=_curate_cli.HELP, configure=_curate_cli.configure)(
    lambda args: _curate_cli.run(args, recipe_builders={"inverse": _inverse_recipe}))
subcommand("train", help=_train_cli.HELP, configure=_train_cli.configure)(_train_cli.run)
subcommand("harmonize", help=_harmonize_cli.HELP, configure=_harmonize_cli.configure)(_harmonize_cli.run)


# -- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per registered subcommand."""
    parser = argparse.ArgumentParser(prog="simharmon", description="Real-time frame enhancer runtime for driving simulators.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in SUBCOMMANDS.values():
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        command.configure(sub)
        sub.set_defaults(_run=command.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI with ``argv`` (default: ``sys.argv[1:]``); returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"simharmon {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _user_error_types() as exc:
        print(f"simharmon {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


from .bridge import cli as _bridge_cli  # noqa: E402, F401  (registers "serve")

if __name__ == "__main__":
    sys.exit(main())
