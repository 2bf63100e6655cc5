"""Compile the training step in the background, so that the first step does not wait for the compiler.

``torch.compile`` of the step takes one to two minutes on a machine that has not compiled the model before
(resnet9 on an H200: 100 s before the first step), and seconds once torch's on-disk caches (the FX graph
and AOTAutograd caches, on by default, under ``TORCHINDUCTOR_CACHE_DIR``) hold its kernels. So with
``train.compile=auto`` on one CUDA device a run starts eager at once, and a child process
(``python -m lcgan.warmup``: the run's own config piped in, never read from a file) builds the same step on
random latents of the same shape and compiles it, which fills the caches. When the child is done, the run
compiles its step, now from the caches, and goes on compiled. A run shorter than the compile never waits
for it; the next run on the machine starts compiled.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


class BackgroundCompile:
    """The warm-up child of one run: :meth:`poll` switches ``step`` to compiled graphs once it is done."""

    def __init__(self, step, cfg: DictConfig, shape: tuple[int, int, int], flip: bool, log: Path,
                 command: list[str] | None = None) -> None:
        self.step, self.log, self.t0 = step, log, time.perf_counter()
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(log, "w")  # noqa: SIM115 (the child writes to it until poll/close closes it)
        cmd = command or [sys.executable, "-m", "lcgan.warmup", "--shape", ",".join(map(str, shape)), *(["--flip"] if flip else [])]
        self.proc: subprocess.Popen | None = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=self._out, stderr=subprocess.STDOUT, text=True)
        # what the step is built from, resolved here (the child has no Hydra run around it)
        try:
            self.proc.stdin.write(OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, ["device", "model", "train", "optim"]), resolve=True))
            self.proc.stdin.close()
        except BrokenPipeError:  # the child died at start: poll() reports its exit code and the run stays eager
            pass

    def poll(self) -> str | None:
        """None while the child runs (or after it ended); once, when it ends, what happened."""
        if self.proc is None or self.proc.poll() is None:
            return None
        rc, self.proc = self.proc.returncode, None
        self._out.close()
        if rc != 0:
            return f"compiling the step in the background failed (exit {rc}, see {self.log}); training goes on eager"
        self.step.compile_now()
        return f"compiled step ready after {time.perf_counter() - self.t0:.0f} s of eager training (cached for the next run)"

    def __enter__(self) -> BackgroundCompile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop a child still compiling (the run ended first): nothing is left running."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self._out.close()
