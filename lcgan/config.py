"""Checks of a composed config that fail before any work starts, naming the key.

Hydra already refuses unknown keys (struct mode: ``optim.lrr=1`` is an error); this catches
wrong types and out-of-range values, all at once, with the key and the fix.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from lcgan.augment import POLICIES
from lcgan.latents import Convention

_ABSENT = object()


class ConfigError(ValueError):
    pass


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    """A finite number: ``optim.lr=inf`` parses as a float and would pass ``> 0``."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _path_or_null(v) -> bool:
    return v is None or (isinstance(v, str) and v != "")


def _betas(v) -> bool:
    return isinstance(v, Sequence) and not isinstance(v, str) and len(v) == 2 and all(_num(b) and 0 <= b < 1 for b in v)


# key -> (is valid, what it must be)
RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "seed": (lambda v: _int(v) and -(2**63) <= v < 2**64, "a 64-bit integer"),  # torch.manual_seed overflows beyond
    "train.epochs": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "train.batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "train.lambda_cyc": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "train.lambda_id": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "train.d_loss_scale": (lambda v: _num(v) and v > 0, "a number > 0"),
    "train.ema_decay": (lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1) (0: no EMA)"),
    "train.lambda_swd": (lambda v: _num(v) and v >= 0, "a number >= 0 (0: no sliced Wasserstein loss)"),
    "train.swd_kernel": (lambda v: _int(v) and v >= 1 and v % 2 == 1, "an odd integer >= 1"),
    "train.r1_gamma": (lambda v: _num(v) and v >= 0, "a number >= 0 (0: no R1 penalty)"),
    "train.r1_every": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "train.fake_buffer_size": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0 disables the replay buffer)"),
    "train.amp": (lambda v: v in ("bf16", "fp16", "none"), "one of bf16, fp16, none"),
    "train.compile": (lambda v: v in ("auto", True, False), "auto, true or false"),
    "train.cuda_graphs": (lambda v: v in ("auto", True, False), "auto, true or false"),
    "train.cudnn_benchmark": (lambda v: v in ("auto", True, False), "auto, true or false"),
    "train.channels_last": (lambda v: v in ("auto", True, False), "auto, true or false"),
    "train.fuse_passes": (lambda v: isinstance(v, bool), "true or false"),
    "train.vis_every": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0: no pictures)"),
    "train.n_vis": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "train.ckpt_every": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "train.epoch_files": (lambda v: v in ("generators", "full", "none"), "generators (G and F only), full (resumable) or none"),
    "train.keep_epochs": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0: keep every epoch file)"),
    "train.log_every": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "train.resume": (lambda v: isinstance(v, bool), "true or false"),
    "train.resume_restore_rng": (lambda v: isinstance(v, bool), "true or false"),
    "optim.lr": (lambda v: _num(v) and v > 0, "a number > 0"),
    "optim.betas": (_betas, "two numbers in [0, 1), e.g. [0.5,0.999]"),
    "optim.lr_constant_epochs": (lambda v: v is None or (_int(v) and v >= 0), "null (half of train.epochs) or an integer >= 0"),
    "optim.lr_decay_epochs": (lambda v: v is None or (_int(v) and v >= 0), "null (the rest of train.epochs) or an integer >= 0"),
    "data.latent_divisor": (lambda v: _num(v) and v > 0, "a number > 0"),
    "data.max_files": (lambda v: v is None or (_int(v) and v >= 1), "null (all files) or an integer >= 1"),
    "data.latents_scaled": (lambda v: isinstance(v, bool), "true or false"),
    "data.latent_norm": (lambda v: v in ("divisor", "channel"), "divisor (file / data.latent_divisor) or channel (per-channel standardisation)"),
    "model.discriminator.n_layers": (lambda v: _int(v) and v >= 0, "an integer >= 0 (0: a 1x1 pixel discriminator)"),
    "model.discriminator.kernel": (lambda v: _int(v) and v >= 1 and v % 2 == 1, "an odd integer >= 1 (1: one latent vector)"),
    "model.discriminator.augment": (lambda v: isinstance(v, str) and all(p.strip() in POLICIES for p in v.split(",") if p.strip()),
                                    f"'' or a comma-separated subset of {','.join(POLICIES)}"),
    "device": (lambda v: isinstance(v, str) and (v in ("auto", "cpu", "cuda") or v.startswith("cuda:")), "auto, cpu, cuda or cuda:N"),
    "train.overwrite": (lambda v: isinstance(v, bool), "true or false"),
    "model.discriminator.ndf": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    # lcgan.encode (conf/encode.yaml): 0 and -2 wrote nothing and exited 0
    "image_size": (lambda v: _int(v) and v >= 8, "an integer >= 8 (a multiple of the VAE's downsampling, 8)"),
    "batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "num_workers": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "on_error": (lambda v: v in ("skip", "stop"), "skip or stop"),
    "latents_scaled": (lambda v: isinstance(v, bool), "true or false"),
    "sample_posterior": (lambda v: isinstance(v, bool), "true or false"),
    "flip_copies": (lambda v: isinstance(v, bool), "true or false"),
    "overwrite": (lambda v: isinstance(v, bool), "true or false"),
    # lcgan.evaluate and lcgan.translate (conf/eval.yaml, conf/translate.yaml, the eval group)
    "checkpoint": (lambda v: isinstance(v, str) and v != "", "a .pt file or latest"),
    "image": (_path_or_null, "null or an image file"),
    "imageA": (_path_or_null, "null or an image file"),
    "imageB": (_path_or_null, "null or an image file"),
    "metrics": (lambda v: isinstance(v, bool), "true (the evaluation's metrics on image=) or false (plain translation of input=)"),
    "input": (_path_or_null, "null or a folder of images or one image"),
    "direction": (lambda v: v in ("A2B", "B2A"), "A2B (G) or B2A (F)"),
    "size": (lambda v: v is None or (_int(v) and v >= 8), "null (each image's own size) or an integer >= 8"),
    "eval.image_size": (lambda v: _int(v) and v >= 8, "an integer >= 8 (a multiple of 8 * the generator's factor)"),
    "eval.batch_size": (lambda v: v is None or (_int(v) and v >= 1), "null (chosen for the device) or an integer >= 1"),
    "eval.amp": (lambda v: v in ("auto", "bf16", "none"), "auto (bf16 on CUDA), bf16 or none"),
    "eval.num_workers": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "eval.save_images": (lambda v: isinstance(v, bool), "true or false"),
    "eval.use_ema": (lambda v: isinstance(v, bool), "true or false"),
    "eval.latent_baselines": (lambda v: isinstance(v, bool), "true or false"),
    "eval.random_weights": (lambda v: isinstance(v, bool), "true or false"),
    "eval.lpips.random": (lambda v: isinstance(v, bool), "true or false"),
    "eval.clip.random": (lambda v: isinstance(v, bool), "true or false"),
    "eval.fid.random": (lambda v: isinstance(v, bool), "true or false"),
    "eval.lpips.net": (lambda v: v in ("alex", "vgg", "squeeze"), "alex, vgg or squeeze"),
    "eval.fid.kid_subsets": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "eval.fid.kid_subset_size": (lambda v: _int(v) and v >= 2, "an integer >= 2"),
    # lcgan.bench (conf/bench.yaml; its train/optim/model keys are the rules above)
    "bench.latent_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "bench.channels": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "bench.warmup": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "bench.eager_warmup": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "bench.steps": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "bench.n_batches": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "bench.compare_steps": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "bench.eager_amp": (lambda v: v in ("bf16", "fp16", "none"), "one of bf16, fp16, none"),
    "bench.eval.images": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "bench.eval.loop_images": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "bench.eval.batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "bench.eval.image_size": (lambda v: _int(v) and v >= 8, "an integer >= 8"),
}


