"""Training losses: the temporal warping loss and the VGG perceptual loss's weight handling."""

import numpy as np
import pytest
import torch

from simharmon.data.curate import random_mask
from simharmon.data.temporal_seq import camera_path, crop_sequence
from simharmon.train.losses import VggPerceptual, l2_loss, temporal_warping_loss


def _sequence(seed=0):
    rng = np.random.default_rng(seed)
    still = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    offsets = camera_path(np.random.default_rng(seed + 1), 4, (64 - 48, 48 - 32), max_step=3)
    seq = crop_sequence(still, still, random_mask(rng, 48, 64), (48, 32), offsets)
    frames = [torch.from_numpy(f).permute(2, 0, 1)[None].float() / 127.5 - 1 for f in seq.frames]
    return frames, torch.from_numpy(seq.flow_fw), torch.from_numpy(seq.flow_bw)


def test_temporal_loss_is_zero_for_a_consistent_sequence_under_exact_flow():
    frames, flow_fw, flow_bw = _sequence()
    assert flow_fw.abs().sum() > 0, "the camera must move for this test to mean anything"
    for t in range(len(frames) - 1):
        loss = temporal_warping_loss(frames[t], frames[t + 1], flow_fw[t][None], flow_bw[t][None])
        assert loss.item() == 0.0


def test_temporal_loss_detects_inconsistency_and_has_gradients():
    frames, flow_fw, flow_bw = _sequence(3)
    changed = frames[1].clone().requires_grad_(True)
    flicker = changed + 0.1  # a global brightness flicker
    loss = temporal_warping_loss(frames[0], flicker, flow_fw[0][None], flow_bw[0][None])
    assert loss.item() == pytest.approx(0.01, rel=1e-4)
    loss.backward()
    assert changed.grad is not None and changed.grad.abs().sum() > 0
    # With the wrong flow, a consistent sequence is no longer consistent.
    wrong = temporal_warping_loss(frames[0], frames[1], torch.zeros_like(flow_fw[0])[None],
                                  torch.zeros_like(flow_bw[0])[None])
    assert wrong.item() > 0.01


def test_l2():
    a = torch.zeros(1, 3, 4, 4)
    assert l2_loss(a, a + 2).item() == 4.0


def test_perceptual_off_without_weights_and_plumbing_with_a_file(tmp_path):
    with pytest.warns(UserWarning, match="switched off"):
        assert VggPerceptual.load(None) is None
    with pytest.raises(FileNotFoundError):
        VggPerceptual.load(tmp_path / "missing.pth")
    from torchvision.models.vgg import cfgs, make_layers

    # A weights FILE with arbitrary values, only to test loading and the loss mechanics.
    torch.manual_seed(0)
    features = make_layers(cfgs["D"])[:23]  # torchvision vgg16().features layout
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "vgg.pth")
    loss_fn = VggPerceptual.load(tmp_path / "vgg.pth")
    assert torch.equal(loss_fn.features[0].weight, features[0].weight)
    image = torch.rand(1, 3, 40, 40) * 2 - 1
    rng = np.random.default_rng(0)
    assert loss_fn(image, image, rng, patches=2, side=(16, 40)).item() == 0.0
    other = (image + 0.3 * torch.randn_like(image)).requires_grad_(True)
    loss = loss_fn(other, image, rng, patches=2, side=(16, 40))
    loss.backward()
    assert loss.item() > 0 and other.grad.abs().sum() > 0
    torch.save({"0.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError):
        VggPerceptual.load(tmp_path / "bad.pth")


def test_foreground_l2_is_fmse_per_image_over_images_with_foreground():
    from simharmon.train.losses import foreground_l2_loss

    gen = torch.Generator().manual_seed(0)
    out, tgt = torch.rand(3, 3, 8, 10, generator=gen), torch.rand(3, 3, 8, 10, generator=gen)
    mask = torch.zeros(3, 1, 8, 10)
    mask[0, :, 2:5, 3:7] = 1.0
    mask[1, :, :, :2] = 1.0  # image 2 has no foreground and must not count
    expected = []
    for b in range(2):
        fg = mask[b, 0].bool()
        expected.append(((out[b] - tgt[b]) ** 2).mean(0)[fg].mean())
    assert torch.allclose(foreground_l2_loss(out, tgt, mask), torch.stack(expected).mean(), rtol=1e-6)
    assert foreground_l2_loss(out, tgt, torch.zeros_like(mask)).item() == 0.0
