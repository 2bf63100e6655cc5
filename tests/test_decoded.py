"""train.d_input=decoded: the discriminators judge the VAE's decoded images, with gradients through its frozen decoder."""
from __future__ import annotations

import re

import pytest
import torch

from lcgan import checkpoint
from lcgan.cyclegan import CycleGAN, Decoded, LossWeights, sliced_wasserstein
from lcgan.latents import Convention
from lcgan.models import LocalDiscriminator, ResnetGenerator
from lcgan.train import train
from lcgan.vae import ApproxVAE, OnnxVAE
from tests.shared import shared_path


def _vaelight(backend):
    folder = shared_path("weights/vaelight")
    return OnnxVAE(encoder_path=str(folder / "VAEencoder.onnx"), decoder_path=str(folder / "VAEpreview.onnx"),
                   sum_decoder_outputs=True, backend=backend)


def _decoded_gan():
    """A tiny CycleGAN whose discriminators judge the linear preview VAE's RGB decode (4x the latents' size)."""
    torch.manual_seed(0)
    vae, convention = ApproxVAE(upscale=4), Convention(latent_divisor=2.0)
    g = lambda: ResnetGenerator(4, ngf=8, n_blocks=1, n_downsampling=1, anchor="identity")  # noqa: E731
    d = lambda: LocalDiscriminator(3, ndf=8, kernel=3)  # noqa: E731
    return vae, convention, CycleGAN(g(), g(), d(), d(), view=Decoded(vae, convention))


def test_generator_learns_from_a_discriminator_of_decoded_pixels():
    vae, convention, gan = _decoded_gan()
    a, b = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    losses, _, _ = gan.generator_losses(a, b, LossWeights(lambda_cyc=0.0))  # the adversarial terms alone
    losses["loss_gan_G"].backward()
    last = gan.g_ab.net[-1].weight  # zero-initialised residual output: only the D's gradient moves it
    assert last.grad is not None and last.grad.abs().sum() > 0
    assert gan.d_b.net[0].weight.shape[1] == 3, "the discriminator judges RGB images"
    # the pixels it judges are the VAE's decode of the raw latents
    torch.testing.assert_close(gan.seen(a), vae.decode(convention.model_to_raw(a, vae.space)))
    assert not any("vae" in k or "view" in k for k in gan.state_dict()), "the VAE's weights are not the model's"


def test_swd_measures_the_decoded_pixels_under_a_decoded_view():
    # the SWD compares patches of what the discriminators judge: here 3-channel pixels, 4x the latents' size
    vae, convention, gan = _decoded_gan()
    a, b = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    weights = LossWeights(lambda_cyc=0.0, lambda_swd=1.0, swd_kernel=5)  # 5 > the latents' 4 cells: only pixels have 5x5 patches
    torch.manual_seed(1)
    losses, fake_a, fake_b = gan.generator_losses(a, b, weights)
    torch.manual_seed(1)  # the same random projections
    pix = lambda z: vae.decode(convention.model_to_raw(z, vae.space))  # noqa: E731
    expected = sliced_wasserstein(pix(fake_b), pix(b), 5) + sliced_wasserstein(pix(fake_a), pix(a), 5)
    torch.testing.assert_close(losses["loss_swd"].detach(), expected)
    losses["loss_swd"].backward()
    assert gan.g_ab.net[-1].weight.grad.abs().sum() > 0, "the pixel SWD reaches G through the decoder"


def test_vaelight_torch_decode_passes_gradients_and_equals_decode():
    vae = _vaelight("torch")
    z = (torch.randn(1, 4, 8, 8) * 3).requires_grad_(True)
    x = vae.decode_with_grad(z)
    torch.testing.assert_close(x.detach(), vae.decode(z))
    x.square().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in vae.decoder.parameters()), "the decoder stays frozen"


@pytest.mark.parametrize("setting", ["train.d_input=decoded", "train.lambda_cyc_decoded=1"])
def test_onnxruntime_backend_is_refused_naming_the_setting(setting, tiny_cfg, tmp_path):
    # both settings decode with gradients each step; onnxruntime cannot pass them
    pytest.importorskip("onnxruntime")
    folder = shared_path("weights/vaelight")
    cfg = tiny_cfg(setting, "vae=vaelight", f"vae.encoder_path={folder / 'VAEencoder.onnx'}",
                   f"vae.decoder_path={folder / 'VAEpreview.onnx'}")
    with pytest.raises(ValueError, match=rf"{re.escape(setting.split('=')[0])}.*vae.backend=torch"):
        train(cfg)
    assert not (tmp_path / "run" / "model" / "last.pt").exists()


def test_train_with_decoded_discriminators_saves_and_resumes(tiny_cfg, tmp_path):
    out = tmp_path / "run"
    train(tiny_cfg("train.d_input=decoded", "train.epochs=1", "vae.upscale=2"))
    ck = checkpoint.load(out / "model" / "last.pt")
    assert ck["D_A"]["net.0.parametrizations.weight.original"].shape[1] == 3
    train(tiny_cfg("train.d_input=decoded", "train.epochs=2", "vae.upscale=2", "train.resume=true"))
    assert checkpoint.load(out / "model" / "last.pt")["epoch"] == 2


