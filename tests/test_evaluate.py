"""End to end: a tiny trained checkpoint, the real vaelight VAE, real photographs, the real Inception.

LPIPS and CLIP are random (eval=smoke: no downloads); FID is the real one (eval.fid.random=false). One test runs the
README's command as typed, offline: LPIPS and CLIP fall back to random networks, FID stays real.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lcgan.scoring
import lcgan.translate
import lcgan.vae
from lcgan import checkpoint, fid
from lcgan.evaluate import evaluate
from lcgan.rundir import checkpoint_tag
from lcgan.scoring import BASELINES
from lcgan.train import train
from lcgan.translate import translate
from lcgan.translator import load_translator
from lcgan.vis import LINE
from tests.conftest import TINY, TINY_SYNTHETIC, compose_cfg
from tests.shared import shared_images, shared_path
from tests.test_metrics import real_inception

ROOT = Path(__file__).resolve().parents[1]
SIZE = 128  # 16x16 latents: the size the tiny synthetic run trained on
PANEL_WIDTH = 3 * (SIZE + 2) + 2  # source | translation | round trip, 2px gaps


def tiny_run(root: Path) -> list[str]:
    """A 2-epoch checkpoint in ``root/run``, 3 cats in ``root/A`` and 3 dogs in ``root/B``; the VAE overrides."""
    vae = ["vae=vaelight", f"vae.encoder_path={shared_path('weights/vaelight/VAEencoder.onnx')}",
           f"vae.decoder_path={shared_path('weights/vaelight/VAEpreview.onnx')}"]
    train(compose_cfg("train", [*TINY, *TINY_SYNTHETIC, "train.vis_every=0", f"out_dir={root / 'run'}"]))
    for domain, src in (("A", "data/afhq_stargan_v2/cat"), ("B", "data/afhq_stargan_v2/dog")):
        (root / domain).mkdir()
        for p in shared_images(src, limit=3):
            shutil.copy(p, root / domain / p.name)
    return vae


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """:func:`tiny_run` plus a broken file in A: (folder, checkpoint, VAE overrides)."""
    root = tmp_path_factory.mktemp("eval")
    real_inception()  # skip early without the Inception file
    vae = tiny_run(root)
    (root / "A" / "readme.jpg").write_text("a text file named .jpg")
    return root, root / "run" / "model" / "last.pt", vae


def common(root, vae) -> list[str]:
    return [*vae, "eval=smoke", "eval.fid.random=false", f"eval.image_size={SIZE}", "device=cpu", "eval.num_workers=2",
            f"eval.clip.embedding_cache={root / 'clip_cache'}"]


@pytest.fixture(scope="module")
def evaluated(setup):
    """The evaluation of the setup's checkpoint, run once: (summary, output folder). It also writes B's FID
    reference statistics and the CLIP source embeddings that the single-image test reuses."""
    root, ckpt, vae = setup
    out = root / "out"
    cfg = compose_cfg("eval", [f"checkpoint={ckpt}", f"eval.testA_dir={root / 'A'}", f"eval.testB_dir={root / 'B'}",
                               f"eval.out_dir={out}", "eval.save_images=true", *common(root, vae)])
    return evaluate(cfg), out


@pytest.mark.slow
def test_evaluate_end_to_end(setup, evaluated):
    root, ckpt, vae = setup
    summary, out = evaluated

    # summary.json: what was run, on what, and every number finite
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["complete"] is True and on_disk["meaningful"] is False and on_disk["not_meaningful_because"]
    # per metric: LPIPS and CLIP random (eval=smoke), FID/KID from the real Inception; the overall fields agree
    assert on_disk["metrics_meaningful"] == {"lpips": False, "clip": False, "fid": True}
    why = on_disk["metrics_not_meaningful_because"]
    assert "eval.lpips.random" in why["lpips"] and "eval.clip.random" in why["clip"] and why["fid"] is None
    assert on_disk["not_meaningful_because"] == [why["lpips"], why["clip"]]
    assert on_disk["vae"]["class"] == "OnnxVAE" and on_disk["convention"] == {"latents_scaled": False, "latent_divisor": 10.0}
    assert on_disk["counts"] == {"A": {"evaluated": 3, "skipped": 1}, "B": {"evaluated": 3, "skipped": 0}}
    assert on_disk["skipped"][0]["path"].endswith("readme.jpg")
    # lcgan checkpoints carry their training domains' channel statistics: baselines are fit on those
    assert "training domains" in on_disk["latent_baselines"]["fit_on"] and on_disk["fid_warning"]
    assert on_disk["cache"] == {"clip_source_embeddings_computed": 6, "clip_source_embeddings_cached": 0}
    for direction in ("A2B", "B2A"):
        d = on_disk["directions"][direction]
        assert d["n_images"] == 3 and d["reference"]["count"] == 3
        for kind in ("model", *BASELINES):
            assert all(math.isfinite(d[kind][k]) for k in ("content_lpips", "content_clip", "fid", "kid_mean", "kid_std")), (direction, kind)
            assert d[kind]["fid"] > 0 and -1 <= d[kind]["content_clip"] <= 1
        assert set(d["beats"]) == set(BASELINES), "the round trip and every closed-form map of the checkpoint"
    assert summary["directions"]["A2B"]["model"]["fid"] == on_disk["directions"]["A2B"]["model"]["fid"]

    # metrics.csv: one row per image and direction, with the baselines' per-image numbers
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["direction"] for r in rows] == ["A2B"] * 3 + ["B2A"] * 3
    for r in rows:
        assert all(math.isfinite(float(r[k])) for k in r if k.endswith(("lpips", "clip")))
        assert Image.open(r["gen_path"]).size == (SIZE, SIZE) and r["src_path"].startswith(str(root))
    assert {"round_trip_lpips", "round_trip_clip", "mean_shift_lpips", "moment_match_clip"} <= set(rows[0])

    # pictures, generated-set statistics, reference statistics written beside the test images
    for direction in ("A2B", "B2A"):
        pics = sorted((out / "images" / direction).glob("*.png"))
        # source | translation | round trip, 2px gaps, a label band on top, the score table and notes below
        assert len(pics) == 3 and all(Image.open(p).size[0] == PANEL_WIDTH and Image.open(p).size[1] > LINE + SIZE + 4 * LINE for p in pics)
        panel = np.asarray(Image.open(pics[0]))
        assert panel[: LINE + 2].min() < 128 and panel[: LINE + 2].max() == 255, "column labels drawn above the images"
        # the round trip column shows decode(encode(source)), the picture written to round_trip/
        rt = np.asarray(Image.open(out / "round_trip" / direction / f"{pics[0].stem}.png"))
        np.testing.assert_array_equal(panel[LINE + 4 : LINE + 4 + SIZE, 2 + 2 * (SIZE + 2) : 2 + 2 * (SIZE + 2) + SIZE], rt)
        # one overview grid per direction: a row per test image, and a note line per reason the scores are not meaningful
        overview = Image.open(out / "images" / f"{direction}_overview.png")
        notes = 2 + len(on_disk["not_meaningful_because"])
        assert overview.size == (PANEL_WIDTH, LINE + 2 + 3 * (SIZE + 2) + 2 + notes * LINE + 4)
        band = np.asarray(overview)[-notes * LINE - 4 :]
        assert band.min() < 128 and band.max() == 255, "the notes are written under the grid"
        with np.load(out / "fid" / f"{direction}_gen_stats.npz") as z:
            assert int(z["count"]) == 3 and z["mu"].shape == (2048,) and np.isfinite(z["sigma"]).all()
    cache = {d: Path(summary["directions"][f"{s}2{d}"]["reference"]["stats_dir"]) for s, d in (("A", "B"), ("B", "A"))}
    assert (cache["B"] / "fid_stats.npz").is_file() and len(list((cache["A"] / "vectors").glob("*.npy"))) == 3
    assert not (root / "B" / "fid_stats.npz").exists() and not (root / "A" / "vectors").exists()  # never beside the images


@pytest.mark.slow
def test_readme_evaluate_command_runs_offline(setup, tmp_path):
    """The README's evaluate command as a new user types it, offline (no LPIPS/CLIP weights: HF_HUB_OFFLINE, an empty
    TORCH_HOME): no traceback, one line per missing metric naming its setting, the real FID, metrics_meaningful."""
    root, ckpt, vae = setup
    proc = subprocess.run([sys.executable, "-m", "lcgan.evaluate", f"checkpoint={ckpt}", f"eval.testA_dir={root / 'A'}",
                           f"eval.testB_dir={root / 'B'}", f"eval.image_size={SIZE}", *vae, "eval.fid.stats_root=outputs/fid_stats",
                           "device=cpu", "eval.num_workers=2", "eval.latent_baselines=false"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                               "TORCH_HOME": str(tmp_path / "torch_home")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("WARNING: ") and "NOT meaningful" in line]
    assert len(warnings) == 2 and "eval.lpips.backbone_path=" in warnings[0] and "eval.clip.pretrained=" in warnings[1], warnings
    assert "meaningful: lpips NO, clip NO, fid yes" in proc.stdout
    (summary_path,) = (tmp_path / "outputs" / "eval").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["metrics_meaningful"] == {"lpips": False, "clip": False, "fid": True} and summary["meaningful"] is False
    assert "eval.lpips.backbone_path" in summary["metrics_not_meaningful_because"]["lpips"]
    assert summary["metric_networks"]["inception"]["weights"] != "random torchvision inception_v3"
    assert math.isfinite(summary["directions"]["A2B"]["model"]["fid"])


@pytest.mark.slow
def test_translate_one_image_with_fid_from_existing_stats(setup, evaluated):
    root, ckpt, vae = setup  # `evaluated`: B's reference statistics and the sources' CLIP embeddings exist
    assert (fid._locations(root / "B", None, fid.FALLBACK_ROOT)[0] / "fid_stats.npz").is_file()
    image = sorted((root / "A").glob("*.jpg"))[0]
    out = root / "single"
    cfg = compose_cfg("translate", ["metrics=true", f"checkpoint={ckpt}", f"image={image}", f"eval.testB_dir={root / 'B'}",
                                    f"eval.out_dir={out}", *common(root, vae)])
    summary = translate(cfg)
    a2b, b2a = summary["directions"]["A2B"], summary["directions"]["B2A"]
    assert math.isfinite(a2b["model"]["fid"]) and "point mass" in a2b["model"]["fid_kind"] and a2b["model"]["kid_mean"] is None
    assert b2a["model"]["fid"] is None  # no reference statistics were given for A
    assert "mean_shift" in a2b  # fit on the checkpoint's training-domain statistics, not on the one image
    assert summary["cache"]["clip_source_embeddings_computed"] == 0  # both sources were embedded by the evaluation
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) == 2
    assert Image.open(out / "images" / "A2B" / f"{image.stem}.png").size[0] == PANEL_WIDTH
    assert (out / "fid" / "A2B_gen_stats.npz").is_file()


@pytest.mark.slow
def test_translate_a_folder_keeps_each_images_size(setup, tmp_path):
    """Plain mode through the CLI: a folder of non-square photos in, one PNG each out, at the input's size."""
    root, ckpt, vae = setup
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    sizes = {"wide.png": (150, 100), "tall.jpg": (90, 130), "sub/square.png": (64, 64)}  # none a multiple of 8
    for (name, size), src in zip(sizes.items(), sorted((root / "A").glob("*.jpg"))):
        Image.open(src).convert("RGB").resize(size).save(photos / name)
    (photos / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "lcgan.translate", f"checkpoint={ckpt}", f"input={photos}", "direction=B2A",
                           f"output_dir={out}", "device=cpu", "batch_size=2", *vae, f"hydra.run.dir={tmp_path / 'hydra'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no metric networks built" in proc.stdout and "wrote 3 image(s)" in proc.stdout and "skipped 1" in proc.stdout, proc.stdout
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["sub/square.png", "tall.png", "wide.png"]
    for name, size in sizes.items():
        assert Image.open(out / Path(name).with_suffix(".png")).size == size, name


def test_translate_one_image_builds_no_metric_network(setup, tmp_path, monkeypatch):
    """Plain mode on one image, shorter side scaled: the aspect ratio is kept and no metric network is built."""
    root, ckpt, vae = setup
    def refuse(*args, **kwargs):
        raise AssertionError("plain translation built a metric network")
    monkeypatch.setattr(lcgan.scoring, "build_metrics", refuse)
    monkeypatch.setattr(lcgan.translate, "build_metrics", refuse)
    image = tmp_path / "cat.png"
    Image.open(sorted((root / "A").glob("*.jpg"))[0]).convert("RGB").resize((120, 80)).save(image)
    cfg = compose_cfg("translate", [f"checkpoint={ckpt}", f"input={image}", "size=40", f"output_dir={tmp_path / 'out'}",
                                    "device=cpu", *vae])
    result = translate(cfg)
    assert result["written"] == [str(tmp_path / "out" / "cat.png")]
    assert Image.open(tmp_path / "out" / "cat.png").size == (60, 40)
    with pytest.raises(ValueError, match=r"image=.* is the metric mode's: add metrics=true"):
        translate(compose_cfg("translate", [f"checkpoint={ckpt}", f"image={image}", "device=cpu", *vae]))


@pytest.mark.slow
def test_compiled_vae_evaluates_the_same(setup, evaluated, tmp_path, monkeypatch):
    """eval.compile=true compiles the VAE's networks (here with torch.compile's eager backend: the wiring and
    the math, without minutes of CPU compilation) and scores as the plain run does."""
    root, ckpt, vae = setup
    compiled = []
    original = lcgan.vae.VAE.compile
    def eager_compile(self, backend="inductor"):
        original(self, backend="eager")
        compiled.extend(self.networks())
    monkeypatch.setattr(lcgan.vae.VAE, "compile", eager_compile)
    cfg = compose_cfg("eval", [f"checkpoint={ckpt}", f"eval.testA_dir={root / 'A'}", f"eval.testB_dir={root / 'B'}",
                               f"eval.out_dir={tmp_path / 'out'}", "eval.compile=true", *common(root, vae),
                               "vae.backend=torch"])  # onnxruntime runs no torch network: nothing to compile
    summary = evaluate(cfg)
    assert len(compiled) == 2 and all(net._compiled_call_impl is not None for net in compiled), "encoder and decoder"
    for d in ("A2B", "B2A"):
        ours, plain = summary["directions"][d]["model"], evaluated[0]["directions"][d]["model"]
        for key in ("content_lpips", "content_clip", "fid"):
            assert ours[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-5), (d, key)


def test_eval_compile_auto_compiles_only_where_it_repays(capsys):
    """eval.compile=auto: on CUDA from COMPILE_FROM_IMAGES images, never on a CPU; true warns about a VAE with no torch
    network (ONNX Runtime), auto passes over it quietly."""
    from lcgan.evaluate import COMPILE_FROM_IMAGES, compile_vae

    class Vae:
        def __init__(self, nets):
            self.nets, self.compiled = nets, False

        def networks(self):
            return self.nets

        def compile(self):
            self.compiled = True

    cuda, cpu, many = torch.device("cuda"), torch.device("cpu"), COMPILE_FROM_IMAGES
    assert compile_vae(v := Vae([1]), "auto", cuda, many) and v.compiled
    assert not compile_vae(v := Vae([1]), "auto", cuda, many - 1) and not v.compiled
    assert not compile_vae(v := Vae([1]), "auto", cpu, 10 * many) and not v.compiled
    assert compile_vae(v := Vae([1]), True, cpu, 1) and v.compiled
    assert not compile_vae(Vae([]), "auto", cuda, many) and capsys.readouterr().err == ""
    assert not compile_vae(Vae([]), True, cuda, 1) and "vae.backend=torch" in capsys.readouterr().err


def test_default_output_folders_name_the_run():
    """last.pt of two runs must not share outputs/eval/last."""
    one, two = (checkpoint_tag(Path(f"outputs/train/2026-11-29/{t}/model/last.pt")) for t in ("11-00-00", "12-00-00"))
    assert one == "2026-11-29_11-00-00_last" and two == "2026-11-29_12-00-00_last"
    assert checkpoint_tag(Path("/ckpt.pt")) == "ckpt" and checkpoint_tag(Path("/no-such-root/x/ckpt.pt")) == "no-such-root_x_ckpt"


def _original_tool_generator(ngf: int, blocks: int) -> torch.nn.Sequential:
    """The original single-script tool's layout (5x5 stem, depthwise-separable residual blocks), keys net.N.block.M."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            half = lambda relu: [nn.ReflectionPad2d(1), nn.Conv2d(ngf, ngf, 3, groups=ngf, bias=False),  # noqa: E731
                                 nn.Conv2d(ngf, ngf, 1, bias=False), nn.InstanceNorm2d(ngf)] + [nn.ReLU()] * relu
            self.block = nn.Sequential(*half(True), *half(False))

        def forward(self, x):
            return x + self.block(x)

    class G(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.ReflectionPad2d(2), nn.Conv2d(4, ngf, 5, bias=False), nn.InstanceNorm2d(ngf), nn.ReLU(),
                                     *[Block() for _ in range(blocks)], nn.ReflectionPad2d(2), nn.Conv2d(ngf, 4, 5))

        def forward(self, x):
            return self.net(x)

    return G()


def test_checkpoints_without_a_model_config(tmp_path, setup):
    _, ckpt, _ = setup
    torch.manual_seed(0)
    g, f = _original_tool_generator(8, 2), _original_tool_generator(8, 2)
    legacy = {"G": g.state_dict(), "F": f.state_dict(), "D_A": {}, "D_B": {}, "epoch": 3,
              "cfg": {"data": {"latents_scaled": True, "latent_divisor": 2.0},
                      "visualization": {"vae_model_name_or_path": "runwayml/stable-diffusion-v1-5", "vae_subfolder": "vae"}}}
    checkpoint.save(legacy, tmp_path / "legacy.pt")
    t = load_translator(tmp_path / "legacy.pt", torch.device("cpu"))
    z = torch.randn(2, 4, 16, 16)
    torch.testing.assert_close(t.g_ab(z), g(z))
    assert t.convention.latents_scaled and t.convention.latent_divisor == 2.0 and t.info["format"] == "original tool"
    assert t.vae_cfg == {"_target_": "lcgan.vae.DiffusersVAE", "model_name_or_path": "runwayml/stable-diffusion-v1-5", "subfolder": "vae"}

    ck = checkpoint.load(ckpt)  # an lcgan checkpoint whose config lost its model group: rebuilt from the weights
    del ck["cfg"]["model"]
    ck["cfg"]["model"] = {"generator": None, "output": "residual"}
    checkpoint.save(ck, tmp_path / "nomodel.pt")
    rebuilt, reference = load_translator(tmp_path / "nomodel.pt", torch.device("cpu")), load_translator(ckpt, torch.device("cpu"))
    torch.testing.assert_close(rebuilt.g_ba(z), reference.g_ba(z))

    checkpoint.save({"G": {"w": torch.zeros(1)}, "F": {}, "cfg": {}}, tmp_path / "alien.pt")
    with pytest.raises(ValueError, match="no known generator layout"):
        load_translator(tmp_path / "alien.pt", torch.device("cpu"))


@pytest.mark.slow
def test_evaluate_logs_to_wandb_offline(setup, tmp_path, monkeypatch):
    from tests.test_wandb import OFFLINE, media, read_run

    for k, v in {**OFFLINE, "WANDB_DIR": str(tmp_path / "wandb_dir")}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    root, ckpt, vae = setup
    out = tmp_path / "out"
    cfg = compose_cfg("eval", [f"checkpoint={ckpt}", f"eval.testA_dir={root / 'A'}", f"eval.testB_dir={root / 'B'}",
                               f"eval.out_dir={out}", "logger=wandb", "logger.mode=offline", *common(root, vae)])
    summary = evaluate(cfg)
    run = read_run(out)
    # the summary metrics, and one table row per image and direction with its two pictures
    assert run["summary"]["eval/A2B/model/fid"] == summary["directions"]["A2B"]["model"]["fid"]
    [table] = [media(r, "eval/samples") for r in run["history"] if media(r, "eval/samples")]
    content = json.loads((run["dir"] / "files" / table["path"]).read_text())
    assert content["columns"][:4] == ["source", "generated", "direction", "src_path"]
    assert len(content["data"]) == len((out / "metrics.csv").read_text().splitlines()) - 1 and run["exit"] == 0


# ------------------------------------------------------------------------------- the pipeline, on tiny random networks

TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8, sample_size=32,
                block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
TINY_G = dict(ngf=8, n_blocks=1, n_downsampling=1)


class TinyImageEncoder(torch.nn.Module):
    """Stands in for CLIP's image tower: (B, 3, S, S) -> (B, 16)."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.net = nn.Sequential(nn.Conv2d(3, 8, 16, stride=16), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(scope="module")
def tiny():
    """A random 2x-downsampling KL VAE, a one-block generator, random LPIPS-alex, and CLIP and Inception wrappers (their
    real preprocessing: resizes, clean-fid's CPU resizer) around tiny random networks: the full-size Inception in bf16
    takes ~10 s an image on a CPU."""
    from lcgan.bench_eval import RandomKLVAE
    from lcgan.fid import Fid
    from lcgan.metrics import Clip, Lpips
    from lcgan.models import ResnetGenerator

    torch.manual_seed(0)
    metrics = lcgan.scoring.Metrics(Lpips(random=True), Clip("ViT-S-32", random=True, seed=1), Fid(random=True, seed=2, workers=2))
    metrics.clip.model = TinyImageEncoder().eval()
    metrics.fid.inception.layers = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 32, stride=32), torch.nn.AdaptiveAvgPool2d(1),
                                                       torch.nn.Flatten(), torch.nn.Linear(8, 2048)).eval()
    return RandomKLVAE(TINY_VAE, torch.device("cpu")), ResnetGenerator(4, **TINY_G).eval().requires_grad_(False), metrics


