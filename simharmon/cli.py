"""Command-line interface: ``simharmon <command> ...`` (also ``python -m simharmon``).

Every subcommand is registered the same way: a front-door module with ``HELP``, ``configure``
(adds its arguments) and ``run`` (does the work, returns an exit code), listed in ``COMMANDS``.
Expected failures (bad paths, bad input, incompatible output folders, unreadable checkpoints) are
reported as one ``simharmon <command>: error: ...`` line and exit code 1 (``--debug`` adds the
traceback); Ctrl-C exits with 130, without a traceback even while the imports load
(:mod:`simharmon.__main__` is the entry point).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Dict, Optional, Sequence

from . import __version__
from .bridge import cli as serve_cli
from .data import curate_cli
from .fleet import cli as fleet_cli
from .harmonize import cli as harmonize_cli
from .models.checkpoints import CheckpointError
from .replay import cli as replay_cli
from .replay import enhance_cli
from .sensorsim import cli as proxy_cli
from .train import cli as train_cli

__all__ = ["main", "build_parser", "package_version", "Subcommand", "SUBCOMMANDS", "COMMANDS"]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
USER_ERRORS = (OSError, ValueError, CheckpointError)  # reported as one line, not a traceback

COMMANDS = (("enhance", enhance_cli), ("replay", replay_cli), ("serve", serve_cli), ("curate", curate_cli),
            ("train", train_cli), ("harmonize", harmonize_cli), ("proxy", proxy_cli), ("fleet", fleet_cli))


@dataclass(frozen=True)
class Subcommand:
    """A registered subcommand: its help line, argument setup and handler."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]

    @classmethod
    def of(cls, name: str, module: ModuleType) -> Subcommand:
        """The subcommand a front-door CLI module defines (``HELP``, ``configure``, ``run``)."""
        return cls(name, module.HELP, module.configure, module.run)


def _run_curate(args: argparse.Namespace) -> int:
    """``simharmon curate`` with the model-based recipes wired in (``data/`` never imports ``harmonize/``)."""
    return curate_cli.run(args, recipe_builders={"inverse": _inverse_recipe})


def _inverse_recipe(args: argparse.Namespace):
    """The inverse-harmonization recipe. Imported on use: it loads diffusers, which every other command's
    start-up (e.g. ``serve`` getting ready) would otherwise pay for."""
    from .harmonize.inverse import inverse_recipe_from_args

    return inverse_recipe_from_args(args)


SUBCOMMANDS: Dict[str, Subcommand] = {name: Subcommand.of(name, module) for name, module in COMMANDS}
SUBCOMMANDS["curate"] = Subcommand("curate", curate_cli.HELP, curate_cli.configure, _run_curate)
_DEBUG_HELP = "on an error, also print the Python traceback (for bug reports)"


def package_version() -> str:
    """The installed distribution's version (its metadata), else the source tree's ``__version__``."""
    try:
        return importlib.metadata.version("simharmon")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per registered subcommand."""
    parser = argparse.ArgumentParser(prog="simharmon", description="Real-time frame enhancer runtime for driving simulators.")
    parser.add_argument("--version", action="version", version=f"simharmon {package_version()}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in SUBCOMMANDS.values():
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        command.configure(sub)
        # Also after the command (simharmon enhance ... --debug); SUPPRESS keeps a --debug given before it.
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
        sub.set_defaults(_run=command.run)
    return parser


_DEBUG_HELP = "on an error, also print the Python traceback (for bug reports)"


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
    except USER_ERRORS as exc:
        if args.debug:
            traceback.print_exc()
        print(f"simharmon {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
