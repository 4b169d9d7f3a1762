"""Harmonizer training data: procedural pairs, curated manifests, matched-strength colour changes."""

import numpy as np

from simharmon.data.curate import CurateConfig, curate, load_sources
from simharmon.harmonize.data import foreground_change, manifest_pairs, procedural_pairs, random_colour_change


def test_procedural_pairs_change_only_the_foreground():
    pairs = procedural_pairs(3, 32, seed=0)
    assert pairs.composites.shape == (3, 32, 32, 3) and pairs.masks.shape == (3, 32, 32)
    for comp, real, mask in zip(pairs.composites, pairs.reals, pairs.masks):
        assert np.array_equal(comp[mask == 0], real[mask == 0])
        assert foreground_change(comp, real, mask) > 0


def test_random_colour_change_matches_the_strength():
    pairs = procedural_pairs(4, 48, seed=1)
    rng = np.random.default_rng(0)
    for real, mask, target in zip(pairs.reals, pairs.masks, (3.0, 8.0, 15.0, 25.0)):
        out, achieved = random_colour_change(real, mask, target, rng)
        assert abs(achieved - target) < 0.15 * target + 1.0  # rounding and clipping at 0 / 255
        assert np.array_equal(out[mask == 0], real[mask == 0])


def test_manifest_pairs_read_what_curate_wrote(tmp_path):
    sources = load_sources(None, None, procedural=2, procedural_size=(40, 24))
    curate(sources, tmp_path, CurateConfig(recipes=("isp",), test_fraction=0.5), progress=False)
    pairs = manifest_pairs(tmp_path, "train", size=32)
    assert pairs.reals.shape == (1, 32, 32, 3) and pairs.masks.shape == (1, 32, 32)
    assert not np.array_equal(pairs.composites, pairs.reals)
