"""The schema of conf/: one dataclass per config, stored in Hydra's ConfigStore and named first in the
defaults list of the YAML file it describes (``- /schema/train@_here_``).

Hydra merges the YAML onto it, so OmegaConf checks each key's type while composing: ``train.epochs=abc``,
a typo (``optim.lrr=1``) and an added key (``+train.epoch=2``) are refused before any code runs. Each field
carries the rule its values must meet; :func:`lcgan.config.check` applies them all at once, with the key.

No field has a default: the YAML files hold the one default of each setting (and its documentation), and
a key a YAML leaves out is reported missing. Choices (``train.amp: bf16|fp16|none``) are strings with a
rule rather than ``Enum`` fields: OmegaConf hands an ``Enum`` member to the code, which prints as
``Amp.bf16`` and cannot be read back from a checkpoint with ``weights_only=True``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional  # OmegaConf reads List/Optional, not list/| None, on Python 3.9

from hydra.core.config_store import ConfigStore

from lcgan.augment import POLICIES
from lcgan.baselines import BASELINES
from lcgan.loggers import MODES


@dataclass(frozen=True)
class Rule:
    ok: Callable[[Any], bool]
    want: str  # "must be {want}"


def _finite(v) -> bool:
    """``optim.lr=inf`` parses as a float and would pass ``> 0``."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def at_least(low: float, note: str = "", integer: bool = True) -> Rule:
    return Rule(lambda v: _finite(v) and v >= low, f"{'an integer' if integer else 'a number'} >= {low}{note}")


def above(low: float) -> Rule:
    return Rule(lambda v: _finite(v) and v > low, f"a number > {low}")


def one_of(*choices: Any, want: str = "") -> Rule:
    shown = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
    return Rule(lambda v: any(v == c and type(v) is type(c) for c in choices), want or f"one of {shown}")


def _augment(v: str) -> bool:
    return all(p.strip() in POLICIES for p in v.split(",") if p.strip())


def _betas(v: Sequence) -> bool:
    return len(v) == 2 and all(_finite(b) and 0 <= b < 1 for b in v)


def _device(v: str) -> bool:
    return v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())


POSITIVE = at_least(1)
NON_NEGATIVE = at_least(0)
WEIGHT = at_least(0, integer=False)
SWITCH = one_of("auto", True, False, want="auto, true or false")  # auto: on CUDA
AMP = one_of("bf16", "fp16", "none")
DEVICE = Rule(_device, "auto, cpu, cuda or cuda:N")
SEED = Rule(lambda v: -(2**63) <= v < 2**64, "a 64-bit integer")  # torch.manual_seed overflows beyond
AUGMENT = Rule(_augment, f"'' or a comma-separated subset of {','.join(POLICIES)}")
IMAGE_SIZE = at_least(8, " (a multiple of the VAE's downsampling, 8)")


def setting(rule: Rule | None = None) -> Any:
    """A field without a default (its YAML file holds it) and the rule its values must meet."""
    return field(metadata={"rule": rule} if rule else {})


# ---------------------------------------------------------------------------- lcgan.train (conf/train.yaml)


