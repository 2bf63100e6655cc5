"""Closed-form baselines (lcgan.baselines), the general generator anchor, the sliced Wasserstein loss
and the torch runner of ONNX conv graphs."""
from __future__ import annotations

import math

import pytest
import torch

from lcgan.baselines import BASELINES, LinearMap, fit, projected_quantiles
from lcgan.cyclegan import sliced_wasserstein
from lcgan.models import ResnetGenerator
from tests.shared import shared_path


def correlated(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Latents (n, 4, 8, 8) with correlated channels and non-zero means."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(4, 4, generator=g)
    z = torch.randn(n, 4, 8, 8, generator=g)
    return torch.einsum("oc,nchw->nohw", mix, z) + torch.tensor([1.0, -2.0, 0.5, 0.0]).view(1, 4, 1, 1)


def test_gaussian_ot_recovers_a_channel_mixing_map():
    # the Monge map between Gaussians is the symmetric positive-definite linear map itself, exactly
    # (sample covariances transform exactly); per-channel maps cannot express the mixing
    src = correlated()
    g = torch.Generator().manual_seed(1)
    q = torch.randn(4, 4, generator=g)
    m = q @ q.T / 4 + torch.eye(4)  # SPD
    bias = torch.tensor([0.3, -0.1, 0.2, 1.0])
    tgt = torch.einsum("oc,nchw->nohw", m, src) + bias.view(1, 4, 1, 1)
    ot = fit("gaussian_ot", src, tgt)
    assert torch.allclose(ot.weight[:, :, 0, 0], m, atol=1e-4) and torch.allclose(ot.bias, bias, atol=1e-4)
    err = lambda kind: (fit(kind, src, tgt)(src) - tgt).pow(2).mean().item()  # noqa: E731
    assert err("gaussian_ot") < 1e-8 < err("moment_match")


def test_patch_ot_is_a_3x3_filter_and_the_identity_between_equal_domains():
    z = correlated()
    ot = fit("patch_ot", z, z)
    ident = torch.zeros(4, 4, 3, 3)
    ident[:, :, 1, 1] = torch.eye(4)
    assert ot.kernel == 3 and torch.allclose(ot.weight, ident, atol=1e-4) and ot.bias.abs().max() < 1e-4
    assert ot(z).shape == z.shape


@pytest.mark.parametrize("kind", BASELINES)
def test_every_baseline_round_trips_as_data(kind):
    src, tgt = correlated(seed=0), correlated(seed=3) * 1.5
    m = fit(kind, src, tgt)
    back = LinearMap.from_dict(m.as_dict(), channels=4, where="ck.pt: domain_stats.maps")
    assert torch.equal(back(src), m(src))


def test_a_malformed_baseline_map_is_refused_naming_where():
    with pytest.raises(ValueError, match="ck.pt: domain_stats.maps.A2B.gaussian_ot"):
        LinearMap.from_dict({"weight": [[1.0]], "bias": [0.0]}, channels=4, where="ck.pt: domain_stats.maps.A2B.gaussian_ot")
    with pytest.raises(ValueError, match="not a baseline map"):
        LinearMap.from_dict({"weight": "rm -rf"}, channels=4, where="x")


def test_generator_anchor_starts_at_the_fitted_map_and_loads_legacy_checkpoints():
    src, tgt = correlated(seed=0), correlated(seed=5)
    g = ResnetGenerator(4, ngf=8, n_blocks=1, n_downsampling=1, output="residual", anchor="patch_ot")
    g.set_anchor(fit("patch_ot", src, tgt))
    assert torch.allclose(g(src), fit("patch_ot", src, tgt)(src), atol=1e-5), "the residual branch starts at zero"
    with pytest.raises(ValueError, match="takes a map of shape"):
        g.set_anchor(fit("gaussian_ot", src, tgt))
    # before the general anchor, checkpoints held a per-channel z * anchor_scale + anchor_shift
    old = ResnetGenerator(4, ngf=8, n_blocks=1, n_downsampling=1, output="residual", anchor="moment_match")
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("anchor_")}
    scale, shift = torch.tensor([2.0, 0.5, 1.0, 3.0]), torch.tensor([0.1, 0.2, -0.3, 0.0])
    state.update(anchor_scale=scale.view(1, 4, 1, 1), anchor_shift=shift.view(1, 4, 1, 1))
    old.load_state_dict(state)
    assert torch.allclose(old(src), src * scale.view(1, 4, 1, 1) + shift.view(1, 4, 1, 1), atol=1e-5)


