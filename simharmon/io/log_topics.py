"""Which topics of a log are cameras, and which topics belong to a camera: the naming rules.

For a camera topic ``T`` with namespace ``N`` and image leaf ``L`` (``T`` minus a trailing
``compressed`` segment, then minus a trailing segment that starts with ``image``; for
``/cam_front/image_raw``: ``N = /cam_front``, ``L = image_raw``):

* companions (kind ``mask``, ``gt``, ``depth``): the first existing image topic of ``T/<kind>``,
  ``N/<kind>``, ``N/<kind>/L``; ``--mask-topic`` overrides the mask's;
* calibration: ``N/camera_info``, ``N/calibration``, ``T/camera_info``, ``T/calibration``, else
  the only calibration topic whose frame_id is the camera's;
* camera name (output folders): ``N`` made folder-safe (``cam_front``); the whole topic when two
  cameras would share a name.

A topic is never auto-discovered as a camera when one of its segments is ``mask``, ``gt``,
``depth`` or ``enhanced`` (companions and outputs), or when it is ``T/compressed`` of another
image topic ``T`` (image_transport's copy of the same frames).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .drive import safe_camera_name

__all__ = [
    "COMPANION_KINDS",
    "ENHANCED_SUFFIX",
    "RESERVED_SEGMENTS",
    "LogSelection",
    "split_topic",
    "is_reserved_topic",
    "camera_name",
    "companion_candidates",
    "calibration_candidates",
]

COMPANION_KINDS = ("mask", "gt", "depth")
ENHANCED_SUFFIX = "enhanced"
RESERVED_SEGMENTS = frozenset(COMPANION_KINDS + (ENHANCED_SUFFIX,))


def split_topic(topic: str) -> Tuple[str, str]:
    """``(namespace, image leaf)`` of an image topic (see the module docstring); the leaf may be empty."""
    parts = [p for p in topic.split("/") if p]
    if len(parts) > 1 and parts[-1] == "compressed":
        parts = parts[:-1]
    leaf = ""
    if len(parts) > 1 and parts[-1].startswith("image"):
        leaf = parts.pop()
    return "/" + "/".join(parts), leaf


def is_reserved_topic(topic: str) -> bool:
    """Whether a segment of ``topic`` is ``mask``, ``gt``, ``depth`` or ``enhanced``."""
    return any(part in RESERVED_SEGMENTS for part in topic.split("/"))


def camera_name(topic: str) -> str:
    """The folder-safe camera name of an image topic."""
    namespace, _ = split_topic(topic)
    return safe_camera_name(namespace.strip("/") or topic)


def companion_candidates(topic: str, kind: str) -> List[str]:
    """Topics that may hold ``kind`` (``mask``, ``gt``, ``depth``) for camera ``topic``, in order of preference."""
    namespace, leaf = split_topic(topic)
    base = namespace.rstrip("/")
    candidates = [f"{topic}/{kind}", f"{base}/{kind}"] + ([f"{base}/{kind}/{leaf}"] if leaf else [])
    return list(dict.fromkeys(c for c in candidates if c != topic))


def calibration_candidates(topic: str) -> List[str]:
    """Topics that may hold camera ``topic``'s calibration, in order of preference."""
    base = split_topic(topic)[0].rstrip("/")
    return list(dict.fromkeys([f"{base}/camera_info", f"{base}/calibration", f"{topic}/camera_info",
                               f"{topic}/calibration"]))


@dataclass(frozen=True)
class LogSelection:
    """Topic choices for a log: camera ``topics`` (empty = discover) and ``mask_topics``.

    mask_topics: ``"IMAGE_TOPIC=MASK_TOPIC"`` items, or one bare ``"MASK_TOPIC"`` when exactly one
        camera is replayed.
    """

    topics: Tuple[str, ...] = ()
    mask_topics: Tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "topics", tuple(dict.fromkeys(self.topics)))
        object.__setattr__(self, "mask_topics", tuple(self.mask_topics))
        for topic in self.topics:
            if not isinstance(topic, str) or not topic.strip("/"):
                raise ValueError(f"--topic must name a topic, got {topic!r}")
        self.mask_map(None)  # validates the items

    @property
    def empty(self) -> bool:
        return not self.topics and not self.mask_topics

    def mask_map(self, cameras: Optional[Sequence[str]]) -> Dict[str, str]:
        """Camera topic -> mask topic, given the camera topics (None: only validate the items)."""
        mapping: Dict[str, str] = {}
        bare: List[str] = []
        for item in self.mask_topics:
            image, separator, mask = str(item).partition("=")
            if separator:
                if not image.strip("/") or not mask.strip("/"):
                    raise ValueError(f"--mask-topic {item!r}: expected IMAGE_TOPIC=MASK_TOPIC")
                if image in mapping:
                    raise ValueError(f"--mask-topic names two masks for {image}")
                mapping[image] = mask
            elif image.strip("/"):
                bare.append(image)
            else:
                raise ValueError(f"--mask-topic {item!r} names no topic")
        if len(bare) > 1 or (bare and mapping):
            raise ValueError("give --mask-topic as IMAGE_TOPIC=MASK_TOPIC when there is more than one mask topic")
        if cameras is not None:
            for image in mapping:
                if image not in cameras:
                    raise ValueError(f"--mask-topic {image}=...: {image} is not a replayed camera topic "
                                     f"(cameras: {', '.join(cameras)})")
            if bare:
                if len(cameras) != 1:
                    raise ValueError(f"--mask-topic {bare[0]} without IMAGE_TOPIC= needs exactly one camera, "
                                     f"got {len(cameras)}: {', '.join(cameras)}")
                mapping[cameras[0]] = bare[0]
        return mapping