@pytest.mark.slow
def test_batched_pipeline_equals_the_per_image_loop(tiny):
    """The pipelined, batched scoring (host work on a worker thread, scores gathered once) gives every image the
    scores it gets alone, in order, and hands every output to ``save`` once, in order."""
    from lcgan.images import from_uint8
    from lcgan.latents import Convention

    vae, g, metrics = tiny
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    z_raw = lcgan.scoring.encode(vae, images, 2, False, "encode")
    src_emb = metrics.clip.embed(from_uint8(images))
    maps = {"model": g, "round_trip": lambda z: z}
    saved = []
    save = lambda kind, start, x8: saved.append((kind, start, len(x8)))  # noqa: E731
    one, batched = (lcgan.scoring.score_outputs(maps, z_raw, images, src_emb, vae, Convention(), metrics, b, False, save) for b in (1, 3))
    for kind in maps:
        for key in ("lpips", "clip", "feats"):
            assert batched[kind][key].shape[0] == 4
            # batch size changes the order of float sums inside the convolutions (~1e-6 relative in fp32), which now and
            # then moves a decoded pixel across a rounding edge to uint8: scores of ~0.1-1 differ by up to ~2e-5
            np.testing.assert_allclose(batched[kind][key], one[kind][key], rtol=1e-3, atol=1e-4)
    assert saved[4 * 2:] == [("model", 0, 3), ("round_trip", 0, 3), ("model", 3, 1), ("round_trip", 3, 1)]
    assert [s for k, s, _ in saved[: 4 * 2] if k == "model"] == [0, 1, 2, 3]


