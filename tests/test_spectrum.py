"""train.lambda_spec: the decoded log power spectrum, a statistic of blur that photo content hardly moves."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lcgan.config import ConfigError
from lcgan.spectrum import dct_basis, domain_spectrum, log_spectrum, spectrum_loss
from lcgan.train import train


def _blur(x):
    k = torch.tensor([1.0, 4, 6, 4, 1]) / 16
    k = (k[:, None] * k[None]).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=x.shape[1])


def test_dct_basis_is_orthonormal():
    b = dct_basis()
    torch.testing.assert_close(b @ b.T, torch.eye(64), atol=1e-5, rtol=0)


def test_log_spectrum_stays_fp32_under_bf16_autocast():
    # the training step runs under autocast; the target spectrum is fp32, so the loss must compare like with like
    x = torch.rand(4, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = log_spectrum(x)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, log_spectrum(x), atol=1e-5, rtol=1e-5)


def test_blur_moves_the_spectrum_far_more_than_other_content():
    torch.manual_seed(0)
    one, other = torch.randn(16, 3, 32, 32), torch.randn(16, 3, 32, 32)  # two "photo sets" of the same kind
    rms = lambda a, b: (log_spectrum(a) - log_spectrum(b)).pow(2).mean().sqrt()  # noqa: E731
    assert rms(one, other) < 0.1
    assert rms(one, _blur(one)) > 1.0


def test_domain_spectrum_averages_power_over_batches():
    x = torch.randn(10, 3, 16, 16)
    whole = log_spectrum(x)
    torch.testing.assert_close(domain_spectrum(lambda z: z, x, batch=5), whole)  # equal batches: the same mean power
    assert domain_spectrum(lambda z: z, x, batch=3).shape == (3, 64)


def test_descending_the_loss_moves_images_to_the_target_spectrum():
    torch.manual_seed(0)
    target = log_spectrum(_blur(torch.randn(16, 3, 32, 32)))
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.05)
    start = spectrum_loss(x, target).item()
    for _ in range(60):
        opt.zero_grad()
        spectrum_loss(x, target).backward()
        opt.step()
    assert spectrum_loss(x, target).item() < 0.1 * start


def test_train_logs_the_spectrum_loss_with_decoded_discriminators(tiny_cfg, tmp_path):
    train(tiny_cfg("train.d_input=decoded", "train.lambda_spec=1", "train.epochs=1", "vae.upscale=2"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert rows[-1]["loss_spec"] > 0


def test_spectrum_loss_without_decoded_images_is_refused_naming_the_settings(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"train.lambda_spec.*train.d_input=decoded"):
        train(tiny_cfg("train.lambda_spec=1", "train.epochs=1"))
    assert not (tmp_path / "run" / "model" / "last.pt").exists()
