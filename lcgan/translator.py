"""Rebuild the two generators of a checkpoint for inference, with the latent conventions they were
trained with: lcgan checkpoints, checkpoints without a model config (inferred from the weights),
and those of the original single-script tool.
"""
from __future__ import annotations

import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from lcgan import checkpoint as ckpt_io
from lcgan import gain as gains
from lcgan.latents import Convention
from lcgan.models import InstanceNorm, ResnetGenerator
from lcgan.postfilter import PostFilters
from lcgan.vae import ApproxVAE, DiffusersVAE, OnnxVAE, TinyVAE

# A checkpoint's config is data: the only classes it may name, built with plain keyword values
# that are checked here, never handed to Hydra's instantiate (a nested _target_ would run code).
GENERATORS = {"lcgan.models.ResnetGenerator": ResnetGenerator}
VAES = {f"lcgan.vae.{c.__name__}": c for c in (ApproxVAE, DiffusersVAE, TinyVAE, OnnxVAE)}
_SCALARS = (bool, int, float, str, type(None))

# What :func:`load_translator` reads of a checkpoint: a generators-only file (``model/epoch_XXXX.pt``
# under ``train.epoch_files=generators``) holds exactly these, and a full training checkpoint more
# ("G_ema"/"F_ema" only with ``train.ema_decay > 0``; "epoch"/"metrics" are shown, not needed).
INFERENCE_KEYS = ("G", "F", "G_ema", "F_ema", "post_filter", "gain", "cfg", "convention", "latent_space", "domain_stats", "epoch", "metrics")


def _fits(value, hint) -> bool:
    """``value`` is plain data of type ``hint`` (bool, int, float, str, None, and lists/tuples of those)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return isinstance(value, _SCALARS) and value in args
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin in (list, tuple) or hint in (list, tuple):
        elem = args[0] if args else typing.Any
        return isinstance(value, (list, tuple)) and all(isinstance(v, _SCALARS) and _fits(v, elem) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (bool, str, type(None)):
        return isinstance(value, hint)
    return hint is typing.Any and isinstance(value, _SCALARS)


def plain_kwargs(cls: type, values, where: str, runtime: tuple[str, ...], fix: str) -> dict:
    """``values`` (read from a file) as keyword arguments of ``cls``: each key one of its constructor's
    parameters (so new ones are picked up), each value plain data of the annotated type; else a
    ValueError naming ``where`` and the key."""
    if not isinstance(values, dict):
        raise ValueError(f"{where} is a {type(values).__name__}, not a mapping of settings; {fix}")
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve here: plain scalars only
        hints = {}
    names = [n for n, p in inspect.signature(cls.__init__).parameters.items()
             if n not in ("self", *runtime) and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"{where}.{key} is not a setting of {cls.__name__} (it takes {', '.join(names)}); {fix}")
        if not _fits(value, hints.get(key, typing.Any)):
            shown = repr(value) if len(repr(value)) < 120 else repr(value)[:117] + "..."
            raise ValueError(f"{where}.{key}={shown} is not a plain value of type {hints.get(key, 'scalar')}; {fix}")
        kwargs[key] = value
    return kwargs


def rebuild(values, allowed: dict[str, type], where: str, runtime: tuple[str, ...], fix: str) -> tuple[type, dict]:
    """The class a file's config names (``_target_``, one of ``allowed``) and its checked keyword arguments."""
    target = values.get("_target_") if isinstance(values, dict) else None
    if not isinstance(target, str) or target not in allowed:
        shown = repr(target) if len(repr(target)) < 120 else repr(target)[:117] + "..."
        raise ValueError(f"{where}._target_={shown} is not one of lcgan's own classes ({', '.join(allowed)}); "
                         f"lcgan rebuilds only those, never what a file names; {fix}")
    cls = allowed[target]
    return cls, plain_kwargs(cls, {k: v for k, v in values.items() if k != "_target_"}, where, runtime, fix)