def at_least(low: float, kind: type = int, strict: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` for the plain-argparse commands (fid_stats, latent_stats): a number >= ``low``
    (> with ``strict``); argparse names the option in the error (``argument --batch-size: must be an integer >= 1, got '-2'``)."""
    want = f"{'an integer' if kind is int else 'a number'} {'>' if strict else '>='} {low}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value

    return parse


def device_name(text: str) -> str:
    """An argparse ``type``: the devices ``device=`` takes."""
    if not RULES["device"][0](text):
        raise argparse.ArgumentTypeError(f"must be {RULES['device'][1]}, got {text!r}")
    return text


def check(cfg: DictConfig) -> None:
    """Raise one :class:`ConfigError` listing every key whose value is invalid."""
    problems = []
    for key, (ok, want) in RULES.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
        if value is _ABSENT:
            continue
        if not ok(value):
            problems.append(f"{key}={value!r}: must be {want}")
    # a setting that cannot apply is an error: per-channel statistics replace the divisor (a sweep over it was a no-op)
    divisor = OmegaConf.select(cfg, "data.latent_divisor", default=Convention.latent_divisor)
    if OmegaConf.select(cfg, "data.latent_norm", default=None) == "channel" and divisor != Convention.latent_divisor:
        problems.append(f"data.latent_divisor={divisor!r} has no effect under data.latent_norm=channel (per-channel statistics "
                        f"replace it): leave data.latent_divisor at {Convention.latent_divisor}, or use data.latent_norm=divisor")
    if problems:
        raise ConfigError("invalid config (fix on the command line, e.g. key=value):\n  " + "\n  ".join(problems))
