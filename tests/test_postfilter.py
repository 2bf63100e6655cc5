"""train.post_filter (lcgan/postfilter.py): the filter's shape rules, that the spectrum alone recovers a blur, the
checkpoint's filters checked as data, training, resume and translation with them, and the decoupled anchor."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from lcgan import checkpoint, config
from lcgan.baselines import LinearMap, fit
from lcgan.latents import Convention, LatentSpace
from lcgan.postfilter import FilterTrainer, PixelFilter, PostFilters, decoupled, fit_filter, round_trips, unfiltered
from lcgan.spectrum import domain_spectrum
from lcgan.train import train
from lcgan.translate import translate_batch
from lcgan.translator import load_translator
from lcgan.vae import ApproxVAE


class PixelsVAE:
    """Latents that are their own images."""

    space = LatentSpace(channels=3, scaling_factor=1.0, downsample=1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x


def blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([0.25, 0.5, 0.25])
    k = (k[:, None] * k[None]).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k, groups=x.shape[1])


def test_starts_at_identity_keeps_the_mean_and_never_shifts():
    filt = PixelFilter(5)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(filt(x), x), "started at the identity"
    with torch.no_grad():
        filt.raw.copy_(torch.rand(3, 5, 5) + 0.1)
    assert torch.allclose(filt(torch.full((1, 3, 8, 8), 0.3)), torch.full((1, 3, 8, 8), 0.3)), "sums to 1: a flat image is kept"
    impulse = torch.zeros(1, 3, 15, 15)
    impulse[..., 7, 7] = 1
    y = filt(impulse)
    assert torch.allclose(y, y.flip(-1, -2)), "zero phase: the response is centred on the pixel"
    with pytest.raises(ValueError, match="odd"):
        PixelFilter(4)


def test_the_spectrum_alone_recovers_a_blur():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 3, 24, 24, generator=gen), torch.randn(64, 3, 24, 24, generator=gen)
    target = domain_spectrum(lambda z: blur(z), b)  # another set of images, blurred: no pairs
    filt = fit_filter(a, target, size=3, steps=300, batch=16, lr=0.02, seed=0)
    with torch.no_grad():
        before, after = (a - blur(a)).pow(2).mean(), (filt(a) - blur(a)).pow(2).mean()
    assert after < 0.05 * before, f"filtered images are the blurred ones: {after:.4f} vs identity's {before:.4f}"
    assert not filt.raw.requires_grad


def test_the_decaying_fit_leaves_the_seed_little_say():
    """With the lr decaying to 0 the filter is the loss's minimum, not wherever the last batches left it: two seeds'
    batch orders give nearly one kernel, where at a constant lr they differ several times as much."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 3, 24, 24, generator=gen), torch.randn(64, 3, 24, 24, generator=gen)
    a = a * torch.rand(64, 1, 1, 1, generator=gen).mul(3).add(0.2)  # images of unlike contrast: small batches disagree
    target = domain_spectrum(lambda z: blur(z), b)

    def spread(decay: bool) -> float:
        k0, k1 = (fit_filter(a, target, size=3, steps=200, batch=4, lr=0.05, seed=s, decay=decay).kernel() for s in (0, 1))
        return (k0 - k1).abs().max().item()

    decayed, constant = spread(True), spread(False)
    assert decayed < 0.5 * constant, f"seeds' kernels differ by {decayed:.4f} decayed, {constant:.4f} at a constant lr"


def test_a_checkpoints_filters_are_data_checked_before_use():
    good = PostFilters(3).state_dict()
    assert torch.equal(PostFilters.from_state(good, "ck").g_ab.raw, good["g_ab.raw"])
    bad = {"missing a key": {"g_ab.raw": good["g_ab.raw"]},
           "not a tensor": {**good, "g_ba.raw": [[1.0]]},
           "not finite": {**good, "g_ba.raw": torch.full((3, 3, 3), math.nan)},
           "even side": {k: torch.ones(3, 4, 4) for k in good},
           "two shapes": {**good, "g_ba.raw": torch.ones(3, 5, 5)}}
    for why, state in bad.items():
        with pytest.raises(ValueError, match="ck"):
            PostFilters.from_state(state, "ck")
            pytest.fail(why)


