"""The CUDA-only paths the CPU suite never runs: training in each precision, resume, the compiled step, evaluation.

Skipped without CUDA (so in CI). On a GPU machine: ``python -m pytest -m gpu``. Resume on CUDA once crashed
because the checkpoint's RNG states came back on the GPU; nothing on the CPU could have shown it.
"""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from PIL import Image

from lcgan.build import LOSS_KEYS
from lcgan.evaluate import evaluate
from lcgan.train import train
from tests.conftest import compose_cfg
from tests.test_evaluate import tiny_run
from tests.test_train import read_log

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (on one: python -m pytest -m gpu)")]

FIXED_LR = ("optim.lr_constant_epochs=4", "optim.lr_decay_epochs=4")  # the schedule independent of train.epochs


@pytest.mark.parametrize("amp", ["bf16", "fp16", "none"])
def test_train_and_resume_on_cuda_as_one_run(tiny_cfg, tmp_path, amp):
    common_ = ("device=cuda", "train.compile=false", f"train.amp={amp}", *FIXED_LR)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_cfg("train.epochs=2", *common_, out=straight))
    train(tiny_cfg("train.epochs=1", *common_, out=split))
    train(tiny_cfg("train.epochs=2", *common_, "train.resume=true", out=split))
    a, b = read_log(straight), read_log(split)
    assert [r["epoch"] for r in b] == [1, 2]
    for ra, rb in zip(a, b):
        for k in LOSS_KEYS:
            assert math.isfinite(rb[k])
            # cuDNN's backward is not bitwise deterministic: the resumed run follows the straight one, not exactly
            assert rb[k] == pytest.approx(ra[k], rel=2e-2, abs=1e-3), (amp, ra["epoch"], k)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_r1_penalty_under_autocast_trains(tiny_cfg, tmp_path, amp):
    # a double backward through the discriminator under autocast (fp16: through the GradScaler too)
    out = tmp_path / amp
    train(tiny_cfg("device=cuda", "train.compile=false", f"train.amp={amp}", "train.r1_gamma=10", "train.r1_every=2", out=out))
    rows = read_log(out)
    assert all(math.isfinite(r[k]) for r in rows for k in LOSS_KEYS)


def test_compiled_step_with_cuda_graphs_trains(tiny_cfg, tmp_path):
    out = tmp_path / "run"
    # with the anchor loss: the one loss whose branch the tier's other runs leave off (a graph break would show as a failure here)
    train(tiny_cfg("device=cuda", "train.compile=true", "train.cuda_graphs=true", "train.epochs=2", "train.lambda_anchor=1", out=out))
    rows = read_log(out)
    assert [r["epoch"] for r in rows] == [1, 2] and all(math.isfinite(r[k]) for r in rows for k in LOSS_KEYS)
    assert all(r["loss_anchor"] > 0 for r in rows)


def test_compiled_step_with_cuda_graphs_trains_patch_nce_without_a_cycle(tiny_cfg, tmp_path):
    # PatchNCE draws its positions on the device every step, inside the captured graph; CUT's recipe drops the cycle pass
    out = tmp_path / "run"
    train(tiny_cfg("device=cuda", "train.compile=true", "train.cuda_graphs=true", "train.epochs=2", "train.lambda_nce=1",
                   "train.lambda_cyc=0", out=out))
    rows = read_log(out)
    assert [r["epoch"] for r in rows] == [1, 2] and all(math.isfinite(r[k]) for r in rows for k in LOSS_KEYS)
    assert all(r["loss_nce"] > 0 and r["loss_cyc"] == 0 for r in rows)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """test_evaluate's tiny run and photos (eval=smoke below: random metric networks, the same on both devices, no
    Inception weights needed): (folder, VAE overrides)."""
    root = tmp_path_factory.mktemp("gpu_eval")
    return root, tiny_run(root)


def test_evaluation_on_cuda_scores_as_on_the_cpu(tiny):
    root, vae = tiny
    summaries = {}
    for device in ("cpu", "cuda"):
        cfg = compose_cfg("eval", [f"checkpoint={root / 'run' / 'model' / 'last.pt'}", f"eval.testA_dir={root / 'A'}",
                                   f"eval.testB_dir={root / 'B'}", f"eval.out_dir={root / device}", *vae, "eval=smoke",
                                   "eval.image_size=128", f"device={device}", "eval.compile=false"])
        summaries[device] = evaluate(cfg)
    for direction in ("A2B", "B2A"):
        g, c = (summaries[d]["directions"][direction]["model"] for d in ("cuda", "cpu"))
        assert g["content_lpips"] == pytest.approx(c["content_lpips"], abs=2e-3), direction
        assert g["content_clip"] == pytest.approx(c["content_clip"], abs=2e-3), direction
        assert g["fid"] == pytest.approx(c["fid"], rel=5e-2), direction


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs: evaluation on cuda:1")
def test_evaluation_on_the_second_gpu_writes_what_the_first_does(tiny):
    # the host copy's event was once recorded on GPU 0 whatever the device: cuda:1's PNGs could be read before they landed
    root, vae = tiny
    written = []
    for i, device in enumerate(("cuda:0", "cuda:1")):
        out = root / f"gpu{i}"
        evaluate(compose_cfg("eval", [f"checkpoint={root / 'run' / 'model' / 'last.pt'}", f"eval.testA_dir={root / 'A'}",
                                      f"eval.testB_dir={root / 'B'}", f"eval.out_dir={out}", *vae, "eval=smoke",
                                      "eval.image_size=128", f"device={device}", "eval.compile=false",
                                      "eval.fid.resize=pil", "eval.save_images=true"]))
        rows = list(csv.DictReader((out / "metrics.csv").open()))
        written.append([np.asarray(Image.open(r["gen_path"]), dtype=np.int16) for r in rows])
    assert len(written[1]) == 6
    for a, b in zip(*written):
        assert np.abs(a - b).max() <= 1
