"""lcgan.gain: a residual generator's correction scaled by a gain chosen on held-out data, recorded and applied on load."""
from __future__ import annotations

import json

import pytest
import torch
from hydra.errors import InstantiationException

from lcgan import checkpoint, config, gain
from lcgan.models import ResnetGenerator
from lcgan.train import train
from lcgan.translator import load_translator
from tests.test_train import write_latents

CPU = torch.device("cpu")


def corrected_generator(seed: int = 0) -> ResnetGenerator:
    """A residual generator (identity anchor) whose correction is not zero, as after training."""
    torch.manual_seed(seed)
    g = ResnetGenerator(in_channels=3, ngf=8, n_blocks=1, n_downsampling=1, output="residual", anchor="identity")
    with torch.no_grad():
        g.net[-1].weight.normal_(0, 0.05)
        g.net[-1].bias.normal_(0, 0.1)
    return g.eval()


def test_patch_swd_is_zero_for_the_same_images_and_grows_with_a_change():
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    assert gain.patch_swd(x, x) == 0
    near, far = gain.patch_swd(x, x + 0.05), gain.patch_swd(x, x + 0.2)
    assert 0 < near < far
    assert far == pytest.approx(0.2 * gain.patch_swd(torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)), rel=1e-6)


def test_choose_finds_the_scale_the_other_domain_was_made_with():
    """B holds other inputs pushed 3x as far as G's correction goes: the held-out distance picks 3, not the trained 1."""
    g = corrected_generator()
    z_a, z_b = torch.randn(16, 3, 32, 32), torch.randn(16, 3, 32, 32)
    with gain.scaled(g, 3.0), torch.no_grad():
        reference = g(z_b)
    s, dist = gain.choose(g, lambda z: z, z_a, reference, [0, 1, 2, 3, 4, 6])
    assert s == 3
    assert dist[3] < dist[2] < dist[1] < dist[0] and dist[3] < dist[4] < dist[6]
    # B untranslated (the "do no harm" case): no push at all
    assert gain.choose(g, lambda z: z, z_a, z_b, [0, 1, 2, 3])[0] == 0


def test_the_one_standard_error_rule_moves_from_the_start_only_as_far_as_the_evidence_goes():
    """gain_tolerance=1: the smallest scale within one bootstrap standard error of the nearest. A faint correction seen
    on 4 held-out images: the nearest scale is 3, the rule stops at 2; seen on 16 images, or a strong one on 4, it is 3."""
    def picks(amp: float, n: int, tolerance: float) -> float:
        g = corrected_generator()
        with torch.no_grad():
            g.net[-1].weight.mul_(amp)
            g.net[-1].bias.mul_(amp)
        z_a, z_b = (torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(k)) for k in (1, 2))
        with gain.scaled(g, 3.0), torch.no_grad():
            reference = g(z_b)
        return gain.choose(g, lambda z: z, z_a, reference, [0, 1, 2, 3, 4, 6], tolerance=tolerance)[0]

    assert picks(0.05, 4, 0.0) == 3 and picks(0.05, 4, 1.0) == 2, "faint and few: stop short of the noisy minimum"
    assert picks(0.05, 4, 1.0) == picks(0.05, 4, 1.0), "fixed resamples: the same choice every time"
    assert picks(0.05, 16, 1.0) == 3 and picks(1.0, 4, 1.0) == 3, "more photos or a clearer signal: the nearest scale"
    assert picks(0.05, 4, 100.0) == 0, "a tolerance beyond every difference keeps the start"


