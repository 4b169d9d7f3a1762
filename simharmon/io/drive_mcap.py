"""MCAP drives: camera topics of Foxglove ``CompressedImage`` / ``RawImage`` messages (``mcap`` package).

Reading: every channel whose schema is a Foxglove image is a camera, except the companion topics
``<camera topic>/gt`` (ground truth), ``<camera topic>/mask`` (actor mask, greyscale) and
``<camera topic>/enhanced`` (outputs), which are attached to their camera. Frames are in log-time
order; the camera name is the channel's ``simharmon.camera`` metadata when present, else the topic
(a trailing ``/image`` dropped) made folder-safe. fps is the median frame interval of the first
camera. Random access seeks through the file's index by log time.

Writing (:func:`write_mcap`): each camera becomes ``/<camera>/image`` (PNG CompressedImage, JSON
encoding, lossless), with ``/gt`` and ``/mask`` companions when the drive has them, and
``/<camera>/image/enhanced`` for enhanced frames. Copying an MCAP drive keeps every original
message and adds the enhanced topics next to its own camera topics.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from .atomic import atomic_path
from .drive import CameraInfo, Drive, DriveError, DriveInfo, Intrinsics, check_image, safe_camera_name
from .foxglove import (
    COMPRESSED_IMAGE,
    IMAGE_SCHEMAS,
    JSON_SCHEMAS,
    MessageError,
    decode_image_message,
    encode_compressed_image_json,
)

__all__ = ["McapDrive", "write_mcap", "COMPANIONS", "CAMERA_METADATA_KEY"]

COMPANIONS = ("gt", "mask", "enhanced")
CAMERA_METADATA_KEY = "simharmon.camera"
INTRINSICS_METADATA_KEY = "simharmon.intrinsics"
DEFAULT_MCAP_FPS = 30.0
PathLike = Union[str, Path]


def _open_reader(path: Path):
    from mcap.exceptions import McapError
    from mcap.reader import make_reader

    handle = open(path, "rb")
    try:
        return handle, make_reader(handle)
    except (McapError, ValueError, OSError, EOFError) as exc:
        handle.close()
        raise DriveError(f"cannot read MCAP {path}: {exc} (corrupt or not an MCAP file?)") from exc


class _Topic:
    """One image channel: its schema/encoding and the log time of each message, in order."""

    def __init__(self, topic: str, schema: str, encoding: str, metadata: Dict[str, str]):
        self.topic, self.schema, self.encoding, self.metadata = topic, schema, encoding, metadata
        self.times: List[int] = []


class McapDrive(Drive):
    """Read an MCAP file's Foxglove image topics as a drive."""

    def __init__(self, path: PathLike, fps: Optional[float] = None):
        from mcap.exceptions import McapError

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"MCAP file not found: {self.path}")
        topics: Dict[str, _Topic] = {}
        handle, reader = _open_reader(self.path)
        try:
            for schema, channel, message in reader.iter_messages(log_time_order=True):
                if schema is None or schema.name not in IMAGE_SCHEMAS:
                    continue
                entry = topics.get(channel.topic)
                if entry is None:
                    entry = topics[channel.topic] = _Topic(channel.topic, schema.name, channel.message_encoding,
                                                           dict(channel.metadata or {}))
                entry.times.append(int(message.log_time))
        except (McapError, ValueError, OSError, EOFError) as exc:
            raise DriveError(f"cannot read MCAP {self.path}: {exc} (corrupt or truncated?)") from exc
        finally:
            handle.close()
        cameras = [t for t in topics if t.rsplit("/", 1)[-1] not in COMPANIONS]
        if not cameras:
            raise DriveError(f"no foxglove.CompressedImage / foxglove.RawImage topics in {self.path}")
        self._topics = topics
        self._camera_topic: Dict[str, str] = {}
        infos = []
        for topic in cameras:
            name = topics[topic].metadata.get(CAMERA_METADATA_KEY) or safe_camera_name(
                topic.strip("/").removesuffix("/image") or topic)
            if name in self._camera_topic:
                name = safe_camera_name(topic.strip("/"))
            first = self._decode(topic, 0)
            intrinsics = None
            if INTRINSICS_METADATA_KEY in topics[topic].metadata:
                try:
                    intrinsics = Intrinsics.from_dict(json.loads(topics[topic].metadata[INTRINSICS_METADATA_KEY]))
                except (ValueError, DriveError) as exc:
                    raise DriveError(f"{self.path}: bad intrinsics metadata on {topic}: {exc}") from exc
            infos.append(CameraInfo(name, int(first.shape[1]), int(first.shape[0]), intrinsics))
            self._camera_topic[name] = topic
        times = topics[cameras[0]].times
        deltas = [b - a for a, b in zip(times, times[1:]) if b > a]
        rate = fps or (1e9 / statistics.median(deltas) if deltas else DEFAULT_MCAP_FPS)
        self.info = DriveInfo(name=self.path.stem, fps=rate, cameras=tuple(infos), kind="mcap",
                              path=str(self.path.resolve()), extra={"topics": dict(self._camera_topic)})

    # -- message access -------------------------------------------------------------------------
    def _iter_topic(self, topic: str, start: int = 0) -> Iterator[Tuple[int, np.ndarray]]:
        entry = self._topics[topic]
        if start >= len(entry.times):
            return
        handle, reader = _open_reader(self.path)
        try:
            index = start
            for _schema, _channel, message in reader.iter_messages(topics=[topic], starting_at=entry.times[start],
                                                                   log_time_order=True):
                if index >= len(entry.times):
                    break
                if message.log_time < entry.times[index]:
                    continue  # an earlier message sharing the start time
                yield index, self._decode_payload(entry, index, message.data)
                index += 1
        finally:
            handle.close()

    def _decode_payload(self, entry: _Topic, index: int, data: bytes) -> np.ndarray:
        try:
            return decode_image_message(entry.schema, entry.encoding, data)[0]
        except MessageError as exc:
            raise DriveError(f"{self.path}: message {index} on {entry.topic}: {exc}") from exc

    def _decode(self, topic: str, index: int) -> np.ndarray:
        entry = self._topics[topic]
        if not 0 <= index < len(entry.times):
            raise IndexError(f"message {index} out of range for {len(entry.times)} messages on {topic}")
        # Messages sharing a log time: skip the ones before ours.
        skip = index - entry.times.index(entry.times[index])
        handle, reader = _open_reader(self.path)
        try:
            for _schema, _channel, message in reader.iter_messages(topics=[topic], starting_at=entry.times[index],
                                                                   ending_before=entry.times[index] + 1):
                if skip == 0:
                    return self._decode_payload(entry, index, message.data)
                skip -= 1
        finally:
            handle.close()
        raise DriveError(f"{self.path}: message {index} on {topic} not found again (file changed?)")

    def _companion(self, camera: str, kind: str) -> Optional[str]:
        topic = f"{self._camera_topic[self.camera(camera).name]}/{kind}"
        return topic if topic in self._topics else None

    # -- Drive interface ------------------------------------------------------------------------
    def topic(self, camera: str) -> str:
        """The MCAP topic of ``camera``."""
        return self._camera_topic[self.camera(camera).name]

    def frame_names(self, camera: str) -> List[str]:
        return [f"{i:06d}" for i in range(self.frame_count(camera))]

    def frame_count(self, camera: str) -> int:
        return len(self._topics[self.topic(camera)].times)

    def timestamps_ns(self, camera: str) -> Optional[List[int]]:
        return list(self._topics[self.topic(camera)].times)

    def read_frame(self, camera: str, index: int) -> np.ndarray:
        return check_image(self._decode(self.topic(camera), index), self.camera(camera), f"frame {index}")

    def iter_frames(self, camera: str, start: int = 0):
        info = self.camera(camera)
        for index, image in self._iter_topic(self.topic(camera), start):
            yield index, f"{index:06d}", check_image(image, info, f"frame {index} on {self.topic(camera)}")

    def has(self, layer: str, camera: str) -> bool:
        super().has(layer, camera)
        if layer not in ("gt", "mask"):
            return False
        topic = self._companion(camera, layer)
        return topic is not None and len(self._topics[topic].times) == self.frame_count(camera)

    def read_gt(self, camera: str, index: int) -> Optional[np.ndarray]:
        if not self.has("gt", camera):
            return None
        return check_image(self._decode(self._companion(camera, "gt"), index), self.camera(camera), f"gt {index}")

    def read_mask(self, camera: str, index: int) -> Optional[np.ndarray]:
        if not self.has("mask", camera):
            return None
        image = check_image(self._decode(self._companion(camera, "mask"), index), self.camera(camera), f"mask {index}")
        return image[:, :, 0].astype(np.float32) / 255.0


