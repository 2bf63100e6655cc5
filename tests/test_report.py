"""The sweep report on hand-made job folders: statuses, seed aggregation, eval summaries, files."""
from __future__ import annotations

import csv
import json
import time

import pytest
from PIL import Image

from lcgan.report import main
from lcgan.sweep_report import error_line, write_report

TRACEBACK = """Traceback (most recent call last):
  File "/work/main/lcgan/train.py", line 58, in train
    config.check(cfg)
lcgan.config.ConfigError: invalid config (fix on the command line, e.g. key=value):
  data.latent_divisor=0: must be a number > 0
"""


def make_job(root, num, overrides, errs=(), epochs=2, error=None, eval_summary=None):
    """A job folder as Hydra and train() leave it: .hydra/, logs/train_log.jsonl, error.txt, eval/."""
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text(f"seed: 0\nout_dir: ${{hydra:runtime.output_dir}}\ntrain:\n  epochs: {epochs}\n")
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if errs:
        (job / "logs").mkdir()
        lines = [{"epoch": i + 1, "loss_G": 2.0, "loss_D": 0.5, "loss_cyc": 0.3, "loss_id": 0.1, "err": e, "err_G": e, "err_F": e,
                  "base_mean_shift_G": 0.4, "base_mean_shift_F": 0.4, "base_moment_match_G": 0.5, "base_moment_match_F": 0.5,
                  "beats_baselines": e < 0.4} for i, e in enumerate(errs)]
        (job / "logs" / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if error:
        time.sleep(0.01)  # error.txt newer than the log: this attempt failed
        (job / "error.txt").write_text(error)
    if eval_summary:
        (job / "eval" / "last").mkdir(parents=True)
        (job / "eval" / "last" / "summary.json").write_text(json.dumps(eval_summary))
    return job


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun"
    jobs = [  # lambda_cyc x seed, plus one failed and one cut short
        ("train.lambda_cyc=5", "seed=0", [0.9, 0.5]), ("train.lambda_cyc=5", "seed=1", [0.9, 0.3]),
        ("train.lambda_cyc=10", "seed=0", [0.9, 0.2]), ("train.lambda_cyc=10", "seed=1", [0.9, 0.4]),
    ]
    for i, (lam, seed, errs) in enumerate(jobs):
        make_job(root, i, ["device=cpu", lam, seed], errs, eval_summary={"fid": 40.0 + i, "clip": {"score": 0.3}} if i == 2 else None)
    make_job(root, 4, ["device=cpu", "train.lambda_cyc=20", "seed=0"], [0.9], error=TRACEBACK)
    make_job(root, 5, ["device=cpu", "train.lambda_cyc=20", "seed=1"], [0.9])  # 1 of 2 epochs: killed or running
    evaluate_summary = {"complete": True, "image_size": 256, "counts": {"A": {"evaluated": 8}},
                        "directions": {"A2B": {"n_images": 8, "model": {"fid": 40.0, "lpips": 0.3}, "mean_shift": {"fid": 50.0},
                                               "beats": {"mean_shift": True}}}}
    (root / "3" / "eval").mkdir()
    (root / "3" / "eval" / "summary.json").write_text(json.dumps(evaluate_summary))
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_report_rows_statuses_and_order(sweep, capsys):
    rows = write_report(sweep, top=3)
    assert [(r["job"], r["status"]) for r in rows] == [
        ("2", "completed"), ("1", "completed"), ("3", "completed"), ("0", "completed"), ("5", "incomplete"), ("4", "failed")]
    with open(sweep / "report.csv") as f:
        table = {r["job"]: r for r in csv.DictReader(f)}
    assert list(next(iter(table.values())))[:5] == ["job", "status", "train.lambda_cyc", "seed", "epochs"], "device is not swept"
    assert table["2"]["eval/fid"] == "42.0" and table["2"]["eval/clip/score"] == "0.3" and table["0"]["eval/fid"] == ""
    assert table["3"]["eval/A2B/model/fid"] == "40.0" and table["3"]["eval/A2B/mean_shift/fid"] == "50.0"
    assert not [c for c in table["3"] if c in ("eval/image_size", "eval/complete", "eval/counts/A/evaluated")]
    assert table["2"]["beats_baselines"] == "True" and table["0"]["beats_baselines"] == "False"
    assert table["2"]["base_mean_shift"] == "0.4" and table["5"]["epochs"] == "1/2"
    assert table["4"]["error"] == ("ConfigError: invalid config (fix on the command line, e.g. key=value): "
                                   "data.latent_divisor=0: must be a number > 0")
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("2 ") and "job 4 failed: ConfigError" in out


def test_report_aggregates_seeds_and_draws(sweep):
    write_report(sweep, quiet=True)
    md = (sweep / "report.md").read_text()
    assert "6 jobs: 4 completed, 1 failed, 1 incomplete" in md
    # lambda_cyc=5: err 0.5 and 0.3 -> 0.4 +- 0.1414; lambda_cyc=10: 0.2 and 0.4 -> 0.3 +- 0.1414
    assert "| 10 | 2 | 0.3 | 0.1414 |" in md and "| 5 | 2 | 0.4 | 0.1414 |" in md
    img = Image.open(sweep / "report.png")
    assert img.width >= 300 and img.height >= 300
    assert not list(sweep.glob(".report*.tmp")), "atomic writes leave no temporaries"


def test_stale_error_is_from_an_attempt_resumed_since(tmp_path):
    job = make_job(tmp_path, 0, ["train.lambda_cyc=5"], [0.5])
    (job / "error.txt").write_text(TRACEBACK)
    time.sleep(0.01)
    (job / "logs" / "train_log.jsonl").write_text(json.dumps({"epoch": 2, "loss_G": 1.0, "err": 0.3}) + "\n")
    [row] = write_report(tmp_path, quiet=True)
    assert row["status"] == "completed" and row["error"] == ""


def test_report_cli_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no job folders"):
        main([str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        main([str(tmp_path / "missing")])


def test_error_line_plain_message():
    assert error_line("RuntimeError: CUDA out of memory\n") == "RuntimeError: CUDA out of memory"


def test_report_ranks_a_validation_split_sweep_by_val_swd(tmp_path):
    # jobs on real latents with data.val_fraction > 0 log val_swd, no err: train() returned val_swd, and so the
    # report ranks by it (it ranked by loss_cyc, the opposite order here)
    root = tmp_path / "multirun"
    for i, (swd, cyc) in enumerate([(0.9, 0.1), (0.5, 0.3), (0.7, 0.2)]):
        job = root / str(i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text("seed: 0\ntrain:\n  epochs: 1\n")
        (job / ".hydra" / "overrides.yaml").write_text(f"- train.lambda_cyc={i + 1}\n")
        (job / "logs").mkdir()
        row = {"epoch": 1, "loss_G": 2.0, "loss_D": 0.5, "loss_cyc": cyc, "loss_id": 0.0, "val_swd": swd, "val_metric": swd}
        (job / "logs" / "train_log.jsonl").write_text(json.dumps(row) + "\n")
    rows = write_report(root, quiet=True)
    assert [r["job"] for r in rows] == ["1", "2", "0"] and rows[0]["val_swd"] == 0.5
    assert "val_swd" in (root / "report.md").read_text()
