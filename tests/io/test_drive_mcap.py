"""MCAP drives: fixtures written with mcap's own Writer; our writer round-trips exactly."""

import base64
import io
import json

import numpy as np
import pytest
from drive_helpers import write_small_drive
from mcap.writer import Writer
from PIL import Image

from simharmon.io.drive import DriveError
from simharmon.io.drive_mcap import McapDrive
from simharmon.io.drives import open_drive
from simharmon.io.foxglove import decode_protobuf_fields, encode_protobuf_fields
from simharmon.io.log_topics import LogSelection
from simharmon.io.mcap_write import write_mcap


def _timestamp(ns):
    return encode_protobuf_fields([(1, "varint", ns // 10**9), (2, "varint", ns % 10**9)])


def _png(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _fixture(path, frames, raw=False, encoding="protobuf"):
    """One camera topic of foxglove images, encoded by hand per the published schemas."""
    with open(path, "wb") as handle:
        writer = Writer(handle)
        writer.start()
        name = "foxglove.RawImage" if raw else "foxglove.CompressedImage"
        schema = writer.register_schema(name, "protobuf" if encoding == "protobuf" else "jsonschema", b"")
        channel = writer.register_channel("/cam_front/image_raw", encoding, schema)
        for index, image in enumerate(frames):
            stamp = 1_700_000_000_000_000_000 + index * 100_000_000  # 10 fps
            if raw:
                bgr = np.ascontiguousarray(image[:, :, ::-1])
                padded = np.pad(bgr.reshape(image.shape[0], -1), ((0, 0), (0, 4)))  # step > width * 3
                if encoding == "protobuf":
                    payload = encode_protobuf_fields([
                        (1, "bytes", _timestamp(stamp)), (7, "bytes", "cam"), (2, "fixed32", image.shape[1]),
                        (3, "fixed32", image.shape[0]), (4, "bytes", "bgr8"), (5, "fixed32", padded.shape[1]),
                        (6, "bytes", padded.tobytes())])
                else:
                    payload = json.dumps({"timestamp": {"sec": stamp // 10**9, "nsec": stamp % 10**9},
                                          "frame_id": "cam", "width": image.shape[1], "height": image.shape[0],
                                          "encoding": "bgr8", "step": padded.shape[1],
                                          "data": base64.b64encode(padded.tobytes()).decode()}).encode()
            else:
                payload = encode_protobuf_fields([(1, "bytes", _timestamp(stamp)), (4, "bytes", "cam"),
                                                  (2, "bytes", _png(image)), (3, "bytes", "png")])
            writer.add_message(channel, stamp, payload, stamp, index)
        writer.finish()


def _frames(count=4):
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(count)]


@pytest.mark.parametrize("raw, encoding", [(False, "protobuf"), (True, "protobuf"), (True, "json")])
def test_reads_foxglove_images(tmp_path, raw, encoding):
    frames = _frames()
    _fixture(tmp_path / "drive.mcap", frames, raw=raw, encoding=encoding)
    drive = open_drive(tmp_path / "drive.mcap")
    assert isinstance(drive, McapDrive) and drive.cameras == ["cam_front"]
    assert drive.info.fps == pytest.approx(10.0) and drive.frame_count("cam_front") == 4
    assert drive.timestamps_ns("cam_front")[1] - drive.timestamps_ns("cam_front")[0] == 10**8
    for index, _name, image in drive.iter_frames("cam_front"):
        assert np.array_equal(image, frames[index])
    assert np.array_equal(drive.read_frame("cam_front", 2), frames[2])
    assert np.array_equal(list(drive.iter_frames("cam_front", 3))[0][2], frames[3])


def test_write_then_read_round_trips_exactly_with_enhanced_topics(tmp_path):
    scenes = write_small_drive(tmp_path / "folder", num_frames=3)
    folder = open_drive(tmp_path / "folder")
    enhanced = {"front": lambda: (255 - f for f in scenes["front"]["frames"])}
    path = write_mcap(folder, tmp_path / "out.mcap", enhanced)
    drive = open_drive(path)
    assert drive.cameras == ["front", "rear"] and drive.camera("front").intrinsics == folder.camera("front").intrinsics
    for name in drive.cameras:
        assert drive.has("gt", name) and drive.has("mask", name)
        for t in range(3):
            assert np.array_equal(drive.read_frame(name, t), scenes[name]["frames"][t])
            assert np.array_equal(drive.read_gt(name, t), scenes[name]["gt"][t])
            assert np.array_equal(drive.read_mask(name, t), scenes[name]["masks"][t] / 255.0)
    # Enhanced frames are a new topic; copying an MCAP drive keeps every original message.
    copy = open_drive(write_mcap(drive, tmp_path / "copy.mcap", {"rear": lambda: iter(scenes["rear"]["gt"])}))
    topics = set(copy.info.extra["topics"].values())
    assert topics == {"/front/image", "/rear/image"}
    assert copy.camera("rear").label == "/rear/image"
    rear = McapDrive(tmp_path / "copy.mcap", selection=LogSelection(topics=("/rear/image/enhanced",)))
    assert rear.frame_count(rear.cameras[0]) == 3 and "/front/image/enhanced" in McapDrive(path).log.channels
    for t in range(3):
        assert np.array_equal(rear.read_frame(rear.cameras[0], t), scenes["rear"]["gt"][t])


def test_corrupt_and_empty_files(tmp_path):
    (tmp_path / "junk.mcap").write_bytes(b"not an mcap at all")
    with pytest.raises(DriveError, match="cannot read MCAP"):
        open_drive(tmp_path / "junk.mcap")
    _fixture(tmp_path / "good.mcap", _frames())
    data = (tmp_path / "good.mcap").read_bytes()
    (tmp_path / "cut.mcap").write_bytes(data[: len(data) // 2])
    with pytest.raises(DriveError):
        McapDrive(tmp_path / "cut.mcap")
    with open(tmp_path / "none.mcap", "wb") as handle:
        writer = Writer(handle)
        writer.start()
        writer.finish()
    with pytest.raises(DriveError, match="no camera image topics"):
        McapDrive(tmp_path / "none.mcap")


def test_protobuf_wire_round_trip():
    encoded = encode_protobuf_fields([(1, "varint", 300), (2, "fixed32", 7), (3, "bytes", "hi")])
    fields = decode_protobuf_fields(encoded)
    assert fields[1] == [300] and fields[2] == [b"\x07\x00\x00\x00"] and fields[3] == [b"hi"]
