"""Drive logs written with the third-party writers: ``mcap-ros2-support`` (ROS 2 MCAP), ``rosbags``
(rosbag2 folders) and the Foxglove SDK, never with simharmon's own writer.

Message definitions are the published ROS 2 ones (sensor_msgs, std_msgs, builtin_interfaces,
geometry_msgs, tf2_msgs, foxglove_msgs), in the concatenated form rosbag2 stores in MCAP schemas.
"""

import io

import numpy as np
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from mcap_ros2.writer import Writer as Ros2Writer
from PIL import Image

SEP = "=" * 80
TIME = "int32 sec\nuint32 nanosec\n"
HEADER = "builtin_interfaces/Time stamp\nstring frame_id\n"
VECTOR3 = "float64 x\nfloat64 y\nfloat64 z\n"
QUATERNION = "float64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1\n"
ROI = "uint32 x_offset\nuint32 y_offset\nuint32 height\nuint32 width\nbool do_rectify\n"


def _msgdef(main, *deps):
    return main + "".join(f"{SEP}\nMSG: {name}\n{text}" for name, text in deps)


HEADER_DEPS = (("std_msgs/Header", HEADER), ("builtin_interfaces/Time", TIME))
MSGDEFS = {
    "sensor_msgs/msg/Image": _msgdef("std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n"
                                     "uint8 is_bigendian\nuint32 step\nuint8[] data\n", *HEADER_DEPS),
    "sensor_msgs/msg/CompressedImage": _msgdef("std_msgs/Header header\nstring format\nuint8[] data\n", *HEADER_DEPS),
    "sensor_msgs/msg/CameraInfo": _msgdef(
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring distortion_model\nfloat64[] d\nfloat64[9] k\n"
        "float64[9] r\nfloat64[12] p\nuint32 binning_x\nuint32 binning_y\nsensor_msgs/RegionOfInterest roi\n",
        *HEADER_DEPS, ("sensor_msgs/RegionOfInterest", ROI)),
    "tf2_msgs/msg/TFMessage": _msgdef(
        "geometry_msgs/TransformStamped[] transforms\n",
        ("geometry_msgs/TransformStamped", "std_msgs/Header header\nstring child_frame_id\n"
                                           "geometry_msgs/Transform transform\n"),
        *HEADER_DEPS,
        ("geometry_msgs/Transform", "geometry_msgs/Vector3 translation\ngeometry_msgs/Quaternion rotation\n"),
        ("geometry_msgs/Vector3", VECTOR3), ("geometry_msgs/Quaternion", QUATERNION)),
    "foxglove_msgs/msg/CompressedImage": _msgdef(
        "builtin_interfaces/Time timestamp\nstring frame_id\nuint8[] data\nstring format\n",
        ("builtin_interfaces/Time", TIME)),
}


def stamp(ns):
    return {"sec": ns // 10**9, "nanosec": ns % 10**9}


def encode_image(image, fmt, **options):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format={"png": "PNG", "jpeg": "JPEG"}[fmt], **options)
    return buffer.getvalue()


def raw_image(image, encoding):
    """uint8 [H, W, 3] RGB -> (data bytes, step) in a ROS raw encoding."""
    if encoding.startswith("mono"):
        pixels = image[:, :, :1]
    elif encoding.startswith("bgr"):
        pixels = image[:, :, ::-1]
    else:
        pixels = image
    if encoding in ("rgba8", "bgra8"):
        pixels = np.concatenate([pixels, np.full(image.shape[:2] + (1,), 200, np.uint8)], axis=2)
    if encoding in ("rgb16", "bgr16", "mono16"):
        pixels = (pixels.astype(np.uint16) * 257).astype(">u2")  # big-endian, as is_bigendian = 1 says
    pixels = np.ascontiguousarray(pixels)
    return pixels.tobytes(), pixels.shape[1] * pixels.shape[2] * pixels.dtype.itemsize


class Ros2Log:
    """A ROS 2 MCAP file written by mcap-ros2-support's Writer."""

    def __init__(self, path):
        self.handle = open(path, "wb")
        self.writer = Ros2Writer(self.handle)
        self.schemas = {}

    def _schema(self, name):
        if name not in self.schemas:
            self.schemas[name] = self.writer.register_msgdef(name, MSGDEFS[name])
        return self.schemas[name]

    def write(self, topic, type_name, message, log_time):
        self.writer.write_message(topic, self._schema(type_name), message, log_time=log_time, publish_time=log_time)

    def image(self, topic, image, ns, encoding="rgb8", frame_id="cam", log_time=None):
        data, step = raw_image(image, encoding)
        message = {"header": {"stamp": stamp(ns), "frame_id": frame_id}, "height": image.shape[0],
                   "width": image.shape[1], "encoding": encoding, "is_bigendian": int(encoding.endswith("16")),
                   "step": step, "data": data}
        self.write(topic, "sensor_msgs/msg/Image", message, ns + 3_000_000 if log_time is None else log_time)

    def compressed(self, topic, image, ns, fmt="png", frame_id="cam", foxglove=False):
        data = encode_image(image, fmt, **({"quality": 90} if fmt == "jpeg" else {}))
        if foxglove:
            message = {"timestamp": stamp(ns), "frame_id": frame_id, "data": data, "format": fmt}
            self.write(topic, "foxglove_msgs/msg/CompressedImage", message, ns + 3_000_000)
        else:
            message = {"header": {"stamp": stamp(ns), "frame_id": frame_id}, "format": fmt, "data": data}
            self.write(topic, "sensor_msgs/msg/CompressedImage", message, ns + 3_000_000)

    def camera_info(self, topic, ns, frame_id, width, height, k, p=None):
        p = p if p is not None else [k[0], 0, k[2], 0, 0, k[4], k[5], 0, 0, 0, 1, 0]
        message = {"header": {"stamp": stamp(ns), "frame_id": frame_id}, "height": height, "width": width,
                   "distortion_model": "plumb_bob", "d": [0.0] * 5, "k": k, "r": [1, 0, 0, 0, 1, 0, 0, 0, 1], "p": p,
                   "binning_x": 0, "binning_y": 0,
                   "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False}}
        self.write(topic, "sensor_msgs/msg/CameraInfo", message, ns + 1_000_000)

    def tf(self, topic, ns, transforms):
        """transforms: (parent, child, (x, y, z), (qx, qy, qz, qw))."""
        message = {"transforms": [
            {"header": {"stamp": stamp(ns), "frame_id": parent}, "child_frame_id": child,
             "transform": {"translation": dict(zip("xyz", translation)), "rotation": dict(zip("xyzw", rotation))}}
            for parent, child, translation, rotation in transforms]}
        self.write(topic, "tf2_msgs/msg/TFMessage", message, ns)

    def close(self):
        self.writer.finish()
        self.handle.close()


def frames(count, height=24, width=32, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def smooth_frames(count, height=24, width=32, seed=0):
    """Smooth pictures (bilinear upsampling of a coarse random grid): what JPEG keeps well."""
    rng = np.random.default_rng(seed)
    return [np.asarray(Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)).resize(
        (width, height), Image.BILINEAR)) for _ in range(count)]


def yaw_quaternion(angle):
    return (0.0, 0.0, float(np.sin(angle / 2)), float(np.cos(angle / 2)))


def read_ros2(path):
    """topic -> [(schema name, log time, decoded message)] via mcap-ros2-support's own decoder."""
    out = {}
    with open(path, "rb") as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            out.setdefault(channel.topic, []).append((schema.name, message.log_time, decoded))
    return out
