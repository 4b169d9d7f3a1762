"""Per-frame renderer inputs of the optional stream features, validated, and scaled to latent size.

A neural renderer knows more than the image: the backward flow to the previous frame, the depth,
the intrinsics and the camera motion, and where it inserted an actor. ``StreamingEnhancer.step``
takes them as keyword arguments; this module checks them against the stream's options and brings
them to the resolution of the tensors they act on.

Resolution: the release layout's ring holds frames (stride 1); the per-frame layout's ring and every
latent hold 1/8-resolution latents (stride s = the VAE's spatial compression). Latent cell j covers
pixels s*j .. s*j + s - 1, centred at pixel ``s*j + (s - 1) / 2``, hence:
* flow: the s x s area mean, divided by s (exact for locally affine flow);
* depth: the s x s minimum (the nearest surface; cells that straddle an edge then fail the
  occlusion test instead of smearing across it; a non-positive or NaN depth invalidates the cell);
* intrinsics: ``K_s = S K`` with ``S = [[1/s, 0, -(s-1)/(2s)], [0, 1/s, -(s-1)/(2s)], [0, 0, 1]]``;
* mask: the s x s maximum (a cell touched by the actor belongs to it).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F

from ..config import StreamConfig

__all__ = ["FrameInputs", "condition_mask", "gather_inputs", "latent_mask"]


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
                  has_history: bool, need_mask: bool = True, flow=None, depth=None, pose=None, intrinsics=None,
                  mask=None) -> FrameInputs:
    """Check the per-frame inputs against ``stream``'s options; returns them validated and on ``device``.

    An input that no enabled option uses is an error (it would be silently ignored otherwise).
    The motion (flow, or pose) may be omitted while the history is empty (the stream's first frame).
    """
    given = {"flow": flow, "depth": depth, "pose": pose, "intrinsics": intrinsics, "mask": mask}
    used = {"flow": stream.history_warp == "flow",
            "depth": stream.history_warp == "depth", "pose": stream.history_warp == "depth",
            "intrinsics": stream.history_warp == "depth",
            "mask": stream.uses_mask}
    for name, value in given.items():
        if value is not None and not used[name]:
            raise ValueError(f"step: {name} was given, but no enabled stream option uses it "
                             f"(history_warp={stream.history_warp!r}, region_latent={stream.region_latent}, "
                             f"region_pixel={stream.region_pixel}, mask_condition={stream.mask_condition})")
    required = {"flow": used["flow"] and has_history, "depth": used["depth"],
                "pose": used["pose"] and has_history, "intrinsics": used["intrinsics"],
                "mask": (stream.region_latent or stream.region_pixel) and need_mask}
    for name, needed in required.items():
        if needed and given[name] is None:
            option = "region_latent / region_pixel" if name == "mask" else f"history_warp={stream.history_warp!r}"
            raise ValueError(f"step: stream option {option} needs the per-frame input {name}=...")

    f32, f64 = torch.float32, torch.float64
    return FrameInputs(
        flow=None if flow is None else _tensor("flow", flow, 4, (2, height, width), batch, device, f32),
        depth=None if depth is None else _tensor("depth", depth, 4, (1, height, width), batch, device, f32),
        intrinsics=None if intrinsics is None else _tensor("intrinsics", intrinsics, 3, (3, 3), batch, device, f64, True),
        pose=None if pose is None else _tensor("pose", pose, 3, (4, 4), batch, device, f64, True),
        mask=None if mask is None else _tensor("mask", mask, 4, (1, height, width), batch, device, f32),
    )
