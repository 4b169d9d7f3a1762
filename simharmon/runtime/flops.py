"""Floating-point operation counts of one enhancer step, by stage, on the meta device (no compute).

Counted with ``torch.utils.flop_counter`` (2 FLOPs per multiply-add; convolutions, matrix products
and attention; elementwise work is not counted) on a model built on the meta device, so the
published 0.6B config at 1024x576 counts in about a second on a CPU. On the meta device attention
runs as its math decomposition, so it is counted as ``aten.bmm``.

* :func:`release_loop_flops`: the release's per-frame loop (encode the whole clip, DiT with
  cross-attention on every latent frame, decode every latent frame).
* :func:`engine_step_flops`: the engine's step with the given exact optimizations.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..config import EnhancerConfig, OptimizationConfig, StreamConfig
from ..io.pixels import frame_to_model, model_to_frame
from ..models.enhancer import EnhancerModel
from ..ops import pack
from .optimize import OptimizedEnhancer
from .stages import decode_current, denoise, encode_clip, encode_current, ring_entry

__all__ = ["meta_model", "count_flops", "release_loop_flops", "engine_step_flops", "StageFlops"]

# stage -> {"total": flops, "<aten op>": flops}
StageFlops = Dict[str, Dict[str, float]]


def meta_model(config: EnhancerConfig, dtype: torch.dtype = torch.bfloat16) -> EnhancerModel:
    """An :class:`EnhancerModel` with shapes only (meta device), for counting."""
    with torch.device("meta"):
        # An inference model, as build_enhancer makes it (layers with a training-only path take the reference one).
        return EnhancerModel(config).to(dtype).eval().requires_grad_(False)


def count_flops(fn: Callable[[], object]) -> tuple:
    """Run ``fn()`` under a FlopCounterMode: (its result, {"total": n, op name: n, ...})."""
    with FlopCounterMode(display=False) as counter:
        result = fn()
    by_op = {str(op): float(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return result, {"total": float(counter.get_total_flops()), **by_op}


def _inputs(model: EnhancerModel, layout: str, num_refs: int, num_streams: int, height: int, width: int):
    meta = torch.device("meta")
    frames = torch.empty(num_streams, height, width, 3, dtype=torch.uint8, device=meta)
    if num_refs == 0:
        return frames, None
    if layout == "release":
        return frames, torch.empty(num_streams, num_refs, 3, height, width, dtype=model.dtype, device=meta)
    s, z = model.config.tokenizer.spatial_compression, model.config.tokenizer.z_dim
    return frames, torch.empty(num_streams, num_refs, z, height // s, width // s, dtype=model.dtype, device=meta)


def release_loop_flops(model: EnhancerModel, width: int, height: int, num_refs: int = 4,
                       num_streams: int = 1) -> StageFlops:  # fmt: skip
    """The release loop on a clip of 1 + num_refs frames: stages encode, dit, decode (all frames), total."""
    clip = torch.empty(num_streams, 3, 1 + num_refs, height, width, dtype=model.dtype, device="meta")
    latents, enc = count_flops(lambda: model.encode(clip))
    x0, dit = count_flops(lambda: model.denoise(latents))
    _, dec = count_flops(lambda: model.decode(x0.to(model.dtype)))
    return _with_total({"encode": enc, "dit": dit, "decode": dec})


def engine_step_flops(model: EnhancerModel, optimizations: Optional[OptimizationConfig], layout: str, width: int,
                      height: int, num_refs: int, num_streams: int = 1,
                      reference_latent: str = "reencode") -> StageFlops:  # fmt: skip
    """The engine's step stages (``stages.py``) with ``optimizations``: encode, dit, decode, post (ring entry), total."""
    fast = OptimizedEnhancer(model, optimizations).prepare()
    stream = StreamConfig(layout=layout, offsets=tuple(range(1, max(num_refs, 1) + 1)), history="partial",
                          reference_latent=reference_latent)
    frames, refs = _inputs(model, layout, num_refs, num_streams, height, width)
    image = pack(frames, "rgb", fast.dtype)
    if layout == "release":
        latents, enc = count_flops(lambda: encode_clip(fast, image, refs)[0])
    else:
        current, enc = count_flops(lambda: encode_current(fast, image)[0])
        latents = current.unsqueeze(2) if refs is None else torch.cat([current.unsqueeze(2), refs.transpose(1, 2)], 2)
    x0, dit = count_flops(lambda: denoise(fast, latents))
    decoded, dec = count_flops(lambda: decode_current(fast, x0))
    _, post = count_flops(lambda: ring_entry(fast, stream, frame_to_model(model_to_frame(decoded), fast.dtype), x0))
    return _with_total({"encode": enc, "dit": dit, "decode": dec, "post": post})


def _with_total(stages: StageFlops) -> StageFlops:
    stages["total"] = {"total": sum(s["total"] for s in stages.values())}
    return stages