def test_the_shrink_rule_keeps_the_smallest_scale_that_goes_its_share_of_the_way():
    """gain_shrink=r: the smallest scale within r of the way from the nearest scale's distance back to the start's. B was
    made at 3: with r = 0.5 the rule takes 2 (less than half way back), with 0.75 it takes 1, with 1 the start."""
    g = corrected_generator()
    z_a, z_b = torch.randn(16, 3, 32, 32), torch.randn(16, 3, 32, 32)
    with gain.scaled(g, 3.0), torch.no_grad():
        reference = g(z_b)
    picks = {r: gain.choose(g, lambda z: z, z_a, reference, [0, 1, 2, 3, 4, 6], shrink=r) for r in (0, 0.25, 0.5, 0.75, 1)}
    dist = picks[0][1]
    assert all(d == dist for _, d in picks.values()), "the rule reads the same distances"
    assert {r: s for r, (s, _) in picks.items()} == {0: 3, 0.25: 3, 0.5: 2, 0.75: 1, 1: 0}
    assert (dist[2] - dist[3]) / (dist[0] - dist[3]) < 0.5 < (dist[1] - dist[3]) / (dist[0] - dist[3]), "2 is past half way, 1 is not"


def test_pick_takes_the_larger_margin_and_the_smallest_scale_listed_as_the_start():
    dist = {0.0: 1.0, 1.0: 0.6, 2.0: 0.45, 3.0: 0.4, 4.0: 0.5}
    assert gain.pick(dist) == 3 and gain.pick(dist, 0.25) == 2 and gain.pick(dist, 1.0) == 0
    noise = {s: 0.3 for s in dist}  # tolerance x standard error, wider than shrink 0.25's 0.15
    assert gain.pick(dist, 0.25, noise) == 1 and gain.pick(dist, 0.0, {1.0: 0.3}) == 1, "the larger margin decides"
    assert gain.pick({1.0: 1.0, 2.0: 0.5, 3.0: 0.4}, 0.5) == 2, "no 0 listed: the way back is to the smallest scale"
    assert gain.pick({0.0: 0.2, 1.0: 0.3}, 0.5) == 0, "the start nearest: never past it"


def test_scaled_restores_the_trained_weights_even_on_error():
    g = corrected_generator()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    with pytest.raises(RuntimeError, match="inside"), gain.scaled(g, 5.0):
        assert torch.allclose(g.net[-1].weight, 5 * before[f"net.{len(g.net) - 1}.weight"])
        raise RuntimeError("inside")
    assert all(torch.equal(v, before[k]) for k, v in g.state_dict().items())


def test_a_gain_needs_a_residual_generator():
    g = ResnetGenerator(in_channels=3, ngf=8, n_blocks=1, n_downsampling=1, output="tanh", anchor="identity")
    with pytest.raises(ValueError, match="residual"):
        gain.choose(g, lambda z: z, torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), [1])


@pytest.mark.parametrize("bad", [{"g_ab": float("nan"), "g_ba": 1.0}, {"g_ab": -1, "g_ba": 1}, {"g_ab": "2", "g_ba": 1},
                                 {"g_ab": 1.0}, {"g_ab": 1, "g_ba": 1, "code": 0}, [1, 1], {"g_ab": True, "g_ba": 1}])
def test_a_bad_gain_in_a_file_is_refused(bad):
    with pytest.raises(ValueError, match="gain must be"):
        gain.check(bad, "checkpoint x.pt")


class _Same:
    """A stand-in for a translator's latent convention (raw and model latents alike) and for an image VAE (decode: the
    latents as images): enough for :func:`lcgan.gain.transfer`, which only renders G's outputs."""
    space, device = None, CPU

    raw_to_model = model_to_raw = staticmethod(lambda z, space: z)
    decode = staticmethod(lambda z: z)


def translator(g_ab, g_ba, path: str):
    from types import SimpleNamespace
    return SimpleNamespace(g_ab=g_ab, g_ba=g_ba, convention=_Same(), pixel_filter=lambda name: None, info={"path": path})


