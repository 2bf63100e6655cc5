"""The CycleGAN objective and one optimisation step.

Names: ``g_ab`` is the paper's G (A->B), ``g_ba`` is F (B->A), ``d_a`` is D_X (judges A),
``d_b`` is D_Y (judges B). ``real_a``/``fake_b``/``rec_a`` are model-space latents (B, C, h, w).
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lcgan.buffer import FakeBuffer
from lcgan.spectrum import spectrum_loss


@dataclass(frozen=True)
class LossWeights:
    lambda_cyc: float = 10.0  # L1 cycle consistency, both directions
    lambda_id: float = 0.0  # identity loss weight *relative to lambda_cyc*, as in the CycleGAN code (which uses 0.5); train.lambda_id's default
    d_loss_scale: float = 0.5  # halves D's loss so it learns slower than G (CycleGAN reference)
    lambda_swd: float = 0.0  # sliced Wasserstein distance between fake and real k x k patches of what D judges, both directions
    swd_kernel: int = 1  # k: latent cells (1: latent vectors, colour; 3: also local texture), or pixels under d_input=decoded
    lambda_spec: float = 0.0  # squared distance of G(A)'s decoded log power spectrum to B's (lcgan.spectrum), both directions
    lambda_anchor: float = 0.0  # L1 of the residual generators' correction |G(a) - anchor(a)|: least action, moves only where D insists
    lambda_nce: float = 0.0  # PatchNCE between each generator's input and output (lcgan.nce, CUT), both directions
    lambda_cyc_decoded: float = 0.0  # L1 cycle of the decoded images |dec(F(G(a))) - dec(a)| + ..., one window (CycleGAN-Turbo)


SWD_PROJECTIONS = 128  # fresh random directions per step (latent 3x3 patches: 36 dims, 5x5 RGB pixels: 75), cheap next to the networks


def sliced_wasserstein(fake: torch.Tensor, real: torch.Tensor, kernel: int) -> torch.Tensor:
    """Differentiable sliced Wasserstein-1 distance between the k x k patches of two batches
    ``(B, C, h, w)`` of equal size: project on fresh random directions, sort, compare (Deshpande et al. 2018, Heitz et
    al. 2021). A direct, non-adversarial pull of G(A)'s patch distribution onto B's that cannot memorise
    content: it only sees the bag of patches."""
    patches = lambda z: F.unfold(z.float(), kernel).transpose(1, 2).reshape(-1, z.shape[1] * kernel * kernel)  # noqa: E731
    pf, pr = patches(fake), patches(real)
    proj = torch.randn(pf.shape[1], SWD_PROJECTIONS, device=fake.device)
    proj = proj / proj.norm(dim=0, keepdim=True)
    return ((pf @ proj).sort(dim=0).values - (pr @ proj).sort(dim=0).values).abs().mean()


def lsgan(pred: torch.Tensor, target: float) -> torch.Tensor:
    """LSGAN (least-squares) adversarial loss: mean of (D(x) - target)^2."""
    return (pred.float() - target).pow(2).mean()


class Decoded:
    """What the discriminators judge under ``train.d_input=decoded``: the images the frozen VAE decodes from
    model-space latents, with gradients flowing back to the latents. A latent discriminator sees 8x8-pixel
    cells; blur, sharpening and darkened edges live inside them, in pixels. Not an ``nn.Module``: the VAE's
    weights are not the model's and never enter its checkpoints or optimizers.

    ``crop`` (latent cells, 0: all): decode one random ``crop x crop`` window of the batch. Decoding is most of
    such a step's cost (vaelight: 10 GFLOP per 256 px image) and a local discriminator needs no whole image."""

    def __init__(self, vae, convention, crop: int = 0) -> None:
        self.vae, self.convention, self.crop = vae, convention, crop

    def centre(self, z: torch.Tensor) -> torch.Tensor:
        """The same view without chance: the centre window (a domain's statistics, the same every run)."""
        h, w = z.shape[-2:]
        ch, cw = (min(self.crop, h), min(self.crop, w)) if self.crop else (h, w)
        z = z[..., (h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]
        return self.vae.decode(self.convention.model_to_raw(z.float(), self.vae.space))

    def corner(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """A random window's corner for ``z``'s size, drawn on the device (no host sync, and one compiled graph for
        every position: a Python int would specialise the graph on it); None when the window is all of ``z``."""
        h, w = z.shape[-2:]
        if not 0 < self.crop < max(h, w):
            return None
        return tuple(torch.randint(0, n - min(self.crop, n) + 1, (1,), device=z.device) for n in (h, w))

    def window(self, z: torch.Tensor, corner: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """One random ``crop x crop`` window of the batch (all of it without a crop), in raw latents;
        ``corner``: that window's corner (:meth:`corner`; default: a fresh one)."""
        corner = corner if corner is not None else self.corner(z)
        if corner is not None:
            (i, j), (h, w) = corner, z.shape[-2:]
            ch, cw = min(self.crop, h), min(self.crop, w)
            z = z.index_select(-2, torch.arange(ch, device=z.device) + i).index_select(-1, torch.arange(cw, device=z.device) + j)
        return self.convention.model_to_raw(z.float(), self.vae.space)

    def l1(self, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean ``|decode(z) - decode(target)|`` on one random window, the same for both (``train.lambda_cyc_decoded``):
        gradients reach ``z`` only; the target's decode is a constant."""
        corner = self.corner(z)
        with torch.no_grad():
            y = self.vae.decode_with_grad(self.window(target, corner))
        return (self.vae.decode_with_grad(self.window(z, corner)) - y).abs().mean()

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode_with_grad(self.window(z))

    def images(self, z: torch.Tensor) -> torch.Tensor:
        """The same random view without gradients (any VAE backend, ONNX Runtime's too)."""
        return self.vae.decode(self.window(z)).to(z.device)


class CycleGAN(nn.Module):
    """G, F, D_A and D_B; ``view`` (None: the latents themselves) maps a latent batch to what the discriminators judge."""

    def __init__(self, g_ab: nn.Module, g_ba: nn.Module, d_a: nn.Module, d_b: nn.Module,
                 view: Callable[[torch.Tensor], torch.Tensor] | None = None, nce: nn.ModuleList | None = None) -> None:
        super().__init__()
        self.g_ab, self.g_ba, self.d_a, self.d_b = g_ab, g_ba, d_a, d_b
        self.nce = nce  # train.lambda_nce: the PatchNCE heads of G and F (lcgan.nce.PatchNCE), trained with them
        # train.lambda_cyc_decoded: the frozen decoder the cycle is also measured through (a Decoded; like view, not saved)
        self.decoder: Decoded | None = None
        self.view = view  # a plain callable, not a submodule: nothing of it is saved
        # train.post_filter under d_input=decoded: (G's filter, F's filter), a plain tuple (saved by the training state,
        # not here). The discriminators then judge each fake filtered, as evaluate outputs it, and G and F are pushed
        # toward what the filter leaves to do: no blur the filter would add again. The filters stay constants to them.
        self.post: tuple[nn.Module, nn.Module] | None = None
        # (A, B) log power spectra of the domains as the discriminators see them (lambda_spec); data, recomputed
        # from the training latents at every start, never saved
        self.spectra: tuple[torch.Tensor, torch.Tensor] | None = None

    def seen(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.view is None else self.view(z)

    def seen_fake(self, z: torch.Tensor, into_b: bool) -> torch.Tensor:
        """A translation as its discriminator judges it: G's (``into_b``) or F's, filtered by its post-filter if any."""
        x = self.seen(z)
        if self.post is None or self.view is None:
            return x
        return self.post[0 if into_b else 1](x, frozen=True)

    def generator_losses(self, real_a: torch.Tensor, real_b: torch.Tensor, weights: LossWeights,
                         fused: bool = False) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """G-side losses. ``fused``: three generator calls instead of up to six, their inputs stacked into one batch
        (InstanceNorm is per sample, so the math is the same): F on B (and A, the identity), then G on A, B and F(B)
        (the cycle's input, known by then), then F on G(A). Fewer, larger kernels: at latent sizes the step's time
        is mostly per-call cost, not arithmetic."""
        n, use_id = len(real_a), weights.lambda_id > 0
        use_cyc = weights.lambda_cyc > 0 or weights.lambda_cyc_decoded > 0
        if fused:
            out_f = self.g_ba(torch.cat([real_b, real_a]) if use_id else real_b).split(n)
            fake_a = out_f[0]
            ins_g = [real_a] + ([real_b] if use_id else []) + ([fake_a] if use_cyc else [])
            out_g = self.g_ab(torch.cat(ins_g) if len(ins_g) > 1 else real_a).split(n)  # no copy of a lone batch
            fake_b = out_g[0]
            if use_id:
                idt_a, idt_b = out_f[1], out_g[1]
            if use_cyc:
                rec_b, rec_a = out_g[-1], self.g_ba(fake_b)
        else:
            fake_b, fake_a = self.g_ab(real_a), self.g_ba(real_b)
            if use_id:
                idt_b = self.g_ab(real_b)  # G should leave B-images alone
                idt_a = self.g_ba(real_a)
            if use_cyc:
                rec_a = self.g_ba(fake_b)
                rec_b = self.g_ab(fake_a)
        seen_b, seen_a = self.seen_fake(fake_b, True), self.seen_fake(fake_a, False)  # decoded once, judged by D and measured by the SWD
        loss_gan_G = lsgan(self.d_b(seen_b), 1.0)
        loss_gan_F = lsgan(self.d_a(seen_a), 1.0)
        if weights.lambda_cyc > 0:  # 0: no cycle (CUT's recipe with train.lambda_nce), and no F(G(a)) pass
            loss_cyc = ((rec_a.float() - real_a).abs().mean() + (rec_b.float() - real_b).abs().mean()) * weights.lambda_cyc
        else:
            loss_cyc = torch.zeros((), device=real_a.device)
        if weights.lambda_cyc_decoded > 0:  # in loss_cyc too: the cycle best.pt is picked by, in whichever space it is trained
            loss_cyc_decoded = (self.decoder.l1(rec_a, real_a) + self.decoder.l1(rec_b, real_b)) * weights.lambda_cyc_decoded
            loss_cyc = loss_cyc + loss_cyc_decoded
        else:
            loss_cyc_decoded = torch.zeros((), device=real_a.device)
        if use_id:
            loss_id = ((idt_b.float() - real_b).abs().mean() + (idt_a.float() - real_a).abs().mean()) * weights.lambda_cyc * weights.lambda_id
        else:
            loss_id = torch.zeros((), device=real_a.device)
        if weights.lambda_swd > 0:
            k = weights.swd_kernel
            with torch.no_grad():
                target_b, target_a = self.seen(real_b), self.seen(real_a)
            loss_swd = (sliced_wasserstein(seen_b, target_b, k) + sliced_wasserstein(seen_a, target_a, k)) * weights.lambda_swd
        else:
            loss_swd = torch.zeros((), device=real_a.device)
        if weights.lambda_spec > 0:
            spec_a, spec_b = self.spectra
            loss_spec = (spectrum_loss(seen_b, spec_b) + spectrum_loss(seen_a, spec_a)) * weights.lambda_spec
        else:
            loss_spec = torch.zeros((), device=real_a.device)
        if weights.lambda_anchor > 0:  # the anchor is one small linear conv: cheaper than keeping net(z) apart in the generator
            loss_anchor = ((fake_b.float() - self.g_ab.base(real_a)).abs().mean()
                           + (fake_a.float() - self.g_ba.base(real_b)).abs().mean()) * weights.lambda_anchor
        else:
            loss_anchor = torch.zeros((), device=real_a.device)
        if weights.lambda_nce > 0:
            loss_nce = (self.nce[0](self.g_ab, real_a, fake_b) + self.nce[1](self.g_ba, real_b, fake_a)) * weights.lambda_nce
        else:
            loss_nce = torch.zeros((), device=real_a.device)
        loss_G = loss_gan_G + loss_gan_F + loss_cyc + loss_id + loss_swd + loss_spec + loss_anchor + loss_nce
        losses = {"loss_G": loss_G, "loss_gan_G": loss_gan_G, "loss_gan_F": loss_gan_F, "loss_cyc": loss_cyc, "loss_id": loss_id,
                  "loss_swd": loss_swd, "loss_spec": loss_spec, "loss_anchor": loss_anchor, "loss_nce": loss_nce,
                  "loss_cyc_decoded": loss_cyc_decoded}
        return losses, fake_a.detach(), fake_b.detach()

    def discriminator_loss(self, disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, weights: LossWeights) -> torch.Tensor:
        """One shared D loss for both discriminators: D(real)->1, D(fake)->0."""
        with torch.no_grad():  # no gradient reaches G from here: skip the decoder's backward graph too
            real, fake = self.seen(real), self.seen_fake(fake, into_b=disc is self.d_b)  # D_B judges G's fakes
        return (lsgan(disc(real), 1.0) + lsgan(disc(fake), 0.0)) * weights.d_loss_scale


def generator_params(gan: CycleGAN) -> list[nn.Parameter]:
    """What the G step optimises: G, F and their PatchNCE heads (CUT trains its heads beside G, at G's rate)."""
    return [*gan.g_ab.parameters(), *gan.g_ba.parameters(), *(gan.nce.parameters() if gan.nce is not None else ())]


class CycleGANStep:
    """One training step: G and F together, then D_A and D_B together.

    Returns the losses as 0-dim tensors on the device, never ``.item()``: the caller reads them
    every N steps, so the GPU is not forced to wait for the host on every step.

    Speed switches (same math; the defaults of ``lcgan.train`` on CUDA):
    ``compile``: ``torch.compile`` of the whole G-side and D-side loss computations, one graph
    each, so InstanceNorm statistics, activations and losses fuse into a few Triton kernels;
    ``cuda_graphs``: replay those graphs (forward and backward) as CUDA graphs, which removes the
    per-kernel launch cost that dominates small latent batches; ``fuse_passes``: see
    :meth:`CycleGAN.generator_losses`.
    """

    def __init__(
        self,
        gan: CycleGAN,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        weights: LossWeights,
        buffer_a: FakeBuffer,
        buffer_b: FakeBuffer,
        amp_dtype: torch.dtype | None,
        scaler: torch.amp.GradScaler,
        compile: bool = False,
        cuda_graphs: bool = False,
        fuse_passes: bool = True,
        grad_sync=None,
        r1_gamma: float = 0.0,
        r1_every: int = 16,
    ) -> None:
        self.gan, self.opt_g, self.opt_d, self.weights = gan, opt_g, opt_d, weights
        self.buffer_a, self.buffer_b = buffer_a, buffer_b
        self.amp_dtype, self.scaler = amp_dtype, scaler
        self.d_params = list(gan.d_a.parameters()) + list(gan.d_b.parameters())
        self.g_params = generator_params(gan)
        self.grad_sync = grad_sync  # multi-process: averages a parameter list's gradients over ranks
        self.r1_gamma, self.r1_every, self.steps = r1_gamma, r1_every, 0
        self.fuse_passes, self._want_graphs = fuse_passes, cuda_graphs
        self.compiled = self.cuda_graphs = False
        self.fakes: tuple[torch.Tensor, torch.Tensor] | None = None  # (F(b), G(a)) of the last step
        self._g_losses, self._d_losses = self._g_losses_eager, self._d_losses_eager
        if compile:
            self.compile_now()

    def compile_now(self) -> None:
        """Run the loss computations as compiled graphs from the next step on (the first compiled call
        traces and compiles them, in seconds when torch's on-disk caches hold them: :mod:`lcgan.warmup`)."""
        self.compiled, self.cuda_graphs = True, self._want_graphs
        mode = "reduce-overhead" if self.cuda_graphs else None
        self._g_losses = torch.compile(self._g_losses_eager, mode=mode)
        self._d_losses = torch.compile(self._d_losses_eager, mode=mode)

    def _autocast(self, device: torch.device):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.amp_dtype)

    def _g_losses_eager(self, real_a: torch.Tensor, real_b: torch.Tensor):
        with self._autocast(real_a.device):
            return self.gan.generator_losses(real_a, real_b, self.weights, fused=self.fuse_passes)

    def _d_losses_eager(self, real_a: torch.Tensor, fake_a: torch.Tensor, real_b: torch.Tensor, fake_b: torch.Tensor):
        with self._autocast(real_a.device):
            loss_D_A = self.gan.discriminator_loss(self.gan.d_a, real_a, fake_a, self.weights)
            loss_D_B = self.gan.discriminator_loss(self.gan.d_b, real_b, fake_b, self.weights)
        return loss_D_A, loss_D_B

    def r1_penalty(self, real_a: torch.Tensor, real_b: torch.Tensor) -> torch.Tensor:
        """R1 (Mescheder et al. 2018): gamma/2 * E|grad_x D(x)|^2 on real latents, against a
        discriminator that memorises a few hundred latents. Eager and fp32: double backward."""
        total = torch.zeros((), device=real_a.device)
        for disc, real in ((self.gan.d_a, real_a), (self.gan.d_b, real_b)):
            with torch.no_grad():  # detach: without a view, seen() is the batch itself, which must not start requiring grad
                x = self.gan.seen(real).detach().float()
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(disc(x).sum(), x, create_graph=True)
            total = total + grad.pow(2).flatten(1).sum(1).mean()
        return total * self.r1_gamma / 2

    def __call__(self, real_a: torch.Tensor, real_b: torch.Tensor, target_a: torch.Tensor | None = None,
                 target_b: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One G step and one D step. ``target_a``/``target_b`` (``train.d_targets=unfiltered``): what the
        discriminators take as real instead of ``real_a``/``real_b`` (the generators still translate the real ones)."""
        target_a = real_a if target_a is None else target_a
        target_b = real_b if target_b is None else target_b
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # outputs of the last step may be overwritten now
        scaler = self.scaler
        # G step: D is frozen so G's loss does not build gradients for D's weights
        for p in self.d_params:
            p.requires_grad_(False)
        losses, fake_a, fake_b = self._g_losses(real_a, real_b)
        self.fakes = fake_a, fake_b  # this step's translations (detached): train.post_filter fits on them, no second G pass
        self.opt_g.zero_grad(set_to_none=True)
        scaler.scale(losses["loss_G"]).backward()
        if self.grad_sync:
            self.grad_sync(self.g_params)
        scaler.step(self.opt_g)
        for p in self.d_params:
            p.requires_grad_(True)
        # D step on fakes from the replay buffer
        fake_a = self.buffer_a.query(fake_a)
        fake_b = self.buffer_b.query(fake_b)
        loss_D_A, loss_D_B = self._d_losses(target_a, fake_a, target_b, fake_b)
        loss_D = loss_D_A + loss_D_B
        self.opt_d.zero_grad(set_to_none=True)
        scaler.scale(loss_D).backward()
        if self.r1_gamma > 0 and self.steps % self.r1_every == 0:
            # lazy R1 (StyleGAN2): the penalty every r1_every steps, scaled up by r1_every
            scaler.scale(self.r1_penalty(target_a, target_b) * self.r1_every).backward()
        self.steps += 1
        if self.grad_sync:
            self.grad_sync(self.d_params)
        scaler.step(self.opt_d)
        scaler.update()
        out = {k: v.detach() for k, v in losses.items()}
        out.update(loss_D=loss_D.detach(), loss_D_A=loss_D_A.detach(), loss_D_B=loss_D_B.detach())
        return out
