"""Per-frame renderer inputs: what they mean, how they are validated, and how they reach latent size.

A neural renderer knows more than the image: where it inserted an actor (the mask), the depth,
the backward flow to the previous frame, the intrinsics and the camera motion. Front doors hand
them over in the forms renderers have (:func:`normalize_inputs`: uint8 masks, ``(fx, fy, cx, cy)``,
absolute camera-to-world poses through a :class:`PoseTracker`); :func:`gather_inputs` checks them
against the stream options into a :class:`FrameInputs`; the step brings them to the resolution of
the tensors they act on (``FrameInputs.scaled``).

"No mask" has one meaning everywhere (:data:`NO_MASK`): for a model whose stream options read the
actor mask (``StreamConfig.uses_mask``), a frame without a mask passes through unchanged, the
stream's history restarts (an actor that is not rendered has nothing to harmonize, and its history
would otherwise skip frames), and the caller is told with the flag ``passthrough = "no_mask"``.
It is never an error.

Resolution: the release layout's ring holds frames (stride 1); the per-frame layout's ring and every
latent hold 1/s-resolution latents (s = the VAE's spatial compression). Latent cell j covers
pixels s*j .. s*j + s - 1, centred at pixel ``s*j + (s - 1) / 2``, hence:
* flow: the s x s area mean, divided by s (exact for locally affine flow);
* depth: the s x s minimum (the nearest surface; cells that straddle an edge then fail the
  occlusion test instead of smearing across it; a non-positive or NaN depth invalidates the cell);
* intrinsics: ``K_s = S K`` with ``S = [[1/s, 0, -(s-1)/(2s)], [0, 1/s, -(s-1)/(2s)], [0, 0, 1]]``;
* mask: the s x s maximum (a cell touched by the actor belongs to it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..config import StreamConfig

__all__ = [
    "INPUT_NAMES",
    "NO_MASK",
    "NO_MASK_MESSAGE",
    "FrameInputs",
    "PoseTracker",
    "condition_mask",
    "gather_inputs",
    "intrinsics_matrix",
    "latent_mask",
    "normalize_inputs",
    "relative_pose",
    "used_inputs",
]

INPUT_NAMES = ("mask", "flow", "depth", "intrinsics", "pose")  # FrameInputs fields; step() keywords
NO_MASK = "no_mask"  # the passthrough flag of a frame without a mask (module docstring)
NO_MASK_MESSAGE = ("{name!r} harmonizes inserted actors and reads their masks; a frame without a mask passes "
                   "through unchanged (flag passthrough='no_mask') and the stream's history restarts")


@dataclasses.dataclass(frozen=True)
class FrameInputs:
    """Validated inputs of one step, on the model's device; a field is None when no option uses it.

    flow: ``[B, 2, H, W]`` float32, pixels: pixel p of this frame shows what pixel ``p + flow(p)``
        showed in the previous frame (backward flow, channel 0 = x).
    depth: ``[B, 1, H, W]`` float32 camera-space Z of this frame.
    intrinsics: ``[B, 3, 3]`` float64 pinhole K of this frame, pixels, integer pixel centres.
    pose: ``[B, 4, 4]`` float64 transform from this frame's camera to the previous frame's
        (``X_prev = pose @ X_cur``).
    mask: ``[B, 1, H, W]`` float32 in [0, 1], the inserted actor(s).
    """

    flow: Optional[torch.Tensor] = None
    depth: Optional[torch.Tensor] = None
    intrinsics: Optional[torch.Tensor] = None
    pose: Optional[torch.Tensor] = None
    mask: Optional[torch.Tensor] = None

    def scaled(self, stride: int) -> FrameInputs:
        """The same inputs at 1/stride resolution (module docstring); the mask is left as is."""
        if stride == 1:
            return self
        flow = None if self.flow is None else F.avg_pool2d(self.flow, stride) / stride
        depth = None if self.depth is None else -F.max_pool2d(-self.depth, stride)
        intrinsics = None
        if self.intrinsics is not None:  # S @ K, written out: no host-to-device copy per frame
            k = self.intrinsics
            rows = k[:, :2] / stride - (stride - 1) / (2.0 * stride) * k[:, 2:]
            intrinsics = torch.cat([rows, k[:, 2:]], dim=1)
        return FrameInputs(flow, depth, intrinsics, self.pose, self.mask)

    def row(self, index: int) -> FrameInputs:
        """Batch item ``index`` (``[1, ...]`` views)."""
        return FrameInputs(*(None if t is None else t[index:index + 1] for t in dataclasses.astuple(self)))


def latent_mask(mask: torch.Tensor, stride: int) -> torch.Tensor:
    """``[B, 1, H, W]`` pixel mask -> ``[B, 1, H/stride, W/stride]``: a cell touched by the mask counts."""
    return F.max_pool2d(mask, stride) if stride > 1 else mask


def condition_mask(stream: StreamConfig, mask: Optional[torch.Tensor], stride: int) -> Optional[torch.Tensor]:
    """The DiT's mask input (``stream.mask_condition``) for pixel mask ``[B, 1, H, W]``: its
    ``latent_mask``; None (the DiT then sees zeros) without the option or without a mask.
    Streaming and training both build it here, so the network sees the same input in each."""
    if mask is None or not stream.mask_condition:
        return None
    return latent_mask(mask, stride)


def used_inputs(stream: StreamConfig) -> Tuple[str, ...]:
    """The per-frame inputs the stream options read (others are not taken)."""
    names = ["mask"] if stream.uses_mask else []
    names += {"flow": ["flow"], "depth": ["depth", "intrinsics", "pose"]}.get(stream.history_warp, [])
    return tuple(names)


# -- renderer forms -> tensors -------------------------------------------------------------------


def intrinsics_matrix(intrinsics: Sequence[float], device: torch.device | str = "cpu") -> torch.Tensor:
    """``(fx, fy, cx, cy)`` in pixels -> ``[1, 3, 3]`` float64 ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``."""
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    return torch.tensor([[[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]], dtype=torch.float64, device=device)


def relative_pose(previous: Any, current: Any) -> np.ndarray:
    """Two camera-to-world poses (4x4, or 16 floats row-major) -> the current -> previous camera transform.

    A point ``X`` in the current camera's frame is ``current @ X`` in the world and
    ``inverse(previous) @ current @ X`` in the previous camera's frame; returns that ``[4, 4]``
    float64 matrix (a linear solve, not an explicit inverse).
    """
    prev = np.asarray(previous, dtype=np.float64).reshape(4, 4)
    cur = np.asarray(current, dtype=np.float64).reshape(4, 4)
    return np.linalg.solve(prev, cur)


class PoseTracker:
    """Turns one stream's absolute camera-to-world poses into the relative poses steps take.

    ``relative(c2w)`` returns the current -> previous camera transform ``[1, 4, 4]`` (None for the
    first pose, or after a frame without one); ``commit`` records the pose of a frame that was
    enhanced; ``broken(c2w)`` says the history cannot be related to this frame (a pose after an
    enhanced frame that had none), so the caller restarts it.
    """

    def __init__(self) -> None:
        self._previous: Optional[np.ndarray] = None
        self._stepped = False

    def relative(self, camera_to_world: Any, device: torch.device | str = "cpu") -> Optional[torch.Tensor]:
        """The relative pose to the last committed one, or None."""
        if camera_to_world is None or self._previous is None:
            return None
        return torch.from_numpy(relative_pose(self._previous, camera_to_world)).unsqueeze(0).to(device)

    def broken(self, camera_to_world: Any) -> bool:
        """True when this frame has a pose but the last enhanced one had none."""
        return camera_to_world is not None and self._stepped and self._previous is None

    def commit(self, camera_to_world: Any) -> None:
        """Record the (absolute) pose of an enhanced frame; None forgets the last one."""
        self._stepped = True
        self._previous = None if camera_to_world is None else np.asarray(camera_to_world, np.float64).reshape(4, 4)

    def clear(self) -> None:
        """A new history: no previous pose."""
        self._previous, self._stepped = None, False


def _as_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def normalize_inputs(given: Mapping[str, Any], height: int, width: int) -> Dict[str, torch.Tensor]:
    """Renderer forms -> ``FrameInputs`` conventions, without a batch axis check (``gather_inputs`` does it).

    mask: ``[H, W]``, ``[1, H, W]`` or ``[B, 1, H, W]``; uint8 (0..255, 255 = actor), bool or float in [0, 1].
    depth: ``[H, W]`` or ``[B, 1, H, W]``; flow: ``[H, W, 2]`` (renderer layout) or ``[B, 2, H, W]``.
    intrinsics: ``(fx, fy, cx, cy)`` or a ``[3, 3]`` / ``[B, 3, 3]`` matrix; pose: ``[4, 4]`` / ``[B, 4, 4]``.
    numpy arrays are accepted (copied only when they are not writable, so torch never warns).
    Unknown names raise TypeError; None values are dropped.
    """
    unknown = sorted(set(given) - set(INPUT_NAMES))
    if unknown:
        raise TypeError(f"unknown per-frame inputs {unknown}; expected some of {list(INPUT_NAMES)}")
    out: Dict[str, torch.Tensor] = {}
    for name, value in given.items():
        if value is None:
            continue
        if name == "intrinsics" and not isinstance(value, (torch.Tensor, np.ndarray)):
            if len(value) != 4:
                raise ValueError(f"intrinsics must be (fx, fy, cx, cy) or a 3x3 matrix, got {len(value)} values")
            out[name] = intrinsics_matrix(value)
            continue
        if isinstance(value, np.ndarray) and not value.flags.writeable:
            value = value.copy()
        tensor = _as_tensor(name, value)
        if name == "mask":
            tensor = tensor.float() / 255.0 if tensor.dtype == torch.uint8 else tensor
            tensor = tensor.float() if tensor.dtype == torch.bool else tensor
            if tensor.dim() == 2:
                tensor = tensor[None, None]
            elif tensor.dim() == 3:
                tensor = tensor.unsqueeze(0)
        elif name == "depth" and tensor.dim() == 2:
            tensor = tensor[None, None]
        elif name == "flow" and tensor.dim() == 3 and tensor.shape[-1] == 2 and tensor.shape[0] == height:
            tensor = tensor.permute(2, 0, 1).unsqueeze(0)
        out[name] = tensor
    return out


# -- validation ----------------------------------------------------------------------------------


def _tensor(name: str, value, dims: int, shape_tail, batch: int, device, dtype, shared: bool = False) -> torch.Tensor:
    """Validate one input: ``[B, *shape_tail]``, floating point. Without the batch axis it is taken as
    batch 1, or, for ``shared`` inputs (camera matrices), as the same value for every batch item."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"step: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() == dims - 1 and (batch == 1 or shared):
        value = value.unsqueeze(0).expand(batch, *value.shape)
    expected = [batch, *shape_tail]
    if list(value.shape) != expected:
        spec = "[B, " + ", ".join(str(s) for s in shape_tail) + "]"
        raise ValueError(f"step: {name} must have shape {spec} = {expected} for this frame, got {list(value.shape)}")
    if not (value.is_floating_point() or (name == "mask" and value.dtype == torch.bool)):
        raise TypeError(f"step: {name} must be a floating-point tensor, got {value.dtype}")
    return value.to(device=device, dtype=dtype)