def test_transfer_takes_the_side_runs_scale_only_where_the_two_corrections_agree():
    """train.gain_transfer: the full run's scale whose correction (decoded, against its own start) is nearest the side run's
    chosen one. A side correction half the full one's size at 4 is the full one's at 2 (correction: 2; agreement keeps the
    side's 4); one pointing the other way is nearest the start (both: 0); a gain of 0 asks for nothing."""
    full_g, full_f = corrected_generator(1), corrected_generator(2)
    half, opposite = corrected_generator(1), corrected_generator(1)
    with torch.no_grad():
        for g, k in ((half, 0.5), (opposite, -1.0)):
            g.net[-1].weight.mul_(k)
            g.net[-1].bias.mul_(k)
    full = translator(full_g, full_f, "full")
    raw = torch.randn(200, 3, 16, 16) * 0.3
    scales, vae = [0, 0.5, 1, 2, 3, 4], _Same()
    for rule, want in (("correction", 2.0), ("agreement", 4.0)):
        out = gain.transfer(translator(half, full_f, "side"), full, vae, raw, raw, {"g_ab": 4.0, "g_ba": 0.0}, scales, rule)
        assert (out["g_ab"], out["nearest_g_ab"], out["side_g_ab"]) == (want, 2.0, 4.0), rule
        assert out["err_g_ab"]["2"] < 1e-10 < min(v for k, v in out["err_g_ab"].items() if k != "2")
        assert out["g_ba"] == 0.0 and out["err_g_ba"] == {}, "no correction chosen: nothing to transfer"
        away = gain.transfer(translator(opposite, full_f, "side"), full, vae, raw, raw, {"g_ab": 3.0, "g_ba": 0.0}, scales, rule)
        assert away["g_ab"] == away["nearest_g_ab"] == 0.0, rule
        assert list(away["err_g_ab"].values()) == sorted(away["err_g_ab"].values()), "further with every step along s"
    same = gain.transfer(translator(full_f, full_f, "side"), translator(full_f, full_f, "full"), vae, raw, raw,
                         {"g_ab": 0.0, "g_ba": 3.0}, scales, "correction")
    assert same["g_ba"] == 3.0, "the same net: its own scale, both ways alike"
    assert torch.equal(full_g.net[-1].weight, corrected_generator(1).net[-1].weight), "the weights restored"


