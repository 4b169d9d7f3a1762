"""ROS 2 MCAP logs and rosbag2 folders written by mcap-ros2-support and rosbags: frames, stamps, camera
models, poses, companions, the enhanced log written back, and clear errors for bad logs."""

import numpy as np
import pytest
from log_fixtures import MSGDEFS, Ros2Log, encode_image, frames, read_ros2, smooth_frames, yaw_quaternion
from mcap.writer import Writer as McapWriter

from simharmon.io.drive import DriveError
from simharmon.io.drive_mcap import McapDrive
from simharmon.io.drives import detect_kind, open_drive
from simharmon.io.log_topics import LogSelection, camera_name, companion_candidates, split_topic
from simharmon.io.mcap_write import write_mcap
from simharmon.io.tf_tree import quaternion_matrix

T0 = 1_700_000_000_000_000_000
STEP = 100_000_000  # 10 Hz
H, W = 32, 48
K_FRONT = [40.0, 0.0, 23.5, 0.0, 41.0, 15.5, 0.0, 0.0, 1.0]
K_REAR = [30.0, 0.0, 24.0, 0.0, 30.0, 16.0, 0.0, 0.0, 1.0]
FRONT_MOUNT = ((1.5, 0.0, 1.2), (-0.5, 0.5, -0.5, 0.5))  # base_link -> optical frame (z forward)
REAR_MOUNT = ((-1.0, 0.0, 1.2), (0.5, 0.5, -0.5, -0.5))


def mask(index):
    out = np.zeros((H, W, 3), np.uint8)
    out[4 + index:20 + index, 8:30] = 255
    return out


def write_bag(path, count=4, with_masks=False, rear_stamps=None):
    """Two cameras (rgb8 front, bgr8 rear) with CameraInfo, /tf_static mounts and a moving /tf base."""
    front, rear = frames(count, H, W, seed=1), frames(count, H, W, seed=2)
    log = Ros2Log(path)
    log.tf("/tf_static", T0 - STEP, [("base_link", "front_optical", *FRONT_MOUNT),
                                     ("base_link", "rear_optical", *REAR_MOUNT)])
    for i in range(count + 1):  # one sample past the last frame: tf never extrapolates
        log.tf("/tf", T0 + i * STEP, [("odom", "base_link", (0.5 * i, 0.1 * i, 0.0), yaw_quaternion(0.2 * i))])
    for i in range(count):
        ns = T0 + i * STEP
        log.camera_info("/cam_front/camera_info", ns, "front_optical", W, H, K_FRONT)
        log.image("/cam_front/image_raw", front[i], ns, "rgb8", "front_optical")
        rear_ns = rear_stamps[i] if rear_stamps else ns + STEP // 2
        log.camera_info("/cam_rear/camera_info", rear_ns, "rear_optical", W, H, K_REAR)
        log.image("/cam_rear/image_raw", rear[i], rear_ns, "bgr8", "rear_optical", log_time=T0 + i * STEP + 7)
        if with_masks:
            log.image("/cam_front/mask", mask(i), ns, "mono8", "front_optical")
    log.close()
    return front, rear


def expected_pose(stamp, mount):
    """Camera-to-odom at ``stamp``: base pose interpolated linearly (yaw about z) times the mount."""
    s = (stamp - T0) / STEP
    base = np.eye(4)
    yaw = 0.2 * s
    base[:3, :3] = [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]
    base[:3, 3] = (0.5 * s, 0.1 * s, 0.0)
    mount_matrix = np.eye(4)
    mount_matrix[:3, :3] = quaternion_matrix(mount[1])
    mount_matrix[:3, 3] = mount[0]
    return base @ mount_matrix


def test_topic_rules():
    assert split_topic("/cam_front/image_raw") == ("/cam_front", "image_raw")
    assert split_topic("/cam_front/image_raw/compressed") == ("/cam_front", "image_raw")
    assert split_topic("/front") == ("/front", "")
    assert camera_name("/sensors/cam front/image_rect_color") == "sensors_cam_front"
    assert companion_candidates("/cam/image_raw", "mask") == ["/cam/image_raw/mask", "/cam/mask", "/cam/mask/image_raw"]
    assert LogSelection(mask_topics=("/m",)).mask_map(["/a"]) == {"/a": "/m"}
    with pytest.raises(ValueError, match="exactly one camera"):
        LogSelection(mask_topics=("/m",)).mask_map(["/a", "/b"])
    with pytest.raises(ValueError, match="not a replayed camera"):
        LogSelection(mask_topics=("/x=/m",)).mask_map(["/a"])


