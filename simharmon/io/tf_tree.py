"""A tf2-style transform tree from logged ``tf2_msgs/msg/TFMessage`` transforms: camera-to-world poses.

Each transform says where ``child`` is in ``parent`` at ``stamp`` (translation in metres, rotation
quaternion x y z w). Like tf2: every frame has one parent; frame names lose a leading ``/``;
transforms from ``/tf_static`` hold at all times; dynamic ones are interpolated between the two
samples around the asked time (linear translation, spherical rotation) and never extrapolated.
The world is the root of the camera's tree.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = ["PoseError", "TransformTree", "quaternion_matrix"]


class PoseError(LookupError):
    """A pose cannot be looked up: unknown frame, a gap in the tree, or a time outside the samples."""


def quaternion_matrix(q: Sequence[float]) -> np.ndarray:
    """Rotation matrix (float64 ``[3, 3]``) of the quaternion ``(x, y, z, w)`` (normalized first)."""
    x, y, z, w = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _slerp(q0: np.ndarray, q1: np.ndarray, ratio: float) -> np.ndarray:
    q0, q1 = q0 / np.linalg.norm(q0), q1 / np.linalg.norm(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # the shorter way round
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + ratio * (q1 - q0)
        return q / np.linalg.norm(q)
    angle = np.arccos(dot)
    return (np.sin((1 - ratio) * angle) * q0 + np.sin(ratio * angle) * q1) / np.sin(angle)


def _frame(name: str) -> str:
    return name[1:] if name.startswith("/") else name


@dataclass
class _Edge:
    parent: str
    static: bool
    stamps: List[int] = field(default_factory=list)
    samples: List[Tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


class TransformTree:
    """Collect transforms with :meth:`add`, then look up :meth:`pose` (child-to-root)."""

    def __init__(self):
        self._edges: Dict[str, _Edge] = {}
        self.conflicts: List[str] = []

    def add(self, parent: str, child: str, stamp: int, translation: Sequence[float], rotation: Sequence[float],
            static: bool = False) -> None:
        parent, child = _frame(parent), _frame(child)
        if not parent or not child or parent == child:
            self.conflicts.append(f"transform {parent!r} -> {child!r} ignored (empty or self-referencing frame)")
            return
        if not np.isfinite(translation).all() or not np.isfinite(rotation).all() or not np.linalg.norm(rotation):
            self.conflicts.append(f"transform {parent!r} -> {child!r} at {stamp} ignored (not finite)")
            return
        edge = self._edges.get(child)
        if edge is None:
            edge = self._edges[child] = _Edge(parent, static)
        elif edge.parent != parent:
            self.conflicts.append(f"frame {child!r} has two parents ({edge.parent!r}, {parent!r}); kept {edge.parent!r}")
            return
        sample = (np.asarray(translation, np.float64), np.asarray(rotation, np.float64))
        if edge.static or static:
            edge.static, edge.stamps, edge.samples = True, [0], [sample]  # the latest static transform holds
            return
        index = bisect.bisect_right(edge.stamps, stamp)
        edge.stamps.insert(index, stamp)
        edge.samples.insert(index, sample)

    @property
    def has_transforms(self) -> bool:
        return bool(self._edges)

    def root(self, frame: str) -> str:
        """The root of ``frame``'s tree (``frame`` itself when it has no parent)."""
        frame, seen = _frame(frame), set()
        while frame in self._edges:
            if frame in seen:
                raise PoseError(f"the transform tree has a loop through {frame!r}")
            seen.add(frame)
            frame = self._edges[frame].parent
        return frame

    def _local(self, child: str, stamp: int) -> np.ndarray:
        edge = self._edges[child]
        if edge.static:
            translation, rotation = edge.samples[0]
        else:
            index = bisect.bisect_left(edge.stamps, stamp)
            if index < len(edge.stamps) and edge.stamps[index] == stamp:
                translation, rotation = edge.samples[index]
            elif index == 0 or index == len(edge.stamps):
                raise PoseError(f"no transform {edge.parent!r} -> {child!r} around time {stamp} ns (samples from "
                                f"{edge.stamps[0]} to {edge.stamps[-1]}; tf does not extrapolate)")
            else:
                t0, t1 = edge.stamps[index - 1], edge.stamps[index]
                ratio = (stamp - t0) / (t1 - t0)
                (a, qa), (b, qb) = edge.samples[index - 1], edge.samples[index]
                translation, rotation = a + ratio * (b - a), _slerp(qa, qb, ratio)
        matrix = np.eye(4)
        matrix[:3, :3] = quaternion_matrix(rotation)
        matrix[:3, 3] = translation
        return matrix

    def pose(self, frame: str, stamp: int) -> np.ndarray:
        """``frame``-to-root transform at ``stamp`` (float64 ``[4, 4]``); PoseError if it cannot be formed."""
        frame = _frame(frame)
        if frame not in self._edges:
            raise PoseError(f"no transform has frame {frame!r} as its child")
        root = self.root(frame)
        matrix = np.eye(4)
        while frame != root:
            matrix = self._local(frame, stamp) @ matrix
            frame = self._edges[frame].parent
        return matrix