def test_training_chooses_records_and_applies_the_gain(tiny_cfg, tmp_path):
    a = write_latents(tmp_path / "A", 16, seed=1)
    b = write_latents(tmp_path / "B", 16, seed=2)
    out = tmp_path / "run"
    scales = [0, 0.5, 1, 2]
    train(tiny_cfg("data=latents", f"data.a_dir={a}", f"data.b_dir={b}", "data.val_fraction=0.25", "train.vis_every=0",
                   f"train.gain_scales=[{','.join(map(str, scales))}]"))
    for name in ("last.pt", "best.pt"):
        ck = checkpoint.load(out / "model" / name)
        assert set(ck["gain"]) == {"g_ab", "g_ba"} and all(v in scales for v in ck["gain"].values())
    assert checkpoint.load(out / "model" / "epoch_0002.pt")["gain"] == checkpoint.load(out / "model" / "last.pt")["gain"]
    table = json.loads((out / "logs" / "gain.json").read_text())  # every scale's distance, for another rule later
    assert table["epoch"] == 2 and table["gain_tolerance"] == 0 and table["gain_shrink"] == 0.25
    for name in ("last.pt", "best.pt"):
        dist = {float(k): v for k, v in table[name]["dist_g_ab"].items()}
        assert list(dist) == scales and table[name]["g_ab"] == checkpoint.load(out / "model" / name)["gain"]["g_ab"]
        nearest = min(dist, key=lambda s: (dist[s], s))
        assert table[name]["g_ab"] == min(s for s in dist if dist[s] <= dist[nearest] + 0.25 * (dist[0] - dist[nearest])), \
            "the default rule (train.gain_shrink=0.25), as recorded"
    path = out / "model" / "last.pt"
    recorded = checkpoint.load(path)["gain"]
    trained, calibrated = load_translator(path, CPU, use_gain=False), load_translator(path, CPU)
    assert calibrated.info["gain"] == recorded
    z = torch.randn(2, 4, 16, 16)
    with torch.no_grad():
        for name in ("g_ab", "g_ba"):
            with gain.scaled(getattr(trained, name), recorded[name]):
                assert torch.allclose(getattr(calibrated, name)(z), getattr(trained, name)(z), atol=1e-6)
    # the file's weights stay the trained ones (the gain is a number beside them), so a resume continues the same run
    g_state = checkpoint.load(path)["G"]
    assert all(torch.equal(v, g_state[k]) for k, v in trained.g_ab.state_dict().items())
    ck = checkpoint.load(path)
    ck["gain"] = {"g_ab": float("inf"), "g_ba": 1.0}  # a file's content is data: checked before it scales anything
    checkpoint.save(ck, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: gain must be"):
        load_translator(tmp_path / "bad.pt", CPU)


def test_gain_from_records_another_runs_choice_and_refuses_a_bad_file_before_training(tiny_cfg, tmp_path):
    """train.gain_from (the cross-fit): a side run chose the gains; this run records them as its own, and says so."""
    a, b = write_latents(tmp_path / "A", 8, seed=1), write_latents(tmp_path / "B", 8, seed=2)
    side = tmp_path / "side" / "logs"
    side.mkdir(parents=True)
    (side / "gain.json").write_text(json.dumps({"epoch": 9, "last.pt": {"g_ab": 4.0, "g_ba": 0.5, "dist_g_ab": {"0": 1.0}}}))
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="train.gain_transfer=agreement reads that run's generators.*gain_transfer=scale"):
        train(tiny_cfg("data=latents", f"data.a_dir={a}", f"data.b_dir={b}", "train.epochs=1", f"out_dir={tmp_path / 'nomodel'}",
                       f"train.gain_from={side.parent}"))  # the default compares corrections: that run's last.pt is needed
    assert not (tmp_path / "nomodel" / "model").exists()
    train(tiny_cfg("data=latents", f"data.a_dir={a}", f"data.b_dir={b}", "train.vis_every=0", "train.epochs=1",
                   f"train.gain_from={side.parent}", "train.gain_transfer=scale"))
    for name in ("last.pt", "best.pt", "epoch_0001.pt"):
        assert checkpoint.load(out / "model" / name)["gain"] == {"g_ab": 4.0, "g_ba": 0.5}, name
    assert load_translator(out / "model" / "last.pt", CPU).info["gain"] == {"g_ab": 4.0, "g_ba": 0.5}
    table = json.loads((out / "logs" / "gain.json").read_text())
    assert table["gain_from"] == str(side.parent) and table["gain_transfer"] == "scale"
    assert table["last.pt"] == {"g_ab": 4.0, "g_ba": 0.5}
    # the file is data: anything but two checked numbers is refused, naming the setting, before a step is taken
    for i, bad in enumerate(["not json", json.dumps({"last.pt": {"g_ab": 1e9, "g_ba": 1}}), json.dumps([1, 2]),
                             json.dumps({"last.pt": {"g_ab": "__import__('os')", "g_ba": 1}}), json.dumps({"last.pt": None}),
                             json.dumps({"last.pt": {"g_ab": 10**400, "g_ba": 1}}), "[" * 100000]):
        (side / "gain.json").write_text(bad)
        fresh = tmp_path / f"bad{i}"
        with pytest.raises(ValueError, match="train.gain_from"):
            train(tiny_cfg("data=latents", f"data.a_dir={a}", f"data.b_dir={b}", "train.epochs=1", f"out_dir={fresh}",
                           f"train.gain_from={side / 'gain.json'}", "train.gain_transfer=scale"))
        assert not (fresh / "model").exists()
    (side / "gain.json").write_text(json.dumps({"last.pt": {"g_ab": 1.0, "g_ba": 1.0, "dist_g_ab": {"0": 1.0}}}))
    (side.parent / "model").mkdir()
    (side.parent / "model" / "last.pt").write_bytes(b"")
    for dist in ({"x": 1.0}, {"-1": 1.0}, {"nan": 1.0}, {}, "0,1"):  # the scales to compare at are read as checked numbers
        (side / "gain.json").write_text(json.dumps({"last.pt": {"g_ab": 1.0, "g_ba": 1.0, "dist_g_ab": dist}}))
        with pytest.raises(ValueError, match="no distances by scale"):
            train(tiny_cfg("data=latents", f"data.a_dir={a}", f"data.b_dir={b}", "train.epochs=1",
                           f"out_dir={tmp_path / 'baddist'}", f"train.gain_from={side.parent}"))
        assert not (tmp_path / "baddist" / "model").exists()
    with pytest.raises(config.ConfigError, match="not both"):
        train(tiny_cfg("data=latents", f"data.a_dir={a}", f"data.b_dir={b}", "train.epochs=1", "data.val_fraction=0.25",
                       "train.gain_scales=[0,1]", f"train.gain_from={side.parent}", f"out_dir={tmp_path / 'both'}"))


