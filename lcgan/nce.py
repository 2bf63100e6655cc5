"""PatchNCE: a contrastive content loss between a generator's input and its output (CUT, Park et al. 2020).

The generator's own encoder describes both at a few feature points; a small MLP head per point projects a
random subset of positions. Each output patch must pick the input patch at its own position out of the
others of the same image (InfoNCE, temperature ``TAU``). Unlike the L1 cycle it needs no inverse map, and it
asks for correspondence, not equality: the output may change a patch's colour and texture, not what it shows.

``train.lambda_nce`` adds it beside the cycle loss (or instead: ``train.lambda_cyc=0``, CUT's own recipe).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TAU = 0.07  # CUT's temperature (its nce_T)
DIM = 256  # CUT's projection width (its netF_nc)


class PatchNCE(nn.Module):
    """The heads of one generator and its loss; ``points`` index the generator's :meth:`feature_points`."""

    def __init__(self, generator: nn.Module, in_channels: int, points: list[int], patches: int = 256) -> None:
        super().__init__()
        n = len(generator.feature_points())
        if not points or any(not isinstance(p, int) or not 0 <= p < n for p in points) or len(set(points)) != len(points):
            raise ValueError(f"train.nce_layers={list(points)}: give distinct feature points of the generator, each in 0..{n - 1} "
                             "(0: its input, 1: the stem, then each downsampling, then each residual block)")
        self.points, self.patches = list(points), patches
        with torch.no_grad():  # the channels of each point, from one small probe
            side = 4 * generator.factor
            channels = [f.shape[1] for f in generator.features(torch.zeros(1, in_channels, side, side), self.points)]
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(c, DIM), nn.ReLU(), nn.Linear(DIM, DIM)) for c in channels)

    def forward(self, generator: nn.Module, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The loss of ``out = generator(src)``, averaged over the feature points; both paths carry gradients (as CUT)."""
        total = torch.zeros((), device=src.device)
        for head, key, query in zip(self.heads, generator.features(src, self.points), generator.features(out, self.points)):
            b, c, h, w = key.shape
            # the same random positions for every image and both paths; rand + argsort, not randperm: capturable by CUDA graphs
            ids = torch.rand(h * w, device=key.device).argsort()[: self.patches]
            k, q = (F.normalize(head(f.permute(0, 2, 3, 1).reshape(b, h * w, c)[:, ids].float()), dim=-1) for f in (key, query))
            logits = q @ k.transpose(1, 2) / TAU  # (B, n, n): row i's positive is column i, the rest of its image the negatives
            n = logits.shape[-1]
            total = total + F.cross_entropy(logits.flatten(0, 1), torch.arange(n, device=logits.device).repeat(b))
        return total / len(self.heads)
