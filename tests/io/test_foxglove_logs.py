"""Foxglove logs written by the Foxglove SDK: images and CameraCalibration read, header stamps kept, and the
enhanced topics written back as Foxglove messages that mcap-protobuf-support decodes."""

import base64
import warnings

import foxglove
import numpy as np
import pytest
import torch
from foxglove.channels import CameraCalibrationChannel, CompressedImageChannel, RawImageChannel
from foxglove.messages import CameraCalibration, CompressedImage, RawImage, Timestamp
from log_fixtures import encode_image, frames
from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory

from simharmon.io.drive import DriveError
from simharmon.io.drives import open_drive
from simharmon.io.foxglove import JSON_SCHEMAS, RAW_IMAGE
from simharmon.io.log_topics import LogSelection
from simharmon.io.mcap_write import write_mcap

T0 = 1_700_000_000_000_000_000
STEP = 100_000_000
LAG = 3_000_000  # log time = header stamp + 3 ms, as a recorder's would be
H, W = 32, 48
K = [40.0, 0.0, 23.5, 0.0, 41.0, 15.5, 0.0, 0.0, 1.0]


def timestamp(ns):
    return Timestamp(ns // 10**9, ns % 10**9)


def write_foxglove(path, count=3, calibration_size=(W, H)):
    """bgr8 RawImage + CameraCalibration on /cam_front, PNG CompressedImage on /cam_rear (protobuf),
    and a JSON rgb8 RawImage on /cam_json."""
    front, rear, side = frames(count, H, W, seed=1), frames(count, H, W, seed=2), frames(count, H, W, seed=3)
    context = foxglove.Context()
    with foxglove.open_mcap(path, allow_overwrite=True, context=context):
        raw = RawImageChannel("/cam_front/image", context=context)
        calibration = CameraCalibrationChannel("/cam_front/calibration", context=context)
        compressed = CompressedImageChannel("/cam_rear/image", context=context)
        json_channel = foxglove.Channel("/cam_json/image", schema=JSON_SCHEMAS[RAW_IMAGE], context=context)
        for i in range(count):
            ns = T0 + i * STEP
            calibration.log(CameraCalibration(timestamp=timestamp(ns), frame_id="front", width=calibration_size[0],
                                              height=calibration_size[1], distortion_model="plumb_bob", D=[0.0] * 5,
                                              K=K, R=[1, 0, 0, 0, 1, 0, 0, 0, 1], P=[0.0] * 12), log_time=ns)
            bgr = np.ascontiguousarray(front[i][:, :, ::-1])
            raw.log(RawImage(timestamp=timestamp(ns), frame_id="front", width=W, height=H, encoding="bgr8",
                             step=W * 3, data=bgr.tobytes()), log_time=ns + LAG)
            compressed.log(CompressedImage(timestamp=timestamp(ns + 10), frame_id="rear",
                                           data=encode_image(rear[i], "png"), format="png"), log_time=ns + LAG)
            json_channel.log({"timestamp": {"sec": (ns + 20) // 10**9, "nsec": (ns + 20) % 10**9},
                              "frame_id": "side", "width": W, "height": H, "encoding": "rgb8", "step": W * 3,
                              "data": base64.b64encode(side[i].tobytes()).decode()}, log_time=ns + LAG)
    return {"cam_front": front, "cam_rear": rear, "cam_json": side}


def test_reads_images_stamps_and_calibration_without_warnings(tmp_path):
    images = write_foxglove(tmp_path / "fox.mcap")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. PyTorch's "NumPy array is not writable"
        drive = open_drive(tmp_path / "fox.mcap")
        assert drive.cameras == ["cam_front", "cam_json", "cam_rear"]
        for name, expected in images.items():
            for index, _, image in drive.iter_frames(name):
                assert np.array_equal(image, expected[index]) and image.flags.writeable
                torch.from_numpy(image)  # warns on read-only arrays
    assert drive.timestamps_ns("cam_front") == [T0 + i * STEP for i in range(3)]  # header stamps, not log times
    assert drive.timestamps_ns("cam_rear") == [T0 + i * STEP + 10 for i in range(3)]
    k = drive.camera("cam_front").intrinsics
    assert (k.fx, k.fy, k.cx, k.cy) == (40.0, 41.0, 23.5, 15.5) and drive.camera("cam_rear").intrinsics is None


def test_enhanced_topics_are_foxglove_messages_with_the_input_stamps(tmp_path):
    images = write_foxglove(tmp_path / "fox.mcap")
    drive = open_drive(tmp_path / "fox.mcap")
    write_mcap(drive, tmp_path / "out.mcap", {n: (lambda n=n: (255 - f for f in images[n])) for n in images})
    decoded = {}
    with open(tmp_path / "out.mcap", "rb") as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        for schema, channel, message in reader.iter_messages():
            decoded.setdefault(channel.topic, []).append((schema.name, channel.message_encoding, message))
    assert {"/cam_front/calibration", "/cam_front/image", "/cam_front/image/enhanced", "/cam_rear/image/enhanced",
            "/cam_json/image/enhanced"} <= set(decoded)
    with open(tmp_path / "out.mcap", "rb") as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        protobuf = [(c.topic, m) for _, c, _, m in reader.iter_decoded_messages(
            topics=["/cam_front/image/enhanced", "/cam_rear/image/enhanced"])]
    front = [m for t, m in protobuf if t == "/cam_front/image/enhanced"]
    rear = [m for t, m in protobuf if t == "/cam_rear/image/enhanced"]
    assert len(front) == len(rear) == 3
    for i, (message, (schema, encoding, record)) in enumerate(zip(front, decoded["/cam_front/image/enhanced"])):
        assert (schema, encoding) == ("foxglove.RawImage", "protobuf") and record.log_time == T0 + i * STEP + LAG
        stamp = T0 + i * STEP
        assert (message.timestamp.seconds, message.timestamp.nanos) == (stamp // 10**9, stamp % 10**9)
        assert (message.encoding, message.width, message.height, message.frame_id) == ("bgr8", W, H, "front")
        pixels = np.frombuffer(message.data, np.uint8).reshape(H, W, 3)[:, :, ::-1]
        assert np.array_equal(pixels, 255 - images["cam_front"][i])
    for i, message in enumerate(rear):
        assert message.timestamp.nanos == (T0 + i * STEP + 10) % 10**9 and message.format == "png"
    again = open_drive(tmp_path / "out.mcap")
    assert again.cameras == drive.cameras
    json_out = again.log.channels["/cam_json/image/enhanced"]
    assert json_out.message_encoding == "json" and json_out.schema.name == RAW_IMAGE
    enhanced = open_drive(tmp_path / "out.mcap", selection=LogSelection(topics=("/cam_json/image/enhanced",)))
    assert enhanced.timestamps_ns(enhanced.cameras[0]) == [T0 + i * STEP + 20 for i in range(3)]
    read = [img for _, _, img in enhanced.iter_frames(enhanced.cameras[0])]
    assert len(read) == 3 and all(np.array_equal(img, 255 - images["cam_json"][i]) for i, img in enumerate(read))


def test_calibration_of_another_size_is_an_error(tmp_path):
    write_foxglove(tmp_path / "fox.mcap", count=1, calibration_size=(64, 48))
    with pytest.raises(DriveError, match="calibration on /cam_front/calibration is for 64x48 images"):
        open_drive(tmp_path / "fox.mcap")