def test_gain_crossfit_trains_a_side_run_first_and_takes_its_choice(tiny_cfg, tmp_path):
    """train.gain_crossfit=f, one command: a side run on 1-f of the photos for as many steps chooses among
    train.gain_scales on the other f; this run trains on all of them and records that choice. A resume to more epochs
    takes the side run there too; a resume of a finished run trains neither further, and refuses a changed recipe."""
    a, b = write_latents(tmp_path / "A", 10, seed=1), write_latents(tmp_path / "B", 10, seed=2)
    out, side = tmp_path / "run", tmp_path / "run" / "crossfit_side"
    crossfit = lambda *o: tiny_cfg("data=latents", f"data.a_dir={a}", f"data.b_dir={b}", "train.vis_every=0",  # noqa: E731
                                   "train.batch_size=2", "train.gain_crossfit=0.2", "train.gain_scales=[0,1,2]", *o)
    train(crossfit("train.epochs=4"))
    # 8 of the 10 images a domain in the side run: 4 steps an epoch against 5 here, so 5 epochs for this run's 4
    side_table = json.loads((side / "logs" / "gain.json").read_text())
    assert side_table["epoch"] == 5 and len((side / "logs" / "train_log.jsonl").read_text().splitlines()) == 5
    assert set(side_table["last.pt"]["dist_g_ab"]) == {"0", "1", "2"}  # chosen on the side's held-out images
    chosen = {k: side_table["last.pt"][k] for k in ("g_ab", "g_ba")}
    table = json.loads((out / "logs" / "gain.json").read_text())
    assert table["gain_from"] == str(side) and table["epoch"] == 4 and table["gain_transfer"] == "agreement"
    for k, g in chosen.items():  # the default: the side's scale where this run's correction agrees with its, else 0
        row = table["last.pt"]
        assert row[f"side_{k}"] == g and row[k] == (g if row[f"nearest_{k}"] > 0 else 0.0)
        assert set(row[f"err_{k}"]) == ({"0", "1", "2"} if g else set()), "every scale's distance from the side's correction"
    for name in ("last.pt", "epoch_0004.pt"):
        assert checkpoint.load(out / "model" / name)["gain"] == {k: table["last.pt"][k] for k in chosen}, name
    assert checkpoint.load(out / "model" / "last.pt")["cfg"]["train"]["gain_scales"] == []  # this run chose nothing itself
    side_log = (side / "logs" / "train_log.jsonl").read_text()
    train(crossfit("train.epochs=4", "train.resume=true"))  # finished at this length: neither run trains a step more
    assert (side / "logs" / "train_log.jsonl").read_text() == side_log
    with pytest.raises(ValueError, match="(?s)crossfit_side.*a different model"):  # refused at the side run, not mixed in
        train(crossfit("train.epochs=4", "train.resume=true", "model.generator.ngf=16"))
    train(crossfit("train.epochs=8", "train.resume=true"))  # twice the steps: both runs go on, the side to 10 epochs
    assert json.loads((side / "logs" / "gain.json").read_text())["epoch"] == 10
    assert checkpoint.load(out / "model" / "last.pt")["epoch"] == 8 and "gain" in checkpoint.load(out / "model" / "epoch_0008.pt")
    for bad, says in ((["train.gain_scales=[]"], "train.gain_scales"), (["data.val_fraction=0.25"], "data.val_fraction"),
                      ([f"train.gain_from={side}"], "train.gain_from")):
        with pytest.raises(config.ConfigError, match=says):
            train(crossfit("train.epochs=1", f"out_dir={tmp_path / 'bad'}", *bad))
        assert not (tmp_path / "bad" / "crossfit_side").exists()
    with pytest.raises(config.ConfigError, match="data=latents"):  # the embedded synthetic data has no split to hold out
        train(tiny_cfg("train.gain_crossfit=0.2", "train.gain_scales=[0,1]", "train.epochs=1", out=tmp_path / "synthetic"))


