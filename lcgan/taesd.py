"""Tiny autoencoders of the TAESD family, for the original release files (``*_encoder.pth``).

The architecture is the one of madebyollin/taesd's ``taesd.py`` (re-written, same state-dict
keys), so ``taesd_encoder.pth``, ``taef2_encoder.pth`` and friends load with ``load_state_dict``.
diffusers' ``AutoencoderTiny`` loads the diffusers-format folders but not TAEF2, whose deepest
Blocks carry a "midblock GroupNorm" (``pool``) that diffusers does not have.

Native convention (converted to ours in :class:`lcgan.vae.TinyVAE`): images in [0, 1],
latents = ``(raw - shift_factor) * scaling_factor`` of the VAE being mimicked.
"""
from __future__ import annotations

import re

import torch
from torch import nn


def conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp of the decoder's input to (-3, 3): out-of-range latents degrade gracefully."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    def __init__(self, n_in: int, n_out: int, use_midblock_gn: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv(n_in, n_out), nn.ReLU(), conv(n_out, n_out), nn.ReLU(), conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        if use_midblock_gn:  # TAEF2: a cheap global-ish normalisation path at the lowest resolution
            n_gn = n_in * 4
            self.pool = nn.Sequential(
                nn.Conv2d(n_in, n_gn, 1, bias=False), nn.GroupNorm(4, n_gn), nn.ReLU(), nn.Conv2d(n_gn, n_in, 1, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "pool"):
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def Encoder(latent_channels: int = 4, use_midblock_gn: bool = False) -> nn.Sequential:
    """(B, 3, H, W) in [0, 1] -> (B, latent_channels, H/8, W/8), scaled latents."""
    gn = dict(use_midblock_gn=use_midblock_gn)
    return nn.Sequential(
        conv(3, 64), Block(64, 64),
        conv(64, 64, stride=2, bias=False), Block(64, 64), Block(64, 64), Block(64, 64),
        conv(64, 64, stride=2, bias=False), Block(64, 64), Block(64, 64), Block(64, 64),
        conv(64, 64, stride=2, bias=False), Block(64, 64, **gn), Block(64, 64, **gn), Block(64, 64, **gn),
        conv(64, latent_channels),
    )


def Decoder(latent_channels: int = 4, use_midblock_gn: bool = False) -> nn.Sequential:
    """(B, latent_channels, h, w) scaled latents -> (B, 3, 8h, 8w), roughly [0, 1] (not clamped)."""
    gn = dict(use_midblock_gn=use_midblock_gn)
    return nn.Sequential(
        Clamp(), conv(latent_channels, 64), nn.ReLU(),
        Block(64, 64, **gn), Block(64, 64, **gn), Block(64, 64, **gn), nn.Upsample(scale_factor=2), conv(64, 64, bias=False),
        Block(64, 64), Block(64, 64), Block(64, 64), nn.Upsample(scale_factor=2), conv(64, 64, bias=False),
        Block(64, 64), Block(64, 64), Block(64, 64), nn.Upsample(scale_factor=2), conv(64, 64, bias=False),
        Block(64, 64), conv(64, 3),
    )


def infer_options(state_dict: dict[str, torch.Tensor], part: str) -> dict:
    """``latent_channels`` and ``use_midblock_gn`` read off a release state dict, not trusted from a flag.

    ``part`` is "encoder" (latent channels = outputs of the last conv, key ``14.weight``) or
    "decoder" (inputs of the first conv, ``1.weight``). Raises ValueError naming the keys when the
    file is not a TAESD-family state dict (e.g. a diffusers ``AutoencoderTiny`` file).
    """
    key, dim = ("14.weight", 0) if part == "encoder" else ("1.weight", 1)
    if key not in state_dict:
        sample = sorted(state_dict)[:5]
        raise ValueError(
            f"not a TAESD-family {part} state dict: no key {key!r} (found e.g. {sample}); expected the "
            "original release files (taesd_encoder.pth / taesd_decoder.pth); diffusers-format folders "
            "(config.json + diffusion_pytorch_model.safetensors) load through vae.model_name_or_path=<folder>"
        )
    return {
        "latent_channels": int(state_dict[key].shape[dim]),
        "use_midblock_gn": any(re.fullmatch(r"\d+\.pool\.\d+\.weight", k) for k in state_dict),
    }


def load(state_dict: dict[str, torch.Tensor], part: str) -> nn.Sequential:
    """Build the encoder or decoder that ``state_dict`` was saved from and load it (strict), fp32, eval."""
    options = infer_options(state_dict, part)
    net = (Encoder if part == "encoder" else Decoder)(**options)
    try:
        net.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    except RuntimeError as e:
        raise ValueError(f"TAESD-family {part} state dict ({options}) does not match the architecture: {e}") from e
    return net.eval().requires_grad_(False)
