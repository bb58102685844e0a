"""This process's place among torchrun's processes, and the device it trains on.

Launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment) training runs under
DistributedDataParallel: gloo on the CPU, NCCL on GPUs, one GPU per process of a node.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """This process's place among torchrun's processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # started the process group here, so stops it here too

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, tensor: torch.Tensor) -> None:
        """Sum a tensor over the processes, in place."""
        if self.world > 1:
            dist.all_reduce(tensor)

    def average(self, tensors) -> None:
        """Average tensors over the processes, in place (gradients DDP does not reduce)."""
        if self.world > 1:
            for t in tensors:
                dist.all_reduce(t)
                t.div_(self.world)

    def stop(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def start_processes(device: torch.device) -> Processes:
    """Join torchrun's process group (or use the one the caller already started)."""
    if "RANK" not in os.environ:
        return Processes()
    started = not dist.is_initialized()
    if started:
        if device.type == "cuda":  # else every process of a node would work on GPU 0
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size(), local_rank(), started)
