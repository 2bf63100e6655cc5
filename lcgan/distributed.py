"""Data-parallel training under ``torchrun``: one process per GPU (or CPU process with gloo).

Gradients are averaged by hand after each backward (one flattened all-reduce per optimizer)
instead of wrapping the networks in DistributedDataParallel: the step calls each generator
several times per backward and runs the discriminators frozen in the G step, which DDP's reducer
does not allow, and the averaged gradients are exactly DDP's.

Every collective is a method of :class:`ProcessGroup`, and each is a no-op for one process, so
the training loop reads the same with or without ``torchrun``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the training's processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and pictures."""
        return self.rank == 0

    def shard(self, z: torch.Tensor) -> torch.Tensor:
        """This rank's equal share of a domain (the remainder is dropped, so all ranks run as many steps)."""
        if self.world == 1:
            return z
        if len(z) < self.world:
            raise ValueError(f"a domain of {len(z)} latents cannot be split over {self.world} processes")
        return z[: len(z) // self.world * self.world][self.rank :: self.world]

    def average_grads(self, params: list[torch.nn.Parameter]) -> None:
        """DDP's gradient averaging, as one flattened all-reduce."""
        grads = [p.grad for p in params if p.grad is not None]
        if self.world == 1 or not grads:
            return
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= self.world
        for g, avg in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            g.copy_(avg)

    def mean_(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce a tensor to its mean over ranks, in place."""
        if self.world > 1:
            dist.all_reduce(t)
            t /= self.world
        return t

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (e.g. a preemption signal that reached one rank)."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast(self, obj):
        """Rank 0's value of a picklable object on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_params(self, module: torch.nn.Module) -> None:
        """Start every rank from rank 0's weights and buffers."""
        if self.world > 1:
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def params_in_sync(self, module: torch.nn.Module) -> bool:
        """A cheap end-of-epoch check that all ranks hold the same weights."""
        if self.world == 1:
            return True
        total = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().reshape(1)
        gathered = [torch.zeros_like(total) for _ in range(self.world)]
        dist.all_gather(gathered, total)
        return all(torch.allclose(g, gathered[0], rtol=1e-9, atol=1e-9) for g in gathered)

    def barrier(self) -> None:
        """Wait for every rank (e.g. for rank 0's last checkpoint) before the group is torn down."""
        if self.world > 1:
            dist.barrier()


def world_size() -> int:
    """The processes torchrun started (its environment), 1 without torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device) -> ProcessGroup:
    """Join the process group that torchrun describes in the environment; a single process without torchrun."""
    world = world_size()
    if world == 1:
        return ProcessGroup(device=device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return ProcessGroup(rank=dist.get_rank(), world=dist.get_world_size(), device=device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
