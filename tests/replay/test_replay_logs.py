"""``simharmon replay`` of a ROS 2 bag written by mcap-ros2-support, with the bundled default model: lossless
frames pass through exactly, the masked camera equals a drive-folder replay of the same frames, the report
names cameras by topic, and ``--mcap`` writes a ROS 2 bag back in the input's types and encodings."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from simharmon.cli import main
from simharmon.io.drive import CameraInfo, Intrinsics
from simharmon.io.drive_folder import DriveFolderWriter
from simharmon.io.frame_sources import load_image_rgb
from tests.io.log_fixtures import Ros2Log, frames, read_ros2, smooth_frames

T0 = 1_700_000_000_000_000_000
STEP = 100_000_000
H, W = 32, 48
COUNT = 2  # history offsets 1: the second frame conditions on the first
K = [40.0, 0.0, 23.5, 0.0, 41.0, 15.5, 0.0, 0.0, 1.0]
CAMERAS = {  # topic -> (camera name, how it is stored)
    "/cam_front/image_raw": ("cam_front", "rgb8"),
    "/cam_rear/image_raw": ("cam_rear", "bgr8"),
    "/cam_left/image_raw/compressed": ("cam_left", "png"),
    "/cam_right/image_raw/compressed": ("cam_right", "jpeg"),
}


def masks():
    out = []
    for t in range(COUNT):
        mask = np.zeros((H, W), np.uint8)
        mask[6 + t:22 + t, 10:34] = 255
        out.append(mask)
    return out


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """Four cameras, CameraInfo for the front one, /tf, and actor masks for the front one on /actors/front."""
    root = tmp_path_factory.mktemp("bag")
    images = {topic: (smooth_frames if kind == "jpeg" else frames)(COUNT, H, W, seed=n)
              for n, (topic, (_, kind)) in enumerate(CAMERAS.items())}
    log = Ros2Log(root / "drive.mcap")
    for i in range(COUNT):
        ns = T0 + i * STEP
        log.tf("/tf", ns, [("map", "front", (0.1 * i, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))])
        log.camera_info("/cam_front/camera_info", ns, "front", W, H, K)
        for topic, (_, kind) in CAMERAS.items():
            if kind in ("png", "jpeg"):
                log.compressed(topic, images[topic][i], ns + 1000, kind, "side")
            else:
                log.image(topic, images[topic][i], ns, kind, "front")
        log.image("/actors/front", np.repeat(masks()[i][:, :, None], 3, axis=2), ns, "mono8", "front")
    log.close()
    out = root / "run"
    assert main(["replay", str(root / "drive.mcap"), "--out", str(out), "--device", "cpu", "--no-progress", "--mcap",
                 "--mask-topic", "/cam_front/image_raw=/actors/front"]) == 0
    return root, images, out


def enhanced(out, camera):
    return [load_image_rgb(p) for p in sorted(Path(out, "cameras", camera, "enhanced").glob("*.png"))]


def test_unmasked_lossless_cameras_pass_through_exactly(bag):
    _, images, out = bag
    for topic, (name, kind) in CAMERAS.items():
        outputs = enhanced(out, name)
        assert len(outputs) == COUNT
        if topic != "/cam_front/image_raw" and kind != "jpeg":  # no mask: the bundled model changes nothing
            assert all(np.array_equal(a, b) for a, b in zip(outputs, images[topic])), topic


def test_masked_camera_equals_a_drive_folder_replay(bag, tmp_path):
    _, images, out = bag
    writer = DriveFolderWriter(tmp_path / "folder", "same", 10.0, [CameraInfo("cam_front", W, H, Intrinsics(40, 41,
                                                                                                           23.5, 15.5))])
    for t in range(COUNT):
        writer.write_frame("cam_front", t, images["/cam_front/image_raw"][t])
        writer.write_mask("cam_front", t, masks()[t])
    writer.finish(COUNT)
    assert main(["replay", str(tmp_path / "folder"), "--out", str(tmp_path / "run"), "--device", "cpu",
                 "--no-progress"]) == 0
    from_log, from_folder = enhanced(out, "cam_front"), enhanced(tmp_path / "run", "cam_front")
    assert len(from_log) == COUNT and all(np.array_equal(a, b) for a, b in zip(from_log, from_folder))
    # The model did act on the actor: the equality is not two pass-throughs.
    assert any(not np.array_equal(a, b) for a, b in zip(from_log, images["/cam_front/image_raw"]))


def test_report_names_cameras_by_topic(bag):
    _, _, out = bag
    rows = json.loads((out / "metrics" / "per_frame.json").read_text())
    assert {r["camera"] for r in rows} == set(CAMERAS)
    summary = json.loads((out / "metrics" / "summary.json").read_text())
    assert summary["drive"]["cameras"] == sorted(CAMERAS) and summary["drive"]["kind"] == "mcap"
    assert summary["masks"] == {t: t == "/cam_front/image_raw" for t in CAMERAS}
    record = json.loads((out / "replay.json").read_text())
    assert record["config"]["replay_topics"]["cam_left"] == "/cam_left/image_raw/compressed"
    assert "/cam_front/image_raw" in (out / "report.html").read_text()


def test_enhanced_bag_is_ros2_in_the_input_types_and_encodings(bag):
    root, images, out = bag
    before, after = read_ros2(root / "drive.mcap"), read_ros2(out / "enhanced.mcap")
    for topic in ("/tf", "/cam_front/camera_info", "/actors/front"):
        assert [repr(m) for _, _, m in before[topic]] == [repr(m) for _, _, m in after[topic]]
    for topic, (name, kind) in CAMERAS.items():
        outputs, inputs = after[topic + "/enhanced"], before[topic]
        assert len(outputs) == COUNT
        pngs = enhanced(out, name)
        for (schema, log_time, message), (in_schema, in_time, original), png in zip(outputs, inputs, pngs):
            assert schema == in_schema and log_time == in_time
            assert (message.header.stamp.sec, message.header.stamp.nanosec) == (original.header.stamp.sec,
                                                                                original.header.stamp.nanosec)
            if kind in ("png", "jpeg"):
                assert message.format == kind
                decoded = load_image_rgb_bytes(message.data)
                if kind == "png":
                    assert np.array_equal(decoded, png)
                else:
                    assert np.abs(decoded.astype(int) - png).mean() < 3
            else:
                assert message.encoding == kind
                pixels = np.frombuffer(message.data, np.uint8).reshape(H, W, 3)
                assert np.array_equal(pixels[:, :, ::-1] if kind == "bgr8" else pixels, png)


def load_image_rgb_bytes(data):
    with Image.open(io.BytesIO(bytes(data))) as picture:
        return np.asarray(picture.convert("RGB"))


def test_topic_options_and_errors(bag, tmp_path, capsys):
    root, _, _ = bag
    args = ["replay", str(root / "drive.mcap"), "--device", "cpu", "--no-progress", "--config", "tiny"]
    assert main([*args, "--out", str(tmp_path / "a"), "--topic", "/nope"]) == 1
    assert "no topic /nope" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--mask-topic", "/actors/front"]) == 1
    assert "needs exactly one camera" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "c"), "--camera", "/cam_side/image_raw"]) == 1
    assert "no camera '/cam_side/image_raw'" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "e"), "--camera", "/cam_rear/image_raw", "--max-frames", "1"]) == 0
    assert [p.name for p in (tmp_path / "e" / "cameras").iterdir()] == ["cam_rear"]
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    assert main(["replay", str(folder), "--out", str(tmp_path / "d"), "--topic", "/x"]) == 1
    assert "only apply to MCAP files and rosbag2 folders" in capsys.readouterr().err
