"""The ``simharmon enhance`` subcommand: argument set-up and handler (registered in ``simharmon.cli``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..argtypes import add_execution_arguments, add_model_arguments
from ..argtypes import positive_int as _positive_int
from .enhance import EnhanceRequest, enhance_sequence

__all__ = ["HELP", "configure", "run"]

HELP = "enhance a recorded frame folder or video (resumable)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``enhance`` arguments to ``parser``."""
    parser.add_argument("input", type=Path, metavar="INPUT",
                        help="folder of .png/.jpg/.jpeg frames (natural name order) or a video file")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT",
                        help="output folder: OUT/frames/<name>.png, OUT/run.json, OUT/enhanced.mp4 with --mp4; "
                             "re-running with the same OUT resumes")
    add_model_arguments(parser)
    add_execution_arguments(parser)
    parser.add_argument("--masks", type=Path, default=None, metavar="DIR",
                        help="inserted-actor masks, DIR/<frame name>.png (255 = actor), for models that read them "
                             "(the bundled default); without it they get empty masks and frames pass through")
    parser.add_argument("--plain", action="store_true",
                        help="run the plain model instead of the exact optimizations (equal up to float rounding)")
    parser.add_argument("--nontemporal", action="store_true",
                        help="enhance each frame alone (stream.history='none')")
    parser.add_argument("--mp4", action="store_true", help="also write OUT/enhanced.mp4 at the end")
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


def run(args: argparse.Namespace) -> int:
    """``simharmon enhance INPUT --out OUT ...``: see :func:`simharmon.replay.enhance.enhance_sequence`."""
    request = EnhanceRequest(
        input=args.input, out=args.out, weights=list(args.weights), config=args.config,
        nontemporal=args.nontemporal, mp4=args.mp4, device=args.device, max_frames=args.max_frames,
        overwrite=args.overwrite, trust_checkpoint=args.trust_checkpoint, use_ema=args.ema,
        progress=not args.no_progress, masks=args.masks, plain=args.plain, backend=args.backend,
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
    if result.passthrough:
        print(f"{result.passthrough} frame(s) passed through unchanged (no mask; passthrough='no_mask' in run.json)")
    if result.untrained:
        print("reminder: the weights were random (untrained); these outputs are not meaningful enhancements")
    return 0
