"""The known-transform benchmark (experiments/known_transform/run.py) end to end at a tiny size:
6 real photographs, 64px crops, the real vaelight VAE, one epoch of a tiny model."""
from __future__ import annotations

import importlib.util
import math

from tests.conftest import CONF
from tests.shared import SHARED, shared_path

SCRIPT = CONF.parent / "experiments" / "known_transform" / "run.py"
TINY = ["device=cpu", "train.epochs=1", "train.batch_size=4", "train.log_every=1", "train.vis_every=0", "train.n_vis=2",
        "model.generator.ngf=8", "model.generator.n_blocks=1", "model.discriminator.ndf=8", "model.discriminator.n_layers=1"]


def load_script():
    spec = importlib.util.spec_from_file_location("known_transform_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grade_is_a_fixed_warm_tone_curve():
    import torch

    grade = load_script().grade
    x = torch.linspace(-1, 1, 5).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    y = grade(x)
    assert y.min() >= -1 and y.max() <= 1
    assert (y[:, 0] >= y[:, 2]).all(), "warm: red lifted above blue"
    assert torch.equal(grade(x), y), "deterministic"


def test_benchmark_tiny(tmp_path):
    shared_path("weights/vaelight/VAEencoder.onnx")
    for folder in ("kodak24", "cbsd68", "mcmaster"):
        shared_path(f"data/{folder}")
    result = load_script().main(["--shared", str(SHARED), "--out", str(tmp_path), "--photos", "6", "--image-size", "64",
                                 "--crops", "2", "--eval-steps", "1", "--name", "tiny", *TINY])
    base = result["baselines"]
    for row in ("identity", "mean_shift", "moment_match", "oracle"):
        assert all(math.isfinite(v) for v in base[row]), row
    assert base["oracle"][0] > base["identity"][0], "encoding the graded truth beats not translating"
    assert base["mean_shift"][0] > base["identity"][0], "the grade shifts the domains' channel means"
    (rows,) = result["runs"].values()
    assert [r["epoch"] for r in rows] == [1] and math.isfinite(rows[0]["psnr"])
    md = (tmp_path / "results_tiny.md").read_text()
    assert "| mean_shift |" in md and "| oracle |" in md and "| model | " in md
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny" / "seed0" / "model").glob("epoch_*.pt")) == ["epoch_0001.pt"]