@dataclass
class TrainSection:
    epochs: int = setting(POSITIVE)
    batch_size: int = setting(POSITIVE)
    lambda_cyc: float = setting(WEIGHT)
    lambda_id: float = setting(WEIGHT)
    lambda_swd: float = setting(at_least(0, " (0: no sliced Wasserstein loss)", integer=False))
    swd_kernel: int = setting(Rule(lambda v: v >= 1 and v % 2 == 1, "an odd integer >= 1"))
    lambda_spec: float = setting(at_least(0, " (0: no spectrum loss)", integer=False))
    lambda_anchor: float = setting(at_least(0, " (0: no pull toward the generators' starting map)", integer=False))
    lambda_nce: float = setting(at_least(0, " (0: no PatchNCE loss)", integer=False))
    lambda_cyc_decoded: float = setting(at_least(0, " (0: the cycle in latents only)", integer=False))
    nce_layers: list[int] = setting(Rule(lambda v: len(v) > 0 and all(isinstance(p, int) and p >= 0 for p in v),
                                         "a non-empty list of feature points (integers >= 0), e.g. [0,1,2,3]"))
    nce_patches: int = setting(POSITIVE)
    post_filter: int = setting(Rule(lambda v: v == 0 or (v >= 1 and v % 2 == 1), "0 (off) or an odd filter side in pixels, e.g. 9"))
    post_filter_lr: float = setting(at_least(0, " (0: keep the filters fitted at the start)", integer=False))
    post_filter_decouple: str = setting(one_of("difference", "round_trip"))
    post_colour: str = setting(one_of("none", "mean_shift", "moment_match", "gaussian_ot", "gaussian_ot_shrunk"))
    post_colour_alpha: float = setting(Rule(lambda v: _finite(v) and 0 < v <= 1, "a p-value threshold in (0, 1] (1: always fit)"))
    d_input: str = setting(one_of("latent", "decoded"))
    d_targets: str = setting(one_of("real", "unfiltered"))
    d_crop: int = setting(at_least(0, " (0: decode the whole latents)"))
    r1_gamma: float = setting(at_least(0, " (0: no R1 penalty)", integer=False))
    r1_every: int = setting(POSITIVE)
    d_loss_scale: float = setting(above(0))
    d_lr_scale: float = setting(above(0))
    gain_scales: list[float] = setting(Rule(lambda v: all(_finite(x) and 0 <= x <= 100 for x in v),
                                            "a list of scales in [0, 100], e.g. [0,0.5,1,1.5,2,3,4,6,8] ([]: off)"))
    gain_tolerance: float = setting(at_least(0, " (0: the nearest scale; 1: the one-standard-error rule)", integer=False))
    gain_shrink: float = setting(Rule(lambda v: _finite(v) and 0 <= v <= 1, "a number in [0, 1] (0: the nearest scale; 1: the start)"))
    gain_from: Optional[str] = setting()
    gain_transfer: str = setting(one_of("scale", "correction", "agreement"))
    gain_crossfit: float = setting(Rule(lambda v: _finite(v) and 0 <= v < 1, "a fraction in [0, 1), e.g. 0.2 (0: off)"))
    ema_decay: float = setting(Rule(lambda v: _finite(v) and 0 <= v < 1, "a number in [0, 1) (0: no EMA)"))
    ema_debias: bool = setting()
    fake_buffer_size: int = setting(at_least(0, " (0 disables the replay buffer)"))
    amp: str = setting(AMP)
    compile: Any = setting(SWITCH)
    cuda_graphs: Any = setting(SWITCH)
    fuse_passes: bool = setting()
    cudnn_benchmark: Any = setting(SWITCH)
    channels_last: Any = setting(SWITCH)
    vis_every: int = setting(at_least(0, " (0: no pictures)"))
    n_vis: int = setting(POSITIVE)
    ckpt_every: int = setting(POSITIVE)
    log_every: int = setting(POSITIVE)
    resume: bool = setting()
    resume_path: Optional[str] = setting()
    resume_restore_rng: bool = setting()
    overwrite: bool = setting()
    epoch_files: str = setting(one_of("generators", "full", "none"))
    keep_epochs: int = setting(NON_NEGATIVE)


@dataclass
class TrainConfig:
    seed: int = setting(SEED)
    device: str = setting(DEVICE)
    out_dir: str = setting()
    train: TrainSection = setting()
    model: Any = setting()  # model/*.yaml name their own schemas
    data: Any = setting()  # data/*.yaml too
    optim: Any = setting()
    vae: Any = setting()
    logger: Any = setting()


@dataclass
class Generator:  # lcgan.models.ResnetGenerator
    _target_: str = setting()
    ngf: int = setting(POSITIVE)
    n_blocks: int = setting(NON_NEGATIVE)
    n_downsampling: int = setting(NON_NEGATIVE)
    output: str = setting(one_of("residual", "tanh"))
    anchor: str = setting(one_of("identity", *BASELINES))


@dataclass
class PatchDiscriminator:  # lcgan.models.PatchDiscriminator
    _target_: str = setting()
    ndf: int = setting(POSITIVE)
    n_layers: int = setting(at_least(0, " (0: the 1x1 pixel discriminator of older runs)"))
    augment: str = setting(AUGMENT)


