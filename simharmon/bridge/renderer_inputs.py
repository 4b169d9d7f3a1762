"""Protocol fields -> the enhancer's per-frame renderer inputs (docs/PROTOCOL.md §3.1, "Renderer inputs").

The wire carries what a renderer naturally has: a uint8 actor mask, float32 depth and backward
flow, ``[fx, fy, cx, cy]`` and an ABSOLUTE camera-to-world pose per frame. The stream options
(``StreamConfig.history_warp`` / ``region_latent`` / ``region_pixel``) take the conventions of
``simharmon.runtime.inputs.FrameInputs``: a float mask in [0, 1], a 3x3 K and the RELATIVE pose from
the current camera to the previous one. :class:`InputConverter` converts, passing only the fields
the enabled options use (others are ignored, as the protocol promises), and keeps each stream's
previous absolute pose to form the relative one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Hashable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from ..config import StreamConfig

if TYPE_CHECKING:  # engines.py imports this module
    from .engines import FrameAux

__all__ = ["Converted", "InputConverter", "intrinsics_matrix", "relative_pose"]

Inputs = Dict[str, Optional[torch.Tensor]]


class Converted(NamedTuple):
    """One batch's conversion.

    inputs: stream key -> ``StreamingEnhancer.step`` keyword inputs; None when no option uses any.
    poses: stream key -> the frame's absolute pose (or None), for ``InputConverter.commit``.
    broken: depth-warp streams whose history must restart (a pose after a frame without one).
    """

    inputs: Optional[Dict[Hashable, Inputs]]
    poses: Dict[Hashable, Optional[Sequence[float]]]
    broken: List[Hashable]


def intrinsics_matrix(intrinsics: Sequence[float], device: torch.device | str = "cpu") -> torch.Tensor:
    """``(fx, fy, cx, cy)`` in pixels -> ``[1, 3, 3]`` float64 ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``."""
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    return torch.tensor([[[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]], dtype=torch.float64, device=device)


def relative_pose(previous: Sequence[float], current: Sequence[float]) -> np.ndarray:
    """Two camera-to-world poses (16 floats, 4x4 row-major) -> the current -> previous camera transform.

    A point ``X`` in the current camera's frame is ``current @ X`` in the world and
    ``inverse(previous) @ current @ X`` in the previous camera's frame; returns that ``[4, 4]``
    float64 matrix (computed as a linear solve, not an explicit inverse).
    """
    prev = np.asarray(previous, dtype=np.float64).reshape(4, 4)
    cur = np.asarray(current, dtype=np.float64).reshape(4, 4)
    return np.linalg.solve(prev, cur)


class InputConverter:
    """Per-stream conversion of :class:`~simharmon.bridge.engines.FrameAux` for ``stream``'s options.

    ``convert`` is side-effect free, so a refused batch can be converted again; ``commit`` records
    the absolute poses of the frames that were enhanced, ``remove`` forgets a stream (a reset gives
    the stream a new key, so its first frame after a reset has no previous pose). With
    ``history_warp="depth"``, a frame with a pose whose stream's last enhanced frame had none cannot
    be related to the history: ``convert`` lists it as broken and the engine restarts that history.
    """

    def __init__(self, stream: StreamConfig, device: torch.device | str):
        self.device = torch.device(device)
        self.use_mask = stream.uses_mask
        self.warp = stream.history_warp
        self.enabled = stream.needs_frame_inputs
        self._previous: Dict[Hashable, Sequence[float]] = {}
        self._stepped: set = set()  # keys with at least one committed frame

    @property
    def used(self) -> List[str]:
        """The protocol fields the enabled options read (the ``welcome`` reply's ``inputs``)."""
        fields = ["mask"] if self.use_mask else []
        fields += {"flow": ["flow"], "depth": ["depth", "intrinsics", "pose"]}.get(self.warp, [])
        return fields

    def convert(self, keys: Sequence[Hashable], aux: Optional[Mapping[Hashable, FrameAux]]) -> Converted:
        """Convert the extras of one batch (``keys``: its streams); nothing is recorded until ``commit``."""
        if not self.enabled:
            return Converted(None, {}, [])
        aux = aux or {}
        inputs: Dict[Hashable, Inputs] = {}
        poses: Dict[Hashable, Optional[Sequence[float]]] = {}
        for key in keys:
            inputs[key], poses[key] = self._one(key, aux.get(key))
        broken = [key for key, pose in poses.items()
                  if pose is not None and key in self._stepped and key not in self._previous]
        return Converted(inputs, poses, broken)

    def _one(self, key: Hashable, extra: Optional[FrameAux]) -> Tuple[Inputs, Optional[Sequence[float]]]:
        given: Inputs = {}
        if extra is None:
            return given, None
        if self.use_mask and extra.mask is not None:
            given["mask"] = torch.div(extra.mask, 255.0)  # uint8 -> float32 weight in [0, 1], one kernel
        if self.warp == "flow":
            given["flow"] = extra.flow  # [1, 2, H, W] float32 pixels, a view of the received buffer
            return given, None
        if self.warp != "depth":
            return given, None
        given["depth"] = extra.depth
        given["intrinsics"] = None if extra.intrinsics is None else intrinsics_matrix(extra.intrinsics, self.device)
        previous = self._previous.get(key)
        if previous is not None and extra.pose is not None:
            pose = relative_pose(previous, extra.pose)
            given["pose"] = torch.from_numpy(pose).unsqueeze(0).to(self.device)
        return given, extra.pose

    def commit(self, poses: Mapping[Hashable, Optional[Sequence[float]]]) -> None:
        """Record the absolute poses of enhanced frames (None: that frame had none, forget the last)."""
        for key, pose in poses.items():
            self._stepped.add(key)
            if pose is None:
                self._previous.pop(key, None)
            else:
                self._previous[key] = pose

    def remove(self, key: Hashable) -> None:
        """Forget a stream's previous pose (unknown keys are ignored)."""
        self._previous.pop(key, None)
        self._stepped.discard(key)
