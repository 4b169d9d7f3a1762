"""Drives from MCAP logs: Foxglove (JSON / protobuf) and ROS 2 (``ros2msg`` + CDR) files, and rosbag2 folders.

Image topics (``foxglove.CompressedImage`` / ``RawImage``, ``sensor_msgs/msg/Image`` /
``CompressedImage``, ``foxglove_msgs/msg/RawImage`` / ``CompressedImage``) are cameras or their
companions by the naming rules of ``simharmon.io.log_topics``; camera models come from
``sensor_msgs/msg/CameraInfo``, ``foxglove.CameraCalibration`` and
``foxglove_msgs/msg/CameraCalibration``; poses from ``tf2_msgs/msg/TFMessage`` (``tf_tree``).

Time: a frame's time is its header stamp (a topic whose stamps are all zero uses log times).
Frames are taken in log order while their stamps increase; a message whose stamp is not after the
previous frame's (out of order, or a duplicate) is skipped and reported in :attr:`notes`, never
reordered. Companions (masks, ground truth, depth) are paired with frames by identical stamps.
Messages are read back through the file index when asked for (nothing is held in memory).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from .drive import CameraInfo, Drive, DriveError, DriveInfo, Intrinsics, check_image
from .foxglove import SCHEMAS as FOXGLOVE_SCHEMAS
from .foxglove import FoxgloveCodec
from .image_pixels import DEPTH_ENCODINGS, MessageError, fields_to_depth, fields_to_mask, fields_to_rgb, is_compressed
from .log_topics import (
    COMPANION_KINDS,
    LogSelection,
    calibration_candidates,
    camera_name,
    companion_candidates,
    is_reserved_topic,
    split_topic,
)
from .mcap_log import LogChannel, McapLog, MessageRef
from .ros2 import CALIBRATION_TYPES, IMAGE_TYPES, TF_TYPE, Ros2Codec, intrinsics_values, normalize_type
from .rosbag2 import rosbag2_files
from .tf_tree import PoseError, TransformTree

__all__ = ["McapDrive", "codec_for", "CAMERA_METADATA_KEY", "INTRINSICS_METADATA_KEY", "SUPPORTED_TYPES"]

CAMERA_METADATA_KEY = "simharmon.camera"
INTRINSICS_METADATA_KEY = "simharmon.intrinsics"
DEFAULT_MCAP_FPS = 30.0
SUPPORTED_TYPES = FOXGLOVE_SCHEMAS + IMAGE_TYPES + CALIBRATION_TYPES + (TF_TYPE,)
PathLike = Union[str, Path]
Codec = Union[FoxgloveCodec, Ros2Codec]


def codec_for(channel: LogChannel) -> Optional[Codec]:
    """The codec of a channel whose schema is one this module reads, else None (MessageError if unreadable)."""
    schema = channel.schema
    if schema is None:
        return None
    if schema.name in FOXGLOVE_SCHEMAS:
        return FoxgloveCodec(schema.name, channel.message_encoding)
    if normalize_type(schema.name) in IMAGE_TYPES + CALIBRATION_TYPES + (TF_TYPE,):
        return Ros2Codec(schema, channel.message_encoding)
    return None


@dataclass
class _Track:
    """The messages of one image topic, in log order: where each is, its header stamp and frame_id."""

    topic: str
    codec: Codec
    refs: List[MessageRef] = field(default_factory=list)
    stamps: List[int] = field(default_factory=list)
    frame_ids: List[str] = field(default_factory=list)
    first: Optional[Dict[str, Any]] = None  # the first message's fields

    def keys(self) -> List[int]:
        """Header stamps, or log times when the topic never sets its stamps."""
        return self.stamps if any(self.stamps) else [r.log_time for r in self.refs]


@dataclass
class _Camera:
    topic: str
    track: _Track
    frames: List[int]  # indices into the track of the frames kept
    companions: Dict[str, Tuple[str, List[MessageRef]]] = field(default_factory=dict)
    poses: Optional[List[np.ndarray]] = None


class McapDrive(Drive):
    """A drive read from an MCAP file or a rosbag2 folder (see the module docstring).

    selection: camera topics and mask topics chosen by the user (default: discover).
    """

    def __init__(self, path: PathLike, fps: Optional[float] = None, selection: Optional[LogSelection] = None):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"MCAP log not found: {self.path}")
        selection = selection or LogSelection()
        files = rosbag2_files(self.path) if self.path.is_dir() else [self.path]
        self.log = McapLog(files)
        self._notes: List[str] = []
        try:
            self._open(fps, selection)
        except BaseException:
            self.log.close()
            raise

    # -- reading the log once -------------------------------------------------------------------
    def _fields(self, codec: Codec, topic: str, ref: MessageRef, data: bytes) -> Dict[str, Any]:
        try:
            return codec.fields(data)
        except MessageError as exc:
            raise DriveError(f"{self.log.paths[ref.file]}: message at log time {ref.log_time} on {topic}: {exc}") from exc

    def _scan(self) -> Tuple[Dict[str, _Track], Dict[str, Dict[str, Any]], TransformTree]:
        codecs: Dict[str, Codec] = {}
        for topic, channel in self.log.channels.items():
            try:
                codec = codec_for(channel)
            except MessageError as exc:
                self._notes.append(f"topic {topic} ({channel.schema_name}) is not read: {exc}")
                continue
            if codec is not None:
                codecs[topic] = codec
        tracks: Dict[str, _Track] = {}
        calibrations: Dict[str, Dict[str, Any]] = {}
        tree = TransformTree()
        for ref, channel, data in self.log.iter_messages(codecs):
            codec = codecs[channel.topic]
            fields = self._fields(codec, channel.topic, ref, data)
            if codec.kind == "image":
                track = tracks.get(channel.topic) or tracks.setdefault(channel.topic, _Track(channel.topic, codec))
                if track.first is None:
                    track.first = fields
                track.refs.append(ref)
                track.stamps.append(fields["stamp"])
                track.frame_ids.append(fields["frame_id"])
            elif codec.kind == "calibration":
                if channel.topic not in calibrations:
                    calibrations[channel.topic] = fields
            else:
                static = channel.topic.rstrip("/").endswith("tf_static")
                for t in fields["transforms"]:
                    tree.add(t["parent"], t["child"], t["stamp"], t["translation"], t["rotation"], static)
        for topic, codec in codecs.items():
            if codec.kind == "image" and topic not in tracks:
                self._notes.append(f"image topic {topic} has no messages")
        self._codecs = codecs
        self._notes.extend(tree.conflicts)
        return tracks, calibrations, tree

    def _first_image(self, track: _Track, what: str = "camera") -> np.ndarray:
        try:
            if what == "depth":
                return fields_to_depth(track.first)
            return fields_to_rgb(track.first)
        except MessageError as exc:
            raise DriveError(f"{self.path}: topic {track.topic}: {exc}") from exc

    def _choose_cameras(self, tracks: Dict[str, _Track], selection: LogSelection) -> List[str]:
        if selection.topics:
            for topic in selection.topics:
                if topic in tracks:
                    continue
                channel = self.log.channels.get(topic)
                if channel is None:
                    raise DriveError(f"no topic {topic} in {self.path}; image topics: {', '.join(tracks) or 'none'}")
                codec = self._codecs.get(topic)
                if codec is None or codec.kind != "image":
                    raise DriveError(f"topic {topic} of {self.path} carries {channel.schema_name or 'schemaless'} "
                                     f"messages, not images")
                raise DriveError(f"topic {topic} of {self.path} has no messages")
            return list(selection.topics)
        masks = set(selection.mask_map(None).values())
        cameras = []
        for topic, track in sorted(tracks.items()):
            namespace_copy = topic.endswith("/compressed") and topic[: -len("/compressed")] in tracks
            if is_reserved_topic(topic) or topic in masks or namespace_copy:
                continue
            if not is_compressed(track.first) and track.first.get("encoding") in DEPTH_ENCODINGS:
                self._notes.append(f"topic {topic} holds depth ({track.first['encoding']}), not a camera: skipped")
                continue
            cameras.append(topic)
        if not cameras:
            found = ", ".join(f"{t} ({c.schema_name or 'schemaless'})" for t, c in self.log.channels.items()) or "none"
            raise DriveError(f"no camera image topics in {self.path} (readable image types: "
                             f"{', '.join(FOXGLOVE_SCHEMAS[:2] + IMAGE_TYPES)}); topics: {found}")
        return cameras

    def _frames(self, track: _Track) -> List[int]:
        """Indices of the messages kept as frames: stamps strictly increasing in log order."""
        keys, kept, skipped = track.keys(), [], []
        if track.stamps and not any(track.stamps):
            self._notes.append(f"topic {track.topic}: header stamps are all zero, so frames are timed by log time")
        for index, key in enumerate(keys):
            if kept and key <= keys[kept[-1]]:
                reason = "duplicate" if key == keys[kept[-1]] else "out of order"
                skipped.append(f"message {index} ({reason}: stamp {key} after {keys[kept[-1]]})")
            else:
                kept.append(index)
        if skipped:
            shown = "; ".join(skipped[:5]) + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
            self._notes.append(f"topic {track.topic}: skipped {len(skipped)} of {len(keys)} messages whose header "
                               f"stamp is not after the previous frame's: {shown}")
        self._skipped[track.topic] = len(skipped)
        return kept

    def _companion(self, camera: _Camera, kind: str, topic: str, tracks: Dict[str, _Track], explicit: bool,
                   size: Tuple[int, int]) -> None:
        def refuse(message: str) -> None:
            if explicit:
                raise DriveError(f"{self.path}: {message}")
            self._notes.append(f"{message}: not used")

        if topic not in tracks:
            return refuse(f"{kind} topic {topic} of camera {camera.topic} has no image messages")
        track = tracks[topic]
        try:
            first = fields_to_depth(track.first) if kind == "depth" else fields_to_rgb(track.first)
        except MessageError as exc:
            return refuse(f"{kind} topic {topic} of camera {camera.topic}: {exc}")
        if first.shape[:2] != size:
            return refuse(f"{kind} topic {topic} is {first.shape[1]}x{first.shape[0]} but camera {camera.topic} is "
                          f"{size[1]}x{size[0]}")
        by_key: Dict[int, MessageRef] = {}
        for key, ref in zip(track.keys(), track.refs):
            by_key.setdefault(key, ref)
        keys = camera.track.keys()
        missing = [keys[i] for i in camera.frames if keys[i] not in by_key]
        if missing:
            return refuse(f"{kind} topic {topic} has no message stamped {missing[0]} (one of {len(missing)} frames "
                          f"of {camera.topic} without a {kind})")
        camera.companions[kind] = (topic, [by_key[keys[i]] for i in camera.frames])

    def _intrinsics(self, camera: _Camera, calibrations: Dict[str, Dict[str, Any]], size: Tuple[int, int]
                    ) -> Optional[Intrinsics]:
        metadata = self.log.channels[camera.topic].metadata
        if INTRINSICS_METADATA_KEY in metadata:  # written by simharmon
            try:
                return Intrinsics.from_dict(json.loads(metadata[INTRINSICS_METADATA_KEY]))
            except (ValueError, DriveError) as exc:
                raise DriveError(f"{self.path}: bad intrinsics metadata on {camera.topic}: {exc}") from exc
        topic = next((t for t in calibration_candidates(camera.topic) if t in calibrations), None)
        if topic is None:
            frame_id = camera.track.frame_ids[camera.frames[0]]
            matches = [t for t, f in calibrations.items() if frame_id and f["frame_id"] == frame_id]
            topic = matches[0] if len(matches) == 1 else None
        if topic is None:
            return None
        fields = calibrations[topic]
        if (fields["height"], fields["width"]) != size:
            raise DriveError(f"{self.path}: the calibration on {topic} is for {fields['width']}x{fields['height']} "
                             f"images, but the images on {camera.topic} are {size[1]}x{size[0]}")
        try:
            values = intrinsics_values(fields, rectified="rect" in split_topic(camera.topic)[1])
            if values is None:
                self._notes.append(f"calibration on {topic} is all zeros (uncalibrated camera): no intrinsics")
                return None
            intrinsics = Intrinsics(*values)
        except (MessageError, DriveError) as exc:
            raise DriveError(f"{self.path}: calibration on {topic}: {exc}") from exc
        self._calibration_topics[camera.topic] = topic
        return intrinsics

    def _poses(self, camera: _Camera, tree: TransformTree) -> None:
        if not tree.has_transforms:
            return
        try:
            keys = camera.track.keys()
            camera.poses = [tree.pose(camera.track.frame_ids[i], keys[i]) for i in camera.frames]
        except PoseError as exc:
            self._notes.append(f"camera {camera.topic}: no poses from tf ({exc})")

    def _open(self, fps: Optional[float], selection: LogSelection) -> None:
        tracks, calibrations, tree = self._scan()
        self._skipped: Dict[str, int] = {}
        self._calibration_topics: Dict[str, str] = {}
        topics = self._choose_cameras(tracks, selection)
        try:
            masks = selection.mask_map(topics)
        except ValueError as exc:
            raise DriveError(str(exc)) from exc
        self._cameras: Dict[str, _Camera] = {}
        infos = []
        for topic in topics:
            track = tracks[topic]
            camera = _Camera(topic, track, self._frames(track))
            first = self._first_image(track)
            size = first.shape[:2]
            for kind in COMPANION_KINDS:
                explicit = kind == "mask" and topic in masks
                candidates = [masks[topic]] if explicit else companion_candidates(topic, kind)
                found = next((t for t in candidates if explicit or t in tracks), None)
                if found is not None:
                    self._companion(camera, kind, found, tracks, explicit, size)
            self._poses(camera, tree)
            intrinsics = self._intrinsics(camera, calibrations, size)
            name = self.log.channels[topic].metadata.get(CAMERA_METADATA_KEY) or camera_name(topic)
            if name in self._cameras:
                name = camera_name(topic.replace("/", "_"))
            if name in self._cameras:
                raise DriveError(f"{self.path}: cameras {self._cameras[name].topic} and {topic} share the name {name}")
            self._cameras[name] = camera
            infos.append(CameraInfo(name, int(size[1]), int(size[0]), intrinsics, label=topic))
        keys = tracks[topics[0]].keys()
        kept = [keys[i] for i in self._cameras[infos[0].name].frames]
        deltas = [b - a for a, b in zip(kept, kept[1:])]
        rate = fps or (1e9 / statistics.median(deltas) if deltas else DEFAULT_MCAP_FPS)
        kind = "rosbag2" if self.path.is_dir() else "mcap"
        extra = {"topics": {n: c.topic for n, c in self._cameras.items()},
                 "companions": {n: {k: t for k, (t, _) in c.companions.items()} for n, c in self._cameras.items()},
                 "calibration_topics": dict(self._calibration_topics), "skipped": dict(self._skipped),
                 "profile": self.log.profile}
        self.info = DriveInfo(name=self.path.stem if kind == "mcap" else self.path.name, fps=rate,
                              cameras=tuple(infos), kind=kind, path=str(self.path.resolve()), extra=extra)

    # -- Drive interface ------------------------------------------------------------------------
    @property
    def notes(self) -> List[str]:
        return list(self._notes)

    def _camera(self, camera: str) -> _Camera:
        return self._cameras[self.camera(camera).name]

    def topic(self, camera: str) -> str:
        """The image topic of ``camera``."""
        return self._camera(camera).topic

    def codec(self, camera: str) -> Codec:
        """The codec of ``camera``'s image topic."""
        return self._camera(camera).track.codec

    def frame_refs(self, camera: str) -> List[MessageRef]:
        """Where each frame of ``camera`` is in the log, in frame order."""
        entry = self._camera(camera)
        return [entry.track.refs[i] for i in entry.frames]

    def frame_names(self, camera: str) -> List[str]:
        return [f"{i:06d}" for i in range(self.frame_count(camera))]

    def frame_count(self, camera: str) -> int:
        return len(self._camera(camera).frames)

    def timestamps_ns(self, camera: str) -> Optional[List[int]]:
        entry = self._camera(camera)
        keys = entry.track.keys()
        return [keys[i] for i in entry.frames]

    def _read(self, topic: str, codec: Codec, ref: MessageRef, what: str) -> np.ndarray:
        fields = self._fields(codec, topic, ref, self.log.read(topic, ref))
        try:
            if what == "depth":
                return fields_to_depth(fields)
            return fields_to_mask(fields) if what == "mask" else fields_to_rgb(fields)
        except MessageError as exc:
            raise DriveError(f"{self.path}: message at log time {ref.log_time} on {topic}: {exc}") from exc

    def read_frame(self, camera: str, index: int) -> np.ndarray:
        self._check_index(camera, index)
        entry = self._camera(camera)
        ref = entry.track.refs[entry.frames[index]]
        return check_image(self._read(entry.topic, entry.track.codec, ref, "frame"), self.camera(camera),
                           f"frame {index} on {entry.topic}")

    def iter_frames(self, camera: str, start: int = 0):
        info, entry = self.camera(camera), self._camera(camera)
        if not 0 <= start <= len(entry.frames):
            raise IndexError(f"start {start} out of range for {len(entry.frames)} frames of camera {camera!r}")
        refs = self.frame_refs(camera)[start:]
        for index, (ref, data) in enumerate(zip(refs, self.log.read_many(entry.topic, refs)), start):
            fields = self._fields(entry.track.codec, entry.topic, ref, data)
            try:
                image = fields_to_rgb(fields)
            except MessageError as exc:
                raise DriveError(f"{self.path}: message at log time {ref.log_time} on {entry.topic}: {exc}") from exc
            yield index, f"{index:06d}", check_image(image, info, f"frame {index} on {entry.topic}")

    def has(self, layer: str, camera: str) -> bool:
        super().has(layer, camera)
        entry = self._camera(camera)
        if layer == "pose":
            return entry.poses is not None
        return layer in entry.companions

    def _read_companion(self, camera: str, index: int, kind: str) -> Optional[np.ndarray]:
        entry = self._camera(camera)
        if kind not in entry.companions:
            return None
        self._check_index(camera, index)
        topic, refs = entry.companions[kind]
        return self._read(topic, self._codecs[topic], refs[index], kind)

    def companion_topic(self, camera: str, kind: str) -> Optional[str]:
        """The topic of ``camera``'s ``kind`` companion (``mask``, ``gt``, ``depth``), or None."""
        entry = self._camera(camera).companions.get(kind)
        return None if entry is None else entry[0]

    def read_gt(self, camera: str, index: int) -> Optional[np.ndarray]:
        image = self._read_companion(camera, index, "gt")
        return None if image is None else check_image(image, self.camera(camera), f"gt {index}")

    def read_mask(self, camera: str, index: int) -> Optional[np.ndarray]:
        return self._read_companion(camera, index, "mask")

    def read_depth(self, camera: str, index: int) -> Optional[np.ndarray]:
        return self._read_companion(camera, index, "depth")

    def read_pose(self, camera: str, index: int) -> Optional[np.ndarray]:
        entry = self._camera(camera)
        if entry.poses is None:
            return None
        self._check_index(camera, index)
        return entry.poses[index].copy()

    def close(self) -> None:
        self.log.close()
