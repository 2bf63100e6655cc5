"""End to end on CPU: train on synthetic latents and on .pt folders, resume exactly."""
from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from lcgan import checkpoint
from lcgan.baselines import BASELINES
from lcgan.buffer import FakeBuffer
from lcgan.build import LOSS_KEYS
from lcgan.optim import adam, load_state
from lcgan.state import TrainState
from lcgan.train import train
from lcgan.translator import INFERENCE_KEYS, build_vae, load_translator
from lcgan.vae import absolute_paths
from lcgan.vis import LINE
from tests.shared import shared_path


def read_log(out):
    return [json.loads(line) for line in (out / "logs" / "train_log.jsonl").read_text().splitlines()]


def write_latents(folder, n, shape=(4, 16, 16), seed=0, form="tensor"):
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        z = torch.randn(shape, generator=g) * 4
        obj = {"tensor": z, "batched": z[None], "dict": {"latent": z, "source": "img.png"}}[form]
        torch.save(obj, folder / f"{i:03d}.pt")
    return folder


def test_train_synthetic_two_epochs(tiny_cfg, tmp_path):
    out = tmp_path / "run"
    val = train(tiny_cfg())
    rows = read_log(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        for k in (*LOSS_KEYS, "time_sec", "lr", "pairs_per_sec", "err_G", "err_F", "base_mean_shift_G", "gap_mean"):
            assert math.isfinite(r[k]), k
    assert val == pytest.approx(rows[-1]["err"])
    # by default: the full state in last.pt and best.pt, an epoch file of the generators every 5 epochs and at the last
    assert sorted(p.name for p in (out / "model").iterdir()) == ["best.pt", "epoch_0002.pt", "last.pt"]
    for name in ("best.pt", "last.pt"):
        ck = checkpoint.load(out / "model" / name)  # weights_only: plain tensors and containers
        assert {"G", "F", "D_A", "D_B", "opt_G", "opt_D", "sched_G", "sched_D", "scaler", "cfg", "epoch", "rng"} <= ck.keys()
    assert checkpoint.load(out / "model" / "last.pt")["epoch"] == 2
    assert checkpoint.load(out / "model" / "epoch_0002.pt").keys() == set(INFERENCE_KEYS) - {"G_ema", "F_ema", "post_filter", "gain"}
    img = Image.open(out / "vis" / "epoch_0002.png")
    # 2 rows of 128px pictures (16x16 latents x8), 4 columns A, G(A), B, F(B), 2px gaps, a label band on top
    assert img.size == (4 * 130 + 2, LINE + 2 + 2 * 130 + 2)
    band = np.asarray(img)[: LINE + 2]
    assert band.min() < 128 and band.max() == 255, "the column labels are drawn in the band"
    for j in range(4):  # one label above each column
        assert band[:, 2 + j * 130 : 130 + j * 130].min() < 128, j


@pytest.mark.slow
@pytest.mark.parametrize("form", ["tensor", "batched", "dict"])
def test_train_latent_folders(tiny_cfg, tmp_path, form):
    a = write_latents(tmp_path / "A" / "sub", 10, form=form, seed=1)
    b = write_latents(tmp_path / "B", 12, form=form, seed=2)
    cfg = tiny_cfg("data=latents", f"data.a_dir={a.parent}", f"data.b_dir={b}", "data.latent_divisor=5")
    train(cfg)
    rows = read_log(tmp_path / "run")
    assert len(rows) == 2 and all(math.isfinite(r["loss_G"]) for r in rows)
    assert rows[0]["steps"] == 12 // 8


def test_vis_rows_are_never_flip_copies(tiny_cfg, tmp_path):
    """encode.flip_copies writes x.pt and x_flip.pt side by side: the picture batch takes one of each pair."""
    for domain, seed in (("A", 1), ("B", 2)):
        folder = write_latents(tmp_path / domain, 4, seed=seed)
        for f in sorted(folder.glob("*.pt")):
            torch.save(torch.load(f).flip(-1), f.with_name(f.stem + "_flip.pt"))
    # 8 files, 5 rows asked: spreading over the files would pick 000 and 000_flip
    train(tiny_cfg("data=latents", f"data.a_dir={tmp_path / 'A'}", f"data.b_dir={tmp_path / 'B'}", "train.n_vis=5", "train.epochs=1"))
    img = np.asarray(Image.open(tmp_path / "run" / "vis" / "epoch_0001.png")).astype(int)
    rows = [img[LINE + 2 + 2 + i * 130 : LINE + 2 + 2 + i * 130 + 128, 2:130] for i in range((img.shape[0] - LINE - 4) // 130)]
    assert len(rows) == 4, "one row per source image"
    for i in range(len(rows)):
        for j in range(len(rows)):
            if i != j:  # the approx VAE decodes a mirrored latent to the mirrored picture, so a copy would match
                assert np.abs(rows[i] - rows[j][:, ::-1]).mean() > 5, (i, j)


def test_checkpoint_records_absolute_vae_paths(tiny_cfg, tmp_path, monkeypatch):
    """A run given relative VAE paths records them absolute: its checkpoint's VAE loads from another folder."""
    enc, dec = shared_path("weights/vaelight/VAEencoder.onnx"), shared_path("weights/vaelight/VAEpreview.onnx")
    monkeypatch.chdir(tmp_path)
    rel = {k: os.path.relpath(p, tmp_path) for k, p in (("encoder_path", enc), ("decoder_path", dec))}
    train(tiny_cfg("vae=vaelight", *(f"vae.{k}={v}" for k, v in rel.items()), "train.epochs=1", "train.vis_every=0"))
    vae_cfg = checkpoint.load(tmp_path / "run" / "model" / "last.pt")["cfg"]["vae"]
    assert vae_cfg["encoder_path"] == str(Path(enc).resolve()) and vae_cfg["decoder_path"] == str(Path(dec).resolve())
    monkeypatch.chdir(tmp_path / "run")  # evaluation from another folder finds the VAE
    translator = load_translator(Path("model/last.pt"), torch.device("cpu"))
    assert build_vae(None, translator, torch.device("cpu"))[0].space.channels == 4
    # a hub id stays a hub id; an existing folder named by model_name_or_path is resolved
    (tmp_path / "vae").mkdir()
    monkeypatch.chdir(tmp_path)
    assert absolute_paths({"model_name_or_path": "org/model", "subfolder": "vae"}) == {"model_name_or_path": "org/model", "subfolder": "vae"}
    assert absolute_paths({"model_name_or_path": "vae", "cache_dir": "hf"})["model_name_or_path"] == str(tmp_path / "vae")


@pytest.mark.slow
def test_resume_is_exact(tiny_cfg, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    # the schedule fixed (by default it follows train.epochs, so a 2-epoch run is another run): the cut falls where decay starts
    # the debiased EMA's step depends on the run's step count, which the resumed half must continue, not restart
    common = ("train.fake_buffer_size=4", "data.flip=true", "train.ema_decay=0.9", "train.ema_debias=true",
              "optim.lr_constant_epochs=2", "optim.lr_decay_epochs=2")
    train(tiny_cfg("train.epochs=4", *common, out=straight))
    train(tiny_cfg("train.epochs=2", *common, out=split))
    train(tiny_cfg("train.epochs=4", *common, "train.resume=true", out=split))
    a, b = read_log(straight), read_log(split)
    assert [r["epoch"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert {k: ra[k] for k in LOSS_KEYS} == {k: rb[k] for k in LOSS_KEYS}
    ca, cb = checkpoint.load(straight / "model" / "last.pt"), checkpoint.load(split / "model" / "last.pt")
    for net in ("G", "F", "D_A", "D_B", "G_ema", "F_ema"):
        for k, v in ca[net].items():
            assert torch.equal(v, cb[net][k]), f"{net}.{k}"


class _OnTheGpu:
    """Stands for an RNG state that ``torch.load(map_location="cuda")`` put on the GPU: only ``.cpu()`` gives the tensor back."""

    def __init__(self, t: torch.Tensor):
        self.t = t

    def cpu(self) -> torch.Tensor:
        return self.t


def test_rng_state_restores_from_states_loaded_onto_another_device():
    # resume on CUDA crashed ("RNG state must be a torch.ByteTensor"): the checkpoint's RNG states came back on the GPU
    state = checkpoint.rng_state()
    want = torch.rand(4)
    checkpoint.set_rng_state({**state, "torch": _OnTheGpu(state["torch"])})
    assert torch.equal(torch.rand(4), want)


def test_optimizer_state_of_a_fused_channels_last_run_steps_as_adam_here():
    # a CUDA run's checkpoint (fused Adam, channels-last moments) resumed on the CPU: as saved, fused CPU Adam
    # (which does not check layouts) would update from moments read in the wrong order
    torch.manual_seed(0)
    there = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    saved = torch.optim.Adam(there.parameters(), lr=0.1, betas=(0.5, 0.999), fused=True)
    for _ in range(2):
        there(torch.randn(2, 3, 6, 6).to(memory_format=torch.channels_last)).square().mean().backward()
        saved.step()
        saved.zero_grad()
    here = torch.nn.Conv2d(3, 4, 3)
    here.load_state_dict(there.state_dict())
    opt, _ = adam(here.parameters(), epochs=1, lr=0.1)
    load_state(opt, copy.deepcopy(saved.state_dict()))
    assert opt.param_groups[0]["foreach"] and not opt.param_groups[0]["fused"], "this run's kernels, not the checkpoint's"
    want = []
    for p, q in zip(here.parameters(), there.parameters()):  # Adam's third step by hand, from the saved moments
        p.grad = torch.randn_like(p)
        m = 0.5 * saved.state[q]["exp_avg"] + 0.5 * p.grad
        v = 0.999 * saved.state[q]["exp_avg_sq"] + 0.001 * p.grad**2
        want.append(p.detach() - 0.1 * (m / (1 - 0.5**3)) / ((v / (1 - 0.999**3)).sqrt() + 1e-8))
    opt.step()
    for p, w in zip(here.parameters(), want):
        torch.testing.assert_close(p.detach(), w, atol=1e-6, rtol=1e-5)


def test_optimizer_state_that_is_not_this_optimizers_is_named():
    opt, _ = adam(torch.nn.Conv2d(3, 4, 3).parameters(), epochs=1)
    for bad in ({"state": {}}, {"state": {}, "param_groups": [{}, {}]}, {"state": {}, "param_groups": ["x"]}, [1]):
        with pytest.raises(ValueError, match="checkpoint key 'opt_G' is not a state of this run's optimizer"):
            load_state(opt, bad, "opt_G")


def test_scaler_and_replay_buffer_resume_from_a_run_in_another_precision():
    class Only(TrainState):  # the state's resume loop over just these objects
        def __init__(self, objects):
            self._objects = objects

        def objects(self):
            return self._objects

    scaler = torch.amp.GradScaler("cpu", enabled=True)  # fp16 here; the checkpoint's run had no loss scaling
    bf16 = FakeBuffer(4)
    bf16.query(torch.randn(4, 2, 3, 3).bfloat16())
    buffer = FakeBuffer(4)
    Only({"scaler": scaler, "buffer_A": buffer}).load_state_dict({"scaler": {}, "buffer_A": bf16.state_dict()}, restore_rng=False)
    assert scaler.get_scale() == 2.0**16, "starts at the initial scale"
    out = buffer.query(torch.randn(4, 2, 3, 3))
    assert out.dtype == buffer.data.dtype == torch.float32 and buffer.count == 4


@pytest.mark.slow
def test_epoch_files_generators_full_or_none_and_the_newest_kept(tiny_cfg, tmp_path):
    """Checkpoint disk bounded (issue 15): epoch files hold the generators alone unless train.epoch_files=full,
    train.keep_epochs keeps the newest; evaluation loads either kind, resume only the full state."""
    out = tmp_path / "run"
    train(tiny_cfg("train.epochs=4", "train.ckpt_every=1", "train.keep_epochs=2", "train.ema_decay=0.9"))
    assert sorted(p.name for p in (out / "model").iterdir()) == ["best.pt", "epoch_0003.pt", "epoch_0004.pt", "last.pt"]
    last, gen = checkpoint.load(out / "model" / "last.pt"), checkpoint.load(out / "model" / "epoch_0004.pt")
    assert gen.keys() == set(INFERENCE_KEYS) - {"post_filter", "gain"} and gen["epoch"] == 4  # no discriminators, optimizers, buffers or RNG
    assert (out / "model" / "epoch_0004.pt").stat().st_size < (out / "model" / "last.pt").stat().st_size / 2
    z = torch.randn(1, 4, 16, 16)
    for use_ema in (True, False):  # the generators' file translates as the full checkpoint of that epoch does
        a, b = (load_translator(out / "model" / n, torch.device("cpu"), use_ema=use_ema) for n in ("epoch_0004.pt", "last.pt"))
        assert torch.equal(a.g_ab(z), b.g_ab(z)) and torch.equal(a.g_ba(z), b.g_ba(z)) and a.domain_stats == b.domain_stats
    assert torch.equal(gen["G_ema"]["net.1.weight"], last["G_ema"]["net.1.weight"])
    with pytest.raises(ValueError, match="holds the generators alone .* resume from the run's model/last.pt"):
        train(tiny_cfg("train.epochs=5", "train.ema_decay=0.9", "train.resume=true", f"train.resume_path={out / 'model' / 'epoch_0004.pt'}"))
    full, none = tmp_path / "full", tmp_path / "none"
    train(tiny_cfg("train.epoch_files=full", "train.ckpt_every=1", out=full))  # the original tool's every-epoch full files
    for name in ("epoch_0001.pt", "epoch_0002.pt"):
        assert {"D_A", "opt_G", "rng"} <= checkpoint.load(full / "model" / name).keys()
    train(tiny_cfg("train.epoch_files=none", "train.ckpt_every=1", out=none))
    assert sorted(p.name for p in (none / "model").iterdir()) == ["best.pt", "last.pt"]


def test_every_config_instantiates(tiny_cfg, tmp_path):
    from tests.conftest import CONF

    a = write_latents(tmp_path / "A", 4)
    extra = {"latents": [f"data.a_dir={a}", f"data.b_dir={a}"]}
    for option in sorted(p.stem for p in (CONF / "data").glob("*.yaml")):
        cfg = tiny_cfg(f"data={option}", *extra.get(option, []))
        domains = instantiate(cfg.data)
        assert domains.a.dim() == 4 and domains.a.shape[1:] == domains.b.shape[1:]
    for option in sorted(p.stem for p in (CONF / "model").glob("*.yaml")):
        cfg = tiny_cfg(f"model={option}")
        g = instantiate(cfg.model.generator, in_channels=4)
        d = instantiate(cfg.model.discriminator, in_channels=4)
        z = torch.randn(1, 4, 32, 32)
        assert g(z).shape == z.shape and d(z).dim() == 4
    for option in sorted(p.stem for p in (CONF / "optim").glob("*.yaml")):
        opt, sched = instantiate(tiny_cfg(f"optim={option}").optim, epochs=2)([torch.nn.Parameter(torch.zeros(2))])
        assert opt.param_groups[0]["lr"] > 0
    vae = instantiate(tiny_cfg("vae=approx").vae, device="cpu")
    assert vae.decode(torch.zeros(1, 4, 4, 4)).shape == (1, 3, 32, 32)


def test_lr_schedule_constant_then_linear(tiny_cfg):
    make = instantiate(tiny_cfg("optim.lr_constant_epochs=2", "optim.lr_decay_epochs=4").optim, epochs=7)
    opt, sched = make([torch.nn.Parameter(torch.zeros(1))])
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2e-4, 2e-4, 1.6e-4, 1.2e-4, 0.8e-4, 0.4e-4, 0.0])


@pytest.mark.slow
def test_lr_decays_over_the_run_by_default(tiny_cfg, tmp_path):
    # the default schedule follows train.epochs: constant for the first half, then linear to zero (CycleGAN)
    train(tiny_cfg("train.epochs=4"))
    lrs = [r["lr"] for r in read_log(tmp_path / "run")]
    assert lrs == pytest.approx([2e-4, 2e-4, 2e-4 * 2 / 3, 2e-4 / 3])
    ck = checkpoint.load(tmp_path / "run" / "model" / "last.pt")
    assert ck["opt_G"]["param_groups"][0]["lr"] == 0 and ck["opt_D"]["param_groups"][0]["lr"] == 0  # what a next epoch would get


@pytest.mark.slow
def test_resume_of_a_longer_run_follows_its_schedule(tiny_cfg, tmp_path):
    # extending a finished run: the schedule is this run's (4 epochs: decay over 3 and 4), not the checkpoint's (lr 0 after 2)
    train(tiny_cfg("train.epochs=2"))
    train(tiny_cfg("train.epochs=4", "train.resume=true"))
    lrs = [r["lr"] for r in read_log(tmp_path / "run")]
    assert lrs == pytest.approx([2e-4, 1e-4, 2e-4 * 2 / 3, 2e-4 / 3])


@pytest.mark.slow
def test_validation_split_ema_and_best_checkpoint(tiny_cfg, tmp_path):
    from lcgan.translator import load_translator

    a = write_latents(tmp_path / "A", 16, seed=1)
    b = write_latents(tmp_path / "B", 16, seed=2)
    out = tmp_path / "run"
    val = train(tiny_cfg("data=latents", f"data.a_dir={a}", f"data.b_dir={b}", "data.val_fraction=0.25",
                         "train.ema_decay=0.9", "train.epochs=3"))
    rows = read_log(out)
    for r in rows:  # held-out score of the model and of both baselines, every epoch
        assert 0 < r["val_swd"] < 10 and r["base_mean_shift_val_swd"] > 0 and r["val_metric"] == r["val_swd"]
    assert val == rows[-1]["val_swd"]
    best = checkpoint.load(out / "model" / "best.pt")
    assert best["metrics"]["val_swd"] == min(r["val_swd"] for r in rows)
    assert {"G_ema", "F_ema"} <= best.keys()
    translator = load_translator(out / "model" / "best.pt", torch.device("cpu"))
    assert translator.info["weights"] == "EMA"
    z = torch.randn(1, 4, 16, 16)
    g_ema = instantiate(tiny_cfg().model.generator, in_channels=4)
    g_ema.load_state_dict(best["G_ema"])
    assert torch.allclose(translator.g_ab(z), g_ema(z))


@pytest.mark.slow
@pytest.mark.parametrize("model,disc", [("resnet6", "pixel"), ("resnet6", "patch"), ("resnet9", "patch")])
def test_full_model_configs_train_on_the_default_data(tiny_cfg, tmp_path, model, disc):
    # the option's layout (down-samplings, discriminator depth) on the embedded data's latent size
    train(tiny_cfg(f"model={model}", f"model/discriminator={disc}", "train.epochs=1", out=tmp_path / model))
    assert len(read_log(tmp_path / model)) == 1


@pytest.mark.slow
@pytest.mark.parametrize("model", ["small", "resnet6", "resnet9"])
def test_discriminator_group_local_by_default_pixel_and_patch_on_request(model):
    from tests.conftest import compose_cfg

    z = torch.randn(2, 4, 32, 32)
    local = compose_cfg("train", [f"model={model}"]).model.discriminator
    assert (local.kernel, local.augment) == (3, "") and instantiate(local, in_channels=4)(z).shape == (2, 1, 30, 30)  # 3x3 cells, no padding
    pixel = compose_cfg("train", [f"model={model}", "model/discriminator=pixel"]).model.discriminator
    assert pixel.kernel == 1 and pixel.ndf == local.ndf and instantiate(pixel, in_channels=4)(z).shape == (2, 1, 32, 32)  # a score per cell
    patch = compose_cfg("train", [f"model={model}", "model/discriminator=patch"]).model.discriminator
    assert (patch.n_layers, patch.augment) == (2, "translation,cutout") and patch.ndf == local.ndf  # the preset's width kept
    assert instantiate(patch, in_channels=4)(z).shape[-1] < 30  # strided: judges regions, not cells


@pytest.mark.slow
@pytest.mark.parametrize("anchor", ["mean_shift", "moment_match", "gaussian_ot", "patch_ot", "gaussian_ot_shrunk"])
def test_anchored_generators_start_at_the_baseline(tiny_cfg, tmp_path, anchor):
    # lr ~0: the residual branch stays zero, so G and F are exactly the baseline fitted on the training domains
    train(tiny_cfg(f"model.generator.anchor={anchor}", "optim.lr=1e-12", "train.epochs=1"))
    [row] = read_log(tmp_path / "run")
    assert row["err_G"] == pytest.approx(row[f"base_{anchor}_G"], rel=1e-4)
    assert row["err_F"] == pytest.approx(row[f"base_{anchor}_F"], rel=1e-4)
    ck = checkpoint.load(tmp_path / "run" / "model" / "last.pt")
    assert "anchor_weight" in ck["G"] and set(ck["domain_stats"]["maps"]["A2B"]) == set(BASELINES), "every baseline saved as data"


def test_ema_begins_at_the_anchored_start(tiny_cfg, tmp_path):
    # the EMA is copied from G after the anchor is set: with G frozen (lr ~0) and a slow decay it stays the start;
    # copied before, it would still hold the unanchored generator's weights (the README's EMA share of the start)
    train(tiny_cfg("model.generator.anchor=moment_match", "optim.lr=1e-12", "train.ema_decay=0.99", "train.epochs=1"))
    ck = checkpoint.load(tmp_path / "run" / "model" / "last.pt")
    for net in ("G", "F"):
        anchored = ck[net]["anchor_weight"]
        assert not torch.equal(anchored, torch.eye(4).view(4, 4, 1, 1)), "the test needs a start that is not the identity"
        assert torch.allclose(ck[f"{net}_ema"]["anchor_weight"], anchored, atol=1e-6)


def test_anchor_needs_a_residual_output():
    from lcgan.models import ResnetGenerator

    with pytest.raises(ValueError, match="need output=residual"):
        ResnetGenerator(4, output="tanh", anchor="mean_shift")


def test_default_recipe_keeps_its_closed_form_start(tiny_cfg, tmp_path):
    # the defaults (residual G anchored at the shrunk Gaussian-OT map, local discriminator) are the measured
    # winner: training must not walk away from the baseline it starts at (the plain recipe ends at err ~1)
    train(tiny_cfg("train.epochs=3"))
    rows = read_log(tmp_path / "run")
    for row in rows:
        for side in ("G", "F"):
            assert row[f"err_{side}"] < 2 * row[f"base_gaussian_ot_shrunk_{side}"] + 0.02, row
            # the synthetic shift is real and large: the shrinkage keeps (nearly) all of the map
            assert row[f"base_gaussian_ot_shrunk_{side}"] < 1.05 * row[f"base_gaussian_ot_{side}"] + 0.01, row
