"""``python -m simharmon`` and the ``simharmon`` command (its entry point is :func:`main`).

The command's imports (torch and the rest) take a second or more. They happen inside
:func:`main`, so a Ctrl-C while they load ends the program the way a later Ctrl-C does: one line
and exit code 130, no traceback.
"""

import sys

__all__ = ["main"]

EXIT_INTERRUPTED = 130


def main() -> int:
    """Run the command line; returns the exit code."""
    try:
        from .cli import main as cli_main  # deliberately here: the slow imports must be interruptible

        return cli_main()
    except KeyboardInterrupt:
        print("simharmon: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