@dataclass
class LocalDiscriminator:  # lcgan.models.LocalDiscriminator
    _target_: str = setting()
    ndf: int = setting(POSITIVE)
    kernel: int = setting(Rule(lambda v: v >= 1 and v % 2 == 1, "an odd integer >= 1 (1: one latent vector)"))
    augment: str = setting(AUGMENT)


@dataclass
class Adam:  # lcgan.optim.adam
    _target_: str = setting()
    _partial_: bool = setting()
    lr: float = setting(above(0))
    betas: list[float] = setting(Rule(_betas, "two numbers in [0, 1), e.g. [0.5,0.999]"))
    lr_constant_epochs: Optional[int] = setting(Rule(lambda v: v is None or v >= 0, "null (half of train.epochs) or an integer >= 0"))
    lr_decay_epochs: Optional[int] = setting(Rule(lambda v: v is None or v >= 0, "null (the rest of train.epochs) or an integer >= 0"))
    fused: Optional[bool] = setting()


LATENT_NORM = one_of("divisor", "channel", want="divisor (file / data.latent_divisor) or channel (per-channel standardisation)")


@dataclass
class LatentFolders:  # lcgan.data.latent_folders
    _target_: str = setting()
    a_dir: str = setting()
    b_dir: str = setting()
    latents_scaled: bool = setting()
    latent_divisor: float = setting(above(0))
    latent_norm: str = setting(LATENT_NORM)
    flip: bool = setting()
    num_workers: int = setting(NON_NEGATIVE)
    val_fraction: float = setting(Rule(lambda v: _finite(v) and 0 <= v < 1, "a number in [0, 1) (0: no validation split)"))
    val_a_dir: Optional[str] = setting()
    val_b_dir: Optional[str] = setting()
    max_files: Optional[int] = setting(Rule(lambda v: v is None or v >= 1, "null (all files) or an integer >= 1"))


@dataclass
class Synthetic:  # lcgan.data.synthetic
    _target_: str = setting()
    n_a: int = setting(POSITIVE)
    n_b: int = setting(POSITIVE)
    n_eval: int = setting(POSITIVE)
    size: int = setting(at_least(4))
    channels: int = setting(POSITIVE)
    mean: list[float] = setting()
    std: list[float] = setting()
    shift: list[float] = setting()
    latent_divisor: float = setting(above(0))
    latent_norm: str = setting(LATENT_NORM)
    flip: bool = setting()
    seed: int = setting(SEED)


@dataclass
class NullLogger:  # lcgan.loggers.NullLogger
    _target_: str = setting()


@dataclass
class WandbLogger:  # lcgan.loggers.WandbLogger
    _target_: str = setting()
    project: str = setting()
    entity: Optional[str] = setting()
    group: Optional[str] = setting()
    name: Optional[str] = setting()
    tags: list[str] = setting()
    mode: str = setting(one_of(*MODES))
    dir: Optional[str] = setting()
    job_type: str = setting()
    log_every: int = setting(POSITIVE)
    log_images: bool = setting()


# ---------------------------------------------------------------------------- lcgan.bench (conf/bench.yaml: train's keys and these)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class BenchEval:
    enabled: bool = setting()
    images: int = setting(POSITIVE)
    loop_images: int = setting(POSITIVE)
    batch_size: int = setting(POSITIVE)
    batch_sizes: list[int] = setting(Rule(lambda v: all(isinstance(b, int) and b >= 1 for b in v), "a list of integers >= 1"))
    png: bool = setting()
    profile_batches: int = setting(NON_NEGATIVE)
    compile: bool = setting()
    compile_modes: list[str] = setting(Rule(lambda v: all(m in COMPILE_MODES for m in v),
                                            f"a list of torch.compile modes: {', '.join(COMPILE_MODES)}"))
    image_size: int = setting(at_least(8))


