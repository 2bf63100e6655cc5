"""Adam with the CycleGAN learning-rate schedule: constant, then linear decay to zero."""
from __future__ import annotations

from collections.abc import Iterable

import torch


class ConstantThenLinear:
    """Per-epoch learning rate, as in the CycleGAN code: ``lr`` for ``constant`` epochs, then ``decay``
    epochs falling linearly, lr * (1 - k/(decay+1)), reaching 0 after the last.

    Its state is the number of finished epochs only: the shape comes from the config, so a resumed run
    follows this run's schedule (a run extended from 30 to 60 epochs decays over the new length instead
    of training on at the old schedule's 0). ``step()`` once per epoch, like torch's schedulers."""

    def __init__(self, optimizer: torch.optim.Optimizer, constant: int, decay: int) -> None:
        self.optimizer, self.constant, self.decay = optimizer, constant, decay
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.epoch = 0

    def factor(self, epoch: int) -> float:
        """Multiplier of the 0-based epoch's learning rate."""
        return max(0.0, 1.0 - max(0, epoch + 1 - self.constant) / (self.decay + 1))

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.factor(self.epoch)

    def step(self) -> None:
        self.epoch += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        # after the optimizer's: its saved lr is replaced by this run's schedule ("last_epoch": torch's LambdaLR, older checkpoints)
        self.epoch = int(state["epoch"] if "epoch" in state else state["last_epoch"])
        self._apply()


def schedule_epochs(epochs: int, constant: int | None, decay: int | None) -> tuple[int, int]:
    """(constant, decay) epochs of a run of ``epochs``; null ones follow the run's length: the first half
    at the full rate, the rest decaying (CycleGAN's 100 + 100)."""
    constant = epochs // 2 if constant is None else constant
    decay = max(0, epochs - constant) if decay is None else decay
    return constant, decay


def adam(
    params: Iterable[torch.nn.Parameter],
    epochs: int,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    lr_constant_epochs: int | None = None,
    lr_decay_epochs: int | None = None,
    fused: bool | None = None,
) -> tuple[torch.optim.Optimizer, ConstantThenLinear]:
    """Adam and its per-epoch scheduler for a run of ``epochs``. ``fused=None``: fused kernels on CUDA, foreach on CPU."""
    params = list(params)
    if fused is None:
        fused = bool(params) and params[0].is_cuda
    opt = torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=fused or None, foreach=None if fused else True)
    return opt, ConstantThenLinear(opt, *schedule_epochs(epochs, lr_constant_epochs, lr_decay_epochs))


KERNEL_FLAGS = ("fused", "foreach", "capturable")  # how this run's optimizer steps, not what it has learnt


def load_state(opt: torch.optim.Optimizer, state: dict, name: str = "optimizer") -> None:
    """``opt.load_state_dict(state)``, keeping this run's kernel flags and memory layout. A checkpoint holds
    those of the run that saved it (fused and channels-last on CUDA); loaded as they are into a run on another
    device or layout, fused Adam updates wrongly (CPU: no layout check) or refuses to step (CUDA).
    ``name``: the checkpoint key, for the error when ``state`` is not this optimizer's."""
    groups = state.get("param_groups") if isinstance(state, dict) else None
    if not (isinstance(groups, list) and len(groups) == len(opt.param_groups) and all(isinstance(g, dict) for g in groups)):
        raise ValueError(f"checkpoint key {name!r} is not a state of this run's optimizer ({len(opt.param_groups)} parameter "
                         "group(s)); resume from a checkpoint of this run, or start a new one")
    mine = [{k: g[k] for k in KERNEL_FLAGS if k in g} for g in opt.param_groups]
    opt.load_state_dict({**state, "param_groups": [{**saved, **own} for saved, own in zip(groups, mine)]})
    for p, s in opt.state.items():
        for k, v in s.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                s[k] = torch.empty_like(p, dtype=v.dtype).copy_(v)  # the moments laid out like their parameter
