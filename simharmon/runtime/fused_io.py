"""uint8 HWC frames <-> model space, each direction one conversion, bit-identical to the plain path.

The plain path (``runtime/frames.py``) goes uint8 -> float [0, 1] frame -> model space on input, and
model space -> float frame on 8-bit levels -> uint8 on output, with full-size intermediates. Here:

* :func:`pack_frames`: ``uint8 [N, H, W, 3]`` -> ``[N, 3, H, W]`` model space, as
  ``((u / 255) - 0.5) / 0.5`` in float32, then cast (the same float32 operations, so the same bits);
* :func:`unpack_frames`: model space -> ``uint8 [N, H, W, 3]`` with the release's quantization
  (clamp to [0, 1], then ``x * 255`` truncated).

They run ``simharmon.ops.pack`` / ``unpack`` (one CUDA kernel each, registered as custom ops so
torch.compile and CUDA graphs take them) when that package provides them, else the torch
expressions below (which torch.compile fuses into one kernel each). The release feeds its 8-bit
outputs back as references, so the release layout's ring entry is ``pack_frames(unpack_frames(x))``.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from ..io.pixels import frame_to_model, model_to_frame, uint8_hwc_to_frame

try:  # the fused kernels of simharmon.ops, when present
    from ..ops import pack as _ops_pack
    from ..ops import unpack as _ops_unpack
except ImportError:  # pragma: no cover - depends on the ops package
    _ops_pack = _ops_unpack = None

__all__ = ["pack_frames", "unpack_frames", "pack_frames_torch", "unpack_frames_torch", "plain_pack",
           "plain_unpack", "check_uint8_frames"]  # fmt: skip


def check_uint8_frames(frames: Tensor, name: str = "frames") -> Tensor:
    """Validate ``uint8 [N, H, W, 3]`` (or ``[H, W, 3]``, made 4-D)."""
    if not isinstance(frames, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(frames).__name__}")
    if frames.dtype != torch.uint8:
        raise TypeError(f"{name} must be uint8 [N, H, W, 3], got dtype {frames.dtype}")
    if frames.dim() == 3:
        frames = frames.unsqueeze(0)
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name} must have shape [N, H, W, 3] or [H, W, 3], got {list(frames.shape)}")
    return frames


def pack_frames_torch(frames: Tensor, dtype: torch.dtype) -> Tensor:
    """:func:`pack_frames` in torch operations (the fallback without ``simharmon.ops``)."""
    x = frames.permute(0, 3, 1, 2).float()
    return ((x / 255.0 - 0.5) / 0.5).to(dtype).contiguous()


def unpack_frames_torch(decoded: Tensor) -> Tensor:
    """:func:`unpack_frames` in torch operations (the fallback without ``simharmon.ops``)."""
    q = (decoded.float() * 0.5 + 0.5).clamp(0.0, 1.0).mul(255.0).to(torch.uint8)
    return q.permute(0, 2, 3, 1).contiguous()


def pack_frames(frames: Tensor, dtype: torch.dtype) -> Tensor:
    """``frames: uint8 [N, H, W, 3]`` RGB -> model space ``[N, 3, H, W]`` in ``dtype`` (contiguous)."""
    if _ops_pack is not None:
        return _ops_pack(frames, "rgb", dtype)
    return pack_frames_torch(frames, dtype)


def unpack_frames(decoded: Tensor) -> Tensor:
    """Model space ``decoded: [N, 3, H, W]`` -> ``uint8 [N, H, W, 3]``: clamp(x/2 + 1/2, 0, 1) * 255, truncated."""
    if _ops_unpack is not None:
        return _ops_unpack(decoded, "rgb", "truncate")
    return unpack_frames_torch(decoded)


def plain_pack(frames: Tensor, dtype: torch.dtype) -> Tensor:
    """The unfused input conversion through ``runtime/frames.py`` (for ``fused_io=False``)."""
    return frame_to_model(uint8_hwc_to_frame(frames), dtype)


def plain_unpack(decoded: Tensor, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """The unfused output conversion: (uint8 ``[N, H, W, 3]``, model-space reference ``[N, 3, H, W]``)."""
    frame = model_to_frame(decoded)  # float32 on 8-bit levels
    return frame.clamp(0.0, 1.0).mul(255.0).to(torch.uint8).permute(0, 2, 3, 1).contiguous(), frame_to_model(frame, dtype)