def gather_inputs(stream: StreamConfig, batch: int, height: int, width: int, device: torch.device, *,
                  has_history: bool, flow=None, depth=None, pose=None, intrinsics=None, mask=None) -> FrameInputs:
    """Check the per-frame inputs against ``stream``'s options; returns them validated and on ``device``.

    An input that no enabled option uses is an error (it would be silently ignored otherwise; front
    doors pass only ``used_inputs``). The motion (flow, or pose) may be omitted while the history is
    empty. The mask itself is never required here: its absence means a passthrough (module docstring).
    """
    given = {"flow": flow, "depth": depth, "pose": pose, "intrinsics": intrinsics, "mask": mask}
    used = set(used_inputs(stream))
    for name, value in given.items():
        if value is not None and name not in used:
            raise ValueError(f"step: {name} was given, but no enabled stream option uses it "
                             f"(history_warp={stream.history_warp!r}, region_latent={stream.region_latent}, "
                             f"region_pixel={stream.region_pixel}, mask_condition={stream.mask_condition})")
    warp = stream.history_warp
    required = {"flow": warp == "flow" and has_history, "depth": warp == "depth",
                "pose": warp == "depth" and has_history, "intrinsics": warp == "depth"}
    for name, needed in required.items():
        if needed and given[name] is None:
            raise ValueError(f"step: stream option history_warp={warp!r} needs the per-frame input {name}=...")

    f32, f64 = torch.float32, torch.float64
    return FrameInputs(
        flow=None if flow is None else _tensor("flow", flow, 4, (2, height, width), batch, device, f32),
        depth=None if depth is None else _tensor("depth", depth, 4, (1, height, width), batch, device, f32),
        intrinsics=None if intrinsics is None else _tensor("intrinsics", intrinsics, 3, (3, 3), batch, device, f64, True),
        pose=None if pose is None else _tensor("pose", pose, 3, (4, 4), batch, device, f64, True),
        mask=None if mask is None else _tensor("mask", mask, 4, (1, height, width), batch, device, f32),
    )
