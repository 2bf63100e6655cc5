"""The known-transform benchmark (experiments/known_transform/run.py) end to end at a tiny size:
6 real photographs, 64px crops, the real vaelight VAE, one epoch of a tiny model."""
from __future__ import annotations

import importlib.util
import math

import pytest

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
                                 "--crops", "2", "--eval-steps", "1", "--name", "tiny", "--lpips", "random", *TINY])
    base = result["baselines"]
    for row in ("identity", "mean_shift", "moment_match", "oracle"):
        assert all(math.isfinite(v) for v in base[row]), row
    assert base["oracle"][0] > base["identity"][0], "encoding the graded truth beats not translating"
    assert base["mean_shift"][0] > base["identity"][0], "the grade shifts the domains' channel means"
    (rows,) = result["runs"].values()
    assert [r["epoch"] for r in rows] == [1] and math.isfinite(rows[0]["psnr"])
    assert base["oracle"][2] >= 0 and math.isfinite(rows[0]["lpips"]), "LPIPS (a random backbone here) beside PSNR"
    md = (tmp_path / "results_tiny.md").read_text()
    assert "| mean_shift |" in md and "| oracle |" in md and "| model | " in md
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny" / "seed0" / "model").glob("epoch_*.pt")) == ["epoch_0001.pt"]


def test_summarize_groups_seeds_and_takes_medians(tmp_path):
    import json

    spec = importlib.util.spec_from_file_location("known_transform_summarize", SCRIPT.parent / "summarize.py")
    summarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    base = {k: [v, v + 5] for k, v in (("identity", 16.0), ("mean_shift", 20.0), ("moment_match", 20.5), ("oracle", 21.0))}
    for seed, psnr in ((0, 20.1), (1, 20.9), (2, 20.6)):
        result = {"name": f"rec_s{seed}", "overrides": ["train.lambda_cyc=5", "device=cuda"], "baselines": base,
                  "runs": {str(seed): [{"epoch": 3, "step": 66, "psnr": psnr, "psnr_vae": psnr + 4}]},
                  "synthetic": {str(seed): {"err": 0.1 * (seed + 1)}}}
        (tmp_path / f"results_rec_s{seed}.json").write_text(json.dumps(result))
    md = summarize.main([str(p) for p in sorted(tmp_path.glob("*.json"))])
    [row] = [line for line in md.splitlines() if line.startswith("| rec |")]
    assert "**20.60** (20.10, 20.90, 20.60)" in row and "24.60" in row and "0.200" in row
    assert "`train.lambda_cyc=5`" in row, "run-only overrides (device) are not part of the recipe"
    other = json.loads((tmp_path / "results_rec_s0.json").read_text())
    other["baselines"]["identity"] = [10.0, 12.0]
    (tmp_path / "results_other_s0.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="baselines differ"):
        summarize.main([str(p) for p in sorted(tmp_path.glob("*.json"))])
