"""The ``simharmon replay`` subcommand: argument set-up and handler (registered in ``simharmon.cli``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..argtypes import add_execution_arguments, add_model_arguments
from ..argtypes import positive_float as _positive_float
from ..argtypes import positive_int as _positive_int
from ..eval.verdict import verdict_lines
from ..io.drives import DRIVE_KINDS
from .replay import ReplayOptions, replay

__all__ = ["HELP", "configure", "run"]

HELP = "replay a logged drive through the enhancer per camera, then score it and write a report (resumable)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``replay`` arguments to ``parser``."""
    parser.add_argument("drive", type=Path, metavar="DRIVE",
                        help="a drive folder (drive.json, docs/DRIVE_FORMAT.md), a drivestudio scene, an .mcap file "
                             "(ROS 2 or Foxglove image topics), a rosbag2 folder (MCAP storage), a video, or a "
                             "folder of frames")
    parser.add_argument("--out", type=Path, required=True, metavar="RUN",
                        help="output folder (enhanced frames, videos, metrics, plots, report.html); re-running with "
                             "the same RUN resumes")
    add_model_arguments(parser)
    add_execution_arguments(parser)
    parser.add_argument("--plain", action="store_true",
                        help="run the plain model instead of the exact optimizations (equal up to float rounding)")
    parser.add_argument("--nontemporal", action="store_true", help="enhance each frame alone (stream.history='none')")
    parser.add_argument("--kind", default="auto", choices=DRIVE_KINDS, help="drive reader (default: detect)")
    parser.add_argument("--fps", type=_positive_float, default=None, help="override the drive's frame rate")
    parser.add_argument("--camera", action="append", default=[], metavar="NAME",
                        help="replay only this camera, by name or (logs) by image topic (repeatable; default: all)")
    parser.add_argument("--topic", action="append", default=[], metavar="IMAGE_TOPIC",
                        help="logs: use this image topic as a camera (repeatable; default: every image topic except "
                             "companions, see docs/DRIVE_FORMAT.md)")
    parser.add_argument("--mask-topic", action="append", default=[], metavar="[IMAGE_TOPIC=]MASK_TOPIC",
                        help="logs: read this camera's actor masks from MASK_TOPIC (default: IMAGE_TOPIC/mask, "
                             "NAMESPACE/mask or NAMESPACE/mask/<image leaf>); repeatable")
    parser.add_argument("--max-frames", type=_positive_int, default=None, metavar="N",
                        help="enhance only the first N frames of each camera (a later run without it continues)")
    parser.add_argument("--raft-weights", type=Path, default=None, metavar="PATH",
                        help="local torchvision raft_large state dict: flow for the warping error when the drive "
                             "has neither flow nor depth + poses")
    parser.add_argument("--lpips-backbone", type=Path, default=None, metavar="PATH",
                        help="local torchvision AlexNet/VGG16 state dict for LPIPS (with --lpips-heads)")
    parser.add_argument("--lpips-heads", type=Path, default=None, metavar="PATH",
                        help="local LPIPS linear heads (lin0..lin4) for LPIPS (with --lpips-backbone)")
    parser.add_argument("--dino-weights", type=Path, default=None, metavar="PATH",
                        help="local DINO ViT state dict for DINO-Struct-Dist")
    parser.add_argument("--warp-out-of-frame", choices=("occluded", "clamp"), default="occluded",
                        help="warping error: count pixels whose flow leaves the image as occluded (default) or "
                             "compare them with the border like Lai et al.'s code (clamp)")
    parser.add_argument("--mcap", action="store_true",
                        help="also write RUN/enhanced.mcap: a log is copied with <topic>/enhanced topics in its own "
                             "message type and encoding (ROS 2 in, ROS 2 out); other drives as foxglove images")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard the outputs of a different earlier run in RUN instead of refusing")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow full unpickling of checkpoints that weights-only loading refuses")
    parser.add_argument("--ema", action="store_true", help="load the DiT's EMA weights of a Harmonizer checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _print_verdicts(summary_path) -> None:
    """The report's verdict on the terminal, once: losses first, then the plain lines."""
    result = json.loads(Path(summary_path).read_text()).get("verdicts")
    if not result:
        return
    for line in verdict_lines(result):
        print(line)


def run(args: argparse.Namespace) -> int:
    """``simharmon replay DRIVE --out RUN ...``: see :func:`simharmon.replay.replay.replay`."""
    options = ReplayOptions(
        drive=args.drive, out=args.out, weights=tuple(args.weights), config=args.config, nontemporal=args.nontemporal,
        device=args.device, drive_kind=args.kind, fps=args.fps, cameras=tuple(args.camera) or None,
        topics=tuple(args.topic), mask_topics=tuple(args.mask_topic),
        max_frames=args.max_frames, overwrite=args.overwrite, trust_checkpoint=args.trust_checkpoint,
        use_ema=args.ema, raft_weights=args.raft_weights, lpips_backbone=args.lpips_backbone,
        lpips_heads=args.lpips_heads, dino_weights=args.dino_weights, out_of_frame=args.warp_out_of_frame,
        mcap=args.mcap, progress=not args.no_progress, plain=args.plain, backend=args.backend,
    )
    try:
        result = replay(options)
    except KeyboardInterrupt:
        print("\nfinished frames are kept; re-run the same command to resume", file=sys.stderr)
        raise
    frames = ", ".join(f"{c}: {n}" for c, n in result.produced.items())
    print(f"replayed {frames} frames in {result.seconds:.1f}s ({result.status})")
    if result.report_path is not None:
        _print_verdicts(result.summary_path)
        print(f"report: {result.report_path}")
        print(f"summary: {result.summary_path}")
    passed = {c: n for c, n in result.passthrough.items() if n}
    if passed:
        print("passed through unchanged (no mask): " + ", ".join(f"{c}: {n} frames" for c, n in passed.items()))
    if result.mcap_path is not None:
        print(f"mcap: {result.mcap_path}")
    if result.untrained:
        print("reminder: the weights were random (untrained); these outputs are not meaningful enhancements")
    return 0
