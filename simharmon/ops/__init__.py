"""Fused elementwise ops of the runtime, each with a pure-torch ``*_reference`` of the same signature.

Every op dispatches to a CUDA kernel from ``kernels/`` (compiled by cupy on first use, launched on
torch's current stream) when its tensors are on a CUDA device and cupy is installed, and to its
torch reference otherwise. They are registered as ``torch.ops.simharmon.*`` custom ops with fake
implementations, so ``torch.compile(fullgraph=True)`` and CUDA-graph capture see one opaque node
each. Inference only: no autograd formulas are registered.
"""

from ._cuda import kernels_available
from .fuse import (
    MAX_BAND,
    masked_blend,
    masked_blend_reference,
    mean_shift,
    mean_shift_reference,
    temporal_blend,
    temporal_blend_reference,
)
from .pack import LAYOUTS, ROUNDINGS, pack, pack_reference, unpack, unpack_reference
from .reproject import projection_coefficients, reproject, reproject_reference, reproject_warp, reproject_warp_reference
from .warp import PADDINGS, warp, warp_reference

__all__ = [
    "LAYOUTS", "MAX_BAND", "PADDINGS", "ROUNDINGS", "kernels_available",
    "masked_blend", "masked_blend_reference", "mean_shift", "mean_shift_reference",
    "pack", "pack_reference", "projection_coefficients", "reproject", "reproject_reference",
    "reproject_warp", "reproject_warp_reference", "temporal_blend", "temporal_blend_reference",
    "unpack", "unpack_reference", "warp", "warp_reference",
]
