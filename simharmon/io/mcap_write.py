"""Write a drive and its enhanced frames to one MCAP file, atomically (``write_mcap``).

* A log drive (``McapDrive``: an MCAP file or a rosbag2 folder) is copied whole, every schema,
  channel, message, metadata record and attachment, in log-time order; each enhanced frame is
  added on ``<camera topic>/enhanced`` as the *same message type and encoding* as its input
  message, with the input's header (stamp, frame_id), log time and publish time: a ROS 2 bag gives
  a ROS 2 MCAP (profile ``ros2``), a Foxglove log Foxglove messages (protobuf through the
  Foxglove SDK, or JSON). Pixels keep the message's encoding (``simharmon.io.image_pixels``).
* Any other drive becomes ``/<camera>/image`` topics (``foxglove.CompressedImage``, PNG, JSON
  encoding, lossless) with ``/gt`` and ``/mask`` companions when it has them and
  ``/<camera>/image/enhanced`` for enhanced frames; header stamps are the drive's timestamps
  (else ``index / fps``), and channel metadata carry the camera name and intrinsics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
from mcap.writer import Writer
from tqdm import tqdm

from .atomic import atomic_path
from .drive import Drive, DriveError
from .drive_mcap import CAMERA_METADATA_KEY, INTRINSICS_METADATA_KEY, McapDrive
from .foxglove import COMPRESSED_IMAGE, JSON_SCHEMAS, encode_compressed_image_json
from .image_pixels import MessageError, replace_pixels
from .log_topics import ENHANCED_SUFFIX

__all__ = ["write_mcap", "enhanced_topic"]

PathLike = Union[str, Path]
Frames = Dict[str, Callable[[], Iterable[np.ndarray]]]


def enhanced_topic(topic: str) -> str:
    """Where the enhanced frames of image topic ``topic`` go."""
    return f"{topic.rstrip('/')}/{ENHANCED_SUFFIX}"


def write_mcap(drive: Drive, path: PathLike, enhanced: Optional[Frames] = None, include_inputs: bool = True,
               progress: bool = False) -> Path:
    """Write ``drive`` (and optional enhanced frames) to an MCAP file at ``path``, atomically.

    enhanced: camera name -> a callable returning that camera's enhanced frames (uint8
        ``[H, W, 3]``, frames 0, 1, ... of the camera; fewer than the camera has is fine).
    include_inputs: for a drive that is not a log, also write its own frames (with gt / mask
        companions). A log drive is always copied whole.
    """
    enhanced = enhanced or {}
    for name in enhanced:
        drive.camera(name)
    path = Path(path)
    bar = tqdm(unit="msg", desc="write mcap", disable=not progress)
    try:
        with atomic_path(path) as temp, open(temp, "wb") as handle:
            writer = Writer(handle)
            if isinstance(drive, McapDrive):
                writer.start(profile=drive.log.profile, library="simharmon")
                _write_log(drive, writer, enhanced, bar)
            else:
                writer.start(profile="", library="simharmon")
                _write_drive(drive, writer, enhanced, include_inputs, bar)
            writer.finish()
    finally:
        bar.close()
    return path


def _write_log(drive: McapDrive, writer: Writer, enhanced: Frames, bar) -> None:
    """Copy the log and add each enhanced frame right after its input message."""
    outputs: Dict[str, Tuple[str, Dict, Iterator[np.ndarray]]] = {}
    for name in enhanced:
        topic = drive.topic(name)
        if enhanced_topic(topic) in drive.log.channels:
            raise DriveError(f"{drive.path} already has a topic {enhanced_topic(topic)}; replay the original log")
        outputs[topic] = (name, {ref: i for i, ref in enumerate(drive.frame_refs(name))}, iter(enhanced[name]()))
    schemas: Dict[Tuple[str, str, bytes], int] = {}
    channels: Dict[str, int] = {}

    def channel_id(topic: str, source: str) -> int:
        if topic not in channels:
            channel = drive.log.channels[source]
            schema_id = 0
            if channel.schema is not None:
                key = (channel.schema.name, channel.schema.encoding, bytes(channel.schema.data))
                if key not in schemas:
                    schemas[key] = writer.register_schema(*key)
                schema_id = schemas[key]
            metadata = dict(channel.metadata)
            if topic != source:
                metadata[CAMERA_METADATA_KEY] = outputs[source][0]
            channels[topic] = writer.register_channel(topic, channel.message_encoding, schema_id, metadata)
        return channels[topic]

    done = set()
    for ref, channel, data in drive.log.iter_messages():
        writer.add_message(channel_id(channel.topic, channel.topic), ref.log_time, data, ref.publish_time,
                           ref.sequence)
        bar.update(1)
        output = outputs.get(channel.topic)
        if output is None or output[0] in done:
            continue
        name, index_of, frames = output
        index = index_of.get(ref)
        if index is None:
            continue  # a skipped (out-of-order or duplicate) message
        image = next(frames, None)
        if image is None:
            done.add(name)
            continue
        codec = drive.codec(name)
        try:
            payload = codec.encode(replace_pixels(codec.fields(data), image))
        except MessageError as exc:
            raise DriveError(f"cannot write enhanced frame {index} of {channel.topic}: {exc}") from exc
        writer.add_message(channel_id(enhanced_topic(channel.topic), channel.topic), ref.log_time, payload,
                           ref.publish_time, index)
        bar.update(1)
    for name, data in drive.log.metadata():
        writer.add_metadata(name, data)
    for attachment in drive.log.attachments():
        writer.add_attachment(attachment.create_time, attachment.log_time, attachment.name, attachment.media_type,
                              attachment.data)


def _times(drive: Drive, camera: str) -> List[int]:
    stamps = drive.timestamps_ns(camera)
    if stamps is not None:
        return stamps
    return [round(i * 1e9 / drive.info.fps) for i in range(drive.frame_count(camera))]


def _write_drive(drive: Drive, writer: Writer, enhanced: Frames, include_inputs: bool, bar) -> None:
    schema_id = writer.register_schema(COMPRESSED_IMAGE, "jsonschema",
                                       json.dumps(JSON_SCHEMAS[COMPRESSED_IMAGE]).encode("utf-8"))

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
        topic, stamps, count = f"/{name}/image", _times(drive, name), drive.frame_count(name)
        if include_inputs:
            emit(channel(name, topic), stamps, (img for _, _, img in drive.iter_frames(name)), name)
            if drive.has("gt", name):
                emit(channel(name, topic + "/gt"), stamps, (drive.read_gt(name, i) for i in range(count)), name)
            if drive.has("mask", name):
                masks = (np.floor(drive.read_mask(name, i).astype(np.float64) * 255 + 0.5).astype(np.uint8)
                         for i in range(count))
                emit(channel(name, topic + "/mask"), stamps, masks, name)
        if name in enhanced:
            emit(channel(name, enhanced_topic(topic)), stamps, enhanced[name](), name)
