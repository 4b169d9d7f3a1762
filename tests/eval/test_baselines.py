"""Identity and Reinhard colour transfer inside the actor mask."""

import numpy as np
import torch
from kornia.color import rgb_to_lab

from simharmon.eval.baselines import BASELINES, identity, reinhard_transfer


def _lab(image):
    return rgb_to_lab(torch.from_numpy(image.astype(np.float64) / 255).permute(2, 0, 1)[None])[0].numpy()


def _scene():
    rng = np.random.default_rng(0)
    image = (rng.random((48, 64, 3)) * 80 + 60).astype(np.uint8)  # a dim, neutral scene
    mask = np.zeros((48, 64), np.float32)
    mask[10:30, 20:44] = 1.0
    image[mask > 0] = np.clip(image[mask > 0] * np.array([1.6, 1.2, 0.7]), 0, 255).astype(np.uint8)  # warm actor
    return image, mask


def test_reinhard_matches_foreground_statistics_to_the_background():
    image, mask = _scene()
    out = reinhard_transfer(image, mask)
    fg, bg = mask > 0, mask == 0
    assert np.array_equal(out[bg], image[bg])  # background untouched
    lab_out, lab_in = _lab(out), _lab(image)
    gap_before = np.abs(lab_in[:, fg].mean(1) - lab_in[:, bg].mean(1)).max()
    gap_after = np.abs(lab_out[:, fg].mean(1) - lab_in[:, bg].mean(1)).max()
    assert gap_before > 5 and gap_after < 1.0  # means matched up to 8-bit rounding
    assert np.allclose(lab_out[:, fg].std(1), lab_in[:, bg].std(1), rtol=0.1)


def test_without_a_usable_mask_the_input_is_returned():
    image, mask = _scene()
    assert reinhard_transfer(image, None) is image
    assert reinhard_transfer(image, np.zeros_like(mask)) is image
    assert reinhard_transfer(image, np.ones_like(mask)) is image
    assert identity(image, mask) is image
    assert list(BASELINES) == ["identity", "reinhard"]