def test_crop_decodes_one_random_window_of_the_batch():
    vae, convention = ApproxVAE(upscale=2), Convention(latent_divisor=1.0)
    z = torch.randn(3, 4, 12, 10)
    view = Decoded(vae, convention, crop=4)
    seen = {}
    for _ in range(20):
        x = view(z)
        assert x.shape == (3, 3, 8, 8)
        windows = [(i, j) for i in range(9) for j in range(7)
                   if torch.allclose(x, vae.decode(z[..., i : i + 4, j : j + 4]), atol=1e-6)]
        assert windows, "the decode of one window of the latents"
        seen[windows[0]] = True
    assert len(seen) > 5, "the window moves"
    assert Decoded(vae, convention, crop=16)(z).shape == (3, 3, 24, 20), "a crop larger than the latents decodes them whole"


def test_decoded_l1_compares_one_window_of_both_decodes_and_passes_gradients_to_the_first():
    vae, convention = ApproxVAE(upscale=2), Convention(latent_divisor=1.0)
    view = Decoded(vae, convention, crop=4)
    z = (torch.randn(3, 4, 12, 10) * 0.1).requires_grad_(True)
    target = (torch.randn(3, 4, 12, 10) * 0.1).requires_grad_(True)
    assert view.l1(target, target).item() == 0, "the same window of both: a latent against itself is 0 wherever it lands"
    shift = torch.zeros(1, 4, 1, 1)
    shift[0, 0] = 0.05  # a constant latent shift decodes to a constant pixel shift, so every window measures the same
    expected = vae.decode(convention.model_to_raw(shift.expand(1, 4, 4, 4), vae.space)) - vae.decode(torch.zeros(1, 4, 4, 4))
    for _ in range(5):
        torch.testing.assert_close(view.l1(target + shift, target), expected.abs().mean())
    view.l1(z, target).backward()
    assert z.grad.abs().sum() > 0 and target.grad is None, "only the translation is pulled; the decoded target is a constant"


def test_decoded_cycle_is_part_of_loss_cyc_and_reaches_both_generators():
    vae, convention, gan = _decoded_gan()
    gan.view, gan.decoder = None, Decoded(vae, convention)  # latent discriminators, the cycle measured in pixels
    gan.d_a = gan.d_b = LocalDiscriminator(4, ndf=8, kernel=3)
    with torch.no_grad():  # the residual outputs start at zero, where F(G(a)) = a: move them so the cycle has an error
        for g in (gan.g_ab, gan.g_ba):
            g.net[-1].weight.normal_(0, 0.1)
    a, b = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    losses, _, _ = gan.generator_losses(a, b, LossWeights(lambda_cyc=0.0, lambda_cyc_decoded=2.0))
    pix = lambda z: vae.decode(convention.model_to_raw(z, vae.space))  # noqa: E731
    with torch.no_grad():
        expected = ((pix(gan.g_ba(gan.g_ab(a))) - pix(a)).abs().mean() + (pix(gan.g_ab(gan.g_ba(b))) - pix(b)).abs().mean()) * 2
    torch.testing.assert_close(losses["loss_cyc_decoded"].detach(), expected)
    torch.testing.assert_close(losses["loss_cyc"].detach(), expected, msg="loss_cyc holds the cycle in whichever space it is trained")
    losses["loss_cyc_decoded"].backward()
    assert gan.g_ab.net[-1].weight.grad.abs().sum() > 0 and gan.g_ba.net[-1].weight.grad.abs().sum() > 0


def test_train_with_the_decoded_cycle_alone_logs_it_and_picks_best_by_it(tiny_cfg, tmp_path):
    # latents without a validation split: the cycle is the metric best.pt is chosen by (the last resort), here in pixels
    from tests.test_train import read_log, write_latents

    out = tmp_path / "run"
    a, b = write_latents(tmp_path / "A", 8, seed=1), write_latents(tmp_path / "B", 8, seed=2)
    train(tiny_cfg("data=latents", f"data.a_dir={a}", f"data.b_dir={b}", "train.lambda_cyc=0", "train.lambda_cyc_decoded=5",
                   "train.epochs=2", "vae.upscale=2", "train.vis_every=0"))
    lines = read_log(out)
    # epoch 1 is one step from G = F = the identity (the shrunk anchors of 8 random latents), where the cycle is exactly 0
    assert [line["loss_cyc"] for line in lines] == [line["loss_cyc_decoded"] for line in lines] and lines[-1]["loss_cyc"] > 0
    assert all(line["val_metric"] == line["loss_cyc"] for line in lines), "best.pt follows the pixel cycle, not NaN"
    assert (out / "model" / "best.pt").is_file()

