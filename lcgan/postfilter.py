"""A pixel post-filter fitted without pairs: the blur or sharpening a latent map cannot express through the decoder.

Through the VAE's decoder no small latent map is a pixel blur (experiments/known_transform/spectral_filter.py), but
in pixels the decoded log power spectrum (:mod:`lcgan.spectrum`) identifies one: a small filter per colour,
symmetric (zero phase: it never shifts the image) and summing to 1 (it keeps the mean colour), started at the
identity and fitted so the spectrum of ``h * decode(G(A))`` meets ``decode(B)``'s. Both sets of images are fixed,
so no gradient passes through the VAE or G, and 81 numbers per colour cannot memorise content. On the transform
suite's soft focus this took the test decodes from 25.77 dB (identity) to 27.01 (oracle 27.23) and did no harm
on untransformed photos (experiments/known_transform/results/pixel_filter.md).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lcgan.baselines import LinearMap, divergence_test, fit
from lcgan.spectrum import domain_spectrum, spectrum_loss


class PixelFilter(nn.Module):
    """``size x size`` depthwise filter on ``(N, C, H, W)`` images: symmetric, normalised to sum 1 per channel; optionally
    after a colour map (``train.post_colour``): an affine map of each pixel's colour, a constant fitted at the start."""

    def __init__(self, size: int = 9, channels: int = 3) -> None:
        super().__init__()
        if size < 1 or size % 2 == 0:
            raise ValueError(f"a pixel filter's size must be odd and positive (its centre is the pixel itself), not {size}")
        raw = torch.zeros(channels, size, size)
        raw[:, size // 2, size // 2] = 1.0
        self.raw = nn.Parameter(raw)
        self.register_buffer("colour", torch.eye(channels, channels + 1))  # [matrix | bias]: the identity, none
        self.coloured = False  # skip the identity colour map: no op, no change to a run without one

    @property
    def size(self) -> int:
        return self.raw.shape[-1]

    def kernel(self) -> torch.Tensor:
        k = (self.raw + self.raw.flip(-1, -2)) / 2  # point symmetric: a real, zero-phase frequency response
        return k / k.sum(dim=(-1, -2), keepdim=True)

    def set_colour(self, m: LinearMap) -> None:
        """The colour map applied before the filter: a 1x1 :class:`lcgan.baselines.LinearMap` on these channels."""
        c = self.colour.shape[0]
        self.colour.copy_(torch.cat([m.weight.reshape(c, c), m.bias.reshape(c, 1)], dim=1))
        self.coloured = True

    def recolour(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` through the colour map (none: ``x`` itself), in fp32 elementwise ops (autocast leaves them alone)."""
        if not self.coloured:
            return x
        c = self.colour.shape[0]
        w, bias = self.colour[:, :c], self.colour[:, c]
        return ((w.view(1, c, c, 1, 1) * x.float().unsqueeze(1)).sum(2) + bias.view(1, c, 1, 1)).to(x.dtype)

    def forward(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """``frozen``: the kernel as a constant: gradients reach ``x`` (G, through the decoder), never the filter."""
        return self.filter(self.recolour(x), frozen)

    def filter(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """``x`` through the kernel alone, without the colour map."""
        r = self.size // 2
        mode = "reflect" if min(x.shape[-2:]) > r else "replicate"  # reflection needs the image larger than the pad
        k = self.kernel()
        k = (k.detach() if frozen else k).to(x.dtype).unsqueeze(1)
        return F.conv2d(F.pad(x, (r,) * 4, mode=mode), k, groups=x.shape[1])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        c = self.raw.shape[0]
        state_dict.setdefault(prefix + "colour", torch.eye(c, c + 1))  # saved before train.post_colour: no colour map
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.coloured = not torch.equal(self.colour.cpu(), torch.eye(c, c + 1))  # once, at load


def fit_filter(images: torch.Tensor, target: torch.Tensor, size: int = 9, steps: int = 300, batch: int = 32,
               lr: float = 1e-2, seed: int = 0, decay: bool = True) -> PixelFilter:
    """A :class:`PixelFilter` fitted so the log spectrum of ``filter(images)`` (batches drawn with ``seed``) meets
    ``target`` (:func:`lcgan.spectrum.domain_spectrum` of the other domain). ``images`` stay where they are.

    ``decay``: the lr falls to 0 on a cosine. At a constant lr (``decay=False``, before 2026-12-01) the last few
    batches decided the filter: the seed moved the suite's sharpen decodes by 0.12 dB (19.79-19.90 over 4 seeds);
    decayed, 19.91-19.93, at the same cost (experiments/known_transform/results/filter_fit.md)."""
    filt = PixelFilter(size, images.shape[1]).to(images.device)
    opt = torch.optim.Adam(filt.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)) if decay else 1.0)
    gen = torch.Generator().manual_seed(seed)
    target = target.to(images.device)
    with torch.enable_grad():  # also when called for scoring, under no_grad
        for _ in range(steps):
            pick = torch.randint(0, len(images), (min(batch, len(images)),), generator=gen).to(images.device)
            loss = spectrum_loss(filt(images[pick].float()), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return filt.requires_grad_(False).eval()


class PostFilters(nn.Module):
    """G's and F's post-filters (``train.post_filter``), named as the generators they follow: ``g_ab`` after G,
    ``g_ba`` after F. Saved in every checkpoint as ``post_filter``; evaluate and translate apply them after decoding."""

    KEYS = ("g_ab.raw", "g_ba.raw")
    COLOUR_KEYS = ("g_ab.colour", "g_ba.colour")  # train.post_colour; absent from checkpoints saved before it

    def __init__(self, size: int = 9, channels: int = 3) -> None:
        super().__init__()
        self.g_ab, self.g_ba = PixelFilter(size, channels), PixelFilter(size, channels)

    @classmethod
    def from_state(cls, state, where: str) -> PostFilters:
        """Rebuilt from a checkpoint's ``post_filter`` (data, checked first): two finite float ``(C, k, k)`` tensors, k odd,
        and optionally their two finite ``(C, C + 1)`` colour maps."""
        keys = sorted(state) if isinstance(state, dict) else []
        ok = keys in (sorted(cls.KEYS), sorted(cls.KEYS + cls.COLOUR_KEYS)) and all(
            isinstance(state[k], torch.Tensor) and state[k].is_floating_point() and state[k].dim() == (3 if k in cls.KEYS else 2)
            for k in keys)
        shapes = {tuple(state[k].shape) for k in cls.KEYS} if ok else set()
        if not ok or len(shapes) != 1 or not all(bool(torch.isfinite(t).all()) for t in state.values()):
            raise ValueError(f"{where} must hold {', '.join(cls.KEYS)}: two finite float tensors of one shape (channels, k, k), and "
                             f"optionally {', '.join(cls.COLOUR_KEYS)}; re-save the checkpoint from a trusted lcgan run")
        ((c, k, k2),) = shapes
        if k != k2 or k % 2 == 0:
            raise ValueError(f"{where}: filters of shape {(c, k, k2)} are not square with an odd side; re-save the checkpoint")
        if any(tuple(state[key].shape) != (c, c + 1) for key in cls.COLOUR_KEYS if key in state):
            raise ValueError(f"{where}: colour maps must be ({c}, {c + 1}) for {c}-channel filters; re-save the checkpoint")
        filters = cls(k, c)
        filters.load_state_dict(state)
        return filters.requires_grad_(False).eval()


class FilterTrainer:
    """Keeps the post-filters fitted to the generators as they train: after every training step one Adam step on a
    decoded random crop of that step's G(a) and F(b) (``view``), detached, toward the other domain's log spectrum. No
    gradient reaches G or F from here. Their mean loss is read once per epoch. ``lr=0`` keeps the filters where
    :func:`setup` fitted them (no decode, no step): the start's filters, to which the generators' anchors were decoupled."""

    def __init__(self, filters: PostFilters, view, spectra: tuple[torch.Tensor, torch.Tensor], lr: float) -> None:
        self.filters, self.view, (self.spec_a, self.spec_b) = filters, view, spectra
        self.frozen = lr == 0
        self.opt = torch.optim.Adam(filters.parameters(), lr=lr)
        self.total, self.count = torch.zeros((), device=self.spec_a.device), 0

    def __call__(self, fake_a: torch.Tensor, fake_b: torch.Tensor) -> None:
        """One step on the translations F(b) and G(a) the training step just made (``CycleGANStep.fakes``)."""
        if self.frozen:
            return
        with torch.no_grad():
            seen_b, seen_a = self.view.images(fake_b), self.view.images(fake_a)
        loss = spectrum_loss(self.filters.g_ab(seen_b), self.spec_b) + spectrum_loss(self.filters.g_ba(seen_a), self.spec_a)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.total += loss.detach()  # on the device: no host sync per step
        self.count += 1

    def take_mean(self) -> float:
        """The mean loss since the last call (one read-back)."""
        mean = (self.total / max(1, self.count)).item()
        self.total.zero_()
        self.count = 0
        return mean


SUBSAMPLE = 1024  # latents per domain for the start: spectra, first filters and the decoupled anchor


def subsample(z: torch.Tensor, groups: list[str] | None) -> tuple[torch.Tensor, list[str] | None]:
    step = max(1, len(z) // SUBSAMPLE)
    return z[::step], (groups[::step] if groups is not None else None)


@torch.no_grad()
def round_trips(z: torch.Tensor, filters: list[Callable | None], vae, convention) -> list[torch.Tensor]:
    """Model-space latents ``z`` through the VAE and back once per filter, their images filtered by it on the way
    (None: not): ``encode(h * decode(z))``, each chunk decoded once for all of them."""
    enc = lambda img: convention.raw_to_model(vae.encode(img.clamp(-1, 1)).to(z.device).float(), vae.space)  # noqa: E731
    out = [[] for _ in filters]
    for c in z.split(16):
        x = vae.decode(convention.model_to_raw(c.float(), vae.space)).to(z.device)
        for trips, h in zip(out, filters):
            trips.append(enc(h(x) if h is not None else x))
    return [torch.cat(trips) for trips in out]


def filter_shift(z: torch.Tensor, h: PixelFilter, vae, convention) -> torch.Tensor:
    """What ``h`` does to the images of model-space latents ``z``, as a latent move: ``encode(h * x) - encode(x)``, ``x``
    their decodes. The difference of two round trips through the VAE, so the round trip's own loss cancels to first order."""
    moved, plain = round_trips(z, [h, None], vae, convention)
    return moved - plain


def decoupled(z: torch.Tensor, h: PixelFilter, vae, convention) -> torch.Tensor:
    """``z`` moved by what ``h`` does to its images (:func:`filter_shift`). A closed-form map fitted from these, not
    from ``z``, is left the part of the transform the filter does not explain."""
    return z + filter_shift(z, h, vae, convention)


@torch.no_grad()
def unfiltered(a: torch.Tensor, b: torch.Tensor, filters: PostFilters, view) -> tuple[torch.Tensor, torch.Tensor]:
    """``train.d_targets=unfiltered``: each domain with the post-stage into it undone, latents whose images, once
    through the stage that follows the generator into that domain, look like the domain's own. A latent
    discriminator that takes these as real asks G for what the stage does not add, instead of asking G to add the
    filter's blur or the colour map's grade a second time. For ``b`` (``x`` its decodes, ``h_ab`` G's stage):

    - the filter is undone to first order, ``b - (encode(h_ab * x) - encode(x))``;
    - where both directions carry a colour map (``train.post_colour``, both gates open), the colour is undone by the
      other direction's map, fitted from B's colours to A's (for Gaussian OT, the inverse of A->B's), rather than to
      first order, which a map far from the identity (a grade: 6 dB) overshoots:
      ``b - (encode(filter_ab * x) - encode(colour_ba(x)))``.

    ``a`` likewise, with the roles swapped. Needs filters that stay as fitted (``post_filter_lr=0``)."""
    out = []
    for z, h, back in ((a, filters.g_ba, filters.g_ab), (b, filters.g_ab, filters.g_ba)):
        if h.coloured and back.coloured:
            moved, plain = round_trips(z, [h.filter, back.recolour], view.vae, view.convention)
        else:
            moved, plain = round_trips(z, [h, None], view.vae, view.convention)
        out.append(z - (moved - plain))
    return tuple(out)


def setup(size: int, lr: float, view, a: torch.Tensor, b: torch.Tensor, groups_a: list[str] | None, groups_b: list[str] | None,
          anchor: str, seed: int, decouple: str = "difference", colour: str = "none",
          colour_alpha: float = 0.05) -> tuple[FilterTrainer, dict | None]:
    """``train.post_filter``: the filters' trainer and, unless ``anchor`` is ``identity``, the generators' decoupled start maps.

    From up to :data:`SUBSAMPLE` latents of each domain (model space, on the device): each domain's log spectrum (of
    ``view.centre``: deterministic), a first filter each way fitted on the untranslated decodes (where the trained
    filters start), and the ``anchor`` map fitted from the decoupled latents to the other domain: ``decouple`` is
    ``difference`` (:func:`decoupled` fitted to the raw other domain) or ``round_trip`` (:func:`round_trips` with the
    filter fitted to the other domain's plain round trip: both sides carry the VAE's own loss, so it cancels exactly
    in the comparison rather than to first order).

    ``colour`` (``train.post_colour``, not ``none``): first, each way, a colour map of that kind (a 1x1 baseline of
    :mod:`lcgan.baselines`) fitted from the untranslated decodes to the other domain's, kept only where the two differ
    beyond chance (:func:`lcgan.baselines.divergence_test`, p <= ``colour_alpha``; 1: always): in decoded pixels a cross-channel
    colour transform is identifiable where latent maps are not (experiments/known_transform/results/pixel_colour.md).
    The filters are then fitted after it, and the anchors decoupled from both.
    """
    (za, ga), (zb, gb) = subsample(a, groups_a), subsample(b, groups_b)
    spec_a, spec_b = (domain_spectrum(view.centre, z) for z in (za, zb))
    images = lambda z: torch.cat([view.centre(c).to(z.device) for c in z.split(16)])  # noqa: E731
    x_a, x_b = images(za), images(zb)
    filters = PostFilters(size, x_a.shape[1]).to(za.device)
    if colour != "none":
        for h, src, tgt, gs, gt, name in ((filters.g_ab, x_a, x_b, ga, gb, "A->B"), (filters.g_ba, x_b, x_a, gb, ga, "B->A")):
            kl, p = divergence_test(src, tgt, gs, gt)
            if p <= colour_alpha:
                h.set_colour(fit(colour, src, tgt, gs, gt))
            print(f"post_colour {name}: colour KL {kl:.3g}, p = {p:.3f}: {colour if p <= colour_alpha else 'none (within chance)'}")
    first_ab = fit_filter(filters.g_ab.recolour(x_a), spec_b, size, seed=seed)
    first_ba = fit_filter(filters.g_ba.recolour(x_b), spec_a, size, seed=seed + 1)
    filters.g_ab.raw.data.copy_(first_ab.raw)
    filters.g_ba.raw.data.copy_(first_ba.raw)
    first_ab, first_ba = filters.g_ab, filters.g_ba  # colour map and first filter: what the anchors are decoupled from
    anchors = None
    if anchor != "identity":
        vae, convention = view.vae, view.convention
        if decouple == "round_trip":
            (moved_a, plain_a), (moved_b, plain_b) = ((t.cpu() for t in round_trips(z, [h, None], vae, convention))
                                                      for z, h in ((za, first_ab), (zb, first_ba)))
            vals = [torch.linalg.eigvalsh(torch.cov(p.double().transpose(0, 1).flatten(1))) for p in (plain_a, plain_b)]
            if any(v[0] < 1e-6 * v[-1] for v in vals):  # a map between round trips would then blow up that direction of raw latents
                raise ValueError("train.post_filter_decouple=round_trip: this VAE's round trip loses a latent direction (e.g. the "
                                 "approx preview's 3 colours for 4 channels), so no map fitted between round trips applies to raw "
                                 "latents: set train.post_filter_decouple=difference")
        else:
            plain_a, plain_b = za.cpu(), zb.cpu()
            moved_a, moved_b = (decoupled(z, h, vae, convention).cpu() for z, h in ((za, first_ab), (zb, first_ba)))
        anchors = {"A2B": fit(anchor, moved_a, plain_b, ga, gb), "B2A": fit(anchor, moved_b, plain_a, gb, ga)}
    return FilterTrainer(filters, view, (spec_a, spec_b), lr), anchors
