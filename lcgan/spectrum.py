"""The mean log power spectrum of a batch of images: a statistic of blur, sharpness and fine texture that the
content of a few hundred photographs hardly moves (``train.lambda_spec``).

Each image is cut into 8x8 patches (stride 4); each patch channel goes through the 2-D DCT-II; the power of each
(channel, frequency) is averaged over the batch and every patch, and its log taken. A Gaussian blur divides the
power of a frequency by about the same factor in every photo, so the log moves by the same amount whatever the
photo shows. Measured on the transform suite's photos (128 px crops, experiments/known_transform/noise_floor.py):
soft focus moves it by 5.0 (RMS over colours and frequencies), sharpening by 1.3, darkened edges by 1.3, while
two batches of 16 crops differ by 0.2-0.6 by chance. The covariance of 7x7 pixel patches, by contrast, differs
more between two such batches than between sharp and blurred photo sets. Seeing the transform is not learning
it, though: as a loss it lost on the suite (README, "Training quality").
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PATCH, STRIDE = 8, 4
FLOOR = 1e-5  # power added before the log: frequencies a VAE decodes to ~0 do not dominate the loss


def dct_basis(k: int = PATCH, device=None) -> torch.Tensor:
    """The orthonormal 2-D DCT-II basis of k x k patches as a (k*k, k*k) matrix (row: one frequency)."""
    n = torch.arange(k, dtype=torch.float32, device=device)
    d = torch.cos(math.pi * (2 * n[None] + 1) * n[:, None] / (2 * k))
    d = d / d.norm(dim=1, keepdim=True)
    return torch.kron(d, d)


def log_spectrum(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` images -> ``(C, 64)``: the log of each channel's and frequency's mean power over the batch."""
    n, c = x.shape[:2]
    patches = F.unfold(x.float(), PATCH, stride=STRIDE)  # (B, C*64, L)
    patches = patches.view(n, c, PATCH * PATCH, -1)
    with torch.autocast(x.device.type, enabled=False):  # in fp32 like the target: bf16 moved the log power by ~0.01
        coef = torch.einsum("fp,ncpl->ncfl", dct_basis(device=x.device), patches)
    return torch.log(coef.pow(2).mean(dim=(0, 3)) + FLOOR)


@torch.no_grad()
def domain_spectrum(images, latents: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """The log spectrum of a whole domain: ``images`` maps a latent batch to what is judged (deterministically),
    power averaged over every batch before the log."""
    total, count = 0.0, 0
    for i in range(0, len(latents), batch):
        z = latents[i:i + batch]
        total = total + torch.exp(log_spectrum(images(z))) * len(z)  # back to power: average, then the log
        count += len(z)
    return torch.log(total / count)


def spectrum_loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the batch's log spectrum and the domain's."""
    return (log_spectrum(x) - target).pow(2).mean()
