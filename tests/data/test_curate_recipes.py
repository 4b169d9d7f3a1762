"""Curation recipes: masks respected, deterministic under a seed, parameters do what they say."""

import numpy as np
import pytest
import torch

from simharmon.data import degrade
from simharmon.data.curate import random_mask
from simharmon.data.isp import IspParams, apply_isp, composite, isp_composite
from simharmon.data.procedural import procedural_scene
from simharmon.data.temporal_seq import camera_path, crop_sequence
from simharmon.eval.temporal import warp


@pytest.fixture(scope="module")
def scene():
    image, mask = procedural_scene(1, 64, 48)
    mask = random_mask(np.random.default_rng(3), 48, 64)  # larger foreground than the scene's cars
    soft = mask.copy()
    soft[mask > 0] = 160  # a soft edge value, to check partial weights too
    return image, mask, soft


def _outside_equal(out, image, mask):
    outside = np.asarray(mask) == 0
    assert outside.any()
    return np.array_equal(out[outside], image[outside])


def test_isp_background_bit_identical_and_deterministic(scene):
    image, mask, soft = scene
    for m in (mask, soft):
        a, params_a = isp_composite(image, m, np.random.default_rng(5))
        b, params_b = isp_composite(image, m, np.random.default_rng(5))
        c, _ = isp_composite(image, m, np.random.default_rng(6))
        assert _outside_equal(a, image, m)
        assert np.array_equal(a, b) and params_a == params_b
        assert not np.array_equal(a, c)
        assert not np.array_equal(a[m > 0], image[m > 0])


def test_isp_neutral_is_identity_and_exposure_brightens(scene):
    image = scene[0]
    rng = np.random.default_rng(0)
    assert np.array_equal(apply_isp(image, IspParams(), rng), image)
    brighter = apply_isp(image, IspParams(exposure_ev=1.0), rng).astype(int)
    assert (brighter >= image).all() and brighter.mean() > image.mean() + 10
    warm = apply_isp(image, IspParams(temperature=0.5), rng).astype(int)
    assert warm[..., 0].mean() > image[..., 0].mean() and warm[..., 2].mean() < image[..., 2].mean()
    grey = apply_isp(image, IspParams(saturation=0.0), rng).astype(int)
    assert np.abs(grey[..., 0] - grey[..., 2]).max() <= 1


def test_composite_rejects_mismatched_mask(scene):
    image = scene[0]
    with pytest.raises(ValueError, match="does not match"):
        composite(image, image, np.ones((10, 10), np.uint8))


def test_poisson_respects_mask_and_seed(scene):
    pytest.importorskip("cv2")
    from simharmon.data.poisson import poisson_blend, random_poisson_composite

    image, mask, _ = scene
    a, pa = random_poisson_composite(image, mask, np.random.default_rng(2))
    b, pb = random_poisson_composite(image, mask, np.random.default_rng(2))
    assert np.array_equal(a, b) and pa == pb
    assert _outside_equal(a, image, mask)
    assert not np.array_equal(a[mask > 0], image[mask > 0])
    # Blending an image into itself changes nothing (same gradients, same boundary); on noise, a
    # misplaced paste (off by a pixel) would show.
    noise = np.random.default_rng(1).integers(0, 256, image.shape, dtype=np.uint8)
    same = poisson_blend(noise, noise, mask)
    assert np.abs(same.astype(int) - noise.astype(int)).max() <= 1
    assert np.array_equal(poisson_blend(image, image, np.zeros_like(mask)), image)


@pytest.mark.parametrize("name", sorted(degrade.DEGRADATIONS))
def test_each_degradation_respects_mask_and_seed(scene, name):
    image, mask, _ = scene
    function = degrade.DEGRADATIONS[name]
    a = function(image, mask, np.random.default_rng(11))
    b = function(image, mask, np.random.default_rng(11))
    assert np.array_equal(a, b)
    assert _outside_equal(a, image, mask)
    assert not np.array_equal(a[mask > 0], image[mask > 0]), f"{name} left the masked region unchanged"


def test_degradation_parameters_are_used(scene):
    image, mask, _ = scene
    rng = np.random.default_rng(0)
    weak = degrade.blur(image, mask, rng, sigma=0.5).astype(int)
    strong = degrade.blur(image, mask, rng, sigma=3.0).astype(int)
    assert np.abs(strong - image).sum() > np.abs(weak - image).sum()
    ghost = degrade.ghosting(image, mask, rng, shift=(4, 0), strength=0.5)
    expected = np.floor(0.5 * image + 0.5 * np.roll(image, 4, axis=1).astype(float) + 0.5)
    inside = mask > 0
    assert np.abs(ghost[inside].astype(float) - expected[inside]).max() <= 1
    black = degrade.holes(image, mask, rng, count=2, fill="black")
    assert (black[inside] == 0).all(axis=-1).any()
    with pytest.raises(ValueError, match="fill"):
        degrade.holes(image, mask, rng, fill="purple")


def test_random_artifacts_deterministic(scene):
    image, mask, _ = scene
    a, kinds_a = degrade.random_artifacts(image, mask, np.random.default_rng(4))
    b, kinds_b = degrade.random_artifacts(image, mask, np.random.default_rng(4))
    assert kinds_a == kinds_b and np.array_equal(a, b) and _outside_equal(a, image, mask)
    with pytest.raises(ValueError, match="unknown"):
        degrade.random_artifacts(image, mask, np.random.default_rng(0), kinds=("nope",))


def test_temporal_sequence_flow_is_exact():
    rng = np.random.default_rng(0)
    still = rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    mask = random_mask(rng, 40, 56)
    offsets = camera_path(np.random.default_rng(1), 5, (56 - 32, 40 - 24))
    seq = crop_sequence(still, still, mask, (32, 24), offsets)
    assert len(seq.frames) == 5 and seq.frames[0].shape == (24, 32, 3) and seq.flow_fw.shape == (4, 2, 24, 32)
    assert np.array_equal(seq.flow_bw, -seq.flow_fw)
    moved = False
    for t in range(4):
        frame_t = torch.from_numpy(seq.frames[t]).permute(2, 0, 1)[None].double()
        frame_t1 = torch.from_numpy(seq.frames[t + 1]).permute(2, 0, 1)[None].double()
        warped, inside = warp(frame_t1, torch.from_numpy(seq.flow_fw[t])[None].double())
        assert inside.any()
        assert torch.equal(warped[inside.expand_as(warped)], frame_t[inside.expand_as(frame_t)])
        moved |= bool(np.any(seq.flow_fw[t] != 0))
    assert moved
    with pytest.raises(ValueError, match="leave"):
        crop_sequence(still, still, mask, (32, 24), np.array([[30, 0], [31, 0]]))