def test_sliced_wasserstein_loss_sees_distributions_not_pairs():
    torch.manual_seed(0)
    a = torch.randn(8, 4, 8, 8)
    shuffled = a.flatten(2)[:, :, torch.randperm(64)].view_as(a)  # same bag of latent vectors, other layout
    assert sliced_wasserstein(shuffled, a, kernel=1).item() < 1e-6
    shifted = (a + 0.5).requires_grad_(True)
    loss = sliced_wasserstein(shifted, a, kernel=3)
    loss.backward()
    assert loss.item() > 0.1 and shifted.grad.abs().sum() > 0


def test_onnx_conv_graph_runs_as_torch_ops_like_onnxruntime():
    from lcgan.vae import OnnxVAE

    enc, dec = shared_path("weights/vaelight/VAEencoder.onnx"), shared_path("weights/vaelight/VAEpreview.onnx")
    pytest.importorskip("onnx", reason="vae.backend=torch needs the onnx package (the [onnx] and [test] extras)")
    kw = dict(encoder_path=str(enc), decoder_path=str(dec), channels=4, sum_decoder_outputs=True)
    ort, tch = OnnxVAE(**kw), OnnxVAE(backend="torch", **kw)
    x = torch.rand(2, 3, 32, 48) * 2 - 1
    z = ort.encode(x)
    # same float32 arithmetic, another order of summation: ~1e-6 relative
    assert (tch.encode(x) - z).norm() / z.norm() < 1e-4
    ref = ort.decode(z)
    assert (tch.decode(z) - ref).norm() / ref.norm() < 1e-4
    with pytest.raises(ValueError, match="vae.backend"):
        OnnxVAE(backend="tensorrt", **kw)


def test_evaluate_reads_saved_maps_and_falls_back_to_channel_stats_for_older_checkpoints():
    from lcgan.baselines import channel_stats, fit_all
    from lcgan.scoring import latent_baselines

    a, b = correlated(seed=0), correlated(seed=7) * 2
    (am, as_), (bm, bs) = channel_stats(a), channel_stats(b)
    stats = {"a_mean": am.tolist(), "a_std": as_.tolist(), "b_mean": bm.tolist(), "b_std": bs.tolist()}
    old = latent_baselines(stats, 4, "old.pt")  # a checkpoint from before the transport maps
    assert set(old["A2B"]) == {"mean_shift", "moment_match"}
    assert torch.allclose(old["A2B"]["moment_match"](a), fit("moment_match", a, b)(a), atol=1e-5)
    maps = fit_all(a, b)
    new = latent_baselines({**stats, "maps": {d: {k: m.as_dict() for k, m in ms.items()} for d, ms in maps.items()}}, 4, "new.pt")
    assert set(new["B2A"]) == set(BASELINES) and torch.allclose(new["B2A"]["patch_ot"](b), maps["B2A"]["patch_ot"](b), atol=1e-5)


def test_shrunk_ot_keeps_a_real_shift_and_drops_a_chance_one():
    """Two samples of one distribution: the shrunk map is the identity; a strong shift: the plain map."""
    from lcgan.baselines import fit, shrunk

    gen = torch.Generator().manual_seed(0)
    photos = lambda n: torch.randn(n, 4, 1, 1, generator=gen) + 0.3 * torch.randn(n, 4, 8, 8, generator=gen)  # noqa: E731
    a, b = photos(40), photos(40)  # 40 "photos": each latent's cells share its photo's content
    groups = [str(i) for i in range(40)]
    null = fit("gaussian_ot_shrunk", a, b, groups, groups)
    plain = fit("gaussian_ot", a, b, groups, groups)
    ident = shrunk(plain, 0.0)
    assert not torch.allclose(plain.weight, ident.weight, atol=0.05), "the plain map follows the content difference"
    assert torch.allclose(null.weight, ident.weight, atol=1e-6) and torch.allclose(null.bias, ident.bias, atol=1e-6)
    moved = b * 1.5 + 2.0
    real = fit("gaussian_ot_shrunk", a, moved, groups, groups)
    target = fit("gaussian_ot", a, moved, groups, groups)
    assert (real.weight - target.weight).abs().max() < 0.1 and (real.bias - target.bias).abs().max() < 0.2


