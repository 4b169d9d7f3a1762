"""Temporal training sequences from still images: synthetic camera motion with EXACT flow.

A window of the output size slides over the (larger) source image by whole pixels per frame, so
every frame is an exact crop and the flow between frames is exact and known:
frame_t(x) = I(x + o_t), hence F_{t->t+1}(x) = o_t - o_{t+1} everywhere (constant per pair) and
F_{t+1->t} = -F_{t->t+1}. Pixels whose target leaves the frame are out-of-frame (the warping loss
masks them). The input, target and mask sequences are crops of the same three still images, so a
perfect enhancer's outputs are consistent under this flow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

__all__ = ["MotionSequence", "camera_path", "crop_sequence"]


@dataclass(frozen=True)
class MotionSequence:
    """Crops of the still images along a camera path.

    frames, targets: ``T`` uint8 ``[h, w, 3]``; masks: ``T`` uint8 ``[h, w]``;
    flow_fw: float32 ``[T-1, 2, h, w]`` (F_{t->t+1}, dx then dy, pixels); flow_bw the reverse.
    offsets: ``[T, 2]`` the window's top-left (x, y) in the source.
    """

    frames: List[np.ndarray]
    targets: List[np.ndarray]
    masks: List[np.ndarray]
    flow_fw: np.ndarray
    flow_bw: np.ndarray
    offsets: np.ndarray


def camera_path(rng: np.random.Generator, num_frames: int, room: Tuple[int, int], max_step: int = 3) -> np.ndarray:
    """Integer window offsets ``[num_frames, 2]`` (x, y) inside ``room = (max_x, max_y)``.

    A constant random velocity of up to ``max_step`` px per frame, with a small random jitter;
    offsets are clamped to the room, so the camera may stop at an edge.
    """
    if num_frames < 2:
        raise ValueError(f"a temporal sequence needs at least 2 frames, got {num_frames}")
    max_x, max_y = room
    velocity = rng.integers(-max_step, max_step + 1, size=2)
    if not velocity.any():
        velocity[int(rng.integers(2))] = 1
    start = np.array([rng.integers(0, max_x + 1), rng.integers(0, max_y + 1)])
    steps = velocity[None, :] + rng.integers(-1, 2, size=(num_frames - 1, 2))
    offsets = np.concatenate([start[None], start[None] + np.cumsum(steps, axis=0)])
    return np.clip(offsets, 0, [max_x, max_y]).astype(np.int64)


def crop_sequence(image: np.ndarray, target: np.ndarray, mask: np.ndarray, size: Tuple[int, int],
                  offsets: np.ndarray) -> MotionSequence:
    """Crop ``(width, height) = size`` windows at ``offsets`` (``[T, 2]`` x, y) from the stills.

    image, target: uint8 ``[H, W, 3]`` of the same size; mask: ``[H, W]``.
    """
    width, height = size
    src_h, src_w = image.shape[:2]
    if target.shape != image.shape or mask.shape[:2] != image.shape[:2]:
        raise ValueError(f"image {list(image.shape)}, target {list(target.shape)} and mask {list(mask.shape)} differ")
    offsets = np.asarray(offsets, dtype=np.int64)
    if (offsets < 0).any() or (offsets[:, 0] + width > src_w).any() or (offsets[:, 1] + height > src_h).any():
        raise ValueError(f"crop windows of {width}x{height} at {offsets.tolist()} leave the {src_w}x{src_h} source")

    def crops(array: np.ndarray) -> List[np.ndarray]:
        return [np.ascontiguousarray(array[y:y + height, x:x + width]) for x, y in offsets]

    motion = (offsets[:-1] - offsets[1:]).astype(np.float32)  # F_{t->t+1} = o_t - o_{t+1}
    flow_fw = np.broadcast_to(motion[:, :, None, None], (len(motion), 2, height, width)).copy()
    return MotionSequence(frames=crops(image), targets=crops(target), masks=crops(mask), flow_fw=flow_fw,
                          flow_bw=-flow_fw, offsets=offsets)
