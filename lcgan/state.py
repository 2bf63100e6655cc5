"""Everything a training checkpoint holds, in one object.

``TrainState.state_dict()`` is what ``model/last.pt`` stores and ``load_state_dict()`` is how a
resume reads it back; both walk the same table (:meth:`TrainState.objects` and ``PROGRESS``), so a
key cannot be saved and then forgotten on resume (which would break exact resume silently).
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch

from lcgan import checkpoint, optim
from lcgan.buffer import FakeBuffer
from lcgan.cyclegan import CycleGAN
from lcgan.postfilter import FilterTrainer
from lcgan.translator import INFERENCE_KEYS

# where the run stands, beside the objects' state dicts; a checkpoint without a key gets the default
# (checkpoints saved before ``best_val`` existed). ``order``/``sums``: a mid-epoch checkpoint's sample
# order and loss sums (None at an epoch's end); ``metrics``: the log line of the epoch it ends (None mid-epoch).
PROGRESS = {"epoch": 0, "step": 0, "order": None, "sums": None, "metrics": None, "best_val": math.inf}


class Ema:
    """Exponential moving average of a generator's weights: ``ema = decay * ema + (1 - decay) * w``
    after every step, one fused foreach kernel and no host sync (torch's AveragedModel reads its
    update counter back from the device on every step). It begins as a copy of G's start, which keeps a share
    ``decay ** steps`` of it (37% after 1000 steps at 0.999). With ``debias`` that share is taken out as Adam's
    bias correction does: update ``step`` (0-based) moves by ``(1 - decay) / (1 - decay ** (step + 1))``, so the
    average holds only trained weights, over the same horizon."""

    def __init__(self, net: torch.nn.Module, decay: float, debias: bool = False) -> None:
        self.module = copy.deepcopy(net).eval().requires_grad_(False)
        self.decay, self.debias = decay, debias

    @torch.no_grad()
    def update(self, net: torch.nn.Module, step: int = 0) -> None:
        """``step``: how many updates came before this one (the run's optimisation step): a host integer, no sync."""
        weight = (1 - self.decay) / (1 - self.decay ** (step + 1)) if self.debias else 1 - self.decay
        mine = [t for t in (*self.module.parameters(), *self.module.buffers()) if t.is_floating_point()]
        theirs = [t for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
        torch._foreach_lerp_(mine, theirs, weight)


class TrainState:
    """The networks, optimizers, schedules, AMP scaler, replay buffers, EMA weights and the run's
    progress; ``record`` holds what the run is (resolved config, latent space and convention, the
    training domains' statistics): saved in every checkpoint for evaluation, checked on resume, never loaded."""

    def __init__(self, gan: CycleGAN, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, sched_g: Any, sched_d: Any,
                 scaler: torch.amp.GradScaler, buffer_a: FakeBuffer, buffer_b: FakeBuffer, ema_decay: float, record: dict,
                 post: FilterTrainer | None = None, ema_debias: bool = False) -> None:
        self.gan, self.opt_g, self.opt_d, self.sched_g, self.sched_d = gan, opt_g, opt_d, sched_g, sched_d
        self.post = post  # train.post_filter: the pixel post-filters and their optimizer
        self.scaler, self.buffer_a, self.buffer_b, self.record = scaler, buffer_a, buffer_b, record
        # EMA of the generators' weights: what pictures, validation and evaluation use when on
        self.ema = [Ema(gan.g_ab, ema_decay, ema_debias), Ema(gan.g_ba, ema_decay, ema_debias)] if ema_decay > 0 else []
        for key, default in PROGRESS.items():
            setattr(self, key, default)

    def objects(self) -> dict[str, Any]:
        """Checkpoint key -> the object whose ``state_dict`` it holds: the one list that save and resume read."""
        n = self.gan
        return {"G": n.g_ab, "F": n.g_ba, "D_A": n.d_a, "D_B": n.d_b, "opt_G": self.opt_g, "opt_D": self.opt_d,
                "sched_G": self.sched_g, "sched_D": self.sched_d, "scaler": self.scaler,
                "buffer_A": self.buffer_a, "buffer_B": self.buffer_b,
                **({"G_ema": self.ema[0].module, "F_ema": self.ema[1].module} if self.ema else {}),
                **({"nce": n.nce} if n.nce is not None else {}),
                **({"post_filter": self.post.filters, "opt_post": self.post.opt} if self.post else {})}

    def required(self) -> list[str]:
        """The keys a checkpoint must hold for this state to resume from it."""
        return [*self.objects(), "epoch", "step", "rng"]

    def state_dict(self) -> dict:
        return {**{k: obj.state_dict() for k, obj in self.objects().items()},
                **{k: getattr(self, k) for k in PROGRESS}, "rng": checkpoint.rng_state(), **self.record}

    def load_state_dict(self, ck: dict, restore_rng: bool) -> None:
        """Restore from ``ck`` (checked first by :func:`lcgan.rundir.check_resume`); with ``restore_rng``
        the RNG states too, so the resumed run draws what the uninterrupted one would."""
        for key, obj in self.objects().items():
            if isinstance(obj, torch.optim.Optimizer):
                optim.load_state(obj, ck[key], key)
            elif isinstance(obj, torch.amp.GradScaler) and not ck[key]:
                continue  # saved by a run without loss scaling (CPU, bf16): this one starts at the initial scale
            else:
                obj.load_state_dict(ck[key])
        for key, default in PROGRESS.items():
            setattr(self, key, ck.get(key, default))
        if restore_rng:
            checkpoint.set_rng_state(ck["rng"])

    def generators(self, full: dict | None = None) -> dict:
        """What evaluation and translation load (``lcgan.translator.INFERENCE_KEYS``): G and F (and their
        EMA) with the record, a quarter or less of ``full`` (a :meth:`state_dict`, to reuse)."""
        full = full if full is not None else self.state_dict()
        return {k: full[k] for k in INFERENCE_KEYS if k in full}

    @property
    def eval_generators(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """G and F as pictures, validation and ``best.pt`` see them: the EMA weights when kept."""
        return (self.ema[0].module, self.ema[1].module) if self.ema else (self.gan.g_ab, self.gan.g_ba)

    def update_ema(self, step: int) -> None:
        """After optimisation step ``step`` (0-based, counted over the whole run: a resume continues the count)."""
        for avg, net in zip(self.ema, (self.gan.g_ab, self.gan.g_ba)):
            avg.update(net, step)
