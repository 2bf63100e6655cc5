"""Rebuild the two generators of a checkpoint for inference, with the latent conventions they were
trained with: lcgan checkpoints, checkpoints without a model config (inferred from the weights),
and those of the original single-script tool.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lcgan import checkpoint as ckpt_io
from lcgan.latents import Convention



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
    # anchor buffers hold the per-channel start map itself; mean_shift and moment_match differ only in their values
    anchor = {"anchor": "moment_match", "output": "residual"} if "anchor_scale" in state else {}
    return {"_target_": "lcgan.models.ResnetGenerator", "ngf": int(state["net.1.weight"].shape[0]),
            "n_blocks": len(blocks), "n_downsampling": len(downs), "output": output, **anchor}  # fmt: skip


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
        norm = lambda: nn.InstanceNorm2d(ngf)  # noqa: E731

        def block() -> nn.Module:
            def half(relu: bool) -> list:
                sep = [nn.ReflectionPad2d(1), nn.Conv2d(ngf, ngf, 3, groups=ngf, bias=False)] if k > 1 else []
                return sep + [nn.Conv2d(ngf, ngf, 1, bias=False), norm()] + ([nn.ReLU(True)] if relu else [])

            return _Residual(nn.Sequential(*half(True), *half(False)))

        layers = [*pad(), nn.Conv2d(cin, ngf, k, bias=False), norm(), nn.ReLU(True), *[block() for _ in range(n_blocks)],
                  *pad(), nn.Conv2d(ngf, cin, k, bias=True)]  # fmt: skip
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


def load_translator(path: str | Path, device: torch.device, use_ema: bool = True) -> Translator:
    """G and F of an lcgan checkpoint, or of the original single-script tool's (``cfg.visualization.*``).
    With ``use_ema`` the EMA weights (``G_ema``/``F_ema``, written with train.ema_decay > 0) when present."""
    path = Path(path)
    ck = ckpt_io.load(path, map_location="cpu")
    missing = [k for k in ("G", "F", "cfg") if k not in ck]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}: not a latent CycleGAN checkpoint (keys: {sorted(ck)[:12]})")
    cfg, g_state = ck["cfg"], ck["G"]
    data = cfg.get("data") or {}
    gen_cfg = (cfg.get("model") or {}).get("generator")
    if gen_cfg is not None:  # an lcgan checkpoint: its own generator config
        fmt, make = "lcgan", lambda c: instantiate(OmegaConf.create(gen_cfg), in_channels=c)  # noqa: E731
        divisor_default = 10.0
    else:
        model = cfg.get("model") or {}
        divisor_default = 1.0  # the original tool's default
        if any(".block." in k for k in g_state):
            fmt = "original tool"
            make = lambda c: LegacyResnetGenerator(  # noqa: E731
                g_state, str(model.get("out_activation", "none")), bool(model.get("use_global_residual", False)))
        elif any(".body." in k for k in g_state):
            fmt = "lcgan layout, config inferred from the weights"
            rc = _lcgan_resnet_config(g_state, str(model.get("output", "tanh")))
            make = lambda c: instantiate(OmegaConf.create(rc), in_channels=c)  # noqa: E731
        else:
            raise ValueError(f"checkpoint {path} has no cfg.model.generator and its G state dict (keys e.g. "
                             f"{sorted(g_state)[:6]}) matches no known generator layout; cannot rebuild G and F")  # fmt: skip
    stem_key = "net.1.weight" if "net.1.weight" in g_state else "net.0.weight"
    channels = int(g_state[stem_key].shape[1])
    nets = []
    for key in ("G", "F"):
        net = make(channels)
        try:
            net.load_state_dict(ck[f"{key}_ema"] if use_ema and f"{key}_ema" in ck else ck[key])
        except RuntimeError as e:
            raise ValueError(f"checkpoint {path}: {key} does not fit the generator rebuilt as {fmt}: {str(e)[:400]}") from None
        nets.append(net.to(device).eval().requires_grad_(False))
    conv_d = ck.get("convention") or {"latents_scaled": bool(data.get("latents_scaled", False)),
                                      "latent_divisor": float(data.get("latent_divisor", divisor_default))}  # fmt: skip
    vae_cfg = cfg.get("vae")
    if vae_cfg is None:  # the original tool: a diffusers VAE named under visualization (or shared)
        vis = {**(cfg.get("shared") or {}), **(cfg.get("visualization") or {})}
        if vis.get("vae_model_name_or_path"):
            vae_cfg = {"_target_": "lcgan.vae.DiffusersVAE", "model_name_or_path": vis["vae_model_name_or_path"],
                       "subfolder": vis.get("vae_subfolder")}  # fmt: skip
            if vis.get("vae_scaling_factor") is not None:
                vae_cfg["scaling_factor"] = float(vis["vae_scaling_factor"])
    info = {"path": str(path), "format": fmt, "epoch": ck.get("epoch"), "channels": channels,
            "generator": gen_cfg or type(nets[0]).__name__, "latent_space": ck.get("latent_space"),
            "weights": "EMA" if use_ema and "G_ema" in ck else "raw"}  # fmt: skip
    return Translator(nets[0], nets[1], Convention(**conv_d), channels, getattr(nets[0], "factor", 1), vae_cfg, info,
                      ck.get("domain_stats"))  # fmt: skip


def build_vae(vae_override: DictConfig | None, translator: Translator, device: torch.device):
    """The VAE named on the command line (``vae=...``), else the checkpoint's training-time one."""
    if vae_override is not None:
        return instantiate(vae_override, device=str(device)), "command line (vae=...)"
    if translator.vae_cfg is None:
        raise ValueError(f"checkpoint {translator.info['path']} names no VAE (no cfg.vae, no visualization.vae_model_name_or_path); "
                         "pass one: vae=sd15 | vae=vaelight vae.encoder_path=E vae.decoder_path=D | ...")  # fmt: skip
    return instantiate(OmegaConf.create(translator.vae_cfg), device=str(device)), "checkpoint cfg.vae"