def test_device_resize_scores_like_clean_fid_and_copies_only_for_save(tiny, monkeypatch):
    """eval.fid.resize=torch in the pipeline: the same scores as clean-fid's CPU resize (LPIPS and CLIP exactly, the
    features to rounding), every output still handed to ``save`` in order, and no host copy when nothing is saved."""
    from lcgan.images import from_uint8
    from lcgan.latents import Convention

    vae, g, metrics = tiny
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    z_raw = lcgan.scoring.encode(vae, images, 2, False, "encode")
    src_emb = metrics.clip.embed(from_uint8(images))
    score = lambda save=None: lcgan.scoring.score_outputs({"model": g}, z_raw, images, src_emb, vae, Convention(), metrics, 2,  # noqa: E731
                                                          False, save)["model"]
    pil = score()
    monkeypatch.setattr(metrics.fid.inception, "resize", "torch")
    copies = []
    monkeypatch.setattr(lcgan.scoring, "_pinned", lambda x: copies.append(len(x)) or x)
    dev = score()
    assert copies == []
    saved = []
    score(lambda kind, start, x8: saved.append((kind, start, x8.shape)))
    assert saved == [("model", 0, (2, 3, 32, 32)), ("model", 2, (1, 3, 32, 32))] and copies == [2, 1]
    np.testing.assert_array_equal(dev["lpips"], pil["lpips"])
    np.testing.assert_array_equal(dev["clip"], pil["clip"])
    np.testing.assert_allclose(dev["feats"], pil["feats"], rtol=1e-4, atol=1e-4)  # resize rounding (~1e-5 of 255)


