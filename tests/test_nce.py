"""PatchNCE (lcgan.nce): the feature points, the loss against a by-hand InfoNCE, and a run that trains with it."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lcgan.cyclegan import CycleGAN, LossWeights
from lcgan.models import PatchDiscriminator, ResnetGenerator
from lcgan.nce import TAU, PatchNCE


def _gen(seed=0):
    torch.manual_seed(seed)
    return ResnetGenerator(4, ngf=8, n_blocks=2, n_downsampling=1)


def test_feature_points_are_the_encoders_activations():
    g = _gen()
    z = torch.randn(2, 4, 16, 16)
    inp, stem, down, block1, block2 = g.features(z, [0, 1, 2, 3, 4])
    assert inp is z
    net = g.net
    assert torch.equal(stem, net[:4](z)) and stem.shape == (2, 8, 16, 16)
    assert torch.equal(down, net[:7](z)) and down.shape == (2, 16, 8, 8)
    assert torch.equal(block2, net[:9](z)) and torch.equal(block1, net[:8](z))
    assert len(g.feature_points()) == 5


def test_patch_nce_is_infonce_over_the_positions_of_each_image():
    g = _gen()
    nce = PatchNCE(g, 4, [1, 3], patches=10_000)  # more patches than positions: all of them (the loss ignores their order)
    src, out = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    by_hand = 0
    for head, k, q in zip(nce.heads, g.features(src, [1, 3]), g.features(out, [1, 3])):
        pq, pk = (F.normalize(head(f.flatten(2).transpose(1, 2)), dim=-1) for f in (q, k))  # (B, HW, 256)
        logits = pq @ pk.transpose(1, 2) / TAU
        labels = torch.arange(logits.shape[1]).repeat(len(logits))
        by_hand = by_hand + F.cross_entropy(logits.flatten(0, 1), labels) / 2
    torch.testing.assert_close(nce(g, src, out), by_hand, rtol=1e-4, atol=1e-5)
    # an output equal to its input: each positive pair has cosine 1, the highest there is, so a lower loss than an unrelated output
    assert nce(g, src, src) < nce(g, src, out)


def test_bad_feature_points_name_the_setting():
    with pytest.raises(ValueError, match=r"train.nce_layers=\[0, 9\].*0\.\.4"):
        PatchNCE(_gen(), 4, [0, 9])


def test_no_cycle_skips_the_reconstruction_and_nce_adds_its_loss():
    torch.manual_seed(0)
    g = lambda: ResnetGenerator(4, ngf=8, n_blocks=2, n_downsampling=1)  # noqa: E731
    d = lambda: PatchDiscriminator(4, ndf=8, n_layers=2)  # noqa: E731
    g_ab, g_ba = g(), g()
    gan = CycleGAN(g_ab, g_ba, d(), d(), nce=torch.nn.ModuleList(PatchNCE(x, 4, [0, 1, 2]) for x in (g_ab, g_ba)))
    a, b = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    calls = []
    gan.g_ba.register_forward_hook(lambda *_: calls.append(1))
    losses, _, _ = gan.generator_losses(a, b, LossWeights(lambda_cyc=0, lambda_nce=1))
    assert losses["loss_cyc"] == 0 and len(calls) == 1  # F(b) only: no F(G(a))
    assert losses["loss_nce"] > 0
    torch.testing.assert_close(losses["loss_G"], losses["loss_gan_G"] + losses["loss_gan_F"] + losses["loss_nce"])


def test_a_run_trains_the_heads_logs_the_loss_and_resumes(tiny_cfg, tmp_path):
    from lcgan import checkpoint
    from lcgan.train import train

    train(tiny_cfg("train.lambda_nce=0.1", "train.epochs=1", "train.vis_every=0"))
    first = checkpoint.load(tmp_path / "run" / "model" / "last.pt")["nce"]
    train(tiny_cfg("train.lambda_nce=0.1", "train.epochs=2", "train.vis_every=0", "train.resume=true"))
    lines = [json.loads(x) for x in (tmp_path / "run" / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2] and all(x["loss_nce"] > 0 for x in lines)
    second = checkpoint.load(tmp_path / "run" / "model" / "last.pt")["nce"]
    assert second.keys() == first.keys() and any(not torch.equal(first[k], second[k]) for k in first)  # the heads trained on


def test_without_a_cycle_or_a_validation_split_no_epoch_is_called_best(tiny_cfg, tmp_path, capsys):
    # the cycle loss picks best.pt when nothing else can; at train.lambda_cyc=0 it is 0 every epoch, and epoch 1 won
    from lcgan.train import train
    from tests.test_train import read_log, write_latents

    a, b = write_latents(tmp_path / "A", 8, seed=1), write_latents(tmp_path / "B", 8, seed=2)
    train(tiny_cfg("data=latents", f"data.a_dir={a}", f"data.b_dir={b}", "train.lambda_cyc=0", "train.lambda_nce=1",
                   "train.epochs=2", "train.vis_every=0"))
    rows = read_log(tmp_path / "run")
    assert [r["loss_cyc"] for r in rows] == [0, 0] and all(r["val_metric"] != r["val_metric"] for r in rows)  # NaN
    assert not (tmp_path / "run" / "model" / "best.pt").exists() and (tmp_path / "run" / "model" / "last.pt").exists()
    said = capsys.readouterr()
    note = said.out + said.err
    assert "No epoch has a finite loss_cyc (train.lambda_cyc=0" in note and "data.val_fraction=0.1" in note
