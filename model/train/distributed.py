"""Multi-GPU plumbing for torchrun: rank discovery, the process group, the training device.

``torchrun --nproc_per_node N`` sets WORLD_SIZE, RANK and LOCAL_RANK; with WORLD_SIZE > 1 the
trainer joins a process group (NCCL on CUDA, gloo on CPU) and wraps its objective in
DistributedDataParallel. A single process needs none of it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main rank writes checkpoints, logs and the progress bar."""
        return self.rank == 0


def dist_env() -> DistEnv:
    """Ranks from torchrun's environment (a single process when unset)."""
    return DistEnv(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def resolve_device(device: str, env: DistEnv) -> torch.device:
    """``auto``: this rank's GPU when CUDA is available, else the CPU; ``cuda`` means this rank's GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for but no CUDA GPU is visible: use --device cpu or auto")
        dev = torch.device("cuda", env.local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    return dev


def init_process_group(env: DistEnv, device: torch.device) -> None:
    if env.enabled and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            rank=env.rank,
            world_size=env.world_size,
            device_id=device if device.type == "cuda" else None,
        )


def destroy_process_group(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(obj: object, env: DistEnv) -> list[object]:
    """``obj`` from every rank, in rank order (just ``[obj]`` without a process group)."""
    if not env.enabled:
        return [obj]
    out: list[object] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out
