"""Data-parallel training with two real CPU processes (torchrun, gloo), as on a multi-GPU machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from lcgan import checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = ["device=cpu", "train.batch_size=8", "data.n_a=64", "data.n_b=48", "data.n_eval=8", "model.generator.ngf=8",
        "model.generator.n_blocks=1", "model.discriminator.ndf=8", "train.vis_every=0", "train.log_every=2"]


def torchrun(*overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lcgan.train", *TINY, *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


# torch's gloo transport, rarely (one CI run in well over a hundred; 130 local runs under load never), aborts a worker
# in C++ as the process group is torn down, after the run has finished and written everything. gloo is the CPU
# backend these tests use (GPUs use NCCL). Such an exit is accepted only with that exact signature; the assertions
# on what the run wrote below still decide the test.
GLOO_TEARDOWN_ABORT = "terminate called without an active exception"


def finished(proc: subprocess.CompletedProcess) -> bool:
    if proc.returncode == 0:
        return True
    if GLOO_TEARDOWN_ABORT in proc.stderr and "(SIGABRT)" in proc.stderr:
        warnings.warn(f"a torchrun worker aborted in gloo's teardown: {GLOO_TEARDOWN_ABORT}", stacklevel=2)
        return True
    return False


@pytest.mark.slow
def test_two_process_training_and_resume(tmp_path):
    out = tmp_path / "run"
    first = torchrun("train.epochs=2", f"hydra.run.dir={out}")
    assert finished(first), first.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    # rank 0 alone writes: one line per epoch; each rank trained on half of the 64/48 latents
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["world_size"] == 2 and r["ddp_in_sync"] is True and r["steps"] == 32 // 8 for r in rows)
    assert checkpoint.load(out / "model" / "last.pt")["epoch"] == 2
    resumed = torchrun("train.epochs=3", "train.resume=true", f"hydra.run.dir={out}")
    assert finished(resumed), resumed.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["ddp_in_sync"] is True
    assert "resumed from" in resumed.stdout