@dataclass
class BenchSection:
    latent_size: int = setting(POSITIVE)
    channels: int = setting(POSITIVE)
    warmup: int = setting(NON_NEGATIVE)
    eager_warmup: int = setting(NON_NEGATIVE)
    steps: int = setting(POSITIVE)
    n_batches: int = setting(POSITIVE)
    rounds: int = setting(POSITIVE)
    compare_steps: int = setting(POSITIVE)
    eager_amp: str = setting(AMP)
    eager_batch_size: Optional[int] = setting(Rule(lambda v: v is None or v >= 1, "null or an integer >= 1"))
    eval: BenchEval = setting()
    profile: bool = setting()
    output: str = setting()


@dataclass
class BenchConfig(TrainConfig):
    compare: bool = setting()
    bench: BenchSection = setting()


# ---------------------------------------------------------------------------- lcgan.encode (conf/encode.yaml)


@dataclass
class EncodeConfig:
    vae: Any = setting()
    input_dir: str = setting()
    output_dir: str = setting()
    image_size: int = setting(IMAGE_SIZE)
    batch_size: int = setting(POSITIVE)
    num_workers: int = setting(NON_NEGATIVE)
    latents_scaled: bool = setting()
    sample_posterior: bool = setting()
    seed: int = setting(SEED)
    flip_copies: bool = setting()
    device: str = setting(DEVICE)
    overwrite: bool = setting()
    on_error: str = setting(one_of("skip", "stop", want="skip or stop"))


# ---------------------------------------------------------------------------- lcgan.evaluate and lcgan.translate


@dataclass
class EvalSection:
    """The eval group's plain keys; its metric networks (lpips, clip, fid) are components with their own checks."""

    testA_dir: Optional[str] = setting()
    testB_dir: Optional[str] = setting()
    image_size: int = setting(at_least(8, " (a multiple of 8 * the generator's factor)"))
    batch_size: Optional[int] = setting(at_least(1, " (or null: chosen for the device)"))
    amp: str = setting(one_of("auto", "bf16", "none"))
    compile: Any = setting(SWITCH)
    num_workers: int = setting(NON_NEGATIVE)
    out_dir: Optional[str] = setting()
    save_images: bool = setting()
    use_ema: bool = setting()
    latent_baselines: bool = setting()
    random_weights: bool = setting()
    lpips: Any = setting()
    clip: Any = setting()
    fid: Any = setting()


@dataclass
class EvalConfig:
    eval: EvalSection = setting()
    logger: Any = setting()
    checkpoint: str = setting(Rule(lambda v: v != "", "a .pt file or latest"))
    seed: int = setting(SEED)
    device: str = setting(DEVICE)
    vae: Any = None  # no vae= group chosen: the checkpoint's VAE


@dataclass
class TranslateConfig:
    eval: EvalSection = setting()
    checkpoint: str = setting(Rule(lambda v: v != "", "a .pt file or latest"))
    metrics: bool = setting()
    input: Optional[str] = setting(Rule(lambda v: v != "", "null or a folder of images or one image"))
    direction: str = setting(one_of("A2B", "B2A", want="A2B (G) or B2A (F)"))
    size: Optional[int] = setting(Rule(lambda v: v is None or v >= 8, "null (each image's own size) or an integer >= 8"))
    batch_size: int = setting(POSITIVE)
    output_dir: Optional[str] = setting()
    image: Optional[str] = setting(Rule(lambda v: v != "", "null or an image file"))
    imageA: Optional[str] = setting(Rule(lambda v: v != "", "null or an image file"))
    imageB: Optional[str] = setting(Rule(lambda v: v != "", "null or an image file"))
    seed: int = setting(SEED)
    device: str = setting(DEVICE)
    vae: Any = None  # no vae= group chosen: the checkpoint's VAE


# where conf/'s defaults lists name them: /schema/<name>
for _name, _node in [("train", TrainConfig), ("bench", BenchConfig), ("encode", EncodeConfig), ("eval", EvalConfig),
                     ("translate", TranslateConfig), ("generator", Generator), ("patch_discriminator", PatchDiscriminator),
                     ("local_discriminator", LocalDiscriminator),
                     ("adam", Adam), ("latent_folders", LatentFolders), ("synthetic", Synthetic),
                     ("null_logger", NullLogger), ("wandb_logger", WandbLogger)]:
    ConfigStore.instance().store(group="schema", name=_name, node=_node)
