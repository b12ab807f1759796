"""torchrun support, in one place: the process's place in the job, reductions, agreement, wrapping, barriers.

One process per GPU (or per CPU slot with gloo); rank 0 logs and writes everything. Nothing else in
the project reads RANK or calls torch.distributed. Alone (no torchrun), every function here is the
identity or a no-op, so the single-process path is the same code.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from onecycle.io import ArtifactError


@dataclass(frozen=True)
class Place:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the GPU index on this machine

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """Rank 0 (or alone), from torchrun's RANK: usable before the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def _joined() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def process_group(device: str) -> Iterator[Place]:
    """Join the torchrun job described by the environment (RANK, WORLD_SIZE, LOCAL_RANK), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        yield Place()
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_nccl = device in ("auto", "cuda") and torch.cuda.is_available()
    if use_nccl:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    try:
        yield Place(rank=rank, world_size=world_size, local_rank=local_rank)
    finally:
        dist.destroy_process_group()


def summed(values: list[torch.Tensor | float], device: torch.device) -> list[float]:
    """Each value added up over every process of the job, in float64, with one host sync."""
    stats = torch.stack([torch.as_tensor(v, device=device).double() for v in values])
    if _joined():
        dist.all_reduce(stats)
    return stats.tolist()


def agree_on_start(start: int, device: torch.device, checkpoint: object) -> None:
    """Every process must resume from the same epoch (each reads the checkpoint itself).

    Raises io.ArtifactError (a user error: exit 2) naming the epochs the processes found."""
    if not _joined():
        return
    both = torch.tensor([start, -start], device=device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    if both[0].item() != -both[1].item():
        raise ArtifactError(
            f"the processes found different checkpoints at {checkpoint} (resuming after epochs "
            f"{-both[1].item()} to {both[0].item()}): put --checkpoint on a filesystem every node shares"
        )


def wrap(net: nn.Module, place: Place, device: torch.device, sync_batchnorm: bool) -> nn.Module:
    """`net` as DistributedDataParallel when the job has several processes; `net` itself otherwise."""
    if place.world_size == 1:
        return net
    if sync_batchnorm and device.type == "cuda":
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # keeps the same Parameter objects
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids)


def barrier() -> None:
    if _joined():
        dist.barrier()
