"""``simharmon curate``: argument setup and handler (registered in ``simharmon/cli.py``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Mapping, Optional

from ..argtypes import positive_int
from .curate import MODEL_RECIPES, CurateConfig, curate, load_sources

__all__ = ["HELP", "configure", "run"]

HELP = ("make training pairs (ISP, Poisson, artifacts, real-photo composites, inverse harmonization) and temporal "
        "sequences in NVIDIA's manifest layout")


def _size(text: str):
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from exc
    if width < 16 or height < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16x16, got {text!r}")
    return width, height


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the curate arguments."""
    parser.add_argument("--images", type=Path, default=None, metavar="DIR", help="folder of source .png/.jpg images")
    parser.add_argument("--masks", type=Path, default=None, metavar="DIR",
                        help="foreground masks with the images' file stems; without it random shapes are used")
    parser.add_argument("--procedural", type=int, default=0, metavar="N",
                        help="also generate N procedural street scenes with vehicle masks (redistributable)")
    parser.add_argument("--procedural-size", type=_size, default=(256, 144), metavar="WxH")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--recipe", default="isp", metavar="LIST",
                        help="comma-separated: isp,poisson,artifacts,photo,inverse (photo: views of real photographs "
                             "with a segmented or random region recoloured; inverse: DiffHarmony++'s inverse "
                             "harmonization, needs --inverse-weights and --classifier)")
    parser.add_argument("--variants", type=int, default=1, metavar="N", help="pairs per image and recipe (default 1)")
    parser.add_argument("--temporal", type=int, default=0, metavar="N",
                        help="temporal sequences per image with exact flow (default 0)")
    parser.add_argument("--temporal-frames", type=positive_int, default=5, metavar="T")
    parser.add_argument("--photo-size", type=_size, default=(256, 144), metavar="WxH",
                        help="size of the photo recipe's pairs and sequences (default 256x144)")
    parser.add_argument("--photo-mild-share", type=float, default=0.15, metavar="F",
                        help="share of photo pairs with a mild colour change (default 0.15)")
    parser.add_argument("--photo-jitter-ev", type=float, default=0.2, metavar="EV",
                        help="per-frame exposure jitter of the photo sequences' region (default 0.2)")
    parser.add_argument("--test-fraction", type=float, default=0.1, metavar="F", help="held-out share of source images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    inverse = parser.add_argument_group("inverse recipe")
    inverse.add_argument("--inverse-weights", type=Path, action="append", default=[], metavar="DIR",
                         help="the inverse harmonizer (diffusers layout: unet/ trained with the roles swapped, vae/, "
                              "prompt embedding); repeatable")
    inverse.add_argument("--classifier", type=Path, default=None, metavar="PATH",
                         help="harmony classifier weights (torchvision ResNet, 2 classes: model_state_dict.pth)")
    inverse.add_argument("--classifier-size", type=positive_int, default=256, metavar="S",
                         help="the classifier's input side (256 as published)")
    inverse.add_argument("--candidates", type=positive_int, default=4, metavar="K", help="candidates per pair")
    inverse.add_argument("--inverse-steps", type=positive_int, default=5, metavar="N")
    inverse.add_argument("--inverse-resolution", type=positive_int, default=512, metavar="R")
    inverse.add_argument("--device", default="cpu", metavar="cpu|cuda")


def run(args: argparse.Namespace,
        recipe_builders: Optional[Mapping[str, Callable[[argparse.Namespace], Callable]]] = None) -> int:
    """Run curation; prints the counts. Returns the exit code.

    recipe_builders: name -> builder of a model-based recipe from the parsed arguments (the CLI
    passes ``{"inverse": simharmon.harmonize.inverse.inverse_recipe_from_args}``).
    """

    if args.procedural < 0:
        raise ValueError("--procedural must be >= 0")
    config = CurateConfig(recipes=tuple(r.strip() for r in args.recipe.split(",") if r.strip()),
                          variants=args.variants, temporal=args.temporal, temporal_frames=args.temporal_frames,
                          test_fraction=args.test_fraction, seed=args.seed, photo_size=args.photo_size,
                          photo_mild_share=args.photo_mild_share, photo_jitter_ev=args.photo_jitter_ev)
    sources = load_sources(args.images, args.masks, args.procedural, args.procedural_size)
    recipes = {}
    for name in config.recipes:
        if name in MODEL_RECIPES:
            if not recipe_builders or name not in recipe_builders:
                raise ValueError(f"recipe {name!r} is not available in this command")
            recipes[name] = recipe_builders[name](args)
    result = curate(sources, args.out, config, progress=not args.no_progress, recipes=recipes)
    print(f"wrote {result.pairs['train']} train / {result.pairs['test']} test pairs"
          f" and {result.sequences['train']} / {result.sequences['test']} sequences to {result.manifest}")
    return 0
