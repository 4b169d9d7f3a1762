"""gsplat and CARLA adapters, with synthetic outputs of the shapes those libraries produce."""

import numpy as np
import pytest
import torch

from simharmon.bridge.processor import IdentityStandIn
from simharmon.hooks import CarlaCameraHook, GsplatAdapter, PostRenderHook
from simharmon.hooks.carla import actor_mask
from simharmon.io.pixels import uint8_hwc_to_frame
from simharmon.models.enhancer import build_enhancer
from simharmon.runtime.stream import StreamingEnhancer


@pytest.fixture(scope="module")
def tiny():
    return build_enhancer("tiny", seed=21)


def gsplat_output(batch=(2,), cameras=3, height=16, width=32, channels=4, seed=0):
    """What rasterization(..., render_mode="RGB+D") returns: colors [..., C, H, W, 4], alphas [..., C, H, W, 1]."""
    gen = torch.Generator().manual_seed(seed)
    colors = torch.rand(*batch, cameras, height, width, channels, generator=gen)
    colors[..., 3:] *= 40.0  # depth in metres, far outside [0, 1]
    alphas = torch.rand(*batch, cameras, height, width, 1, generator=gen)
    return colors, alphas, {"radii": torch.zeros(1)}


def test_gsplat_rgb_plus_depth_with_identity():
    colors, alphas, meta = gsplat_output()
    colors[0, 0, 0, 0, 0] = 1.7  # gsplat does not clamp colours
    hook = PostRenderHook(IdentityStandIn(), GsplatAdapter("RGB+D", clamp=True))
    frames = hook.adapter.extract((colors, alphas, meta))
    assert frames.images.shape == (6, 3, 16, 32) and frames.mask is None  # alphas are the scene's, not an actor's
    assert torch.equal(frames.depth, colors.reshape(6, 16, 32, 4)[..., 3:]) and same_storage(frames.depth, colors)
    new_colors, new_alphas, new_meta = hook((colors, alphas, meta))
    assert new_alphas is alphas and new_meta is meta and new_colors.shape == colors.shape
    assert torch.equal(new_colors[..., 3], colors[..., 3])  # depth untouched
    assert torch.equal(new_colors[..., :3], colors[..., :3].clamp(0, 1))
    assert len(hook.engine.keys()) == 6  # batch x cameras streams


def same_storage(a, b):
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def test_gsplat_rgb_mode_without_clamp_passes_views():
    colors = torch.rand(3, 16, 32, 3)
    frames = GsplatAdapter("RGB", clamp=False).extract(colors)
    assert same_storage(frames.images, colors) and frames.depth is None and frames.mask is None
    out = PostRenderHook(IdentityStandIn(), GsplatAdapter("RGB", clamp=False))(colors)
    assert torch.equal(out, colors) and same_storage(out, colors)


@pytest.mark.parametrize("mode, channels, error", [("D", 1, "render no image"), ("RGB+D", 3, "at least 4"),
                                                   ("RGB", 2, "at least 3")])
def test_gsplat_refuses_outputs_without_an_image(mode, channels, error):
    with pytest.raises(ValueError, match=error):
        GsplatAdapter(mode).extract(torch.rand(1, 8, 8, channels))


def test_gsplat_with_the_real_model(tiny):
    colors, alphas, meta = gsplat_output(batch=(), cameras=1, height=16, width=32, seed=4)
    hook = PostRenderHook(tiny, GsplatAdapter("RGB+ED"))
    out, _, _ = hook((colors, alphas, meta))
    for cam in range(1):
        expected = StreamingEnhancer(hook.engine.model).step(colors[cam, ..., :3].permute(2, 0, 1)[None].contiguous())
        assert torch.equal(out[cam, ..., :3].permute(2, 0, 1)[None], expected)
    assert torch.equal(out[..., 3], colors[..., 3])


def test_gsplat_actor_feature_channel_is_the_mask():
    colors = torch.rand(2, 16, 32, 5)  # R, G, B, actor, depth
    colors[..., 3] = (torch.arange(32) > 15).float()
    frames = GsplatAdapter("RGB+D", mask_channel=3).extract((colors, torch.ones(2, 16, 32, 1), {}))
    assert torch.equal(frames.mask[..., 0], colors[..., 3]) and torch.equal(frames.depth[..., 0], colors[..., 4])
    with pytest.raises(ValueError, match="at least 5"):
        GsplatAdapter("RGB+D", mask_channel=3).extract(torch.rand(1, 8, 8, 4))
    with pytest.raises(ValueError, match="extra channel"):
        GsplatAdapter(mask_channel=1)


class FakeCarlaImage:
    """The attributes of carla.Image that the hook reads."""

    def __init__(self, bgra, frame=7, timestamp=1.25):
        self.height, self.width = bgra.shape[:2]
        self.raw_data = bytes(bgra.tobytes())
        self.frame, self.timestamp, self.transform = frame, timestamp, "transform"


def test_carla_identity_round_trip_and_callback():
    bgra = np.random.default_rng(0).integers(0, 256, (16, 32, 4), dtype=np.uint8)
    received = []
    listen = CarlaCameraHook(IdentityStandIn()).listener("front", received.append)
    listen(FakeCarlaImage(bgra))
    (out,) = received
    assert (out.camera, out.frame, out.timestamp, out.width, out.height, out.transform) == \
        ("front", 7, 1.25, 32, 16, "transform")
    assert np.array_equal(out.bgra, bgra) and bytes(out.raw_data) == bgra.tobytes()


def test_carla_wrong_buffer_size():
    image = FakeCarlaImage(np.zeros((16, 32, 4), np.uint8))
    image.raw_data = image.raw_data[:-4]
    with pytest.raises(ValueError, match="2044 bytes, expected width\\*height\\*4"):
        CarlaCameraHook(IdentityStandIn()).enhance_image(image, "front")


def test_carla_with_the_real_model(tiny):
    bgra = np.random.default_rng(1).integers(0, 256, (16, 32, 4), dtype=np.uint8)
    hook = CarlaCameraHook(tiny)
    out = hook.enhance_image(FakeCarlaImage(bgra), "front")
    expected = StreamingEnhancer(hook.engine.model).step(uint8_hwc_to_frame(bgra[..., [2, 1, 0]].copy()))
    expected = np.floor(expected[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(out.bgra[..., [2, 1, 0]], expected)
    assert np.array_equal(out.bgra[..., 3], bgra[..., 3])  # alpha passes through


def test_carla_instance_segmentation_gives_the_actor_mask():
    seg = np.zeros((16, 32, 4), np.uint8)  # BGRA: R = semantic tag, G + 256 * B = instance id
    seg[2:6, 4:9, 1], seg[2:6, 4:9, 0] = 44, 1  # actor id 300
    seg[10:14, 20:30, 2] = 14  # semantic tag 14 (car), another instance
    image = FakeCarlaImage(seg)
    assert actor_mask(image, actor_ids=[300]).sum() == 4 * 5 * 255
    assert (actor_mask(image, semantic_tags=[14]) > 0).sum() == 4 * 10
    both = actor_mask(image, actor_ids=[300], semantic_tags=[14])
    assert both.dtype == np.uint8 and (both > 0).sum() == 20 + 40
    with pytest.raises(ValueError, match="actor_ids"):
        actor_mask(image)
