"""Image bytes <-> arrays for the SensorsimService formats, and the generated protos being current."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simharmon.sensorsim.enhancer import mask_from_background
from simharmon.sensorsim.images import JPEG, PNG, RGB_UINT8_PLANAR, ImageFormatError, decode_image, encode_image

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "simharmon" / "sensorsim" / "protos"


def _image(h=24, w=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_and_planar_round_trip_exactly():
    image = _image()
    for fmt in (PNG, RGB_UINT8_PLANAR):
        assert np.array_equal(decode_image(encode_image(image, fmt), fmt, 24, 40), image)


def test_planar_layout_is_r_then_g_then_b_planes():
    image = _image(2, 3)
    data = encode_image(image, RGB_UINT8_PLANAR)
    assert data[:6] == image[:, :, 0].tobytes() and data[12:] == image[:, :, 2].tobytes()


def test_jpeg_round_trip_is_close_and_quality_matters():
    image = np.full((32, 32, 3), (200, 40, 90), np.uint8)
    decoded = decode_image(encode_image(image, JPEG, 95), JPEG, 32, 32)
    assert np.abs(decoded.astype(int) - image).max() <= 6  # RGB order kept (a BGR swap would be off by 110)
    assert len(encode_image(_image(), JPEG, 20)) < len(encode_image(_image(), JPEG, 95))


@pytest.mark.parametrize("data,fmt,match", [
    (b"\x89PNG garbage", PNG, "cannot be decoded"),
    (b"", JPEG, "cannot be decoded"),
    (b"\x00" * 10, RGB_UINT8_PLANAR, "must have 2880 bytes"),
    (b"\x00" * 10, 5, "not decoded"),
])
def test_bad_bytes_are_named_errors(data, fmt, match):
    with pytest.raises(ImageFormatError, match=match):
        decode_image(data, fmt, 24, 40)


def test_size_mismatch_with_the_request_is_an_error():
    with pytest.raises(ImageFormatError, match="asked for 41x24"):
        decode_image(encode_image(_image(), PNG), PNG, 24, 41)


def test_mask_from_background_marks_only_changed_pixels():
    image = _image()
    background = image.copy()
    background[3:5, 7:9] ^= 0x80
    background[10, 10, 1] = np.uint8(int(image[10, 10, 1]) ^ 0x04)  # a change of <= 4 levels is noise
    mask = mask_from_background(image, background, threshold=8)
    expected = np.zeros((24, 40), np.uint8)
    expected[3:5, 7:9] = 255
    assert np.array_equal(mask, expected)


def test_generated_code_matches_the_protos(tmp_path):
    """The committed *_pb2*.py are what `make protos` generates from the committed .proto files."""
    protos = [f"simharmon/sensorsim/protos/{name}.proto" for name in ("common", "sensorsim")]
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--python_out={tmp_path}",
                    f"--grpc_python_out={tmp_path}", *protos], cwd=ROOT, check=True)
    for name in ("common_pb2.py", "sensorsim_pb2.py", "sensorsim_pb2_grpc.py"):
        generated = (tmp_path / "simharmon" / "sensorsim" / "protos" / name).read_text()
        assert generated == (PROTOS / name).read_text(), f"{name} is stale: run `make protos`"


def test_wire_names_are_alpasim_s():
    from simharmon.sensorsim.protos import sensorsim_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["SensorsimService"]
    assert service.full_name == "nre.grpc.protos.sensorsim.SensorsimService"
    request = pb.RGBRenderRequest.DESCRIPTOR.fields_by_name
    assert {n: request[n].number for n in ("scene_id", "frame_start_us", "image_format", "dynamic_objects")} == \
        {"scene_id": 1, "frame_start_us": 5, "image_format": 9, "dynamic_objects": 8}
    item = pb.BatchRGBRenderReturnItem.DESCRIPTOR.fields_by_name
    assert [item[n].number for n in ("camera_name", "result", "success", "error_message")] == [1, 2, 3, 4]
