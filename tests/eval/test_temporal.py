"""Warping error (Lai et al.) with the occlusion test, and VBench flicker."""

import numpy as np
import pytest
import torch

from simharmon.eval.temporal import (
    flicker_mae,
    flow_to_tensor,
    occlusion_mask,
    vbench_flicker,
    warp,
    warping_error,
    warping_error_pair,
)

H, W = 24, 40


def _uniform(dx, dy=0.0):
    flow = np.zeros((H, W, 2), np.float64)
    flow[..., 0], flow[..., 1] = dx, dy
    return flow_to_tensor(flow)


def _panning(num_frames=5, step=2, seed=0):
    """Crops of a random panorama whose content moves ``step`` px left per frame: consistent under flow -step."""
    world = np.random.default_rng(seed).random((H, W + step * num_frames, 3))
    return [torch.from_numpy(world[:, step * t:step * t + W]).permute(2, 0, 1)[None] for t in range(num_frames)]


def test_warp_with_integer_flow_is_an_exact_shift():
    image = torch.rand(1, 3, H, W, dtype=torch.float64)
    warped, inside = warp(image, _uniform(3.0))
    assert torch.equal(warped[..., : W - 3], image[..., 3:])
    assert inside[..., : W - 3].all() and not inside[..., W - 3:].any()
    assert torch.equal(warped[..., W - 3:], image[..., W - 1:].expand(-1, -1, -1, 3))  # border-clamped


def test_warp_of_a_constant_row_is_exact_for_any_flow():
    rows = torch.rand(1, 3, H, 1, dtype=torch.float64).expand(1, 3, H, W).contiguous()
    warped, _ = warp(rows, _uniform(-2.37))
    assert torch.equal(warped, rows)


def test_warping_error_is_zero_for_a_consistent_sequence_and_positive_for_flicker():
    frames = _panning()
    fw, bw = _uniform(-2.0), _uniform(2.0)
    errors = warping_error(frames, [(fw, bw)] * 4)
    assert errors == [0.0, 0.0, 0.0, 0.0]
    flickering = [f * (0.8 if t % 2 else 1.0) for t, f in enumerate(frames)]
    assert all(e > 1e-4 for e in warping_error(flickering, [(fw, bw)] * 4))
    # Lai et al.'s border clamping compares the strip that leaves the view with the border column.
    assert warping_error_pair(frames[0], frames[1], fw, bw, out_of_frame="clamp") > 0
    assert warping_error([frames[0], frames[1]], [None]) == [None]


def test_warping_error_hand_computed_for_a_static_camera():
    a = torch.full((1, 3, H, W), 0.2, dtype=torch.float64)
    b = torch.full((1, 3, H, W), 0.5, dtype=torch.float64)
    b[:, 1] = 0.2  # one channel unchanged: the per-pixel error is the mean over RGB
    zero = _uniform(0.0)
    assert warping_error_pair(a, b, zero, zero) == pytest.approx((0.3**2 * 2) / 3)


def test_occlusion_test():
    fw, bw = _uniform(3.0), _uniform(-3.0)
    assert not occlusion_mask(fw, bw, "clamp").any()  # consistent: nothing occluded
    assert occlusion_mask(fw, bw)[..., W - 3:].all()  # targets outside the image
    # Backward flow that does not return: |3|^2 = 9 > 0.01 * 9 + 0.5 -> occluded.
    assert occlusion_mask(fw, _uniform(0.0), "clamp").all()
    # A small inconsistency passes: |0.5|^2 = 0.25 < 0.01 * (9 + 6.25) + 0.5.
    assert not occlusion_mask(fw, _uniform(-2.5), "clamp").any()
    # Motion boundary: a jump in the forward flow between columns 19 and 20.
    jump = np.zeros((H, W, 2))
    jump[:, 20:, 0] = 1.0
    occluded = occlusion_mask(flow_to_tensor(jump), flow_to_tensor(-jump), "clamp")[0, 0]
    assert occluded[:, 19].all() and not occluded[:, :19].any() and not occluded[:, 21:].any()
    nan = np.full((H, W, 2), np.nan)
    assert occlusion_mask(flow_to_tensor(nan), bw).all()


def test_occluded_pixels_do_not_count():
    frames = _panning(2)
    changed = frames[1].clone()
    changed[..., 5:9] = 1.0  # something appears in frame t+1 ...
    bw = np.full((H, W, 2), 0.0)
    bw[..., 0] = 2.0
    bw[:, 5:9, 0] = 0.0  # ... whose backward flow does not lead back
    assert warping_error_pair(frames[0], changed, _uniform(-2.0), _uniform(2.0)) > 0
    error = warping_error_pair(frames[0], changed, _uniform(-2.0), flow_to_tensor(bw))
    assert error == 0.0


def test_vbench_flicker_hand_computed():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 10, np.uint8)
    assert flicker_mae(a, b) == 10.0
    assert vbench_flicker([flicker_mae(a, b), flicker_mae(b, b)]) == pytest.approx((255 - 5) / 255)
    assert vbench_flicker([]) is None
    with pytest.raises(ValueError):
        flicker_mae(a.astype(np.float32), b)
