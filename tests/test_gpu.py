"""The CUDA-only paths the CPU suite never runs: training in each precision, resume, the compiled step, evaluation.

Skipped without CUDA (so in CI). On a GPU machine: ``python -m pytest -m gpu``. Resume on CUDA once crashed
because the checkpoint's RNG states came back on the GPU; nothing on the CPU could have shown it.
"""
from __future__ import annotations

import math

import pytest
import torch

from lcgan.build import LOSS_KEYS
from lcgan.evaluate import evaluate
from lcgan.train import train
from tests.conftest import compose_cfg
from tests.test_evaluate import common, evaluated, setup  # noqa: F401  the CPU evaluation the GPU one is held to
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


def test_compiled_step_with_cuda_graphs_trains(tiny_cfg, tmp_path):
    out = tmp_path / "run"
    train(tiny_cfg("device=cuda", "train.compile=true", "train.cuda_graphs=true", "train.epochs=2", out=out))
    rows = read_log(out)
    assert [r["epoch"] for r in rows] == [1, 2] and all(math.isfinite(r[k]) for r in rows for k in LOSS_KEYS)


def test_evaluation_on_cuda_scores_as_on_the_cpu(setup, evaluated, tmp_path):  # noqa: F811
    root, ckpt, vae = setup
    cpu, _ = evaluated
    args = [o for o in common(root, vae) if not o.startswith("device=")]
    cfg = compose_cfg("eval", [f"checkpoint={ckpt}", f"eval.testA_dir={root / 'A'}", f"eval.testB_dir={root / 'B'}",
                               f"eval.out_dir={tmp_path / 'out'}", *args, "device=cuda", "eval.compile=false"])
    gpu = evaluate(cfg)
    for direction in ("A2B", "B2A"):
        g, c = gpu["directions"][direction]["model"], cpu["directions"][direction]["model"]
        assert g["content_lpips"] == pytest.approx(c["content_lpips"], abs=2e-3), direction
        assert g["content_clip"] == pytest.approx(c["content_clip"], abs=2e-3), direction
        assert g["fid"] == pytest.approx(c["fid"], rel=5e-2), direction