def test_write_pngs_is_lossless(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    x8 = torch.randint(0, 256, (3, 3, 16, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with ThreadPoolExecutor(2) as pool:
        lcgan.scoring.write_pngs(tmp_path, ["a", "b", "c"], x8, pool)
    for name, img in zip("abc", x8):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"{name}.png")), img.permute(1, 2, 0).numpy())


def test_bench_eval_compares_variants_profiles_stages_and_agreement_on_the_cpu(tiny, capsys, monkeypatch):
    """``lcgan.bench bench.eval.enabled=true`` on tiny networks: every variant timed, a profile of every stage,
    finite agreements; bf16 (forced, also on a CPU) against fp32 on the same images gives differences that are
    small but not all zero (they were computed), and the device resize agrees with clean-fid's. A compiler that
    fails is reported, after everything else was printed."""
    from lcgan.bench_eval import bench_eval

    calls = []

    def compile_then_fail(fn, **kwargs):  # the fp32-weight VAE's encode and decode compile (as themselves), the bf16 twin's fail
        calls.append(fn)
        if len(calls) <= 2:
            return fn

        def run(*args):
            raise RuntimeError("inductor: no C++ compiler\nmore")
        return run

    monkeypatch.setattr(torch, "compile", compile_then_fail)
    r = bench_eval(4, 2, 2, 32, torch.device("cpu"), batch_sizes=[4], profile_batches=1, compile=True, vae_config=TINY_VAE,
                   generator=TINY_G, metrics=tiny[2])
    out = capsys.readouterr().out.splitlines()
    assert "cpu" in out[0]  # names the device
    assert any(line.startswith("lcgan.bench eval, before compiling: {") for line in out)
    assert r["eval_failed"] == {"torch_resize_cudnn_benchmark_compiled_vae_bf16": "RuntimeError: inductor: no C++ compiler\nmore"}
    # a compiled variant's numbers against the uncompiled fp32 pipeline: the same computation in fp32 agrees exactly
    same = r["eval_compiled_fp32_vs_fp32"]
    assert same["fid_fp32"] == same["fid_compiled"] and same["fid_rel_diff"] == same["lpips_max_abs_diff"] == same["clip_max_abs_diff"] == 0
    assert all(math.isfinite(x) for x in r["eval_compiled_vs_fp32"].values()) and "eval_compiled_vae_bf16_vs_fp32" not in r
    assert r["eval_variants"]["torch_resize_cudnn_benchmark_compiled_batch4"]["batch"] == 4  # the compiled VAE at every batch size
    assert set(r["eval_profile_compiled"]["stages_ms_per_image"]) >= {"encode", "decode"}  # where the compiled time goes
    assert all(r[k] > 0 for k in ("eval_images_per_s", "eval_fp32_images_per_s", "eval_loop_images_per_s", "eval_speedup"))
    v = r["eval_variants"]
    assert set(v) == {"current", "current_fp32", "loop", "torch_resize", "torch_resize_cudnn_benchmark", "current_png_serial",
                      "current_png", "torch_resize_cudnn_benchmark_png", "torch_resize_cudnn_benchmark_batch4",
                      "torch_resize_cudnn_benchmark_fp32", "torch_resize_cudnn_benchmark_vae_bf16",
                      "torch_resize_cudnn_benchmark_compiled", "torch_resize_cudnn_benchmark_compiled_fp32",
                      "torch_resize_cudnn_benchmark_compiled_batch4"}
    assert all(x["images_per_s"] > 0 for x in v.values()) and v["loop"]["batch"] == 1 and v["current"]["resize"] == "pil"
    assert r["eval_best"]["variant"] in v and r["eval_best"]["variant"] != "loop"
    pil, dev = r["eval_profile"]["current_png"], r["eval_profile"]["torch_resize_cudnn_benchmark_png"]
    expected = {"encode", "clip_source", "upload", "translate", "decode", "to_uint8", "lpips", "clip", "inception_resize",
                "inception_forward", "host_copy", "png"}
    assert set(pil["stages_ms_per_image"]) == set(dev["stages_ms_per_image"]) == expected
    assert all(ms >= 0 for ms in pil["stages_ms_per_image"].values()) and pil["unattributed_ms_per_image"] >= 0
    assert sum(pil["stages_ms_per_image"].values()) <= pil["total_ms_per_image"]
    assert set(pil["tflops_per_s"]) == {"encode", "translate", "decode"} and r["eval_gflop_per_image"]["decode"] > 0
    assert set(r["eval_profile"]) == {"current_png", "torch_resize_cudnn_benchmark_png", "torch_resize_cudnn_benchmark_vae_bf16"}
    # bf16 weights move more than autocast does (norms and sums in bf16 too), still within bf16's own rounding
    assert 0 < r["eval_vae_bf16_vs_fp32"]["lpips_max_abs_diff"] < 0.05
    agree = r["eval_bf16_vs_fp32"]
    assert all(math.isfinite(x) for x in agree.values())
    # bf16 keeps 8 bits of mantissa: LPIPS and cosines move by ~1e-2 at most through these random networks, and FID
    # (4 images against 4, far from the large-sample regime) by well under half
    assert 0 <= agree["lpips_max_abs_diff"] < 0.05 and 0 <= agree["clip_max_abs_diff"] < 0.05 and agree["fid_rel_diff"] < 0.5
    assert agree["lpips_max_abs_diff"] + agree["clip_max_abs_diff"] + agree["fid_rel_diff"] > 0
    resize = r["eval_torch_vs_pil_resize"]
    # two float32 implementations of one filter: rounding only (~2e-3 of 255 measured on photos and noise)
    assert 0 < resize["pixel_max_abs_diff"] < 0.02 and resize["fid_rel_diff_sources"] < 1e-3
    # the resize is all that differs between these two: LPIPS and CLIP are the same computation
    assert resize["outputs"]["lpips_max_abs_diff"] == 0 and resize["outputs"]["fid_rel_diff"] < 1e-3


