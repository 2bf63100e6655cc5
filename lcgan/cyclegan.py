"""The CycleGAN objective and one optimisation step.

Names: ``g_ab`` is the paper's G (A->B), ``g_ba`` is F (B->A), ``d_a`` is D_X (judges A),
``d_b`` is D_Y (judges B). ``real_a``/``fake_b``/``rec_a`` are model-space latents (B, C, h, w).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from lcgan.buffer import FakeBuffer


@dataclass(frozen=True)
class LossWeights:
    lambda_cyc: float = 10.0  # L1 cycle consistency, both directions
    lambda_id: float = 0.5  # identity loss weight *relative to lambda_cyc*, as in the CycleGAN code
    d_loss_scale: float = 0.5  # halves D's loss so it learns slower than G (CycleGAN reference)


def lsgan(pred: torch.Tensor, target: float) -> torch.Tensor:
    """LSGAN (least-squares) adversarial loss: mean of (D(x) - target)^2."""
    return (pred.float() - target).pow(2).mean()


class CycleGAN(nn.Module):
    def __init__(self, g_ab: nn.Module, g_ba: nn.Module, d_a: nn.Module, d_b: nn.Module) -> None:
        super().__init__()
        self.g_ab, self.g_ba, self.d_a, self.d_b = g_ab, g_ba, d_a, d_b

    def generator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor, w: LossWeights) -> tuple[dict, torch.Tensor, torch.Tensor]:
        fake_b = self.g_ab(real_a)
        fake_a = self.g_ba(real_b)
        rec_a = self.g_ba(fake_b)
        rec_b = self.g_ab(fake_a)
        loss_gan_G = lsgan(self.d_b(fake_b), 1.0)
        loss_gan_F = lsgan(self.d_a(fake_a), 1.0)
        loss_cyc = ((rec_a.float() - real_a).abs().mean() + (rec_b.float() - real_b).abs().mean()) * w.lambda_cyc
        if w.lambda_id > 0:
            idt_b = self.g_ab(real_b)  # G should leave B-images alone
            idt_a = self.g_ba(real_a)
            loss_id = ((idt_b.float() - real_b).abs().mean() + (idt_a.float() - real_a).abs().mean()) * w.lambda_cyc * w.lambda_id
        else:
            loss_id = torch.zeros((), device=real_a.device)
        loss_G = loss_gan_G + loss_gan_F + loss_cyc + loss_id
        losses = {"loss_G": loss_G, "loss_gan_G": loss_gan_G, "loss_gan_F": loss_gan_F, "loss_cyc": loss_cyc, "loss_id": loss_id}
        return losses, fake_a.detach(), fake_b.detach()

    def discriminator_loss(self, d: nn.Module, real: torch.Tensor, fake: torch.Tensor, w: LossWeights) -> torch.Tensor:
        """One shared D loss for both discriminators: D(real)->1, D(fake)->0."""
        return (lsgan(d(real), 1.0) + lsgan(d(fake), 0.0)) * w.d_loss_scale


class CycleGANStep:
    """One training step: G and F together, then D_A and D_B together.

    Returns the losses as 0-dim tensors on the device, never ``.item()``: the caller reads them
    every N steps, so the GPU is not forced to wait for the host on every step.
    """

    def __init__(
        self,
        nets: CycleGAN,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        weights: LossWeights,
        buffer_a: FakeBuffer,
        buffer_b: FakeBuffer,
        amp_dtype: torch.dtype | None,
        scaler: torch.amp.GradScaler,
    ) -> None:
        self.nets, self.opt_g, self.opt_d, self.w = nets, opt_g, opt_d, weights
        self.buffer_a, self.buffer_b = buffer_a, buffer_b
        self.amp_dtype, self.scaler = amp_dtype, scaler
        self.d_params = list(nets.d_a.parameters()) + list(nets.d_b.parameters())

    def _autocast(self, device: torch.device):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.amp_dtype)

    def __call__(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        nets, w, scaler = self.nets, self.w, self.scaler
        # G step: D is frozen so G's loss does not build gradients for D's weights
        for p in self.d_params:
            p.requires_grad_(False)
        with self._autocast(real_a.device):
            losses, fake_a, fake_b = nets.generator_losses(real_a, real_b, w)
        self.opt_g.zero_grad(set_to_none=True)
        scaler.scale(losses["loss_G"]).backward()
        scaler.step(self.opt_g)
        for p in self.d_params:
            p.requires_grad_(True)
        # D step on fakes from the replay buffer
        fake_a = self.buffer_a.query(fake_a)
        fake_b = self.buffer_b.query(fake_b)
        with self._autocast(real_a.device):
            loss_D_A = nets.discriminator_loss(nets.d_a, real_a, fake_a, w)
            loss_D_B = nets.discriminator_loss(nets.d_b, real_b, fake_b, w)
        loss_D = loss_D_A + loss_D_B
        self.opt_d.zero_grad(set_to_none=True)
        scaler.scale(loss_D).backward()
        scaler.step(self.opt_d)
        scaler.update()
        losses.update(loss_D=loss_D, loss_D_A=loss_D_A, loss_D_B=loss_D_B)
        return {k: v.detach() for k, v in losses.items()}
