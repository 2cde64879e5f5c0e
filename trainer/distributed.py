"""Training on several processes, one per GPU, launched by torchrun on one node or many.

`torchrun` sets RANK, WORLD_SIZE and LOCAL_RANK; `start` joins the process
group (NCCL on CUDA, gloo on CPU). The rest of the trainer asks this module,
never torch.distributed, what it may do:

- every rank trains on its share of each global batch (`DistributedSampler`),
  and the phase's loss runs inside DDP, which averages the gradients
  (trainer.loop.train_phase);
- only the main rank writes checkpoints, results and progress;
- whatever decides the course of training (a family's K, a logged reward) is
  averaged over ranks first, so that every rank takes the same decision.

A recipe's batch size is the global batch: each of N ranks takes 1/N of it,
so the papers' learning rates hold at any number of GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Ranks", "start", "stop", "ranks", "mean_over_ranks", "gather_objects"]


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the GPU of this process on its node

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start(device: str) -> Ranks:
    """Join torchrun's process group when launched by torchrun, one process included (a one-GPU run then takes
    the NCCL path a cluster takes, scripts/gpu_check.py); pick this rank's GPU."""
    if "LOCAL_RANK" not in os.environ:  # not launched by torchrun: one process, no group
        return Ranks()
    local_rank = int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        torch.cuda.set_device(local_rank)  # before the group, so that NCCL binds this process to its GPU
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return ranks()


def ranks() -> Ranks:
    """This process's place in the process group; a single process when there is none."""
    if not dist.is_initialized():
        return Ranks()
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def mean_over_ranks(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """The mean of each value over ranks (NCCL reduces on the GPU, hence `device`)."""
    if not dist.is_initialized():
        return list(values)
    tensor: Tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / dist.get_world_size()).tolist()


def gather_objects(value: object) -> list[object]:
    """Every rank's `value`, in rank order, on every rank (e.g. its RNG states, which the main rank saves)."""
    if not dist.is_initialized():
        return [value]
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def stop() -> None:
    """Leave the process group once training is over (the main rank may still evaluate and write alone)."""
    if dist.is_initialized():
        dist.destroy_process_group()
