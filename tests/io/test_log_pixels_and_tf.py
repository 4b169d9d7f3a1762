"""Image-message pixels (raw encodings, compressed codecs) and the tf tree, on their own."""

import io

import numpy as np
import pytest
from PIL import Image

from simharmon.io.image_pixels import (
    MessageError,
    compressed_codec,
    fields_to_depth,
    fields_to_rgb,
    replace_pixels,
)
from simharmon.io.tf_tree import PoseError, TransformTree, quaternion_matrix

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def raw(encoding, data, step, bigendian=False, width=7, height=5):
    return {"encoding": encoding, "width": width, "height": height, "step": step, "is_bigendian": bigendian,
            "data": data}


def test_16bit_levels_scale_by_257_both_ways_in_either_byte_order():
    levels = RNG.integers(0, 65536, (5, 7, 3)).astype(np.uint16)
    for bigendian in (False, True):
        data = levels.astype(">u2" if bigendian else "<u2").tobytes()
        rgb = fields_to_rgb(raw("rgb16", data, 7 * 6, bigendian))
        assert np.array_equal(rgb, np.floor(levels / 257 + 0.5).astype(np.uint8))
        back = replace_pixels(raw("rgb16", data, 7 * 6, bigendian), IMAGE)
        assert np.array_equal(np.frombuffer(back["data"], ">u2" if bigendian else "<u2").reshape(5, 7, 3),
                              IMAGE.astype(np.uint16) * 257)


def test_padded_rows_alpha_and_mono():
    rows = np.concatenate([IMAGE[:, :, ::-1], np.full((5, 7, 1), 9, np.uint8)], axis=2).reshape(5, 28)
    padded = np.pad(rows, ((0, 0), (0, 4))).tobytes()  # step 32 > 28
    fields = raw("bgra8", padded, 32)
    assert np.array_equal(fields_to_rgb(fields), IMAGE)
    out = replace_pixels(fields, 255 - IMAGE)
    pixels = np.frombuffer(out["data"], np.uint8).reshape(5, 7, 4)
    assert out["step"] == 28 and np.all(pixels[:, :, 3] == 9) and np.array_equal(pixels[:, :, 2::-1], 255 - IMAGE)
    grey = np.repeat(IMAGE[:, :, :1], 3, axis=2)
    mono = replace_pixels(raw("mono8", bytes(35), 7), grey)
    assert np.array_equal(np.frombuffer(mono["data"], np.uint8).reshape(5, 7), grey[:, :, 0])  # luma of grey = grey


def test_depth_and_errors():
    millimetres = np.array([[0, 1500, 65535]], np.uint16)
    assert np.allclose(fields_to_depth(raw("16UC1", millimetres.tobytes(), 6, width=3, height=1)), [[0, 1.5, 65.535]])
    metres = np.array([[2.5, np.inf]], np.float32)
    assert np.array_equal(fields_to_depth(raw("32FC1", metres.tobytes(), 8, width=2, height=1)), metres)
    with pytest.raises(MessageError, match="holds depth, not a camera image"):
        fields_to_rgb(raw("32FC1", metres.tobytes(), 8, width=2, height=1))
    with pytest.raises(MessageError, match="does not fit"):
        fields_to_rgb(raw("rgb8", bytes(10), 21))
    with pytest.raises(MessageError, match="new image is 3x2"):
        replace_pixels(raw("rgb8", IMAGE.tobytes(), 21), np.zeros((2, 3, 3), np.uint8))


def test_compressed_codecs_and_grey_pictures():
    assert compressed_codec({"format": "bgr8; jpeg compressed bgr8", "data": b""}) == "jpeg"
    buffer = io.BytesIO()
    Image.fromarray(IMAGE[:, :, 0]).save(buffer, format="PNG")
    fields = {"format": "", "data": buffer.getvalue()}  # no format: named after the data
    assert compressed_codec(fields) == "png"
    grey = np.repeat(IMAGE[:, :, :1], 3, axis=2)
    assert np.array_equal(fields_to_rgb(fields), grey)
    out = replace_pixels(fields, grey)
    with Image.open(io.BytesIO(out["data"])) as picture:
        assert picture.mode == "L" and np.array_equal(np.asarray(picture), grey[:, :, 0])  # stays greyscale
    with pytest.raises(MessageError, match="compressed depth"):
        compressed_codec({"format": "16UC1; compressedDepth png", "data": b""})


def test_tf_interpolates_composes_and_refuses_to_extrapolate():
    tree = TransformTree()
    tree.add("/map", "base", 0, (0, 0, 0), (0, 0, 0, 1))
    tree.add("map", "base", 100, (2.0, 0, 0), (0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)))  # yaw 90 deg
    tree.add("base", "cam", 0, (0, 1.0, 0), (0, 0, 0, 1), static=True)
    pose = tree.pose("cam", 50)
    yaw = np.pi / 4
    expected = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    np.testing.assert_allclose(pose[:3, :3], expected, atol=1e-12)
    np.testing.assert_allclose(pose[:3, 3], np.array([1.0, 0, 0]) + expected @ [0, 1.0, 0], atol=1e-12)
    np.testing.assert_allclose(tree.pose("cam", 100)[:3, :3], quaternion_matrix((0, 0, 1, 1)), atol=1e-12)
    assert tree.root("cam") == "map"
    with pytest.raises(PoseError, match="does not extrapolate"):
        tree.pose("cam", 101)
    with pytest.raises(PoseError, match="no transform has frame 'nowhere'"):
        tree.pose("nowhere", 0)
    tree.add("odom", "base", 0, (0, 0, 0), (0, 0, 0, 1))
    assert "two parents" in tree.conflicts[0]
