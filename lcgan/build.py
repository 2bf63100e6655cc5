"""The training's networks and step, built from the config: what ``lcgan.train`` runs, ``lcgan.bench`` times
and ``lcgan.warmup`` compiles, so that all three build the same step.

- :func:`build_gan`: G, F, D_A and D_B from the ``model`` group; :func:`check_sizes`, :func:`probe_view`:
  latents the networks cannot take fail before any training, with the setting to change.
- :func:`build_training`: optimizers, schedules, AMP scaler, replay buffers and :class:`CycleGANStep`.
- the speed switches (``train.compile``, ``cuda_graphs``, ``channels_last``, ``cudnn_benchmark``): ``auto``
  means on for CUDA (:func:`auto_switch`).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from lcgan.buffer import FakeBuffer
from lcgan.cyclegan import CycleGAN, CycleGANStep, Decoded, LossWeights, generator_params
from lcgan.distributed import ProcessGroup
from lcgan.nce import PatchNCE

# the losses a step returns, in the order the loop sums them on the device and logs them; append-only: a mid-epoch
# checkpoint keeps its sums in this order, and an older one (fewer keys) resumes with the new ones at 0 (train._loss_sums)
LOSS_KEYS = ("loss_G", "loss_D", "loss_gan_G", "loss_gan_F", "loss_cyc", "loss_id", "loss_D_A", "loss_D_B", "loss_swd", "loss_spec", "loss_anchor",
             "loss_nce", "loss_cyc_decoded")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def build_gan(model_cfg: DictConfig, channels: int, view: Decoded | None = None, train_cfg: DictConfig | None = None) -> CycleGAN:
    """Two generators and two discriminators from the ``model`` group; channels come from the data.
    ``view``: the discriminators judge decoded RGB images instead of latents (``train.d_input=decoded``).
    ``train_cfg``: the ``train`` section, for the networks a loss adds (``train.lambda_nce``: the PatchNCE heads)."""
    gen = lambda: instantiate(model_cfg.generator, in_channels=channels)  # noqa: E731
    disc = lambda: instantiate(model_cfg.discriminator, in_channels=3 if view else channels)  # noqa: E731
    g_ab, g_ba = gen(), gen()
    nce = None
    if train_cfg is not None and train_cfg.lambda_nce > 0:
        if not hasattr(g_ab, "features"):
            raise ValueError(f"train.lambda_nce > 0 reads the generator's encoder, and {type(g_ab).__name__} has none: "
                             "use lcgan.models.ResnetGenerator (or train.lambda_nce=0)")
        nce = nn.ModuleList(PatchNCE(g, channels, list(train_cfg.nce_layers), train_cfg.nce_patches) for g in (g_ab, g_ba))
    return CycleGAN(g_ab=g_ab, g_ba=g_ba, d_a=disc(), d_b=disc(), view=view, nce=nce)


def check_sizes(gan: CycleGAN, size: tuple[int, int], seen: tuple[int, int] | None = None) -> None:
    """``seen``: the size of what the discriminators judge (decoded images), when not the latents."""
    h, w = size
    if h % gan.g_ab.factor or w % gan.g_ab.factor:
        raise ValueError(f"latents of {h}x{w} are not divisible by {gan.g_ab.factor}; lower model.generator.n_downsampling")
    smallest = max(4, 2 * gan.g_ab.factor)  # reflection pads: 3 at full size, 1 at the bottleneck
    if min(h, w) < smallest:  # was torch's padding error
        raise ValueError(f"latents of {h}x{w} are too small for the generator (min {smallest}); encode larger images")
    if min(seen or size) < gan.d_a.min_size:
        raise ValueError(f"{'images' if seen else 'latents'} of {'x'.join(map(str, seen or size))} are too small for the "
                         f"discriminator (min {gan.d_a.min_size}); "
                         "lower model.discriminator.n_layers or .kernel")


def probe_view(view: Decoded, z: torch.Tensor, setting: str = "train.d_input=decoded") -> tuple[int, int]:
    """Decode one latent with gradients before any training: a VAE that cannot (onnxruntime) fails now,
    with the fix and the ``setting`` that asked for it; returns the decoded size."""
    try:
        x = view(z.detach().requires_grad_(True))  # a new leaf: the data itself never requires grad
    except (ValueError, NotImplementedError) as e:
        raise ValueError(f"{setting}: {e}") from e
    return tuple(x.shape[-2:])


def auto_switch(value, device: torch.device) -> bool:
    """Speed switches: ``auto`` means on for CUDA, off elsewhere."""
    return device.type == "cuda" if value == "auto" else bool(value)


def memory_format(channels_last, device: torch.device) -> torch.memory_format:
    """The layout of the latents fed to the step (``train.channels_last``): the networks' own, so no step converts them."""
    return torch.channels_last if auto_switch(channels_last, device) else torch.contiguous_format


