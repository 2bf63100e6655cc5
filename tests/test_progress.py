"""What a run shows on the console and leaves beside it: throughput, the run's ETA, the closing
paragraph and logs/curves.png."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lcgan.curves import plot_curves, read_log
from lcgan.progress import RunClock, closing_note, fmt_duration, fmt_rate, rate
from lcgan.train import train
from tests.conftest import TINY, TINY_SYNTHETIC

ROOT = Path(__file__).resolve().parents[1]


def test_throughput_of_a_slow_run_is_never_zero():
    assert fmt_rate(0.00123) == "0.00123"
    assert fmt_rate(0.4) == "0.4"
    assert fmt_rate(12.34) == "12.3"
    assert fmt_rate(1234.5) == "1234"  # no exponent for fast runs
    assert fmt_rate(None) == "?"
    assert rate(8, 1e-6) is None, "a window too short to time gives no rate, not a huge one"
    assert rate(8, 2.0) == 4.0


def test_run_eta_leaves_out_the_warm_up_epoch():
    clock = RunClock(total_epochs=10)
    assert clock.eta(0) is None
    clock.epoch_done(30.0)  # warm-up: compilation, caches
    assert clock.eta(1) == 9 * 30.0  # the only measurement so far
    clock.epoch_done(2.0)
    clock.epoch_done(1.0, fraction=0.5)  # half an epoch after a mid-epoch resume: 2 s for a whole one
    assert clock.eta(3) == 7 * 2.0
    assert fmt_duration(3725) == "1:02:05"


def test_run_prints_eta_and_closing_note_and_draws_curves(tiny_cfg, tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_cfg())
    text = capsys.readouterr().out
    assert "run ETA 0:00:0" in text  # a tiny run: seconds
    assert " 0 pairs/s" not in text
    note = text.strip().splitlines()[-1]
    rows = read_log(out / "logs" / "train_log.jsonl")
    best = min(rows, key=lambda r: r["err"])
    assert f"Best epoch {best['epoch']}/2: err {best['err']:.4g}" in note
    assert "mean-shift" in note and "patch-ot" in note  # the closed-form baselines it compares with
    assert f"python -m lcgan.evaluate checkpoint={out / 'model' / 'best.pt'} eval.testA_dir=" in note
    assert f"train.resume=true hydra.run.dir={out}" in note
    for part in ("model", "logs", "vis", "curves.png"):
        assert part in note
    img = np.asarray(Image.open(out / "logs" / "curves.png").convert("RGB"))
    assert img.shape == (300, 960, 3)
    assert img.std() > 5, "lines and text, not a blank picture"
    colours = {tuple(c) for c in img.reshape(-1, 3)[::7]}
    assert len(colours) > 8, "losses, metric and dashed baselines in their own colours"


def test_curves_of_a_validation_split_dash_its_baselines():
    rows = [{"epoch": e, "loss_G": 2.0 / e, "loss_D": 1.0, "loss_cyc": 0.5 / e, "loss_id": 0.0, "val_swd": 0.3 / e,
             **{f"base_{n}_val_swd": 0.2 for n in ("mean_shift", "moment_match", "gaussian_ot", "patch_ot")}} for e in (1, 2, 3)]
    img = np.asarray(plot_curves(rows))
    right = img[:, 480:]
    assert right.std() > 5
    assert np.asarray(plot_curves([])).std() > 0  # says so instead of failing
    assert "lower is better" not in closing_note([], Path("x"), 2)


@pytest.mark.slow
def test_cli_closing_note_gives_a_resume_command_that_runs(tmp_path):
    # the command printed by a real CLI run, run as printed (with more epochs): it continues the run
    out = tmp_path / "cli"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [*TINY, *TINY_SYNTHETIC, "train.epochs=1", "train.vis_every=0"]
    first = subprocess.run([sys.executable, "-m", "lcgan.train", *args, f"hydra.run.dir={out}"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    note = first.stdout.strip().splitlines()[-1]
    command = note.split("Train longer: ", 1)[1]
    assert command.startswith("python -m lcgan.train ") and "train.batch_size=8" in command
    argv = shlex.split(command.replace("train.epochs=<more than 1>", "train.epochs=2"))
    second = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert [r["epoch"] for r in read_log(out / "logs" / "train_log.jsonl")] == [1, 2]
    assert (out / "logs" / "curves.png").is_file()


def test_curves_and_sweep_columns_show_an_extra_loss_only_where_a_run_has_it():
    from lcgan.sweep_report import columns

    rows = [{"epoch": e, "loss_G": 2.0 / e, "loss_D": 1.0, "loss_cyc": 0.5 / e, "loss_id": 0.0, "loss_swd": 0.0, "loss_anchor": 0.1 * e,
             "err": 0.3 / e} for e in (1, 2, 3)]
    off = [{**r, "loss_anchor": 0.0} for r in rows]
    left = lambda rs: np.asarray(plot_curves(rs))[:, :480]  # noqa: E731  the losses' panel
    assert (left(rows) != left(off)).any(), "the anchor loss gets its own line"
    assert np.array_equal(np.asarray(plot_curves(off)), np.asarray(plot_curves([{k: v for k, v in r.items() if k not in
                                                                                ("loss_swd", "loss_anchor")} for r in off])))
    cols = columns([{"job": "0", "status": "completed", **rows[-1]}], [], "err")
    assert "loss_anchor" in cols and "loss_swd" not in cols
