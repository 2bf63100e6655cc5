"""Adam with the CycleGAN learning-rate schedule: constant, then linear decay to zero."""
from __future__ import annotations

from collections.abc import Iterable

import torch


class ConstantThenLinear:
    """LR multiplier of 0-based epoch e, as in the CycleGAN code: 1 for ``constant`` epochs, then
    ``decay`` epochs falling linearly, 1 - k/(decay+1), reaching 0 after the last. A class, not a
    lambda, so the scheduler's state_dict is a plain dict that loads with ``weights_only=True``."""

    def __init__(self, constant: int, decay: int) -> None:
        self.constant, self.decay = constant, decay

    def __call__(self, epoch: int) -> float:
        return max(0.0, 1.0 - max(0, epoch + 1 - self.constant) / (self.decay + 1))


def adam(
    params: Iterable[torch.nn.Parameter],
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    lr_constant_epochs: int = 100,
    lr_decay_epochs: int = 100,
    fused: bool | None = None,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam and its per-epoch scheduler. ``fused=None``: fused kernels on CUDA, foreach on CPU."""
    params = list(params)
    if fused is None:
        fused = bool(params) and params[0].is_cuda
    opt = torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=fused or None, foreach=None if fused else True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, ConstantThenLinear(lr_constant_epochs, lr_decay_epochs))
    return opt, sched
