"""Optical flow for the warping error: from the renderer's depth and poses, or from RAFT.

``flow_from_depth`` is the renderer's flow of a STATIC scene: every pixel of frame t is
unprojected with its depth (kornia), moved into camera t+1 by the relative pose, and projected
again. Pixels with no finite positive depth (sky) are treated as points at infinity: only the
rotation moves them. Moving actors are not modelled; a drive that has exact flow stores it.

``RaftFlow`` runs torchvision's RAFT-large with 12 refinement updates, from a LOCAL weights file
(built with weights=None, then ``load_state_dict``: nothing is ever downloaded). Frames are padded
to a multiple of 8 (and to at least 128, which torchvision's correlation pyramid insists on) by
edge replication before the network sees them, and the flow is cropped back.

Camera conventions: intrinsics K ``[3, 3]`` in pixels (pixel centres at integer coordinates);
poses are camera-to-world ``[4, 4]`` with OpenCV camera axes (x right, y down, z forward).
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple, Union

import numpy as np
import torch
from kornia.geometry.camera.perspective import project_points
from kornia.geometry.depth import depth_to_3d_v2
from kornia.geometry.linalg import compose_transformations, inverse_transformation, transform_points
from torchvision.models.optical_flow import raft_large

from ..models.checkpoints import CheckpointError, load_torch_file

__all__ = ["flow_from_depth", "depth_flow_pair", "RaftFlow", "RAFT_UPDATES"]

RAFT_UPDATES = 12
_MIN_SIDE = 128


def _as_tensor(array, name: str, shape: Tuple[int, ...]) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(array, dtype=np.float64))
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(tensor.shape)}")
    return tensor


def flow_from_depth(depth: np.ndarray, intrinsics: np.ndarray, pose_from: np.ndarray, pose_to: np.ndarray) -> np.ndarray:
    """Flow of a static scene from camera ``pose_from`` to ``pose_to``.

    depth: ``[H, W]`` metres along the optical axis of the "from" camera (0, negative, inf or NaN =
        no surface: a point at infinity); intrinsics: ``[3, 3]``; poses: camera-to-world ``[4, 4]``.
    Returns float32 ``[H, W, 2]`` (dx, dy in pixels); NaN where the point lands behind the camera.
    """

    depth_t = torch.as_tensor(np.asarray(depth, dtype=np.float64))
    if depth_t.dim() != 2:
        raise ValueError(f"depth must be [H, W], got {list(depth_t.shape)}")
    height, width = depth_t.shape
    camera = _as_tensor(intrinsics, "intrinsics", (3, 3))
    start = _as_tensor(pose_from, "pose_from", (4, 4))
    end = _as_tensor(pose_to, "pose_to", (4, 4))
    # Relative motion: a point in the "from" camera's frame expressed in the "to" camera's frame.
    relative = compose_transformations(inverse_transformation(end[None]), start[None])[0]

    finite = torch.isfinite(depth_t) & (depth_t > 0)
    rays = depth_to_3d_v2(torch.ones_like(depth_t)[None], camera[None])[0]  # [H, W, 3] at unit depth
    points = rays * torch.where(finite, depth_t, torch.ones_like(depth_t))[..., None]
    moved = transform_points(relative[None], points.reshape(1, -1, 3))[0].reshape(height, width, 3)
    rotated = (rays.reshape(-1, 3) @ relative[:3, :3].T).reshape(height, width, 3)  # points at infinity
    target = torch.where(finite[..., None], moved, rotated)
    ahead = target[..., 2] > 0
    projected = project_points(target.reshape(-1, 3), camera[None].expand(height * width, 3, 3)).reshape(height, width, 2)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    flow = projected - torch.stack([xs, ys], dim=-1)
    flow = torch.where(ahead[..., None], flow, torch.full_like(flow, float("nan")))
    return flow.float().numpy()


def depth_flow_pair(depth_t: np.ndarray, depth_t1: np.ndarray, intrinsics: np.ndarray, pose_t: np.ndarray,
                    pose_t1: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(F_{t->t+1}, F_{t+1->t}) of a static scene, each float32 ``[H, W, 2]``; see :func:`flow_from_depth`."""
    return (flow_from_depth(depth_t, intrinsics, pose_t, pose_t1),
            flow_from_depth(depth_t1, intrinsics, pose_t1, pose_t))


class RaftFlow:
    """torchvision RAFT-large with LOCAL weights; call it with two uint8 ``[H, W, 3]`` frames.

    weights: a state-dict file for ``torchvision.models.optical_flow.raft_large`` (for example the
        file torchvision itself would download, copied here by hand).
    """

    def __init__(self, weights: Union[str, Path], device: str = "cpu", num_flow_updates: int = RAFT_UPDATES):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"RAFT weights file not found: {path}")
        try:
            state = load_torch_file(path, expected="RAFT weights (a torch.save file)")
        except CheckpointError as exc:
            raise ValueError(f"cannot read RAFT weights: {exc}") from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        model = raft_large(weights=None, progress=False)
        try:
            model.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"{path} is not a torchvision raft_large state dict: {str(exc)[:400]}") from exc
        self.model = model.to(device).eval().requires_grad_(False)
        self.device = device
        self.num_flow_updates = int(num_flow_updates)
        self.path = str(path.resolve())

    @staticmethod
    def _prepare(image: np.ndarray, device: str) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().to(device)
        return tensor / 127.5 - 1.0  # RAFT's input convention: [-1, 1]

    def __call__(self, image_a: np.ndarray, image_b: np.ndarray) -> np.ndarray:
        """Flow from ``image_a`` to ``image_b`` (uint8 ``[H, W, 3]``) -> float32 ``[H, W, 2]``."""
        if image_a.shape != image_b.shape:
            raise ValueError(f"frames differ in shape: {list(image_a.shape)} vs {list(image_b.shape)}")
        height, width = image_a.shape[:2]
        # Multiples of 8, and at least 128: torchvision refuses feature maps under 16 cells.
        pad_h, pad_w = max((-height) % 8, _MIN_SIDE - height), max((-width) % 8, _MIN_SIDE - width)
        a, b = self._prepare(image_a, self.device), self._prepare(image_b, self.device)
        if pad_h or pad_w:
            a = torch.nn.functional.pad(a, (0, pad_w, 0, pad_h), mode="replicate")
            b = torch.nn.functional.pad(b, (0, pad_w, 0, pad_h), mode="replicate")
        with torch.inference_mode():
            flow = self.model(a, b, num_flow_updates=self.num_flow_updates)[-1]
        return flow[0, :, :height, :width].permute(1, 2, 0).float().cpu().numpy()