def test_reads_frames_stamps_intrinsics_poses_and_masks(tmp_path):
    front, rear = write_bag(tmp_path / "bag.mcap", with_masks=True)
    drive = open_drive(tmp_path / "bag.mcap")
    assert isinstance(drive, McapDrive) and drive.cameras == ["cam_front", "cam_rear"]
    assert [drive.camera(c).label for c in drive.cameras] == ["/cam_front/image_raw", "/cam_rear/image_raw"]
    assert drive.info.fps == pytest.approx(10.0) and drive.notes == []
    for name, images in (("cam_front", front), ("cam_rear", rear)):  # rgb8 and bgr8: exact
        read = [img for _, _, img in drive.iter_frames(name)]
        assert len(read) == 4 and all(np.array_equal(a, b) for a, b in zip(read, images))
        assert all(np.array_equal(drive.read_frame(name, i), images[i]) for i in range(4))
    assert drive.timestamps_ns("cam_front") == [T0 + i * STEP for i in range(4)]  # header stamps, not log times
    assert drive.timestamps_ns("cam_rear") == [T0 + i * STEP + STEP // 2 for i in range(4)]
    k = drive.camera("cam_front").intrinsics
    assert (k.fx, k.fy, k.cx, k.cy) == (40.0, 41.0, 23.5, 15.5)
    assert drive.camera("cam_rear").intrinsics.fx == 30.0
    assert drive.has("mask", "cam_front") and not drive.has("mask", "cam_rear")
    assert np.array_equal(drive.read_mask("cam_front", 2), mask(2)[:, :, 0] / 255.0)
    for name, mount in (("cam_front", FRONT_MOUNT), ("cam_rear", REAR_MOUNT)):
        assert drive.has("pose", name)
        for i, stamp in enumerate(drive.timestamps_ns(name)):
            np.testing.assert_allclose(drive.read_pose(name, i), expected_pose(stamp, mount), atol=1e-9)


def test_out_of_order_and_duplicate_frames_are_reported_and_skipped(tmp_path):
    stamps = [T0 + 50, T0 + 150, T0 + 150, T0 + 100, T0 + 250]  # a duplicate, then one out of order
    _, rear = write_bag(tmp_path / "bag.mcap", count=5, rear_stamps=stamps)
    drive = open_drive(tmp_path / "bag.mcap", selection=LogSelection(topics=("/cam_rear/image_raw",)))
    assert drive.cameras == ["cam_rear"] and drive.frame_count("cam_rear") == 3
    assert drive.timestamps_ns("cam_rear") == [T0 + 50, T0 + 150, T0 + 250]
    read = [img for _, _, img in drive.iter_frames("cam_rear")]
    assert all(np.array_equal(a, b) for a, b in zip(read, [rear[0], rear[1], rear[4]]))
    assert np.array_equal(drive.read_frame("cam_rear", 2), rear[4])
    note = " ".join(drive.notes)
    assert "skipped 2 of 5" in note and "duplicate" in note and "out of order" in note
    assert drive.info.extra["skipped"] == {"/cam_rear/image_raw": 2}


def test_compressed_png_jpeg_and_foxglove_msgs(tmp_path):
    images = smooth_frames(3, H, W, seed=5)
    log = Ros2Log(tmp_path / "bag.mcap")
    for i, image in enumerate(images):
        ns = T0 + i * STEP
        log.compressed("/left/image_raw/compressed", image, ns, "png", "left")
        log.compressed("/right/image/compressed", image, ns, "jpeg", "right")
        log.compressed("/fox/image", image, ns, "png", "fox", foxglove=True)
    log.close()
    drive = open_drive(tmp_path / "bag.mcap")
    assert drive.cameras == ["fox", "left", "right"]  # discovered cameras come in topic order
    for i, image in enumerate(images):
        assert np.array_equal(drive.read_frame("left", i), image) and np.array_equal(drive.read_frame("fox", i), image)
        jpeg = drive.read_frame("right", i).astype(int)
        assert np.abs(jpeg - image).mean() < 3  # lossy, but the same picture
        assert np.abs(jpeg - image).mean() < np.abs(images[(i + 1) % 3].astype(int) - image).mean() / 10
    assert drive.timestamps_ns("fox") == [T0 + i * STEP for i in range(3)]


def test_enhanced_bag_keeps_types_encodings_and_stamps(tmp_path):
    front, rear = write_bag(tmp_path / "bag.mcap")
    drive = open_drive(tmp_path / "bag.mcap")
    enhanced = {"cam_front": lambda: (255 - f for f in front), "cam_rear": lambda: iter([255 - rear[0]])}
    write_mcap(drive, tmp_path / "out.mcap", enhanced)
    before, after = read_ros2(tmp_path / "bag.mcap"), read_ros2(tmp_path / "out.mcap")
    for topic in before:  # everything copied: camera info, tf, images
        assert [(s, t, repr(m)) for s, t, m in before[topic]] == [(s, t, repr(m)) for s, t, m in after[topic]]
    assert set(after) - set(before) == {"/cam_front/image_raw/enhanced", "/cam_rear/image_raw/enhanced"}
    for topic, images, encoding in (("/cam_front/image_raw", front, "rgb8"), ("/cam_rear/image_raw", rear, "bgr8")):
        outputs = after[topic + "/enhanced"]
        assert len(outputs) == (4 if encoding == "rgb8" else 1)
        for (schema, log_time, message), (_, in_time, original), image in zip(outputs, before[topic], images):
            assert schema == "sensor_msgs/msg/Image" and log_time == in_time
            assert (message.header.stamp.sec, message.header.stamp.nanosec) == (original.header.stamp.sec,
                                                                                original.header.stamp.nanosec)
            assert message.header.frame_id == original.header.frame_id
            assert message.encoding == encoding and (message.height, message.width) == (H, W)
            pixels = np.frombuffer(message.data, np.uint8).reshape(H, W, 3)
            assert np.array_equal(pixels[:, :, ::-1] if encoding == "bgr8" else pixels, 255 - image)
    # The output reopens as the same two cameras (enhanced topics are outputs, not cameras).
    again = open_drive(tmp_path / "out.mcap")
    assert again.cameras == drive.cameras
    with pytest.raises(DriveError, match="already has a topic"):
        write_mcap(again, tmp_path / "twice.mcap", {"cam_front": lambda: iter(front)})


@pytest.mark.parametrize("encoding", ["rgba8", "bgra8", "mono8", "rgb16", "bgr16", "mono16"])
def test_other_raw_encodings_round_trip(tmp_path, encoding):
    image = frames(1, H, W, seed=3)[0]
    if encoding.startswith("mono"):
        image = np.repeat(image[:, :, :1], 3, axis=2)
    log = Ros2Log(tmp_path / "bag.mcap")
    log.image("/cam/image_raw", image, T0, encoding)
    log.close()
    drive = open_drive(tmp_path / "bag.mcap")
    assert np.array_equal(drive.read_frame("cam", 0), image)
    write_mcap(drive, tmp_path / "out.mcap", {"cam": lambda: iter([image])})
    (_, _, original), = read_ros2(tmp_path / "bag.mcap")["/cam/image_raw"]
    (_, _, output), = read_ros2(tmp_path / "out.mcap")["/cam/image_raw/enhanced"]
    assert output.encoding == encoding and output.is_bigendian == original.is_bigendian
    assert bytes(output.data) == bytes(original.data)  # alpha and 16-bit levels kept exactly


def test_rosbag2_folder_written_by_rosbags(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image, Header, Time = (store.types[n] for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                     "builtin_interfaces/msg/Time"))
    images = frames(3, H, W, seed=9)
    with Writer(tmp_path / "bag", version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/camera/color/image_raw", Image.__msgtype__, typestore=store)
        for i, image in enumerate(images):
            ns = T0 + i * STEP
            message = Image(header=Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="color"),
                            height=H, width=W, encoding="rgb8", is_bigendian=0, step=W * 3, data=image.reshape(-1))
            writer.write(connection, ns + 1000, store.serialize_cdr(message, Image.__msgtype__))
    assert detect_kind(tmp_path / "bag") == "rosbag2"
    drive = open_drive(tmp_path / "bag")
    assert drive.info.kind == "rosbag2" and drive.cameras == ["camera_color"]
    assert all(np.array_equal(img, images[i]) for i, _, img in drive.iter_frames("camera_color"))
    assert drive.timestamps_ns("camera_color") == [T0 + i * STEP for i in range(3)]
    write_mcap(drive, tmp_path / "out.mcap", {"camera_color": lambda: iter(images)})
    outputs = read_ros2(tmp_path / "out.mcap")["/camera/color/image_raw/enhanced"]
    assert [m.header.stamp.nanosec for _, _, m in outputs] == [(T0 + i * STEP) % 10**9 for i in range(3)]


def test_split_rosbag2_folder_reads_across_files(tmp_path):
    """A bag split in two files (a recorder's max file size): one log, in log-time order."""
    images = frames(5, H, W, seed=4)
    (tmp_path / "bag").mkdir()
    for part, indices in enumerate(((0, 1, 2), (3, 4))):
        log = Ros2Log(tmp_path / "bag" / f"bag_{part}.mcap")
        for i in indices:
            log.image("/cam/image_raw", images[i], T0 + i * STEP, "bgr8")
        log.close()
    (tmp_path / "bag" / "metadata.yaml").write_text(
        "rosbag2_bagfile_information:\n  version: 5\n  storage_identifier: mcap\n"
        "  relative_file_paths: [bag_0.mcap, bag_1.mcap]\n  compression_mode: ''\n")
    drive = open_drive(tmp_path / "bag")
    assert drive.info.kind == "rosbag2" and drive.frame_count("cam") == 5
    read = [img for _, _, img in drive.iter_frames("cam", 1)]
    assert len(read) == 4 and all(np.array_equal(a, images[i + 1]) for i, a in enumerate(read))
    assert np.array_equal(drive.read_frame("cam", 4), images[4])
    write_mcap(drive, tmp_path / "out.mcap", {"cam": lambda: iter(images)})
    outputs = read_ros2(tmp_path / "out.mcap")
    assert [t for _, t, _ in outputs["/cam/image_raw"]] == [t for _, t, _ in outputs["/cam/image_raw/enhanced"]]
    assert len(outputs["/cam/image_raw/enhanced"]) == 5
    (tmp_path / "bag" / "metadata.yaml").unlink()  # a recorder killed before writing it: the files, in order
    assert open_drive(tmp_path / "bag").frame_count("cam") == 5


def test_bad_logs_are_clear_errors(tmp_path):
    image = frames(1, H, W)[0]
    log = Ros2Log(tmp_path / "bayer.mcap")
    log.write("/cam/image_raw", "sensor_msgs/msg/Image",
              {"header": {"stamp": {"sec": 1, "nanosec": 0}, "frame_id": "cam"}, "height": H, "width": W,
               "encoding": "bayer_rggb8", "is_bigendian": 0, "step": W, "data": bytes(H * W)}, 1)
    log.close()
    with pytest.raises(DriveError, match="topic /cam/image_raw: unsupported image encoding 'bayer_rggb8'"):
        open_drive(tmp_path / "bayer.mcap")
    write_bag(tmp_path / "bag.mcap")
    data = (tmp_path / "bag.mcap").read_bytes()
    for cut in (len(data) // 3, len(data) - 10):
        (tmp_path / "cut.mcap").write_bytes(data[:cut])
        with pytest.raises(DriveError, match="cannot read MCAP .*cut.mcap"):
            open_drive(tmp_path / "cut.mcap")
    with pytest.raises(DriveError, match="no topic /nope"):
        open_drive(tmp_path / "bag.mcap", selection=LogSelection(topics=("/nope",)))
    with pytest.raises(DriveError, match="carries sensor_msgs/msg/CameraInfo messages, not images"):
        open_drive(tmp_path / "bag.mcap", selection=LogSelection(topics=("/cam_front/camera_info",)))
    with pytest.raises(DriveError, match="mask topic /nope of camera /cam_front/image_raw has no image messages"):
        open_drive(tmp_path / "bag.mcap", selection=LogSelection(mask_topics=("/cam_front/image_raw=/nope",)))
    log = Ros2Log(tmp_path / "info.mcap")
    log.camera_info("/cam/camera_info", T0, "cam", 640, 480, K_FRONT)
    log.image("/cam/image_raw", image, T0, "rgb8")
    log.close()
    with pytest.raises(DriveError, match="calibration on /cam/camera_info is for 640x480 images, but the images on "
                                         "/cam/image_raw are 48x32"):
        open_drive(tmp_path / "info.mcap")
    log = Ros2Log(tmp_path / "gif.mcap")
    log.write("/cam/image/compressed", "sensor_msgs/msg/CompressedImage",
              {"header": {"stamp": {"sec": 1, "nanosec": 0}, "frame_id": ""}, "format": "gif",
               "data": encode_image(image, "png")}, 1)
    log.close()
    with pytest.raises(DriveError, match="unsupported compressed image format 'gif'"):
        open_drive(tmp_path / "gif.mcap")
    with open(tmp_path / "silent.mcap", "wb") as handle:  # a camera topic that never published
        writer = McapWriter(handle)
        writer.start(profile="ros2")
        schema = writer.register_schema("sensor_msgs/msg/Image", "ros2msg", MSGDEFS["sensor_msgs/msg/Image"].encode())
        writer.register_channel("/cam/image_raw", "cdr", schema)
        writer.finish()
    with pytest.raises(DriveError, match="topic /cam/image_raw of .* has no messages"):
        open_drive(tmp_path / "silent.mcap", selection=LogSelection(topics=("/cam/image_raw",)))
    with pytest.raises(DriveError, match="no camera image topics"):
        open_drive(tmp_path / "silent.mcap")
    (tmp_path / "sqlite").mkdir()
    (tmp_path / "sqlite" / "metadata.yaml").write_text(
        "rosbag2_bagfile_information:\n  storage_identifier: sqlite3\n  relative_file_paths: [a.db3]\n")
    with pytest.raises(DriveError, match="storage 'sqlite3' is not supported"):
        open_drive(tmp_path / "sqlite")