def test_divergence_test_sees_a_collapsed_direction_the_displacement_misses():
    """Two samples of one distribution: p large. One channel squeezed to a tenth (a chroma collapse, as sepia's): a
    small displacement next to the photos' own spread, a large divergence, p at its floor 1/65."""
    from lcgan.baselines import _patch_moments, divergence_test, shrink_factor

    gen = torch.Generator().manual_seed(2)
    photos = lambda n: torch.randn(n, 3, 1, 1, generator=gen) + 0.3 * torch.randn(n, 3, 8, 8, generator=gen)  # noqa: E731
    spread = torch.tensor([1.0, 0.1, 0.1]).view(1, 3, 1, 1)  # a bright channel and two faint ones, as luma and chroma
    a, b = photos(40) * spread, photos(40) * spread
    groups = [str(i) for i in range(40)]
    kl, p = divergence_test(a, b, groups, groups)
    assert p > 0.1
    squeezed = b * torch.tensor([1.0, 0.1, 1.0]).view(1, 3, 1, 1)
    kl_s, p_s = divergence_test(a, squeezed, groups, groups)
    assert p_s == pytest.approx(1 / 65) and kl_s > 10 * kl
    ma, ms = _patch_moments(a, 1, groups), _patch_moments(squeezed, 1, groups)
    assert shrink_factor(ma, ms, 3, 1) < 0.5, "the displacement alone takes most of the collapse for chance"
    grey = b.mean(1, keepdim=True).expand(-1, 3, -1, -1)  # fully collapsed (a desaturation): a singular covariance
    for src, tgt in ((a, grey), (grey, a)):
        kl_g, p_g = divergence_test(src, tgt, groups, groups)
        assert math.isfinite(kl_g) and kl_g > kl_s and p_g == pytest.approx(1 / 65)


def test_shrinkage_counts_source_images_not_latents():
    """Crops of one photo are not independent samples: grouped by photo, the chance move is larger."""
    from lcgan.baselines import GroupMoments, _patch_moments, shrink_factor

    gen = torch.Generator().manual_seed(1)
    content = torch.randn(20, 4, 1, 1, generator=gen)
    z = (content.repeat_interleave(8, 0) + 0.2 * torch.randn(160, 4, 8, 8, generator=gen))  # 8 crops per photo
    a, b = z[:80], z[80:] + 0.5
    by_photo = [str(i // 8) for i in range(80)]
    loose = shrink_factor(_patch_moments(a, 1), _patch_moments(b, 1), 4, 1)
    grouped = shrink_factor(_patch_moments(a, 1, by_photo), _patch_moments(b, 1, by_photo), 4, 1)
    assert 0 <= grouped < loose <= 1
    m = _patch_moments(a, 1, by_photo)
    assert isinstance(m, GroupMoments) and len(m.count) == 10
    mean, cov = m.moments()
    flat = a.transpose(0, 1).reshape(4, -1).double()
    assert torch.allclose(mean, flat.mean(1)) and torch.allclose(cov, torch.cov(flat), atol=1e-9)


def test_resplits_split_the_pool_into_the_first_sides_size_the_same_way_every_call():
    from lcgan.baselines import _patch_moments, resplits

    masks = list(resplits(10, 4, permutations=5))
    assert len(masks) == 5 and all(m.dtype == torch.bool and int(m.sum()) == 4 for m in masks)
    assert len({tuple(m.tolist()) for m in masks}) > 1, "each re-split is drawn anew"
    assert all(torch.equal(x, y) for x, y in zip(masks, resplits(10, 4, permutations=5))), "seeded: a map's shrinkage is reproducible"
    a, b = _patch_moments(torch.randn(3, 4, 4, 4), 1), _patch_moments(torch.randn(2, 4, 4, 4), 1)
    joined = a.join(b)
    assert torch.equal(joined.total, torch.cat([a.total, b.total])) and len(joined.count) == 5


@pytest.mark.parametrize("n", [1, 2, 257, 5000])
def test_projected_quantiles_are_torch_quantile_of_the_projections(n):
    """The sliced distances' quantiles: torch.quantile's linear interpolation, bit for bit in float64 (the gain's
    distances), to rounding in float32 (the latent SWD); each projection's column normalised."""
    g = torch.Generator().manual_seed(n)
    a, proj = torch.randn(n, 12, generator=g, dtype=torch.float64), torch.randn(12, 16, generator=g, dtype=torch.float64) * 3
    q = torch.linspace(0, 1, 256, dtype=torch.float64)
    expected = torch.quantile(a @ (proj / proj.norm(dim=0, keepdim=True)), q, dim=0)
    assert projected_quantiles(a, proj).shape == (256, 16) and torch.equal(projected_quantiles(a, proj), expected)
    a32, p32 = a.float(), proj.float()
    torch.testing.assert_close(projected_quantiles(a32, p32), torch.quantile(a32 @ (p32 / p32.norm(dim=0, keepdim=True)), q.float(), dim=0))
