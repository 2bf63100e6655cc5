"""Hydra multiruns through the real launcher (subprocesses), the sweep report built from them, and every preset."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from lcgan.report import write_report
from tests.conftest import CONF

REPO = CONF.parent
PRESETS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))
# one epoch of 2 steps on 8x8 latents: a job is start-up cost only
TINY_CLI = [
    "device=cpu", "train.epochs=1", "train.batch_size=8", "train.log_every=1", "train.vis_every=0", "train.n_vis=2",
    "model.generator.ngf=8", "model.generator.n_blocks=1", "model.discriminator.ndf=8",
    "data.n_a=16", "data.n_b=16", "data.n_eval=8", "data.size=8",
]
REPORT_CALLBACK = "++hydra.callbacks.sweep_report._target_=lcgan.callbacks.SweepReport"


def multirun(sweep_dir: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m lcgan.train -m`` in a subprocess, as a user runs it; never raises on a failed sweep."""
    cmd = [sys.executable, "-m", "lcgan.train", "-m", *TINY_CLI, f"hydra.sweep.dir={sweep_dir}", *overrides]
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1", **(env or {})}
    return subprocess.run(cmd, cwd=sweep_dir.parent, env=env, capture_output=True, text=True, timeout=600)


def read_csv(path: Path) -> dict[str, dict]:
    with open(path) as f:
        return {r["job"]: r for r in csv.DictReader(f)}


@pytest.mark.slow
def test_multirun_one_job_fails_others_complete(tmp_path):
    sweep = tmp_path / "sweep"
    proc = multirun(sweep, "data.latent_divisor=10,5,2,0", REPORT_CALLBACK)
    assert proc.returncode != 0, "Hydra re-raises the failed job's error after the batch"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1", "2", "3"]
    for job in ("0", "1", "2"):
        assert (sweep / job / "logs" / "train_log.jsonl").read_text().count("\n") == 1, proc.stderr[-3000:]
        assert (sweep / job / "model" / "last.pt").is_file() and not (sweep / job / "error.txt").exists()
    assert "data.latent_divisor=0.0: must be a number > 0" in (sweep / "3" / "error.txt").read_text()
    assert "data.latent_divisor=0" in yaml.safe_load((sweep / "3" / ".hydra" / "overrides.yaml").read_text())

    # the callback rebuilt the report after every job, the failed last one included
    rows = read_csv(sweep / "report.csv")
    assert {j: r["status"] for j, r in rows.items()} == {"0": "completed", "1": "completed", "2": "completed", "3": "failed"}
    assert "ConfigError" in rows["3"]["error"] and rows["3"]["data.latent_divisor"] == "0"

    # and by hand: python -m lcgan.report PATH
    out = subprocess.run([sys.executable, "-m", "lcgan.report", str(sweep)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "job 3 failed: ConfigError" in out.stdout
    rows = read_csv(sweep / "report.csv")
    assert [r["data.latent_divisor"] for r in rows.values()][-1] == "0", "failed jobs rank last"
    assert sorted(r["data.latent_divisor"] for r in rows.values()) == ["0", "10", "2", "5"]
    done = [r for r in rows.values() if r["status"] == "completed"]
    assert [float(r["err"]) for r in done] == sorted(float(r["err"]) for r in done), "best first"
    assert all(r["epochs"] == "1/1" and r["beats_baselines"] in ("True", "False") for r in done)
    md = (sweep / "report.md").read_text()
    assert "4 jobs: 3 completed, 1 failed, 0 incomplete" in md and "`data.latent_divisor`" in md
    assert (sweep / "report.png").stat().st_size > 1000


@pytest.mark.slow
def test_optuna_preset_runs_two_trials(tmp_path):
    sweep = tmp_path / "optuna"
    proc = multirun(sweep, "+experiment=optuna", "hydra.sweeper.n_trials=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    rows = write_report(sweep, quiet=True)
    assert [r["job"] for r in sorted(rows, key=lambda r: r["job"])] == ["0", "1"]
    assert all(r["status"] == "completed" for r in rows)
    assert results["best_value"] == pytest.approx(min(r["err"] for r in rows))
    assert set(results["best_params"]) == {"train.lambda_cyc", "data.latent_divisor", "train.fake_buffer_size"}


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes(preset):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"+experiment={preset}"], return_hydra_config=True)
        both = compose("train", overrides=[f"+experiment=[grid,{preset}]", "train.epochs=2"], return_hydra_config=True)
    sweeper, launcher = cfg.hydra.sweeper._target_, cfg.hydra.launcher._target_
    expected = {
        "optuna": ("OptunaSweeper", "BasicLauncher"),
        "joblib": ("BasicSweeper", "JoblibLauncher"),
        "slurm": ("BasicSweeper", "SlurmLauncher"),
    }.get(preset, ("BasicSweeper", "BasicLauncher"))
    assert (sweeper.rsplit(".", 1)[-1], launcher.rsplit(".", 1)[-1]) == expected
    assert cfg.train.epochs >= 1 and both.train.epochs == 2  # the command line wins over a preset
    if preset in ("grid", "optuna"):
        assert set(cfg.hydra.sweeper.params) == {"train.lambda_cyc", "data.latent_divisor", "train.fake_buffer_size"}
    if preset == "optuna":
        assert cfg.hydra.sweeper.direction == "minimize" and cfg.hydra.sweeper.sampler.seed == 0
        assert cfg.hydra.sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    if preset == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min > 0


def test_experiment_group_is_the_presets_folder():
    assert (CONF / "experiment").resolve() == (REPO / "experiments").resolve()
    for preset in PRESETS:
        assert (REPO / "experiments" / f"{preset}.yaml").read_text().startswith("# @package _global_")
