"""Pixel decoding/encoding against independent numpy references."""

import numpy as np
import pytest
import torch

from simharmon.bridge.protocol import LAYERS
from simharmon.io.pixels import PixelError, decode_layer, decode_pixels, encode_pixels

H, W = 6, 10


def rng_u8(channels, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, channels), dtype=np.uint8)


@pytest.mark.parametrize("fmt, order", [("rgb8", [0, 1, 2]), ("rgba8", [0, 1, 2]), ("bgra8", [2, 1, 0])])
def test_8bit_decode_matches_numpy_and_round_trips(fmt, order):
    image = rng_u8(3 if fmt == "rgb8" else 4)
    decoded = decode_pixels(image.tobytes(), fmt, W, H)
    expected = image[..., order].astype(np.float32).transpose(2, 0, 1)[None] / 255.0
    np.testing.assert_allclose(decoded.frame.numpy(), expected, rtol=0, atol=1e-7)
    if fmt != "rgb8":
        np.testing.assert_array_equal(decoded.alpha.numpy(), image[..., 3])
    assert np.array_equal(encode_pixels(decoded.frame, fmt, decoded.alpha), image)  # lossless identity


def test_float_formats_and_conversion_between_formats():
    image = np.random.default_rng(1).random((H, W, 3), dtype=np.float32)
    for fmt, dtype in (("rgb16f", np.float16), ("rgb32f", np.float32)):
        data = image.astype(dtype)
        decoded = decode_pixels(data.tobytes(), fmt, W, H)
        np.testing.assert_array_equal(decoded.frame[0].numpy().transpose(1, 2, 0), data.astype(np.float32))
        assert np.array_equal(encode_pixels(decoded.frame, fmt), data)
    frame = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
    as_u8 = encode_pixels(frame, "bgra8")
    np.testing.assert_array_equal(as_u8[..., :3], np.floor(image[..., ::-1] * 255 + 0.5).astype(np.uint8))
    assert (as_u8[..., 3] == 255).all()


def test_encode_handles_planar_and_interleaved_storage_and_clamps():
    planar = torch.linspace(-0.2, 1.2, 3 * H * W).view(1, 3, H, W)
    interleaved = planar.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    reference = np.floor(np.clip(planar[0].numpy().transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)
    for frame in (planar, interleaved):
        for fmt, order in (("rgb8", [0, 1, 2]), ("bgra8", [2, 1, 0])):
            out = encode_pixels(frame, fmt)
            assert out.flags.c_contiguous and out.shape == (H, W, 3 if fmt == "rgb8" else 4)
            np.testing.assert_array_equal(out[..., :3], reference[..., order])


def test_non_finite_floats_are_refused():
    data = np.zeros((H, W, 3), np.float32)
    data[2, 3, 1] = np.nan
    with pytest.raises(PixelError, match="NaN or infinite"):
        decode_pixels(data.tobytes(), "rgb32f", W, H)


def test_layers_decode_to_nchw():
    depth = np.random.default_rng(2).random((H, W), dtype=np.float32)
    out = decode_layer(depth.tobytes(), LAYERS["depth"], W, H)
    assert out.shape == (1, 1, H, W) and np.array_equal(out[0, 0].numpy(), depth)
    flow = np.random.default_rng(3).random((H, W, 2), dtype=np.float32)
    out = decode_layer(flow.tobytes(), LAYERS["flow"], W, H)
    assert out.shape == (1, 2, H, W) and np.array_equal(out[0].numpy(), flow.transpose(2, 0, 1))


def test_decoded_frames_never_alias_the_input_buffer():
    # A float32 frame used to be clamped in place, inside the received (or shared-memory) buffer.
    data = np.random.default_rng(4).random((H, W, 3), dtype=np.float32) * 2
    before = data.copy()
    decoded = decode_pixels(data, "rgb32f", W, H)
    assert np.array_equal(data, before) and float(decoded.frame.max()) == 1.0
    data[...] = 0  # e.g. the client reuses its shared-memory slot
    assert float(decoded.frame.max()) == 1.0


def test_encode_into_a_given_array():
    frame = torch.rand(1, 3, H, W)
    out = np.zeros((H, W, 4), np.uint8)
    alpha = torch.full((H, W), 7, dtype=torch.uint8)
    assert encode_pixels(frame, "bgra8", alpha, out=out) is out
    assert np.array_equal(out, encode_pixels(frame, "bgra8", alpha))
    with pytest.raises(ValueError, match="out must be"):
        encode_pixels(frame, "rgb8", out=np.zeros((H, W, 4), np.uint8))
