"""pack / unpack against the runtime's float path and the formulas, in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simharmon.io.pixels import frame_to_model, frame_to_uint8_hwc, model_to_frame, uint8_hwc_to_frame
from simharmon.ops import LAYOUTS, pack, pack_reference, unpack, unpack_reference


def frames(seed, n=2, height=5, width=9, channels=3):
    gen = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (n, height, width, channels), generator=gen, dtype=torch.uint8)
    image[0, 0, :, 0] = torch.arange(width, dtype=torch.uint8)
    image[0, 1, 0], image[0, 1, 1] = 0, 255
    return image


def numpy_pack(image: np.ndarray, order) -> np.ndarray:
    x = image[..., list(order)].transpose(0, 3, 1, 2).astype(np.float32)
    return ((x / np.float32(255)) - np.float32(0.5)) / np.float32(0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_pack_rgb_is_bit_identical_to_the_runtime_float_path(dtype):
    image = frames(0)
    expected = frame_to_model(uint8_hwc_to_frame(image), dtype)
    for fn in (pack, pack_reference):
        out = fn(image, "rgb", dtype)
        assert out.dtype == dtype and out.shape == (2, 3, 5, 9)
        assert torch.equal(out, expected)
    all_levels = torch.arange(256, dtype=torch.uint8).view(1, 16, 16, 1).expand(1, 16, 16, 3)
    assert torch.equal(pack(all_levels), frame_to_model(uint8_hwc_to_frame(all_levels), torch.float32))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_pack_layouts_match_numpy(layout):
    channels, order, _ = LAYOUTS[layout]
    image = frames(1, channels=channels)
    out = pack(image, layout)
    assert np.array_equal(out.numpy(), numpy_pack(image.numpy(), order))


def test_pack_single_frame_and_strided_views():
    big = frames(2, n=1, height=12, width=20, channels=4)
    crop = big[0, 3:8, 5:14]  # [H, W, 4] view with row stride 80
    assert not crop.is_contiguous()
    out = pack(crop, "bgra", torch.float32)
    assert out.shape == (1, 3, 5, 9)
    assert np.array_equal(out.numpy(), numpy_pack(crop.contiguous().numpy()[None], (2, 1, 0)))
    rgb_view = big[..., :3]  # 3 channels with pixel stride 4
    assert np.array_equal(pack(rgb_view).numpy(), numpy_pack(rgb_view.contiguous().numpy(), (0, 1, 2)))


def model_values(seed, n=2, height=6, width=7, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    v = (torch.rand(n, 3, height, width, generator=gen) * 2.4 - 1.2).to(dtype)  # some out of range
    return v


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_unpack_truncate_is_the_release_quantization(dtype):
    v = model_values(3, dtype=dtype)
    expected = frame_to_uint8_hwc(model_to_frame(v))
    for fn in (unpack, unpack_reference):
        out = fn(v, "rgb", "truncate")
        assert out.dtype == torch.uint8 and out.shape == (2, 6, 7, 3)
        assert np.array_equal(out.numpy(), expected)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_unpack_nearest_matches_numpy_and_layouts(layout):
    channels, order, alpha = LAYOUTS[layout]
    v = model_values(4)
    v_nc = v.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)
    out = unpack(v_nc, layout, "nearest").numpy()
    q = np.rint(np.clip(v.numpy() * np.float32(0.5) + np.float32(0.5), 0, 1) * np.float32(255)).astype(np.uint8)
    assert out.shape == (2, 6, 7, channels)
    for k in range(3):
        assert np.array_equal(out[..., order[k]], q[:, k])
    if alpha >= 0:
        assert (out[..., alpha] == 255).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_round_trip_is_exact_with_nearest(dtype):
    levels = torch.arange(256, dtype=torch.uint8).view(1, 16, 16, 1).expand(1, 16, 16, 4).contiguous()
    for layout in ("rgba", "bgra"):
        back = unpack(pack(levels, layout, dtype), layout, "nearest")
        assert torch.equal(back[..., :3], levels[..., :3])


def test_unpack_non_finite_values():
    v = torch.zeros(1, 3, 1, 4)
    v[0, :, 0] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0])
    out = unpack(v, "rgb", "nearest")[0, 0]
    assert out[:, 0].tolist() == [0, 255, 0, 128]  # 0.5 * 255 = 127.5 rounds to even


def test_bad_arguments():
    image = frames(5)
    with pytest.raises(ValueError, match=r"image must have shape \[N, H, W, 4\]"):
        pack(image, "bgra")
    with pytest.raises(TypeError, match="image must have dtype uint8"):
        pack(image.float(), "rgb")
    with pytest.raises(ValueError, match="layout must be one of"):
        pack(image, "yuv")
    with pytest.raises(ValueError, match="dtype must be one of"):
        pack(image, "rgb", torch.int8)
    with pytest.raises(ValueError, match=r"image must have shape \[N, 3, H, W\]"):
        unpack(torch.zeros(1, 4, 2, 2))
    with pytest.raises(ValueError, match="rounding must be one of"):
        unpack(torch.zeros(1, 3, 2, 2), "rgb", "floor")