@pytest.mark.slow  # train.gain_tolerance=1's bootstrap: 16 draws of every scale's patch quantiles
def test_held_out_folders_leave_the_training_folders_whole(tiny_cfg, tmp_path):
    """data.val_a_dir/val_b_dir: the measured protocol (train on every image, choose the gain on other images)."""
    small = (4, 8, 8)  # 64 px decodes: the bootstrap sorts a quarter of the patches of 16x16 latents (~10 s, not ~50)
    a, b = write_latents(tmp_path / "A", 12, small, seed=1), write_latents(tmp_path / "B", 12, small, seed=2)
    va, vb = write_latents(tmp_path / "VA", 4, small, seed=3), write_latents(tmp_path / "VB", 4, small, seed=4)
    out = tmp_path / "run"
    train(tiny_cfg("data=latents", f"data.a_dir={a}", f"data.b_dir={b}", f"data.val_a_dir={va}", f"data.val_b_dir={vb}",
                   "train.vis_every=0", "train.epochs=1", "train.gain_scales=[0,1,3]", "train.gain_tolerance=1"))  # the rule end to end
    assert checkpoint.load(out / "model" / "last.pt")["gain"]["g_ab"] in (0, 1, 3)
    first = json.loads((out / "logs" / "train_log.jsonl").read_text().splitlines()[0])
    assert first["steps"] == 12 // 8 and first["val_swd"] > 0  # all 12 latents train (batch 8), the held-out 4 score


@pytest.mark.parametrize("extra, match", [(["data.val_a_dir=VA"], "both data.val_a_dir and data.val_b_dir"),
                                          (["data.val_a_dir=VA", "data.val_b_dir=VB", "data.val_fraction=0.25"], "val_fraction=0.25"),
                                          (["data.val_a_dir=VA", "data.val_b_dir=SMALL"], r"data.val_b_dir latents are \[4, 8, 8\]")])
def test_held_out_folders_are_checked(tiny_cfg, tmp_path, extra, match):
    a, b = write_latents(tmp_path / "A", 8, seed=1), write_latents(tmp_path / "B", 8, seed=2)
    write_latents(tmp_path / "VA", 2, seed=3), write_latents(tmp_path / "VB", 2, seed=4)
    write_latents(tmp_path / "SMALL", 2, shape=(4, 8, 8), seed=5)
    extra = [e.replace("=VA", f"={tmp_path / 'VA'}").replace("=VB", f"={tmp_path / 'VB'}").replace("=SMALL", f"={tmp_path / 'SMALL'}")
             for e in extra]
    with pytest.raises(InstantiationException, match=match):  # as training reports the data's errors
        train(tiny_cfg("data=latents", f"data.a_dir={a}", f"data.b_dir={b}", "train.epochs=1", *extra))


def test_gain_scales_without_held_out_latents_is_a_config_error(tiny_cfg):
    with pytest.raises(config.ConfigError, match="data.val_fraction"):
        train(tiny_cfg("train.gain_scales=[0,1,2]", "train.epochs=1"))