@dataclass
class Translator:
    """The two generators of a checkpoint and what is needed to feed them."""

    g_ab: torch.nn.Module
    g_ba: torch.nn.Module
    convention: Convention
    channels: int
    factor: int  # latent sides must be divisible by this
    vae_cfg: dict | None  # the training-time VAE config, when the checkpoint names one
    info: dict = field(default_factory=dict)
    domain_stats: dict | None = None  # training-domain channel stats, model space: a_mean, a_std, b_mean, b_std
    post: PostFilters | None = None  # train.post_filter: pixel filters applied after decoding G's (g_ab) and F's (g_ba) output

    def pixel_filter(self, gen_name: str) -> torch.nn.Module | None:
        """What follows generator ``gen_name`` ("g_ab" or "g_ba") after decoding, if the run trained post-filters."""
        return getattr(self.post, gen_name) if self.post is not None else None


def resolve_checkpoint(spec: str) -> Path:
    if spec != "latest":
        return Path(spec)
    found = sorted(Path("outputs/train").glob("*/*/model/last.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError("checkpoint=latest but no outputs/train/*/*/model/last.pt exists here; pass checkpoint=PATH")
    return found[-1]


def _lcgan_resnet_config(state: dict, output: str) -> dict:
    """lcgan ResnetGenerator keyword arguments read off a state dict's keys and shapes."""
    convs = sorted((int(k.split(".")[1]), v.shape) for k, v in state.items() if k.count(".") == 2 and k.endswith(".weight"))
    blocks = {int(k.split(".")[1]) for k in state if ".body." in k}
    first_block = min(blocks) if blocks else math.inf
    downs = [i for i, s in convs if 1 < i < first_block and len(s) == 4 and s[-1] == 3]
    # anchor buffers hold the start map itself, so any anchor of the same shape rebuilds it: 1x1 maps
    # (per-channel legacy anchor_scale, or anchor_weight (C, C, 1, 1)) as gaussian_ot, 3x3 as patch_ot
    anchor = {"anchor": "moment_match", "output": "residual"} if "anchor_scale" in state else {"anchor": "identity"}
    if "anchor_weight" in state:
        anchor = {"anchor": "patch_ot" if state["anchor_weight"].shape[-1] > 1 else "gaussian_ot", "output": "residual"}
    return {"ngf": int(state["net.1.weight"].shape[0]), "n_blocks": len(blocks), "n_downsampling": len(downs),
            "output": output, **anchor}


class LegacyResnetGenerator(torch.nn.Module):
    """The original single-script tool's generator (5x5 stem, depthwise-separable blocks, no resampling).

    Built from the state dict's shapes; ``out_activation``/``use_global_residual`` from its config.
    """

    def __init__(self, state: dict, out_activation: str = "none", use_global_residual: bool = False) -> None:
        super().__init__()
        nn = torch.nn
        stem = state["net.1.weight"] if "net.1.weight" in state else state["net.0.weight"]
        ngf, cin, k = stem.shape[0], stem.shape[1], stem.shape[-1]
        pad = lambda: [nn.ReflectionPad2d(k // 2)] if k > 1 else []  # noqa: E731
        n_blocks = len({k_.split(".")[1] for k_ in state if ".block." in k_})
        norm = lambda: InstanceNorm(ngf)  # noqa: E731

        def block() -> nn.Module:
            def half(relu: bool) -> list:
                sep = [nn.ReflectionPad2d(1), nn.Conv2d(ngf, ngf, 3, groups=ngf, bias=False)] if k > 1 else []
                return sep + [nn.Conv2d(ngf, ngf, 1, bias=False), norm()] + ([nn.ReLU(True)] if relu else [])

            return _Residual(nn.Sequential(*half(True), *half(False)))

        layers = [*pad(), nn.Conv2d(cin, ngf, k, bias=False), norm(), nn.ReLU(True), *[block() for _ in range(n_blocks)],
                  *pad(), nn.Conv2d(ngf, cin, k, bias=True)]
        if out_activation.lower() == "tanh":
            layers.append(nn.Tanh())
        self.net, self.residual, self.factor = nn.Sequential(*layers), use_global_residual, 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.net(z) if self.residual else self.net(z)


class _Residual(torch.nn.Module):
    """``x + block(x)``; the attribute name ``block`` matches the original tool's state-dict keys."""

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def load_translator(path: str | Path, device: torch.device, use_ema: bool = True, use_gain: bool = True) -> Translator:
    """G and F of an lcgan checkpoint, or of the original single-script tool's (``cfg.visualization.*``).
    With ``use_ema`` the EMA weights (``G_ema``/``F_ema``, written with train.ema_decay > 0) when present; with
    ``use_gain`` each correction scaled by the gain recorded in the file (``train.gain_scales``, :mod:`lcgan.gain`)."""
    path = Path(path)
    ck = ckpt_io.load(path, map_location="cpu")
    missing = [k for k in ("G", "F", "cfg") if k not in ck]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}: not a latent CycleGAN checkpoint (keys: {sorted(ck)[:12]})")
    cfg, g_state = ck["cfg"], ck["G"]
    if not isinstance(cfg, dict) or not isinstance(g_state, dict) or not all(isinstance(v, torch.Tensor) for v in g_state.values()):
        raise ValueError(f"checkpoint {path}: cfg must be a mapping and G a state dict of tensors; not a latent CycleGAN checkpoint")
    data, model = _section(cfg, "data", path), _section(cfg, "model", path)
    gen_cfg = model.get("generator")
    if gen_cfg is not None:  # an lcgan checkpoint: its own generator config, rebuilt from the allow-list
        if isinstance(gen_cfg, dict) and "anchor" not in gen_cfg:  # saved before model.generator.anchor existed: no anchor
            gen_cfg = {**gen_cfg, "anchor": "identity"}
        gen_cls, gen_kwargs = rebuild(gen_cfg, GENERATORS, f"checkpoint {path}: cfg.model.generator", ("in_channels",),
                                      "re-save the checkpoint from a trusted lcgan run")
        fmt, make = "lcgan", lambda c: gen_cls(in_channels=c, **gen_kwargs)
        divisor_default = 10.0
    else:
        divisor_default = 1.0  # the original tool's default
        if any(".block." in k for k in g_state):
            fmt = "original tool"
            act, residual = _setting(model, "out_activation", str, "none", path), _setting(model, "use_global_residual", bool, False, path)
            make = lambda c: LegacyResnetGenerator(g_state, act, residual)  # noqa: E731
        elif any(".body." in k for k in g_state):
            fmt = "lcgan layout, config inferred from the weights"
            rc = _lcgan_resnet_config(g_state, _setting(model, "output", str, "tanh", path))
            make = lambda c: ResnetGenerator(in_channels=c, **rc)  # noqa: E731
        else:
            raise ValueError(f"checkpoint {path} has no cfg.model.generator and its G state dict (keys e.g. "
                             f"{sorted(g_state)[:6]}) matches no known generator layout; cannot rebuild G and F")
    stem_key = "net.1.weight" if "net.1.weight" in g_state else "net.0.weight"
    channels = int(g_state[stem_key].shape[1])
    nets = []
    for key in ("G", "F"):
        try:
            net = make(channels)
        except (TypeError, ValueError) as e:  # the class's own checks (e.g. output='foo')
            raise ValueError(f"checkpoint {path}: its generator ({fmt}) cannot be rebuilt: {e}") from None
        try:
            net.load_state_dict(ck[f"{key}_ema"] if use_ema and f"{key}_ema" in ck else ck[key])
        except RuntimeError as e:
            raise ValueError(f"checkpoint {path}: {key} does not fit the generator rebuilt as {fmt}: {str(e)[:400]}") from None
        nets.append(net.to(device).eval().requires_grad_(False))
    gain = gains.check(ck["gain"], f"checkpoint {path}") if use_gain and "gain" in ck else None
    if gain is not None:  # a number the run chose on held-out data; the weights in the file stay as trained
        for net, name in zip(nets, ("g_ab", "g_ba")):
            gains.apply(net, gain[name], f"checkpoint {path}: {name}")
    recorded = ck.get("convention") or {"latents_scaled": _setting(data, "latents_scaled", bool, False, path),
                                        "latent_divisor": _setting(data, "latent_divisor", float, divisor_default, path)}
    convention_kwargs = plain_kwargs(Convention, recorded, f"checkpoint {path}: convention", (), "not an lcgan checkpoint")
    convention_kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in convention_kwargs.items()}
    vae_cfg = cfg.get("vae")
    if vae_cfg is None:  # the original tool: a diffusers VAE named under visualization (or shared)
        vis = {**_section(cfg, "shared", path), **_section(cfg, "visualization", path)}
        if vis.get("vae_model_name_or_path"):
            vae_cfg = {"_target_": "lcgan.vae.DiffusersVAE", "model_name_or_path": vis["vae_model_name_or_path"],
                       "subfolder": vis.get("vae_subfolder")}
            if vis.get("vae_scaling_factor") is not None:
                vae_cfg["scaling_factor"] = float(vis["vae_scaling_factor"])
    info = {"path": str(path), "format": fmt, "epoch": ck.get("epoch"), "channels": channels,
            "generator": gen_cfg or type(nets[0]).__name__, "latent_space": ck.get("latent_space"),
            "weights": "EMA" if use_ema and "G_ema" in ck else "raw", **({"gain": gain} if gain is not None else {})}
    try:
        convention = Convention(**convention_kwargs)
    except ValueError as e:
        raise ValueError(f"checkpoint {path}: convention {convention_kwargs}: {e}") from None
    post = PostFilters.from_state(ck["post_filter"], f"checkpoint {path}: post_filter").to(device) if "post_filter" in ck else None
    if post is not None:
        info["post_filter"] = f"{post.g_ab.size}x{post.g_ab.size} pixels"
    return Translator(nets[0], nets[1], convention, channels, getattr(nets[0], "factor", 1), vae_cfg, info,
                      _domain_stats(ck.get("domain_stats"), channels, path), post)


def _section(cfg: dict, key: str, path: Path) -> dict:
    """``cfg[key]``: a mapping or absent."""
    value = cfg.get(key) or {}
    if not isinstance(value, dict):
        raise ValueError(f"checkpoint {path}: cfg.{key} is a {type(value).__name__}, not a mapping; not a latent CycleGAN checkpoint")
    return value


def _setting(section: dict, key: str, kind: type, default, path: Path):
    """A plain setting of a checkpoint's config (the original tool's and inferred layouts)."""
    value = section.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"checkpoint {path}: {key}={str(value)[:100]} must be a plain {kind.__name__}; not a usable checkpoint")
    return value


def _numbers(v) -> bool:
    """A number, or (nested) lists or string-keyed dicts of numbers: plain data (``maps`` holds the fitted
    baselines as {direction: {name: {"weight": ..., "bias": ...}}}; evaluate checks their shapes)."""
    if isinstance(v, (list, tuple)):
        return all(_numbers(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _numbers(x) for k, x in v.items())
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _domain_stats(stats, channels: int, path: Path) -> dict | None:
    """The training domains' channel statistics: ``a_mean``, ``a_std``, ``b_mean``, ``b_std`` of
    ``channels`` numbers each (other entries, e.g. the fitted baseline ``maps``, kept when they are numbers), or None."""
    if stats is None:
        return None
    keys = ("a_mean", "a_std", "b_mean", "b_std")
    ok = isinstance(stats, dict) and all(isinstance(k, str) and _numbers(v) for k, v in stats.items()) and all(
        isinstance(stats.get(k), (list, tuple)) and len(stats[k]) == channels and not any(isinstance(v, list) for v in stats[k])
        for k in keys)
    if not ok:
        raise ValueError(f"checkpoint {path}: domain_stats must hold {', '.join(keys)}, each {channels} numbers, and only "
                         f"numbers elsewhere; got {str(stats)[:120]}")
    return dict(stats)


def build_vae(vae_override: DictConfig | None, translator: Translator, device: torch.device):
    """The VAE named on the command line (``vae=...``), else the checkpoint's training-time one."""
    if vae_override is not None:  # the user's own command line: Hydra's config, instantiated as everywhere
        return instantiate(vae_override, device=str(device)), "command line (vae=...)"
    hint = "pass one on the command line: vae=sd15 | vae=vaelight vae.encoder_path=E vae.decoder_path=D | ..."
    if translator.vae_cfg is None:
        raise ValueError(f"checkpoint {translator.info['path']} names no VAE (no cfg.vae, no visualization.vae_model_name_or_path); {hint}")
    cls, kwargs = rebuild(translator.vae_cfg, VAES, f"checkpoint {translator.info['path']}: cfg.vae", ("device",),
                          f"or {hint}")
    return cls(**kwargs, device=str(device)), "checkpoint cfg.vae"


