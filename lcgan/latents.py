"""The one place that knows how latents are scaled.

Three spaces, and the only conversions between them:

- raw:   what the VAE's encoder produces (posterior mean or sample), e.g. SD1.5 latents
         with per-channel std about 4-5. ``vae.encode`` returns raw, ``vae.decode`` takes raw.
- file:  what a ``.pt`` latent file holds: raw, or ``(raw - shift_factor) * scaling_factor``
         when ``latents_scaled=true`` (diffusers' convention for the UNet's input).
- model: what the generators see: ``file / latent_divisor``, or with ``data.latent_norm=channel``
         ``(file - channel_mean) / channel_std``, per channel, with statistics of both training
         domains pooled (recorded in the checkpoint's convention).

Nothing else in lcgan multiplies by a scaling factor or divides by the divisor.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

SD_SCALING_FACTOR = 0.18215  # SD1.x VAE


@dataclass(frozen=True)
class LatentSpace:
    """What a VAE's latents are: checked, never assumed."""

    channels: int
    scaling_factor: float = SD_SCALING_FACTOR
    shift_factor: float = 0.0
    downsample: int = 8  # pixels per latent cell along each side

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Convention:
    """How the latents of a dataset are stored and fed to the networks."""

    latents_scaled: bool = False
    latent_divisor: float = 10.0
    channel_mean: tuple[float, ...] | None = None  # set: per-channel standardisation instead of the divisor
    channel_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.latent_divisor > 0:
            raise ValueError(f"latent_divisor={self.latent_divisor!r} must be > 0")
        if (self.channel_mean is None) != (self.channel_std is None):
            raise ValueError("channel_mean and channel_std come together")

    def fitted(self, *domains: torch.Tensor) -> Convention:
        """This convention with per-channel statistics of the file latents ``(N, C, h, w)`` of all ``domains`` pooled."""
        z = torch.cat([d.float().transpose(0, 1).flatten(1) for d in domains], dim=1)  # (C, everything)
        return replace(self, channel_mean=tuple(z.mean(1).tolist()), channel_std=tuple(z.std(1).clamp_min(1e-6).tolist()))

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (-1, 1, 1)  # channels are the third dimension from the end: (..., C, h, w)
        return (torch.tensor(self.channel_mean, dtype=z.dtype, device=z.device).view(shape),
                torch.tensor(self.channel_std, dtype=z.dtype, device=z.device).view(shape))

    def file_to_model(self, z: torch.Tensor) -> torch.Tensor:
        if self.channel_mean is None:
            return z / self.latent_divisor
        mean, std = self._stats(z)
        return (z - mean) / std

    def model_to_file(self, z: torch.Tensor) -> torch.Tensor:
        if self.channel_mean is None:
            return z * self.latent_divisor
        mean, std = self._stats(z)
        return z * std + mean

    def raw_to_file(self, z: torch.Tensor, space: LatentSpace) -> torch.Tensor:
        if not self.latents_scaled:
            return z
        return (z - space.shift_factor) * space.scaling_factor

    def file_to_raw(self, z: torch.Tensor, space: LatentSpace) -> torch.Tensor:
        if not self.latents_scaled:
            return z
        return z / space.scaling_factor + space.shift_factor

    def raw_to_model(self, z: torch.Tensor, space: LatentSpace) -> torch.Tensor:
        return self.file_to_model(self.raw_to_file(z, space))

    def model_to_raw(self, z: torch.Tensor, space: LatentSpace) -> torch.Tensor:
        return self.file_to_raw(self.model_to_file(z), space)

    def as_dict(self) -> dict:
        # channel statistics only when set: a divisor convention reads as before
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v is not None}


def check_channels(z_channels: int, space: LatentSpace, where: str) -> None:
    """Refuse latents that belong to another latent space (e.g. 32-channel FLUX.2 vs 4-channel SD)."""
    if z_channels != space.channels:
        raise ValueError(
            f"{where} has {z_channels}-channel latents but the VAE's latent space has "
            f"{space.channels} channels; encode the images with the same VAE (vae=...) "
            "that you train and decode with"
        )
