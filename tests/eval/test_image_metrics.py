"""Harmonization metrics against hand-computed values and known properties (METRICS.md)."""

import math

import numpy as np
import pytest

from simharmon.eval.image_metrics import (
    bmse,
    fg_bin,
    fg_ratio,
    fmse,
    mse,
    psnr,
    resize_image,
    resize_mask,
    score_image,
    ssim,
)


def _image(seed=0, size=(256, 256)):
    return np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)


def test_identical_images():
    image = _image()
    mask = np.zeros((256, 256))
    mask[10:50, 20:90] = 1
    scores = score_image(image, image, mask)
    assert scores.mse == 0 and math.isinf(scores.psnr) and scores.fmse == 0 and scores.bmse == 0
    assert scores.ssim == pytest.approx(1.0, abs=1e-6)


def test_uniform_offset_hand_computed():
    gt = np.full((256, 256, 3), 100, np.uint8)
    out = gt + 10
    assert mse(out, gt) == 100.0
    assert psnr(100.0) == pytest.approx(10 * math.log10(255**2 / 100))  # 28.1308 dB
    # Data range is 255, never the output's own range (which would be 0 here).
    assert score_image(out, gt).psnr == pytest.approx(28.130803608679102)


def test_foreground_only_change_hand_computed():
    gt = _image(1)
    out = gt.copy().astype(np.int16)
    mask = np.zeros((256, 256), bool)
    mask[32:48, 64:80] = True  # 256 foreground pixels
    out[mask, 0] = np.clip(out[mask, 0] + 20, 0, 255)
    out = out.astype(np.uint8)
    diff = out.astype(np.float64) - gt
    expected_fmse = (diff[mask] ** 2).sum() / (256 * 3)
    scores = score_image(out, gt, mask)
    assert scores.bmse == 0.0  # nothing changed outside the mask
    assert scores.fmse == pytest.approx(expected_fmse)
    assert scores.mse == pytest.approx((diff**2).sum() / (256 * 256 * 3))
    # The "mse(out*M, G*M) * H*W / sum(M)" form some code uses is the same number.
    masked = ((out * mask[..., None]).astype(np.float64) - gt * mask[..., None]) ** 2
    assert scores.fmse == pytest.approx(masked.mean() * 256 * 256 / mask.sum())
    assert scores.fg_ratio == 256 / 256**2 and scores.fg_bin == "0-5%"


def test_background_change_leaves_fmse_zero():
    gt = _image(2)
    out = gt.copy()
    mask = np.zeros((256, 256), bool)
    mask[100:200, 100:200] = True
    out[~mask] = 255 - out[~mask]
    assert fmse(out, gt, mask) == 0.0 and bmse(out, gt, mask) > 0


def test_empty_and_full_masks_are_undefined_not_zero():
    image = _image(3)
    assert fmse(image, image, np.zeros((256, 256))) is None
    assert bmse(image, image, np.ones((256, 256))) is None
    assert score_image(image, image, np.zeros((256, 256))).fg_bin is None


def test_ssim_of_constant_images_matches_the_formula():
    a, b = np.full((64, 64, 3), 100, np.uint8), np.full((64, 64, 3), 110, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)  # the variance terms vanish
    assert ssim(a, b) == pytest.approx(expected, rel=1e-5)
    assert ssim(_image(4), _image(5)) < 0.1


@pytest.mark.parametrize("ratio, label", [(0.0, None), (0.01, "0-5%"), (0.05, "0-5%"), (0.0501, "5-15%"),
                                          (0.15, "5-15%"), (0.16, "15-100%"), (1.0, "15-100%")])
def test_foreground_bins(ratio, label):
    assert fg_bin(ratio) == label


def test_resizing_to_256():
    image = _image(6, (144, 256))
    assert resize_image(image).shape == (256, 256, 3)
    assert resize_image(_image(7)) is not None and np.array_equal(resize_image(_image(7)), _image(7))
    soft = np.zeros((144, 256), np.float32)
    soft[40:80, 100:140] = 0.7
    soft[40:80, 140:150] = 0.3
    small = resize_mask(soft)
    assert small.dtype == bool and small.shape == (256, 256)
    # binarized at 0.5, resized nearest: the 0.3 band vanishes, the 0.7 block keeps its area ratio
    assert fg_ratio(small) == pytest.approx(40 * 40 / (144 * 256), rel=0.05)


def test_bad_inputs():
    with pytest.raises(ValueError):
        score_image(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError):
        mse(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(ValueError):
        psnr(-1.0)
