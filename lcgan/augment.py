"""Differentiable augmentation of the discriminators' inputs (DiffAugment, Zhao et al. 2020).

A discriminator that sees a few hundred latents can memorise them; showing it randomly shifted
and cut-out copies of *every* input (real, replayed fake, and the fake in G's loss, since all of
them pass through ``D.forward``) takes that shortcut away without changing what G is asked to
match. Only geometric operations: colour operations would hide the very statistics a colour or
tone translation has to learn. Shapes: latents ``(B, C, h, w)``.
"""
from __future__ import annotations

import torch
from torch import nn

POLICIES = ("translation", "cutout")


def translation(z: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each sample by up to ``ratio`` of its size in each direction; edges are replicated."""
    n, _, h, w = z.shape
    sh, sw = max(1, round(h * ratio)), max(1, round(w * ratio))
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), device=z.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), device=z.device)
    rows = (torch.arange(h, device=z.device).view(1, h, 1) + dy).clamp(0, h - 1).expand(n, h, w)
    cols = (torch.arange(w, device=z.device).view(1, 1, w) + dx).clamp(0, w - 1).expand(n, h, w)
    batch = torch.arange(n, device=z.device).view(n, 1, 1).expand(n, h, w)
    return z.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(z: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one random square of ``ratio`` of each sample's size (a constant: the same for real and fake)."""
    n, _, h, w = z.shape
    ch, cw = max(1, round(h * ratio)), max(1, round(w * ratio))
    top = torch.randint(0, h - ch + 1, (n, 1, 1), device=z.device)
    left = torch.randint(0, w - cw + 1, (n, 1, 1), device=z.device)
    ys = torch.arange(h, device=z.device).view(1, h, 1)
    xs = torch.arange(w, device=z.device).view(1, 1, w)
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)  # (n, h, w)
    return z * (~inside).unsqueeze(1).to(z.dtype)


class DiffAugment(nn.Module):
    """Applies the comma-separated ``policy`` ("translation", "cutout") in training mode only."""

    def __init__(self, policy: str) -> None:
        super().__init__()
        self.ops = [p.strip() for p in policy.split(",") if p.strip()]
        unknown = [p for p in self.ops if p not in POLICIES]
        if unknown:
            raise ValueError(f"augment={policy!r}: unknown {unknown}; use a comma-separated subset of {','.join(POLICIES)} or '' for none")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return z
        for op in self.ops:
            z = translation(z) if op == "translation" else cutout(z)
        return z
