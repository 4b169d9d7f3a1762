"""``simharmon harmonize``: argument setup and handler (registered in ``simharmon/cli.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..argtypes import positive_int
from .registry import METHODS

__all__ = ["HELP", "configure", "run"]

HELP = "harmonize composite images offline (DiffHarmony, DiffHarmony++, Reinhard; resumable)"
BACKEND_CHOICES = ("auto", "eager", "compile", "cudagraph")  # runtime.stages_runner.BACKENDS less tensorrt


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the harmonize arguments."""
    parser.add_argument("input", type=Path, metavar="INPUT", help="a composite image (.png/.jpg) or a folder of them")
    parser.add_argument("--masks", type=Path, required=True, metavar="MASKS",
                        help="the foreground mask (255 = inserted object) for one image, or a folder of masks "
                             "with the images' file stems")
    parser.add_argument("--out", type=Path, required=True, metavar="OUT",
                        help="output folder: OUT/<method>/<stem>.png and OUT/<method>/run.json; re-running resumes")
    parser.add_argument("--method", required=True, choices=list(METHODS),
                        help="; ".join(f"{m.name}: {m.summary}" for m in METHODS.values()))
    parser.add_argument("--weights", type=Path, action="append", default=[], metavar="DIR",
                        help="diffusers-layout folder(s): a root with unet/, vae/, condition_vae/ (or cvae/), "
                             "prompt_embeds.safetensors or text_encoder/ + tokenizer/, or single component "
                             "folders; repeatable. Without it: tiny random weights (untrained, said so)")
    parser.add_argument("--steps", type=positive_int, default=5, metavar="N", help="sampler steps (default 5)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="sampler seed (default 0)")
    parser.add_argument("--resolution", type=positive_int, default=512, metavar="R",
                        help="square processing size, a multiple of 8 (512 or 1024 for the published model)")
    parser.add_argument("--device", default="auto", metavar="cpu|cuda", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    parser.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                        help="how the UNet step and the VAE run: eager, compile (inductor), cudagraph (CUDA); "
                             "auto: cudagraph on CUDA, eager on the CPU")
    parser.add_argument("--replace-background", action="store_true",
                        help="keep the model's output outside the mask too (default: the input's own pixels)")
    parser.add_argument("--overwrite", action="store_true",
                        help="redo every image even if OUT/<method> holds a run with other settings")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Build the method, harmonize, print a summary. Returns the exit code."""
    # Imported here: torch and diffusers load only when this command runs (every CLI start reads this module).
    from .methods import MethodOptions, build_method
    from .run import harmonize_pairs, pair_inputs

    if args.resolution % 8:
        raise ValueError(f"--resolution must be a multiple of 8, got {args.resolution}")
    pairs = pair_inputs(args.input, args.masks)
    options = MethodOptions(weights=tuple(args.weights), steps=args.steps, seed=args.seed,
                            resolution=args.resolution, device=args.device, backend=args.backend,
                            keep_background=not args.replace_background)
    harmonizer = build_method(args.method, options)
    untrained_note = (f"note: {args.method} is running with UNTRAINED random weights (tiny preset): the outputs "
                      "are not meaningful harmonizations. Pass --weights DIR with trained weights.")
    if harmonizer.untrained:
        print(untrained_note)
    elif harmonizer.describe():
        print(harmonizer.describe())
    result = harmonize_pairs(pairs, harmonizer, args.out, overwrite=args.overwrite, progress=not args.no_progress)
    line = f"harmonized {result.done}/{result.total} images into {result.out} in {result.seconds:.1f}s"
    if result.resumed:
        line += f" ({result.resumed} from an earlier run)"
    print(line)
    if harmonizer.untrained:
        print(untrained_note)
    return 0
