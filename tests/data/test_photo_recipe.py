"""The real-photo recipe: views, regions, colour changes, sequences with exact flow, curation, sources."""

import json

import numpy as np
import pytest

from simharmon.data.curate import CurateConfig, curate
from simharmon.data.photo import (
    COVERAGE,
    PHOTO_RANGES,
    photo_pair,
    photo_sequence,
    random_region,
    random_view,
    view_flow,
)
from simharmon.data.photo_sources import SOURCES_FILE, photo_sources
from simharmon.eval.photo_heldout import HELDOUT_PHOTOS, heldout_photos
from simharmon.eval.temporal import warp


@pytest.fixture(scope="module")
def photo():
    return dict(heldout_photos())["seeding"][::2, ::2].copy()  # 512x288: small and fast


def test_pair_is_a_view_with_a_changed_region_and_an_exact_background(photo):
    a = photo_pair(np.random.default_rng(1), photo, (128, 80))
    b = photo_pair(np.random.default_rng(1), photo, (128, 80))
    assert np.array_equal(a.input, b.input) and np.array_equal(a.mask, b.mask) and a.params == b.params
    assert a.input.shape == a.target.shape == (80, 128, 3) and a.mask.shape == (80, 128)
    outside = a.mask == 0
    assert np.array_equal(a.input[outside], a.target[outside])
    assert COVERAGE[0] * 0.8 <= (a.mask > 0).mean() <= COVERAGE[1] * 1.1
    assert a.params["isp"]["noise"] == 0.0 and PHOTO_RANGES.noise == (0.0, 0.0)


def test_views_span_scales_and_regions_every_kind(photo):
    widths, kinds = [], set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        view, crop = random_view(rng, photo, (128, 80))
        widths.append(crop["width"])
        kinds.add(random_region(rng, view, grabcut_share=0.5)[1])
        assert view.shape == (80, 128, 3)
    assert min(widths) < 0.5 * max(widths) and max(widths) <= photo.shape[1]
    assert {"blob", "ellipse", "box"} <= kinds and kinds & {"grabcut", "colour_segment"}
    with pytest.raises(ValueError, match="smaller than the output"):
        random_view(np.random.default_rng(0), photo[:40], (128, 80))


def test_sequence_flow_is_exact_and_the_region_moves_with_the_content(photo):
    seq = photo_sequence(np.random.default_rng(3), photo, (128, 80), 4, jitter_ev=0.2)
    assert len(seq.frames) == 4 and seq.flow_fw.shape == (3, 2, 80, 128)
    jitters = seq.params["exposure_jitter_ev"]
    assert len(set(jitters)) == 4 and max(abs(j) for j in jitters) <= 0.2
    import torch

    for t in range(3):
        # Warping the next target with F_{t->t+1} gives this target, up to resampling (inner pixels).
        nxt = torch.from_numpy(seq.targets[t + 1]).permute(2, 0, 1)[None].double()
        warped, inside = warp(nxt, torch.from_numpy(seq.flow_fw[t])[None].double())
        here = torch.from_numpy(seq.targets[t]).permute(2, 0, 1)[None].double()
        inner = inside[0, 0] & torch.from_numpy(np.pad(np.ones((72, 120), bool), ((4, 4), (4, 4))))
        moved = (warped - here).abs()[0].mean(0)[inner].mean()
        still = (nxt - here).abs()[0].mean(0)[inner].mean()
        assert moved < 0.25 * still + 1.0, (float(moved), float(still))  # measured about 1.4 vs 18 levels
        assert np.array_equal(seq.frames[t][seq.masks[t] == 0], seq.targets[t][seq.masks[t] == 0])
    # view_flow of a view onto itself is zero; backward flow inverts forward flow (pure pan / zoom).
    matrix = np.array([[1.5, 0.0, 10.0], [0.0, 1.5, 4.0]])
    assert np.abs(view_flow(matrix, matrix, (16, 16))).max() == 0


def test_curate_photo_recipe_writes_per_pair_targets_and_sequences(tmp_path, photo):
    sources = [("a", photo, None), ("b", photo[:, ::-1].copy(), None)]
    config = CurateConfig(recipes=("photo",), variants=2, temporal=1, temporal_frames=3, test_fraction=0.5,
                          photo_size=(128, 80))
    result = curate(sources, tmp_path, config, progress=False)
    assert result.pairs == {"train": 2, "test": 2} and result.sequences == {"train": 1, "test": 1}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    entry = next(iter(manifest["train"].values()))
    assert entry["target_image"] == entry["image"].replace("inputs/", "targets/")
    assert not (tmp_path / "targets" / "a.png").exists()  # no full-size copy of a photo source
    provenance = json.loads((tmp_path / "curate.json").read_text())["pairs"]
    assert {p["recipe"] for p in provenance.values()} == {"photo", "temporal_photo"}
    with pytest.raises(ValueError, match="photo_size"):
        CurateConfig(recipes=("photo",), photo_size=(100, 80))


def test_sources_list_licences_and_a_split_by_photo():
    photos = photo_sources()
    assert SOURCES_FILE.is_file() and len({p["name"] for p in photos}) == len(photos)
    assert all(p["licence"] and p["package"] and p["version"] and p["file"] for p in photos)
    heldout = {p["name"] for p in photo_sources("heldout")}
    assert len(heldout) >= 8 and not heldout & {p["name"] for p in photo_sources("train")}
    committed = {p.stem for p in HELDOUT_PHOTOS.glob("*.jpg")}
    assert committed == heldout
    assert all(p["licence"] in ("CC0-1.0", "CC-BY-4.0") for p in photo_sources("heldout"))  # redistributable as shipped
    reserved = ("skimage", "sklearn", "scipy", "matplotlib", "mahotas")
    assert not any(r in p["package"] for p in photos for r in reserved)