def test_agreement_of_two_runs():
    from lcgan.bench_eval import agreement
    from lcgan.fid import fid_from_features, gaussian

    rng = np.random.default_rng(0)
    ref = {"lpips": rng.random(6), "clip": rng.random(6), "feats": rng.normal(size=(6, 8))}
    mu, sigma = gaussian(rng.normal(size=(20, 8)))
    same = agreement(ref, ref, mu, sigma)
    assert (same["fid_rel_diff"], same["lpips_max_abs_diff"], same["clip_max_abs_diff"]) == (0, 0, 0)
    moved = {"lpips": ref["lpips"] + np.array([0, 0.002, 0, -0.003, 0, 0]), "clip": ref["clip"] - 0.001, "feats": ref["feats"] + 0.5}
    got = agreement(ref, moved, mu, sigma)
    fid_ref, fid_moved = fid_from_features(ref["feats"], mu, sigma), fid_from_features(moved["feats"], mu, sigma)
    assert got["lpips_max_abs_diff"] == pytest.approx(0.003) and got["clip_max_abs_diff"] == pytest.approx(0.001)
    assert got["fid_rel_diff"] == pytest.approx(abs(fid_moved - fid_ref) / fid_ref) and got["fid_fp32"] == pytest.approx(fid_ref)


def test_devices_resolve_and_choose_for_inference():
    from lcgan.devices import amp_enabled, auto_batch_size, resolve_device

    cpu = torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device='cuda:1' but CUDA is not available"):
            resolve_device("cuda:1")
    assert (amp_enabled("auto", cpu), amp_enabled("bf16", cpu), amp_enabled("none", torch.device("cuda"))) == (False, True, False)
    assert amp_enabled("auto", torch.device("cuda")) and auto_batch_size(cpu, 256) == 16
    with pytest.raises(ValueError, match="amp='fp8'"):
        amp_enabled("fp8", cpu)


