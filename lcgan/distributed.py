"""Data-parallel training under ``torchrun``: one process per GPU (or CPU process with gloo).

Gradients are averaged by hand after each backward (one flattened all-reduce per optimizer)
instead of wrapping the networks in DistributedDataParallel: the step calls each generator
several times per backward and runs the discriminators frozen in the G step, which DDP's reducer
does not allow, and the averaged gradients are exactly DDP's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> Dist:
    """Join the process group that torchrun describes in the environment; a no-op without torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), device=device)


def shard(z: torch.Tensor, d: Dist) -> torch.Tensor:
    """This rank's equal share of a domain (the remainder is dropped, so all ranks run as many steps)."""
    if d.world == 1:
        return z
    if len(z) < d.world:
        raise ValueError(f"a domain of {len(z)} latents cannot be split over {d.world} processes")
    return z[: len(z) // d.world * d.world][d.rank::d.world]


def average_grads(params: list[torch.nn.Parameter], world: int) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if world == 1 or not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world
    for g, avg in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        g.copy_(avg)


def mean_(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """All-reduce a tensor to its mean over ranks, in place."""
    if d.world > 1:
        dist.all_reduce(t)
        t /= d.world
    return t


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank when it is true on one (e.g. a preemption signal that reached one rank)."""
    if d.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast(obj, d: Dist):
    """Rank 0's value of a picklable object on every rank."""
    if d.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_params(module: torch.nn.Module, d: Dist) -> None:
    """Start every rank from rank 0's weights and buffers."""
    if d.world > 1:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def params_in_sync(module: torch.nn.Module, d: Dist) -> bool:
    """A cheap end-of-run check that all ranks hold the same weights."""
    if d.world == 1:
        return True
    total = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(total) for _ in range(d.world)]
    dist.all_gather(gathered, total)
    return all(torch.allclose(g, gathered[0], rtol=1e-9, atol=1e-9) for g in gathered)


def barrier(d: Dist) -> None:
    """Wait for every rank (e.g. for rank 0's last checkpoint) before the group is torn down."""
    if d.world > 1:
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