def background_compile(value, device: torch.device, world: int, decoded: bool = False) -> bool:
    """``train.compile=auto`` on one CUDA device: start eager and compile in the background (:mod:`lcgan.warmup`),
    so the first step does not wait one to two minutes for the compiler. Several processes compile at once
    (every rank must run the same graphs from the first step). Not for ``train.d_input=decoded``: the child
    builds no VAE, so it would fill the caches with another step's graphs."""
    return value == "auto" and device.type == "cuda" and world == 1 and not decoded


class Training(NamedTuple):
    """The step (which holds the optimizers, AMP scaler and replay buffers) and the two learning-rate schedules."""

    step: CycleGANStep
    sched_g: Any
    sched_d: Any


def build_training(cfg: DictConfig, gan: CycleGAN, device: torch.device, group: ProcessGroup | None = None,
                   compile: bool | None = None) -> Training:
    """Optimizers, schedules, AMP scaler, replay buffers and the step function from ``cfg.train`` and ``cfg.optim``.
    ``compile``: compile the step now (default: ``train.compile``, auto = on CUDA)."""
    tc = cfg.train
    # cuDNN tries its algorithms once per shape and keeps the fastest: shapes are fixed here.
    # (A process-wide flag: set from every built step, so the bench's plain step sets it off.)
    torch.backends.cudnn.benchmark = auto_switch(tc.cudnn_benchmark, device)
    if auto_switch(tc.channels_last, device):
        gan.to(memory_format=torch.channels_last)  # cuDNN's fast convolution layout
    make_opt = instantiate(cfg.optim, epochs=tc.epochs)  # the schedule follows the run's length
    opt_g, sched_g = make_opt(generator_params(gan))
    d_lr = {} if tc.d_lr_scale == 1 else {"lr": cfg.optim.lr * tc.d_lr_scale}  # TTUR: D at its own rate, the same schedule
    opt_d, sched_d = make_opt(list(gan.d_a.parameters()) + list(gan.d_b.parameters()), **d_lr)
    amp_dtype = AMP_DTYPES[tc.amp] if device.type == "cuda" else None
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    weights = LossWeights(lambda_cyc=tc.lambda_cyc, lambda_id=tc.lambda_id, d_loss_scale=tc.d_loss_scale,
                          lambda_swd=tc.lambda_swd, swd_kernel=tc.swd_kernel, lambda_spec=tc.lambda_spec,
                          lambda_anchor=tc.lambda_anchor, lambda_nce=tc.lambda_nce, lambda_cyc_decoded=tc.lambda_cyc_decoded)
    step = CycleGANStep(gan, opt_g, opt_d, weights, FakeBuffer(tc.fake_buffer_size), FakeBuffer(tc.fake_buffer_size),
                        amp_dtype, scaler, compile=auto_switch(tc.compile, device) if compile is None else compile,
                        cuda_graphs=auto_switch(tc.cuda_graphs, device),
                        fuse_passes=tc.fuse_passes, grad_sync=group.average_grads if group and group.world > 1 else None,
                        r1_gamma=tc.r1_gamma, r1_every=tc.r1_every)
    return Training(step, sched_g, sched_d)
