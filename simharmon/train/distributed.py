"""Multi-GPU training through torchrun (DistributedDataParallel).

Launch: ``torchrun --nproc_per_node=8 -m simharmon train --config configs/train-default.yaml``.
torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; each rank then uses ``cuda:LOCAL_RANK`` (NCCL) or,
without CUDA, the CPU (gloo). Each rank draws its own batch (the data sampler is keyed by rank),
DDP averages the gradients, and only rank 0 logs, checkpoints and exports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["DistInfo", "init_distributed", "wrap_ddp", "barrier", "resolve_device"]


@dataclass(frozen=True)
class DistInfo:
    """rank / world_size / local_rank of this process and whether a process group is up."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    active: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(preference: str, info: DistInfo) -> torch.device:
    """"auto" -> cuda (this rank's GPU) when available, else cpu; otherwise the given device."""
    if preference == "auto":
        return torch.device(f"cuda:{info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if preference == "cuda" and info.active:
        return torch.device(f"cuda:{info.local_rank}")
    return torch.device(preference)


def init_distributed() -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (or one already exists); else single process."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)), True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, True)


def wrap_ddp(module: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``module`` wrapped in DDP when a process group is active, else itself."""
    if not info.active:
        return module

    ids = [device.index] if device.type == "cuda" else None
    # Single-frame clips leave the VAE's temporal convolutions (time_conv) without gradients.
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op without a process group)."""
    if info.active:
        dist.barrier()