@pytest.mark.slow
def test_training_fits_the_filters_saves_them_and_translation_applies_them(tiny_cfg, tmp_path):
    out = tmp_path / "run"
    train(tiny_cfg("train.post_filter=3", "train.ckpt_every=1", "vae.upscale=2"))
    last, gen = checkpoint.load(out / "model" / "last.pt"), checkpoint.load(out / "model" / "epoch_0002.pt")
    assert {"post_filter", "opt_post"} <= last.keys() and torch.equal(gen["post_filter"]["g_ab.raw"], last["post_filter"]["g_ab.raw"])
    assert not torch.equal(last["post_filter"]["g_ab.raw"], PostFilters(3).g_ab.raw), "fitted, not left at the identity"
    rows = [json.loads(line) for line in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss_pf"]) for r in rows)
    translator = load_translator(out / "model" / "epoch_0002.pt", torch.device("cpu"))
    assert translator.info["post_filter"] == "3x3 pixels"
    vae = ApproxVAE(upscale=2)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    plain = translate_batch(translator.g_ab, vae, translator.convention, x, 2, torch.device("cpu"))
    filtered = translate_batch(translator.g_ab, vae, translator.convention, x, 2, torch.device("cpu"), translator.pixel_filter("g_ab"))
    torch.testing.assert_close(filtered, translator.post.g_ab(plain).clamp(-1, 1))
    assert not torch.equal(filtered, plain)


def test_a_zero_learning_rate_keeps_the_start_filters_without_decoding():
    """``train.post_filter_lr=0``: the filters stay as :func:`lcgan.postfilter.setup` fitted them (those the anchors
    were decoupled from), and no step decodes anything; a positive rate moves them."""
    class NoDecode:
        def images(self, z):
            raise AssertionError("a frozen filter trainer decoded")

    filters = PostFilters(3)
    spectra = tuple(domain_spectrum(lambda z: z, torch.rand(4, 3, 8, 8) * s) for s in (1, 2))
    with torch.no_grad():
        filters.g_ab.raw.add_(0.1)
    start = {k: v.clone() for k, v in filters.state_dict().items()}
    frozen = FilterTrainer(filters, NoDecode(), spectra, lr=0)
    frozen(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    assert all(torch.equal(v, start[k]) for k, v in filters.state_dict().items()) and frozen.take_mean() == 0
    moving = FilterTrainer(filters, PixelsVAEView(), spectra, lr=0.01)
    moving(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8))
    assert not torch.equal(filters.g_ab.raw, start["g_ab.raw"])


class PixelsVAEView:
    def images(self, z):
        return z


@pytest.mark.slow
def test_resume_restores_the_filters_exactly(tiny_cfg, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ("train.post_filter=3", "vae.upscale=2", "optim.lr_constant_epochs=2", "optim.lr_decay_epochs=2")
    train(tiny_cfg("train.epochs=3", *common, out=straight))
    train(tiny_cfg("train.epochs=2", *common, out=split))
    train(tiny_cfg("train.epochs=3", *common, "train.resume=true", out=split))
    a, b = (checkpoint.load(run / "model" / "last.pt") for run in (straight, split))
    for key in ("g_ab.raw", "g_ba.raw"):
        assert torch.equal(a["post_filter"][key], b["post_filter"][key])
    assert torch.equal(a["G"]["net.1.weight"], b["G"]["net.1.weight"])


def test_the_decoupled_anchor_removes_what_the_filter_explains():
    """A VAE whose latents are its images: B = blurred A. Fitted on the latents themselves the moment-matching map
    shrinks the variance (a latent blur); fitted decoupled from a filter that blurs, it is left (almost) nothing."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(64, 3, 16, 16, generator=gen) * 0.15  # images in [-1, 1]
    b = blur(torch.randn(64, 3, 16, 16, generator=gen) * 0.15)
    vae = PixelsVAE()
    h = PixelFilter(3)
    with torch.no_grad():
        h.raw.copy_(torch.tensor([0.25, 0.5, 0.25])[:, None] * torch.tensor([0.25, 0.5, 0.25])[None])
    moved = decoupled(a, h, vae, Convention(latent_divisor=1.0))
    plain, free = fit("moment_match", a, b), fit("moment_match", moved, b)
    assert (plain.weight[:, :, 0, 0].diagonal() < 0.7).all(), "the latent map would blur by shrinking"
    torch.testing.assert_close(free.weight[:, :, 0, 0].diagonal(), torch.ones(3), atol=0.1, rtol=0)


def test_a_round_trip_decoupling_cancels_a_lossy_vaes_own_loss():
    """``train.post_filter_decouple=round_trip`` through a VAE that blurs on the way in: B = blurred photos and a filter
    that blurs; both sides pass the VAE once, so the map fitted apart from the filter is left (almost) nothing to do.
    The difference decoupling compares a round trip's change with raw B and is left a spurious variance change."""

    class BlurringVAE(PixelsVAE):
        def encode(self, x):
            return blur(x)

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(64, 3, 16, 16, generator=gen) * 0.15
    b = blur(torch.randn(64, 3, 16, 16, generator=gen) * 0.15)
    vae, convention, h = BlurringVAE(), Convention(latent_divisor=1.0), PixelFilter(3)
    with torch.no_grad():
        h.raw.copy_(torch.tensor([0.25, 0.5, 0.25])[:, None] * torch.tensor([0.25, 0.5, 0.25])[None])
    (moved,), (plain,) = round_trips(a, [h], vae, convention), round_trips(b, [None], vae, convention)
    trip = fit("moment_match", moved, plain)
    diff = fit("moment_match", decoupled(a, h, vae, convention), b)
    torch.testing.assert_close(trip.weight[:, :, 0, 0].diagonal(), torch.ones(3), atol=0.1, rtol=0)
    assert ((diff.weight[:, :, 0, 0].diagonal() - 1).abs() > 0.1).all()


def test_unfiltered_targets_undo_the_filter_into_each_domain():
    """``train.d_targets=unfiltered`` on a VAE whose latents are its images: B's targets undo G's filter (a blur here),
    ``2b - blur(b)``, and A's undo F's (the identity here: A unchanged); swapping the two filters would fail."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(8, 3, 16, 16, generator=gen) * 0.15 for _ in range(2))
    filters = PostFilters(3)
    with torch.no_grad():
        filters.g_ab.raw.copy_(torch.tensor([0.25, 0.5, 0.25])[:, None] * torch.tensor([0.25, 0.5, 0.25])[None])

    class View:
        vae, convention = PixelsVAE(), Convention(latent_divisor=1.0)

    target_a, target_b = unfiltered(a, b, filters, View())
    torch.testing.assert_close(target_a, a)
    torch.testing.assert_close(target_b, 2 * b - filters.g_ab(b))
    assert not torch.allclose(target_b, b, atol=1e-3)


def test_unfiltered_targets_undo_a_colour_map_by_the_other_directions():
    """With a colour map each way (``train.post_colour``, both gates open) B's targets undo G's colour by F's map, B's
    colours to A's: for images ``b = C a``, the targets are ``a``. The first-order undo, ``2b - C b``, which a map far
    from the identity overshoots, is not; with F's gate shut the targets fall back to it."""
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(8, 3, 16, 16, generator=gen) * 0.3 - 0.15
    w = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.1], [0.1, 0.2, 0.4]])  # a desaturating grade, far from the identity
    t = torch.tensor([0.1, 0.0, -0.1])
    filters = PostFilters(3)
    filters.g_ab.set_colour(LinearMap(w.reshape(3, 3, 1, 1), t))
    inv = torch.linalg.inv(w)
    filters.g_ba.set_colour(LinearMap(inv.reshape(3, 3, 1, 1), -inv @ t))
    b = filters.g_ab.recolour(a)

    class View:
        vae, convention = PixelsVAE(), Convention(latent_divisor=1.0)

    torch.testing.assert_close(unfiltered(a, b, filters, View())[1], a, atol=1e-5, rtol=0)
    first_order = 2 * b - filters.g_ab(b)
    assert (first_order - a).abs().mean() > 0.02
    filters.g_ba.coloured = False
    torch.testing.assert_close(unfiltered(a, b, filters, View())[1], first_order, atol=1e-5, rtol=0)