def test_bench_command_hands_every_eval_setting_to_bench_eval(tmp_path, monkeypatch, capsys):
    """``python -m lcgan.bench bench.eval.enabled=true ...``: each bench.eval key reaches :func:`bench_eval` as the
    argument of its name, and the JSON (device and torch first) is printed and written to bench.output."""
    import inspect

    import lcgan.bench
    import lcgan.bench_eval
    from tests.conftest import compose_cfg

    calls, signature = [], inspect.signature(lcgan.bench_eval.bench_eval)

    def record(*args, **kwargs):
        calls.append(signature.bind(*args, **kwargs).arguments)
        return {"eval_images_per_s": 1.0}

    monkeypatch.setattr(lcgan.bench_eval, "bench_eval", record)
    out = tmp_path / "eval.json"
    cfg = compose_cfg("bench", ["bench.eval.enabled=true", "device=cpu", "seed=3", "bench.eval.images=8", "bench.eval.loop_images=2",
                                "bench.eval.batch_size=4", "bench.eval.batch_sizes=[2,8]", "bench.eval.image_size=64",
                                "bench.eval.png=false", "bench.eval.profile_batches=0", "bench.eval.compile=true",
                                "bench.eval.compile_modes=[max-autotune-no-cudagraphs]", f"bench.output={out}", f"out_dir={tmp_path}"])
    lcgan.bench.bench(cfg)
    assert calls == [{"n_images": 8, "loop_images": 2, "batch_size": 4, "image_size": 64, "device": torch.device("cpu"), "seed": 3,
                      "batch_sizes": [2, 8], "png": False, "profile_batches": 0, "compile": True,
                      "compile_modes": ["max-autotune-no-cudagraphs"]}]
    assert json.loads(out.read_text()) == json.loads(capsys.readouterr().out.splitlines()[-1]) == {
        "device": "cpu", "torch": torch.__version__, "eval_images_per_s": 1.0}
