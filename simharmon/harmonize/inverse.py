"""Inverse harmonization (DiffHarmony++): real image + mask -> realistic composites, for training data.

The latent harmonizer trained with the roles swapped (condition = the real image and its mask,
target = the composite) generates K candidates per pair (seeds ``s, s + 1, ...``); the input's own
pixels are kept outside the mask. The harmony classifier scores each candidate's P(composite)
and the most likely composite is kept. As a curation recipe (``simharmon curate --recipe
inverse``) each kept candidate becomes an INPUT whose TARGET is the real image.
"""

from __future__ import annotations

import argparse
from typing import List, Tuple

import numpy as np
import torch

from ..models.checkpoints import CheckpointError
from ..ops import pack
from .methods import MethodOptions, build_method
from .models.classifier import HarmonyClassifier, load_classifier

__all__ = ["InverseRecipe", "inverse_recipe_from_args"]


class InverseRecipe:
    """``recipe(image, mask, rng) -> (composite uint8 [H, W, 3], parameters)`` for curation.

    generator: the inverse harmonizer (any :class:`~simharmon.harmonize.methods.Harmonizer`);
    classifier: picks the candidate with the highest P(composite).
    """

    def __init__(self, generator, classifier: HarmonyClassifier, candidates: int = 4) -> None:
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        self.generator, self.classifier, self.candidates = generator, classifier, candidates

    def propose(self, image: np.ndarray, mask: np.ndarray, seed: int) -> List[np.ndarray]:
        """K candidate composites (uint8 ``[H, W, 3]``) with seeds seed .. seed + K - 1."""
        return [self.generator(image, mask, seed=seed + k) for k in range(self.candidates)]

    def scores(self, images: List[np.ndarray]) -> np.ndarray:
        """The classifier's P(composite) per image, float64 ``[K]``."""
        batch = pack(torch.from_numpy(np.stack(images)).to(self.classifier.mean.device)) * 0.5 + 0.5
        return self.classifier.composite_probability(batch).double().cpu().numpy()

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, dict]:
        seed = int(rng.integers(0, 2**31 - self.candidates))
        cands = self.propose(image, mask, seed)
        scores = self.scores(cands)
        best = int(np.argmax(scores))
        return cands[best], {"inverse": {"seed": seed + best, "p_composite": [float(s) for s in scores],
                                         "chosen": best}}


def inverse_recipe_from_args(args: argparse.Namespace) -> InverseRecipe:
    """The recipe from ``simharmon curate``'s --inverse-weights / --classifier / --candidates options."""
    if not args.inverse_weights:
        raise CheckpointError("the inverse recipe needs the inverse harmonizer's weights (--inverse-weights DIR: "
                              "unet/ trained with the roles swapped, vae/, prompt embedding)")
    if args.classifier is None:
        raise CheckpointError("the inverse recipe needs the harmony classifier's weights (--classifier PATH)")
    options = MethodOptions(weights=tuple(args.inverse_weights), steps=args.inverse_steps, seed=args.seed,
                            resolution=args.inverse_resolution, device=args.device)
    generator = build_method("diffharmony", options)
    classifier, _ = load_classifier(args.classifier, input_size=args.classifier_size)
    return InverseRecipe(generator, classifier.to(args.device), args.candidates)