def test_training_against_unfiltered_targets_and_its_preconditions(tiny_cfg, tmp_path):
    """The targets are computed once from the start's filters: the run trains (finite losses); a filter that kept
    training would make them stale, so that combination is refused, naming the settings. (So is a round-trip
    decoupling through a VAE whose round trip loses a latent direction.)"""
    common = ("train.post_filter=3", "vae.upscale=2", "train.d_targets=unfiltered")
    with pytest.raises(config.ConfigError, match="train.post_filter_lr=0"):
        train(tiny_cfg(*common, "train.epochs=1", out=tmp_path / "moving"))
    with pytest.raises(ValueError, match="set train.post_filter_decouple=difference"):  # the approx preview: 3 colours, 4 channels
        train(tiny_cfg(*common, "train.post_filter_lr=0", "train.epochs=1", "train.post_filter_decouple=round_trip", out=tmp_path / "rt"))
    train(tiny_cfg(*common, "train.post_filter_lr=0", "train.epochs=1"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert rows and all(math.isfinite(r["loss_D"]) and math.isfinite(r["loss_G"]) for r in rows)


def test_decoded_discriminators_judge_the_fakes_filtered_and_never_train_the_filters():
    """train.post_filter under d_input=decoded: D_B judges G's fakes through G's filter, D_A F's fakes through F's, both
    in G's loss and in D's; the reals stay as they are; G gets gradients through the filter, the filter none."""
    from lcgan.cyclegan import CycleGAN, LossWeights

    torch.manual_seed(0)
    conv = lambda: torch.nn.Conv2d(3, 3, 3, padding=1)  # noqa: E731
    seen = {}

    class Recorder(torch.nn.Module):  # a discriminator that remembers what it judged last
        def __init__(self, name):
            super().__init__()
            self.name, self.net = name, torch.nn.Conv2d(3, 1, 1)

        def forward(self, x):
            seen[self.name] = x.detach().clone()
            return self.net(x)

    gan = CycleGAN(conv(), conv(), Recorder("d_a"), Recorder("d_b"), view=lambda z: z * 0.5)  # a "decoder"
    g_filter, f_filter = PixelFilter(3), PixelFilter(3)
    with torch.no_grad():
        g_filter.raw.copy_(torch.rand(3, 3, 3))
        f_filter.raw.copy_(torch.rand(3, 3, 3))
    gan.post = (g_filter, f_filter)
    a, b = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    losses, fake_a, fake_b = gan.generator_losses(a, b, LossWeights())
    torch.testing.assert_close(seen["d_b"], g_filter(fake_b * 0.5))
    torch.testing.assert_close(seen["d_a"], f_filter(fake_a * 0.5))
    losses["loss_G"].backward()
    assert gan.g_ab.weight.grad.abs().sum() > 0 and g_filter.raw.grad is None and f_filter.raw.grad is None
    gan.discriminator_loss(gan.d_b, b, fake_b, LossWeights())  # reals first, then the fakes
    torch.testing.assert_close(seen["d_b"], g_filter(fake_b * 0.5))
    gan.discriminator_loss(gan.d_a, a, fake_a, LossWeights())
    torch.testing.assert_close(seen["d_a"], f_filter(fake_a * 0.5))
    gan.post = None  # without filters: the decode alone
    gan.discriminator_loss(gan.d_b, b, fake_b, LossWeights())
    torch.testing.assert_close(seen["d_b"], fake_b * 0.5)


@pytest.mark.slow
def test_training_with_decoded_discriminators_judges_through_the_filters(tiny_cfg, tmp_path, monkeypatch):
    """train.d_input=decoded with train.post_filter: the run hands the filters to the discriminators' view."""
    from lcgan.cyclegan import CycleGAN

    judged, plain = [], CycleGAN.seen_fake

    def record(self, z, into_b):
        judged.append(self.post is not None)
        return plain(self, z, into_b)

    monkeypatch.setattr(CycleGAN, "seen_fake", record)
    train(tiny_cfg("train.post_filter=3", "train.d_input=decoded", "train.d_crop=0", "vae.upscale=2", "train.epochs=1"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert judged and all(judged) and all(math.isfinite(r["loss_G"]) and math.isfinite(r["loss_pf"]) for r in rows)


SEPIA = torch.tensor([[0.39, 0.77, 0.19], [0.35, 0.69, 0.17], [0.27, 0.53, 0.13]])


def photos(n: int, gen: torch.Generator) -> torch.Tensor:
    """Images as photographs are: brightness varies most (by photo and in texture), colour less; in [-1, 1]."""
    luma = 0.4 * torch.rand(n, 1, 1, 1, generator=gen) - 0.2 + 0.2 * torch.randn(n, 1, 16, 16, generator=gen)
    chroma = 0.1 * torch.randn(n, 3, 1, 1, generator=gen) + 0.03 * torch.randn(n, 3, 16, 16, generator=gen)
    return (luma + chroma).clamp(-1, 1)


def test_a_colour_map_runs_before_the_filter_and_travels_with_the_checkpoint():
    gen = torch.Generator().manual_seed(0)
    x = photos(4, gen)
    h = PixelFilter(3)
    with torch.no_grad():
        h.raw.copy_(torch.tensor([0.25, 0.5, 0.25])[:, None] * torch.tensor([0.25, 0.5, 0.25])[None])
    plain = h(x)
    assert not h.coloured and torch.equal(h.recolour(x), x), "no colour map: the image itself, no op"
    h.set_colour(fit("gaussian_ot", x, torch.einsum("oc,nchw->nohw", SEPIA, x)))
    bare = PixelFilter(3)  # the same kernel, no colour map
    bare.raw.data.copy_(h.raw)
    affine = torch.einsum("oc,nchw->nohw", h.colour[:, :3], x) + h.colour[:, 3].view(1, 3, 1, 1)
    torch.testing.assert_close(h(x), bare(affine))
    assert (affine - torch.einsum("oc,nchw->nohw", SEPIA, x)).abs().mean() < 0.5 * (x - torch.einsum("oc,nchw->nohw", SEPIA, x)).abs().mean()
    filters = PostFilters(3)
    filters.g_ab.load_state_dict(h.state_dict())
    loaded = PostFilters.from_state(filters.state_dict(), "ck")
    assert loaded.g_ab.coloured and not loaded.g_ba.coloured
    torch.testing.assert_close(loaded.g_ab(x), h(x))
    old = {k: v for k, v in filters.state_dict().items() if k in PostFilters.KEYS}  # saved before train.post_colour
    before = PostFilters.from_state(old, "ck")
    assert not before.g_ab.coloured and torch.equal(before.g_ab(x), plain)
    with pytest.raises(ValueError, match="ck: colour maps"):
        PostFilters.from_state({**filters.state_dict(), "g_ab.colour": torch.zeros(3, 3)}, "ck")


def test_setup_fits_a_colour_map_only_where_the_domains_colours_differ_beyond_chance(capsys):
    """A VAE whose latents are its images. B = sepia of other photos: the gate opens for both directions and G's colour
    stage takes A's decodes close to sepia; B = other photos as they are: the gate stays shut, no colour map."""
    from lcgan.postfilter import setup

    gen = torch.Generator().manual_seed(1)
    a, b = photos(48, gen), photos(48, gen)
    groups = [str(i) for i in range(48)]

    class View:
        vae, convention = PixelsVAE(), Convention(latent_divisor=1.0)

        def centre(self, z):
            return z

    sepia_b = torch.einsum("oc,nchw->nohw", SEPIA, b).clamp(-1, 1)
    trainer, anchors = setup(3, 0.0, View(), a, sepia_b, groups, groups, "moment_match", 0, colour="gaussian_ot")
    assert trainer.filters.g_ab.coloured and trainer.filters.g_ba.coloured
    truth = torch.einsum("oc,nchw->nohw", SEPIA, a).clamp(-1, 1)
    assert (trainer.filters.g_ab.recolour(a) - truth).pow(2).mean() < 0.25 * (a - truth).pow(2).mean()
    assert "post_colour A->B: colour KL" in capsys.readouterr().out
    trainer, _ = setup(3, 0.0, View(), a, b, groups, groups, "moment_match", 0, colour="gaussian_ot")
    assert not trainer.filters.g_ab.coloured and not trainer.filters.g_ba.coloured
    assert "none (within chance)" in capsys.readouterr().out


def test_post_colour_without_post_filter_is_refused_naming_both(tiny_cfg):
    with pytest.raises(config.ConfigError, match="train.post_colour=gaussian_ot.*train.post_filter"):
        train(tiny_cfg("train.post_colour=gaussian_ot"))


@pytest.mark.slow
def test_training_with_a_colour_stage_saves_it_and_translation_applies_it(tiny_cfg, tmp_path):
    out = tmp_path / "run"
    # the suite preset's combination: a frozen stage and targets with both colour maps undone (the exact branch)
    train(tiny_cfg("train.post_filter=3", "train.post_colour=gaussian_ot", "train.post_colour_alpha=1", "vae.upscale=2",
                   "train.post_filter_lr=0", "train.d_targets=unfiltered"))
    state = checkpoint.load(out / "model" / "last.pt")["post_filter"]
    assert not torch.equal(state["g_ab.colour"], torch.eye(3, 4)), "alpha 1: the colour map is always fitted"
    translator = load_translator(out / "model" / "last.pt", torch.device("cpu"))
    h = translator.pixel_filter("g_ab")
    assert h.coloured and torch.equal(h.colour, state["g_ab.colour"])
