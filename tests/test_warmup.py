"""Background compilation of the training step (lcgan.compile_cache, lcgan.warmup): the run starts eager, switches when the child is done."""
from __future__ import annotations

import sys
import time

import pytest
import torch

from lcgan.compile_cache import BackgroundCompile
from lcgan.warmup import warm
from tests.conftest import compose_cfg


class FakeStep:
    compiled = False

    def compile_now(self) -> None:
        self.compiled = True


def wait(bg: BackgroundCompile, timeout: float = 60) -> str:
    end = time.time() + timeout
    while time.time() < end:
        if (msg := bg.poll()) is not None:
            return msg
        time.sleep(0.05)
    raise AssertionError("the child never ended")


def test_the_step_switches_once_the_child_is_done_and_it_gets_the_runs_config(tmp_path):
    cfg = compose_cfg("train", ["train.batch_size=3"])
    # the child reads the run's config on stdin (never from a file) and reports what it got
    child = [sys.executable, "-c", "import sys; from omegaconf import OmegaConf; print('batch', OmegaConf.create(sys.stdin.read()).train.batch_size)"]
    step = FakeStep()
    bg = BackgroundCompile(step, cfg, (4, 8, 8), False, tmp_path / "logs" / "compile.log", command=child)
    assert not step.compiled
    msg = wait(bg)
    assert "compiled step ready" in msg and step.compiled
    assert (tmp_path / "logs" / "compile.log").read_text().strip() == "batch 3"
    assert bg.poll() is None, "one message, once"


def test_a_failed_child_leaves_the_run_eager_and_says_where_to_look(tmp_path):
    step = FakeStep()
    bg = BackgroundCompile(step, compose_cfg("train", []), (4, 8, 8), False, tmp_path / "compile.log",
                           command=[sys.executable, "-c", "import sys; sys.stdin.read(); sys.exit(3)"])
    msg = wait(bg)
    assert "failed (exit 3" in msg and str(tmp_path / "compile.log") in msg and not step.compiled


def test_close_stops_a_child_still_compiling(tmp_path):
    bg = BackgroundCompile(FakeStep(), compose_cfg("train", []), (4, 8, 8), False, tmp_path / "compile.log",
                           command=[sys.executable, "-c", "import time; time.sleep(60)"])
    proc = bg.proc
    bg.close()
    assert proc.poll() is not None and bg.poll() is None


@pytest.mark.slow
def test_warm_compiles_the_real_step_on_random_latents():
    # the real child's work on CPU (inductor's C++ backend): the same step lcgan.train builds, compiled
    cfg = compose_cfg("train", ["device=cpu", "model.generator.ngf=8", "model.generator.n_blocks=1", "model.discriminator.ndf=8",
                                "train.batch_size=2", "train.amp=none"])
    torch.manual_seed(0)
    assert warm(cfg, (4, 8, 8), flip=True, steps=2) > 0


def test_auto_compiles_in_the_background_only_on_one_cuda_device():
    from lcgan.build import background_compile

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert background_compile("auto", cuda, 1)
    assert not background_compile("auto", cuda, 2), "several ranks compile at once: the same graphs from the first step"
    assert not background_compile("auto", cpu, 1) and not background_compile(True, cuda, 1) and not background_compile(False, cuda, 1)
    assert not background_compile("auto", cuda, 1, decoded=True), "the child builds no VAE: it cannot warm up a decoded step"