# -- writing ------------------------------------------------------------------------------------


def _times(drive: Drive, camera: str) -> List[int]:
    stamps = drive.timestamps_ns(camera)
    if stamps is not None:
        return stamps
    return [round(i * 1e9 / drive.info.fps) for i in range(drive.frame_count(camera))]


def write_mcap(drive: Drive, path: PathLike, enhanced: Optional[Dict[str, Callable[[], Iterable[np.ndarray]]]] = None,
               include_inputs: bool = True, progress: bool = False) -> Path:
    """Write ``drive`` (and optional enhanced frames) to an MCAP file at ``path``, atomically.

    enhanced: camera name -> a callable returning that camera's enhanced frames (uint8
        ``[H, W, 3]``, in order); they become ``<camera topic>/enhanced``.
    include_inputs: write the drive's own frames (with gt/mask companions). For an MCAP drive its
        original file is copied message by message instead, so nothing of it is lost.
    """
    from mcap.writer import Writer
    from tqdm import tqdm

    enhanced = enhanced or {}
    for name in enhanced:
        drive.camera(name)
    path = Path(path)
    bar = tqdm(unit="msg", desc="write mcap", disable=not progress)
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        writer = Writer(handle)
        writer.start(profile="", library="simharmon")
        schema_id = writer.register_schema(COMPRESSED_IMAGE, "jsonschema",
                                           json.dumps(JSON_SCHEMAS[COMPRESSED_IMAGE]).encode("utf-8"))
        is_mcap = isinstance(drive, McapDrive)
        if include_inputs and is_mcap:
            _copy_mcap(drive.path, writer, bar)
        topics = {name: (drive.topic(name) if is_mcap else f"/{name}/image") for name in drive.cameras}

        def channel(camera: str, topic: str) -> int:
            metadata = {CAMERA_METADATA_KEY: camera}
            intrinsics = drive.camera(camera).intrinsics
            if intrinsics is not None:
                metadata[INTRINSICS_METADATA_KEY] = json.dumps(intrinsics.to_dict())
            return writer.register_channel(topic, "json", schema_id, metadata)

        def emit(channel_id: int, stamps: List[int], images: Iterable[np.ndarray], camera: str) -> None:
            for sequence, (stamp, image) in enumerate(zip(stamps, images)):
                writer.add_message(channel_id, stamp, encode_compressed_image_json(image, stamp, camera), stamp, sequence)
                bar.update(1)

        for name in drive.cameras:
            stamps = _times(drive, name)
            if include_inputs and not is_mcap:
                emit(channel(name, topics[name]), stamps, (img for _, _, img in drive.iter_frames(name)), name)
                count = drive.frame_count(name)
                if drive.has("gt", name):
                    emit(channel(name, topics[name] + "/gt"), stamps, (drive.read_gt(name, i) for i in range(count)), name)
                if drive.has("mask", name):
                    masks = (np.floor(drive.read_mask(name, i).astype(np.float64) * 255 + 0.5).astype(np.uint8)
                             for i in range(count))
                    emit(channel(name, topics[name] + "/mask"), stamps, masks, name)
            if name in enhanced:
                emit(channel(name, topics[name] + "/enhanced"), stamps, enhanced[name](), name)
        writer.finish()
    bar.close()
    return path


def _copy_mcap(source: Path, writer, bar) -> None:
    """Copy every schema, channel and message of ``source`` into ``writer``."""
    schema_ids: Dict[int, int] = {}
    channel_ids: Dict[int, int] = {}
    handle, reader = _open_reader(source)
    try:
        for schema, channel, message in reader.iter_messages(log_time_order=True):
            if schema is not None and schema.id not in schema_ids:
                schema_ids[schema.id] = writer.register_schema(schema.name, schema.encoding, schema.data)
            if channel.id not in channel_ids:
                channel_ids[channel.id] = writer.register_channel(
                    channel.topic, channel.message_encoding, schema_ids.get(channel.schema_id, 0),
                    dict(channel.metadata or {}))
            writer.add_message(channel_ids[channel.id], message.log_time, message.data, message.publish_time,
                               message.sequence)
            bar.update(1)
    finally:
        handle.close()
