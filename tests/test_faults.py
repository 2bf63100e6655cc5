"""The fault suite (issue 7): real signals to a real training process, SIGKILL at random moments and
mid-write, NaN losses, failing disks, malicious pickles, bad latents, bad images and bad configs.

Each test checks that the failure is reported clearly and that nothing already saved is lost.
Subprocesses run single-threaded (``OMP_NUM_THREADS=1``): on a few shared cores torch's thread pool
thrashes, and the in-process reference runs use one thread too, so results compare bit for bit.
"""
from __future__ import annotations

import errno
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException, InstantiationException
from PIL import Image

from lcgan import checkpoint
from lcgan.build import LOSS_KEYS
from lcgan.checkpoint import JsonlLog
from lcgan.config import ConfigError
from lcgan.data import latent_folders
from lcgan.encode import encode, read_manifest
from lcgan.fid import folder_features
from lcgan.images import list_images, read_batch, read_rgb
from lcgan.latent_files import load_latent_file
from lcgan.train import train
from tests.conftest import compose_cfg
from tests.test_encode import encode_cfg
from tests.test_train import read_log, write_latents

ROOT = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SMALL = ["device=cpu", "train.batch_size=8", "model.generator.ngf=8", "model.generator.n_blocks=1",
         "model.discriminator.ndf=8", "train.log_every=1", "train.vis_every=0", "train.fake_buffer_size=4"]
SYN = [*SMALL, "data.n_eval=8", "data.size=16"]  # the synthetic default's keys; data=latents has others
PREEMPT = [*SYN, "train.epochs=2", "data.n_a=128", "data.n_b=128"]  # 16 steps per epoch: time to land mid-epoch
CRASH = [*SYN, "train.epochs=4", "data.n_a=32", "data.n_b=32", "train.ckpt_every=1"]  # 4 steps per epoch
MID_EPOCH = r"Epoch {epoch}/\d+[^\r\n]*\| +\d+/\d+ [^\r\n]*G +-?\d"  # tqdm's postfix: handlers are set, steps run
NETS = ("G", "F", "D_A", "D_B")


@pytest.fixture(autouse=True)
def one_thread():
    """Same thread count as the subprocesses, so in-process reference runs match them exactly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_inprocess(out: Path, overrides: list[str]) -> float:
    return train(compose_cfg("train", [*overrides, f"out_dir={out}"]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs, computed once per override list: ``reference(PREEMPT) -> out folder``."""
    done: dict[tuple, Path] = {}

    def get(overrides: list[str]) -> Path:
        key = tuple(overrides)
        if key not in done:
            torch.set_num_threads(1)
            done[key] = tmp_path_factory.mktemp("reference") / "run"
            run_inprocess(done[key], overrides)
        return done[key]

    return get


def assert_same_run(out: Path, ref: Path) -> None:
    """Identical per-epoch losses in the JSONL log and identical final weights."""
    got, want = read_log(out), read_log(ref)
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
    for g, w in zip(got, want):
        assert {k: g[k] for k in LOSS_KEYS} == {k: w[k] for k in LOSS_KEYS}, f"epoch {g['epoch']}"
    a, b = checkpoint.load(out / "model" / "last.pt"), checkpoint.load(ref / "model" / "last.pt")
    for net in NETS:
        for k, v in b[net].items():
            assert torch.equal(a[net][k], v), f"{net}.{k}"


# ---------------------------------------------------------------------------- training subprocesses


class Training:
    """``python -m lcgan.train`` in a subprocess, stdout and stderr in files that the test polls."""

    def __init__(self, out: Path, overrides: list[str], name: str = "train") -> None:
        self.stdout, self.stderr = out.parent / f"{name}.stdout", out.parent / f"{name}.stderr"
        cmd = [sys.executable, "-m", "lcgan.train", *overrides, f"hydra.run.dir={out}"]
        with open(self.stdout, "w") as so, open(self.stderr, "w") as se:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=so, stderr=se)

    def out(self) -> str:
        return self.stdout.read_text(errors="replace")

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def tails(self) -> str:
        return f"--- stdout\n{self.out()[-2000:]}\n--- stderr\n{self.err()[-2000:]}"

    def wait_for(self, pattern: str, stream: str = "stderr", timeout: float = 180) -> re.Match:
        """Poll until ``pattern`` shows up; fail if the process ends first or the time runs out."""
        read = self.err if stream == "stderr" else self.out
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ended = self.proc.poll() is not None
            if m := re.search(pattern, read()):
                return m
            if ended:
                pytest.fail(f"training exited ({self.proc.returncode}) before {pattern!r}\n{self.tails()}")
            time.sleep(0.01)
        pytest.fail(f"no {pattern!r} after {timeout}s\n{self.tails()}")

    def wait(self, timeout: float = 180) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"training still running after {timeout}s\n{self.tails()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@contextmanager
def training(out: Path, overrides: list[str], name: str = "train"):
    run = Training(out, overrides, name)
    try:
        yield run
    finally:
        run.kill()  # never leave a training process behind


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_epoch_saves_and_resume_equals_uninterrupted(tmp_path, reference, sig):
    out = tmp_path / "run"
    with training(out, PREEMPT) as run:
        run.wait_for(MID_EPOCH.format(epoch=1))
        run.proc.send_signal(sig)
        assert run.wait() == 128 + sig, run.tails()
    stdout = run.out()
    assert f"{sig.name} received: saving a checkpoint" in stdout
    m = re.search(r"stopped at epoch 1, step (\d+)/16; saved (.+last\.pt)", stdout)
    assert m and Path(m[2]) == out / "model" / "last.pt", stdout
    ck = checkpoint.load(out / "model" / "last.pt")  # weights_only
    assert ck["epoch"] == 0 and ck["step"] == int(m[1]) and 0 < ck["step"] < 16  # mid-epoch, where it stopped
    assert ck["metrics"] is None and not list((out / "model").glob("epoch_*.pt"))
    assert not (out / "logs" / "train_log.jsonl").exists()  # no epoch finished, none logged
    # the run remembers its overrides (.hydra/overrides.yaml): the printed command needs none of them
    resume_args = re.search(r"Resume with: python -m lcgan.train (.+)", stdout)[1].split()
    assert resume_args == ["train.resume=true", f"hydra.run.dir={out}"]

    if sig == signal.SIGTERM:  # resume with the printed command, as a user would
        with training(out, [resume_args[0]], name="resume") as run:
            assert run.wait() == 0, run.tails()
        assert f"resumed from {out / 'model' / 'last.pt'}: epoch 0 done, step {ck['step']} of the next" in run.out()
    else:  # and in-process, as tests and sweepers call train()
        run_inprocess(out, [*PREEMPT, "train.resume=true"])
    assert_same_run(out, reference(PREEMPT))


@pytest.mark.slow
def test_second_signal_exits_at_once_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    overrides = [*SYN, "train.epochs=3", "data.n_a=64", "data.n_b=64"]
    with training(out, overrides) as run:
        run.wait_for(r"Epoch 1/3 \| G", stream="stdout")  # epoch 1 done: last.pt holds it
        run.wait_for(MID_EPOCH.format(epoch=2))
        before = (out / "model" / "last.pt").read_bytes()
        # two different signals back to back: the same one twice may be merged into one delivery
        run.proc.send_signal(signal.SIGINT)
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) in (128 + signal.SIGINT, 128 + signal.SIGTERM), run.tails()
    assert "received: saving a checkpoint" in run.out()
    assert "stopped at epoch" not in run.out() and "Resume with" not in run.out()  # did not save: exited at once
    assert (out / "model" / "last.pt").read_bytes() == before
    ck = checkpoint.load(out / "model" / "last.pt")
    assert (ck["epoch"], ck["step"]) == (1, 0)
    assert not list((out / "model").glob(".*.tmp"))


def check_consistent(out: Path, epochs: int, seed: int) -> int:
    """After a SIGKILL: last.pt loads, the log's lines all parse, each epoch logged once, in order."""
    last = out / "model" / "last.pt"
    done = checkpoint.load(last)["epoch"] if last.exists() else 0
    log = out / "logs" / "train_log.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    logged = [json.loads(line)["epoch"] for line in lines]  # a cut line would raise here
    assert logged == list(range(1, len(logged) + 1)), f"seed {seed}: {logged}"
    # the log may lag the checkpoint by the one epoch a kill interrupted; resume writes that line
    assert done - 1 <= len(logged) <= done <= epochs, f"seed {seed}: checkpoint epoch {done}, log {logged}"
    return done


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path, reference):
    seed = int(os.environ.get("LCGAN_FAULT_SEED", random.randrange(10**6)))  # printed on failure: rerun with it
    rng = random.Random(seed)
    out, kills = tmp_path / "run", []
    for attempt in range(2):
        done = check_consistent(out, 4, seed)
        if done >= 3:  # the last epoch is left to run uninterrupted
            break
        with training(out, [*CRASH, *(["train.resume=true"] if done else [])], name=f"attempt{attempt}") as run:
            # a random moment while it trains: mid-step, mid-save of epoch_XXXX.pt or last.pt, mid-log line
            run.wait_for(MID_EPOCH.format(epoch=rng.randint(done + 1, 3)))
            time.sleep(rng.uniform(0.0, 0.6))
            run.proc.send_signal(signal.SIGKILL)
            assert run.wait() == -signal.SIGKILL, f"seed {seed}: finished before the kill\n{run.tails()}"
        kills.append(check_consistent(out, 4, seed))
    with training(out, [*CRASH, "train.resume=true"] if kills[-1] else CRASH, "final") as run:
        assert run.wait() == 0, f"seed {seed}, epochs done at each kill {kills}\n{run.tails()}"
    assert check_consistent(out, 4, seed) == 4
    assert_same_run(out, reference(CRASH))


def test_sigkill_during_checkpoint_write_keeps_the_previous_file(tmp_path):
    """Deterministic: the child is killed after writing the new checkpoint's bytes, before the rename."""
    path = tmp_path / "model" / "last.pt"
    checkpoint.save({"epoch": 1, "w": torch.zeros(1000)}, path)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: block inside fsync of the new file, as a slow disk would
        try:
            os.close(read_end)

            def stuck_fsync(fd: int) -> None:
                os.write(write_end, b"x")
                time.sleep(60)

            checkpoint.os.fsync = stuck_fsync
            checkpoint.save({"epoch": 2, "w": torch.ones(1000)}, path)
        finally:
            os._exit(1)
    os.close(write_end)
    try:
        assert os.read(read_end, 1) == b"x"  # the child is mid-write
        os.kill(pid, signal.SIGKILL)
    finally:  # killing twice is harmless; a child left running is not
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_end)
    ck = checkpoint.load(path)
    assert ck["epoch"] == 1 and torch.equal(ck["w"], torch.zeros(1000))
    stale = list(path.parent.glob(".last.pt.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size > 1000  # the cut write: a full-size orphan...
    assert checkpoint.remove_stale_tmp(path.parent) == stale and not stale[0].exists()  # ...removed when a run starts


def test_log_is_appended_never_rewritten_and_keyed_by_epoch(tmp_path):
    path = tmp_path / "logs" / "train_log.jsonl"
    path.parent.mkdir()
    good = "".join(json.dumps({"epoch": e, "loss_G": 1.0}) + "\n" for e in (1, 2))
    path.write_text(good + '{"epoch": 3, "loss_')  # a line cut by a crash (full disk, power loss)
    log = JsonlLog(path)
    log.append({"epoch": 2, "loss_G": 9.0})  # a resumed run replaying epoch 2: not written twice
    log.append({"epoch": 3, "loss_G": 3.0})
    text = path.read_text()
    assert text.startswith(good + '{"epoch": 3, "loss_\n')  # old bytes untouched, the cut line closed
    assert [r["epoch"] for r in log.read()] == [1, 2, 3] and log.read()[1]["loss_G"] == 1.0
    assert text.endswith('{"epoch": 3, "loss_G": 3.0}\n')


# ---------------------------------------------------------------------------- non-finite losses


def poison_at(monkeypatch, call: int, then_signal: bool = False) -> None:
    """From step ``call`` on, G's first weights are NaN: the real step computes NaN losses."""
    import lcgan.build

    class Poisoned(lcgan.build.CycleGANStep):
        calls = 0

        def __call__(self, real_a, real_b):
            Poisoned.calls += 1
            if Poisoned.calls == call:
                with torch.no_grad():
                    next(self.gan.g_ab.parameters()).fill_(float("nan"))
                if then_signal:  # a preemption in the same log window as the NaN
                    os.kill(os.getpid(), signal.SIGTERM)
            return super().__call__(real_a, real_b)

    monkeypatch.setattr(lcgan.build, "CycleGANStep", Poisoned)


# 4 steps per epoch; a full epoch file every epoch, to compare last.pt with
NAN_RUN = [*SYN, "train.epochs=3", "data.n_a=32", "data.n_b=32", "train.log_every=2", "train.ckpt_every=1", "train.epoch_files=full"]


def assert_last_good_is_epoch_1(out: Path) -> None:
    last = checkpoint.load(out / "model" / "last.pt")
    assert last["epoch"] == 1 and last["step"] == 0
    first = checkpoint.load(out / "model" / "epoch_0001.pt")
    for net in NETS:
        for k, v in last[net].items():
            assert torch.isfinite(v.float()).all() and torch.equal(v, first[net][k]), f"{net}.{k}"
    assert sorted(p.name for p in (out / "model").iterdir()) == ["best.pt", "epoch_0001.pt", "last.pt"]
    assert [r["epoch"] for r in read_log(out)] == [1]


def test_nan_loss_stops_at_the_next_check_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    poison_at(monkeypatch, call=6)  # epoch 2, its second step; checked every 2 steps
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError) as e:
        run_inprocess(out, NAN_RUN)
    msg = str(e.value)
    assert re.search(r"non-finite loss_\w+ \(nan\) between steps 5 and 6 \(epoch 2\)", msg), msg
    assert str(out / "model" / "last.pt") in msg and "last good checkpoint" in msg
    assert_last_good_is_epoch_1(out)


def test_diverging_losses_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch):
    """Finite but exploding losses (issue 13: optim.lr=1e6 gave 1e15 and the run exited 0, ruined weights in last.pt)."""
    with pytest.raises(FloatingPointError, match=r"diverging loss_\w+ \([\d.]+e\+\d+ per step, > 1e\+06\) between steps 1 and 2 "
                                                 r"\(epoch 1\); stopped without saving: no checkpoint was written yet"):
        run_inprocess(tmp_path / "lr", [*NAN_RUN, "optim.lr=1e6"])
    assert not (tmp_path / "lr" / "model").exists() or not list((tmp_path / "lr" / "model").glob("*.pt"))
    import lcgan.build

    class Exploding(lcgan.build.CycleGANStep):
        calls = 0

        def __call__(self, real_a, real_b):
            Exploding.calls += 1
            if Exploding.calls == 6:  # epoch 2, its second step: G's weights blow up, every value stays finite
                with torch.no_grad():
                    for p in self.gan.g_ab.parameters():
                        p.mul_(1e8)
            return super().__call__(real_a, real_b)

    monkeypatch.setattr(lcgan.build, "CycleGANStep", Exploding)
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"diverging loss_\w+ .* between steps 5 and 6 \(epoch 2\).*last.pt is the last good"):
        run_inprocess(out, NAN_RUN)
    assert_last_good_is_epoch_1(out)


def test_preemption_after_a_nan_does_not_overwrite_the_last_good_checkpoint(tmp_path, monkeypatch):
    poison_at(monkeypatch, call=5, then_signal=True)  # epoch 2, step 1; the window closes at step 2
    out = tmp_path / "run"
    with pytest.raises((FloatingPointError, SystemExit)):
        run_inprocess(out, NAN_RUN)
    assert_last_good_is_epoch_1(out)


# ---------------------------------------------------------------------------- failing disks


@pytest.mark.parametrize("fail", ["write", "fsync", "replace"])
def test_full_disk_names_the_path_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, fail):
    path = tmp_path / "model" / "last.pt"
    checkpoint.save({"epoch": 1, "w": torch.zeros(10)}, path)

    def enospc(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if fail == "write":  # the temporary file is opened with os.open and written through os.fdopen
        real_fdopen = os.fdopen
        monkeypatch.setattr(checkpoint.os, "fdopen", lambda fd, mode: _FailingWrites(real_fdopen(fd, mode)))
    else:
        monkeypatch.setattr(checkpoint.os, fail, enospc)
    with pytest.raises(OSError, match=f"cannot write {re.escape(str(path))}: No space left on device.*intact") as e:
        checkpoint.save({"epoch": 2, "w": torch.ones(10)}, path)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert checkpoint.load(path)["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left behind


class _FailingWrites:
    def __init__(self, f) -> None:
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()

    def write(self, data) -> None:
        self.f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_real_write_failures_as_root(tmp_path):
    """Kernel-enforced failures that root cannot bypass (chmod does not stop root)."""
    path = tmp_path / "model" / "last.pt"
    checkpoint.save({"epoch": 1, "w": torch.zeros(10)}, path)
    # a file size limit (RLIMIT_FSIZE: the kernel refuses to grow the file, EFBIG), in a forked child
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
            try:
                checkpoint.save({"epoch": 2, "w": torch.ones(1_000_000)}, path)
                os.write(write_end, b"saved")
            except OSError as e:
                os.write(write_end, str(e).encode()[:4000])
        finally:
            os._exit(0)
    os.close(write_end)
    message = os.read(read_end, 4096).decode()
    os.waitpid(pid, 0)
    os.close(read_end)
    assert message.startswith(f"[Errno {errno.EFBIG}] cannot write {path}: File too large"), message
    assert "previous file (if any) is intact" in message
    assert checkpoint.load(path)["epoch"] == 1 and [p.name for p in path.parent.iterdir()] == ["last.pt"]
    # an output folder whose parent is a regular file
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file")
    with pytest.raises(OSError, match=f"cannot write {re.escape(str(blocker))}/model/last.pt: .*folder exists"):
        checkpoint.save({"epoch": 1}, blocker / "model" / "last.pt")
    with pytest.raises(OSError, match=f"cannot write {re.escape(str(blocker))}/model"):
        checkpoint.check_writable(blocker / "model")
    with pytest.raises(OSError, match=f"cannot append to {re.escape(str(blocker))}/logs/train_log.jsonl"):
        JsonlLog(blocker / "logs" / "train_log.jsonl").append({"epoch": 1})
    checkpoint.check_writable(tmp_path / "fresh" / "model")  # creates the folder, leaves no probe behind
    assert list((tmp_path / "fresh" / "model").iterdir()) == []
    with pytest.raises(OSError, match="MiB free but the checkpoints need"):
        checkpoint.check_writable(tmp_path, need_bytes=2**62)


def test_checkpoints_are_readable_by_the_group_like_any_file(tmp_path):
    """mkstemp would make them 0600: a colleague could not load a shared checkpoint."""
    old = os.umask(0o022)
    try:
        checkpoint.save({"epoch": 1}, tmp_path / "last.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == 0o644


def test_full_disk_during_training_keeps_the_last_epoch(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_replace, saves = os.replace, []

    def replace(src, dst):
        saves.append(Path(dst).name)
        if Path(dst).name == "epoch_0002.pt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    with pytest.raises(OSError, match=f"cannot write {re.escape(str(out))}/model/epoch_0002.pt: No space left"):
        run_inprocess(out, [*SYN, "train.epochs=3", "data.n_a=16", "data.n_b=16", "train.ckpt_every=1"])
    assert checkpoint.load(out / "model" / "last.pt")["epoch"] == 1
    assert [r["epoch"] for r in read_log(out)] == [1]
    assert not list((out / "model").glob(".*.tmp"))


def test_unwritable_output_fails_before_the_first_epoch(tmp_path, monkeypatch):
    import lcgan.build

    def no_step(self, real_a, real_b):  # hours of an epoch must not be lost to a folder that can never be written
        raise AssertionError("a training step ran before the output folder was checked")

    monkeypatch.setattr(lcgan.build.CycleGANStep, "__call__", no_step)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file")
    with pytest.raises(OSError, match=f"cannot write {re.escape(str(blocker))}/run"):  # the run folder's lock, first
        run_inprocess(blocker / "run", [*SYN, "data.n_a=16", "data.n_b=16"])
    monkeypatch.undo()
    out = tmp_path / "run"
    run_inprocess(out, [*SYN, "train.epochs=1", "data.n_a=8", "data.n_b=8"])
    orphan = out / "model" / ".last.pt.123.0badc0de.tmp"  # what a SIGKILL mid-save leaves
    orphan.write_bytes(b"x" * 1000)
    run_inprocess(out, [*SYN, "train.epochs=2", "data.n_a=8", "data.n_b=8", "train.resume=true"])
    assert not orphan.exists()


# ---------------------------------------------------------------------------- untrusted files


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["top", "nested"])
def test_malicious_checkpoint_is_refused_without_running_it(tmp_path, where):
    marker = tmp_path / "pwned"
    good = tmp_path / "good" / "model" / "last.pt"
    run_inprocess(good.parents[1], [*SYN, "train.epochs=1", "data.n_a=8", "data.n_b=8"])
    if where == "top":
        obj = _Evil(marker)
    else:  # a real checkpoint with one object slipped into its config
        obj = checkpoint.load(good)
        obj["cfg"]["train"]["note"] = _Evil(marker)
    evil = tmp_path / "evil.pt"
    torch.save(obj, evil)
    with pytest.raises(ValueError, match="evil.pt could not be loaded as plain tensors.*refuses to unpickle"):
        checkpoint.load(evil)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="evil.pt could not be loaded"):
        run_inprocess(out, [*SYN, "train.epochs=2", "data.n_a=8", "data.n_b=8", "train.resume=true", f"train.resume_path={evil}"])
    assert not marker.exists()
    assert not (out / "model").exists() and not (out / "logs").exists()
    with pytest.raises(ValueError, match="last.pt could not be loaded"):  # a checkpoint cut in half
        half = tmp_path / "cut" / "last.pt"
        half.parent.mkdir()
        half.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        checkpoint.load(half)


# ---------------------------------------------------------------------------- bad latents


def test_enormous_latents_are_refused_without_allocating(tmp_path):
    huge = torch.zeros(1).expand(4, 65536, 65536)  # 16 G elements claimed, 4 bytes stored (stride 0)
    torch.save(huge, tmp_path / "huge.pt")
    assert (tmp_path / "huge.pt").stat().st_size < 10_000
    with pytest.raises(ValueError, match=r"huge.pt has shape \[4, 65536, 65536\], far larger than any VAE latent"):
        load_latent_file(tmp_path / "huge.pt")
    with open(tmp_path / "sparse.pt", "wb") as f:  # 8 GiB on paper, no blocks on disk: refused before reading
        f.truncate(8 * 2**30)
    with pytest.raises(ValueError, match=r"sparse.pt is 8.0 GiB, far larger than any VAE latent"):
        load_latent_file(tmp_path / "sparse.pt")


def deflated(obj, path: Path) -> Path:
    """``torch.save`` with every zip entry deflate-compressed: zeros shrink ~1000x, torch.load still reads it."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    return path


@pytest.mark.slow
def test_storage_larger_than_its_tensors_is_refused(tmp_path):
    """Issue 13: a 256 KB deflated .pt held a 256 MiB storage behind a 1 K-element latent and was accepted."""
    storage = torch.zeros(64 * 2**20)  # 256 MiB
    bomb = deflated(storage[:1024].view(4, 16, 16), tmp_path / "bomb.pt")
    assert bomb.stat().st_size < 300_000
    with pytest.raises(ValueError, match=r"bomb.pt unpacks to 256 MiB of tensors, far larger than any VAE latent; refused before loading"):
        load_latent_file(bomb)
    small = deflated(torch.zeros(8 * 2**20)[:1024].view(4, 16, 16), tmp_path / "view.pt")  # 32 MiB: loaded, then refused
    with pytest.raises(ValueError, match=r"latent file .*view.pt holds 32.0 MiB of tensor storage behind tensors of 0.004 MiB"):
        load_latent_file(small)
    ck = {"G": {"w": storage[:10]}, "cfg": {}}  # a checkpoint's tensor as a view of a large storage
    deflated(ck, tmp_path / "ck.pt")
    with pytest.raises(ValueError, match=r"checkpoint .*ck.pt holds 256.0 MiB of tensor storage behind tensors of 0.000 MiB"):
        checkpoint.load(tmp_path / "ck.pt")
    shared = torch.randn(4, 16, 16)  # tensors sharing one storage (tied weights) are fine
    checkpoint.save({"G": {"a": shared, "b": shared[0]}}, tmp_path / "tied.pt")
    assert torch.equal(checkpoint.load(tmp_path / "tied.pt")["G"]["b"], shared[0])


def test_links_fifos_and_folders_named_pt(tmp_path):
    a = write_latents(tmp_path / "A", 3)
    (a / "dangling.pt").symlink_to(tmp_path / "nowhere.pt")
    with pytest.raises(ValueError, match="dangling.pt is not a regular file"):  # was a FileNotFoundError naming no file
        load_latent_file(a / "dangling.pt")
    with pytest.raises(InstantiationException, match="dangling.pt is not a regular file"):  # as training reports it
        train(compose_cfg("train", [*SMALL, "data=latents", f"data.a_dir={a}", f"data.b_dir={a}", f"out_dir={tmp_path / 'r'}"]))
    os.mkfifo(tmp_path / "fifo.pt")  # torch.load would wait forever for a writer
    with pytest.raises(ValueError, match="fifo.pt is not a regular file"):
        load_latent_file(tmp_path / "fifo.pt")
    (a / "dangling.pt").unlink()
    (a / "folder.pt").mkdir()  # not a file: not listed
    assert len(latent_folders(str(a), str(a)).a) == 3  # data.max_files=0 and -1: tests/test_config.py


def test_a_link_to_an_enclosing_folder_is_refused(tmp_path):
    """Issue 13: A/up -> .. pulled domain B's latents into domain A silently."""
    a, b = write_latents(tmp_path / "A", 3), write_latents(tmp_path / "B", 3, seed=1)
    (a / "up").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ValueError, match=rf"data.a_dir='{re.escape(str(a))}': {re.escape(str(a / 'up'))} links to "
                                         rf"{re.escape(str(tmp_path.resolve()))}, a folder that contains data.a_dir itself"):
        latent_folders(str(a), str(b))
    (a / "up").unlink()
    (a / "more").symlink_to(write_latents(tmp_path / "elsewhere", 2, seed=2), target_is_directory=True)  # elsewhere: followed
    assert len(latent_folders(str(a), str(b)).a) == 5


def test_latents_of_another_vae_are_refused_before_training(tmp_path):
    a = write_latents(tmp_path / "A", 8, shape=(8, 16, 16))
    b = write_latents(tmp_path / "B", 8, shape=(8, 16, 16), seed=1)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="data has 8-channel latents but the VAE's latent space has 4 channels"):
        run_inprocess(out, [*SMALL, "data=latents", f"data.a_dir={a}", f"data.b_dir={b}"])
    assert not out.exists() or not any(out.iterdir())


# ---------------------------------------------------------------------------- bad images (encode)


def png_header_only(path: Path, width: int, height: int) -> None:
    """A 60-byte PNG that claims ``width x height`` pixels: what a decompression bomb looks like at open."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def test_encode_skips_and_counts_bombs_and_empty_files(tmp_path):
    """tests/test_encode.py covers truncated, text-as-jpg, CMYK, 16-bit, palette, grayscale and EXIF;
    here the real guard (PIL's own MAX_IMAGE_PIXELS, not a lowered one) on crafted headers."""
    src = tmp_path / "images"
    src.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(src / "ok.jpg")
    limit = Image.MAX_IMAGE_PIXELS
    png_header_only(src / "bomb.png", 100_000, 100_000)  # 10 G pixels: PIL raises at open
    png_header_only(src / "warn_bomb.png", 10_000, 10_000)  # 100 M pixels: PIL only warns; lcgan refuses
    assert limit < 10_000 * 10_000 < 2 * limit
    (src / "empty.png").write_bytes(b"")
    out = tmp_path / "latents"
    result = encode(encode_cfg("vae=approx", f"input_dir={src}", f"output_dir={out}", "image_size=32"))
    assert result["written"] == 1 and [p.name for p in out.glob("*.pt")] == ["ok.pt"]
    failed = {f["path"]: f["error"] for f in read_manifest(out)["failed"]}
    assert sorted(failed) == ["bomb.png", "empty.png", "warn_bomb.png"]
    assert "decompression bomb" in failed["bomb.png"] and "10000x10000 pixels" in failed["warn_bomb.png"]
    assert "not a readable image" in failed["empty.png"]
    assert read_manifest(out)["count"] == 1


class _FakeInception:
    """Enough of lcgan.metrics.Inception for folder_features: random (no cache), 8 zero features per image."""

    random, dim = True, 8

    def identity(self) -> str:
        return "fake"

    def __call__(self, x):
        return np.zeros((len(x), 8), np.float32)


@contextmanager
def fifo_watchdog(fifo: Path, after: float = 60):
    """Fails the test instead of hanging it: a reader blocked on ``fifo`` is released after ``after`` s and reported."""
    hung, done = [], threading.Event()

    def release() -> None:
        if done.wait(after):
            return
        while not done.is_set():  # a blocked open() for reading returns once a writer opens and closes
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                hung.append(True)
            except OSError:  # ENXIO: nobody reads it
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield hung
    finally:
        done.set()
        thread.join()


def test_encode_and_evaluate_readers_skip_fifos_and_count_them(tmp_path):
    """Issue 13: a FIFO named x.jpg hung encode and evaluate forever."""
    src = tmp_path / "images"
    src.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(src / "ok.jpg")
    os.mkfifo(src / "x.jpg")
    with fifo_watchdog(src / "x.jpg") as hung:
        result = encode(encode_cfg("vae=approx", f"input_dir={src}", f"output_dir={tmp_path / 'latents'}", "image_size=32"))
        ff = folder_features(src, _FakeInception(), 32)  # evaluate's FID reference reader (it hashes every file)
        x, ok, errors = read_batch(list_images(src), 32, 2)  # evaluate's image reader
    assert not hung, "a reader blocked on the FIFO"
    assert result["written"] == 1 and [f["path"] for f in result["failed"]] == ["x.jpg"]
    assert "not a regular file" in result["failed"][0]["error"]
    assert [p.name for p in ff["paths"]] == ["ok.jpg"] and "not a regular file" in ff["skipped"][0][1]
    assert [p.name for p in ok] == ["ok.jpg"] and "x.jpg: not a regular file" in errors[0][1]


def test_elongated_float_and_gif_images(tmp_path):
    """Issue 13: a 1x12000 PNG (129 bytes) took 3.8 GB and 29 s to resize; a float TIFF read all black; GIFs were ignored."""
    src = tmp_path / "images"
    src.mkdir()
    Image.new("RGB", (1, 12000), (10, 200, 10)).save(src / "thin.png")
    assert (src / "thin.png").stat().st_size < 1000
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"thin.png: 1x12000 pixels would be resized to 256x3072000 before the centre crop"):
        read_rgb(src / "thin.png", 256)
    assert time.monotonic() - t0 < 5  # refused before the resize, not after it
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))  # 32-bit float TIFF, values in [0, 1]
    Image.fromarray(ramp, "F").save(src / "float.tif")
    x = read_rgb(src / "float.tif", None)  # [-1, 1]
    assert x.shape == (3, 64, 64) and x[:, :, -1].min() > 0.99 and x[:, :, 0].max() < -0.99  # the ramp, not black
    Image.fromarray(np.full((8, 8), np.nan, np.float32), "F").save(src / "nan.tif")
    with pytest.raises(ValueError, match="nan.tif: not a readable image .*NaN or Inf"):
        read_rgb(src / "nan.tif", 32)
    Image.new("P", (40, 40), 3).save(src / "anim.gif")
    assert (src / "anim.gif") in list_images(src) and read_rgb(src / "anim.gif", 32).shape == (3, 32, 32)
    out = tmp_path / "latents"
    result = encode(encode_cfg("vae=approx", f"input_dir={src}", f"output_dir={out}", "image_size=32"))
    assert sorted(p.name for p in out.glob("*.pt")) == ["anim.pt", "float.pt"]
    assert sorted(f["path"] for f in result["failed"]) == ["nan.tif", "thin.png"]


def test_fid_stats_writes_only_to_its_cache_and_never_deletes_a_file_it_did_not_write(tmp_path):
    """Issue 13: lcgan.fid_stats wrote a 33 MB file into the user's dataset folder and deleted a .npy of theirs there."""
    from lcgan import fid as fid_stats  # the library behind the lcgan.fid_stats command

    src = tmp_path / "photos"
    (src / "vectors").mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (40, 40), (i * 100, 50, 50)).save(src / f"{i}.png")
    np.save(src / "vectors" / "old.256.0123456789abcdef.npy", np.ones(3))  # the user's, named like ours
    snapshot = lambda: {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}  # noqa: E731
    before = snapshot()
    inception = _FakeInception()
    inception.random = False  # a real cache
    ff = fid_stats.reference_stats(src, inception, 256)
    assert ff["stats_dir"].is_relative_to(os.environ["LCGAN_CACHE"]) and snapshot() == before  # nothing written or deleted
    # a stats root shared with the user's own files: vectors/ not ours alone, so nothing in it is deleted
    root = tmp_path / "shared_root"
    vectors = fid_stats._locations(src, str(root), fid_stats.FALLBACK_ROOT)[0] / "vectors"
    vectors.mkdir(parents=True)
    users = [vectors / "embeddings.256.npy", vectors / "stale.256.0123456789abcdef.npy"]
    for f in users:
        np.save(f, np.ones(3))
    fid_stats.folder_features(src, inception, 256, stats_root=str(root))
    assert all(f.is_file() for f in users) and len(list(vectors.glob("*.npy"))) == 4
    users[0].unlink()  # now only files of our form: a stale one goes, the live ones stay
    fid_stats.folder_features(src, inception, 256, stats_root=str(root))
    assert not users[1].exists() and len(list(vectors.glob("*.npy"))) == 2
    np.savez(vectors.parent / "fid_stats.npz", mine=np.zeros(2))  # a file of that name that is not ours
    foreign = (vectors.parent / "fid_stats.npz").read_bytes()
    with pytest.raises(ValueError, match=r"fid_stats.npz is not lcgan's reference statistics \(lacks mu.*will not overwrite it"):
        fid_stats.reference_stats(src, inception, 256, stats_root=str(root))
    assert (vectors.parent / "fid_stats.npz").read_bytes() == foreign
    np.savez(src / "fid_stats.npz", mine=np.zeros(2))  # where an older lcgan wrote: read if ours, passed over if not
    assert fid_stats.find_stats(src, 256, inception, str(tmp_path / "empty_root")) is None


@pytest.mark.parametrize("case, error", [
    ("empty", r"input_dir='.*empty' holds no images \(.jpg.*\); nothing to encode"),
    ("image_size=0", r"image_size=0: must be an integer >= 8"),
    ("batch_size=-2", r"batch_size=-2: must be an integer >= 1"),
    ("unreadable", r"none of the 1 images in input_dir=.* could be encoded \(reasons in .*manifest.json, e.g. .*not a readable image"),
])
def test_encode_that_would_write_nothing_is_an_error(tmp_path, case, error):
    """Issue 13: these exited 0 having written nothing."""
    src = tmp_path / ("empty" if case == "empty" else "images")
    src.mkdir()
    if case == "unreadable":
        (src / "text.jpg").write_text("not an image")
    elif case != "empty":
        Image.new("RGB", (32, 32)).save(src / "ok.png")
    extra = [case] if "=" in case else []
    with pytest.raises(ValueError, match=error):
        encode(encode_cfg("vae=approx", f"input_dir={src}", f"output_dir={tmp_path / 'latents'}", "image_size=32", *extra))
    assert not list((tmp_path / "latents").glob("*.pt")) if (tmp_path / "latents").exists() else True


# ---------------------------------------------------------------------------- bad configs


@pytest.mark.slow
def test_cli_config_error_names_the_key_without_a_torch_traceback(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "lcgan.train", "device=cpu", "optim.lr=-1", "train.fake_buffer_size=-1",
                           f"hydra.run.dir={out}"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2
    assert "optim.lr=-1.0: must be a number > 0" in proc.stderr and "train.fake_buffer_size=-1: must be" in proc.stderr
    assert proc.stderr.startswith("error: invalid config") and "Traceback" not in proc.stderr, proc.stderr  # the message alone
    assert "ConfigError" in (out / "error.txt").read_text()  # a failed job says why, next to its outputs
    assert not (out / "model").exists()


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (["train.fake_buffer_size=-1"], ConfigError, r"train.fake_buffer_size=-1: must be an integer >= 0"),
        (["optim.lr=inf"], ConfigError, r"optim.lr=inf: must be a number > 0"),  # was accepted
        (["optim.betas=[2,0.9]"], ConfigError, r"optim.betas=\[2.0, 0.9\]: must be two numbers"),  # was torch's error
        (["train.batch_size=64"], ValueError, r"train.batch_size=64 is larger than the smaller domain \(32 latents\)"),
        (["data=latents", "data.a_dir=/nonexistent/a", "data.b_dir=/nonexistent/b"], InstantiationException,
         r"data.a_dir='/nonexistent/a' is not a folder"),
        (["train.epochs=0", "optim.lr=0"], ConfigError, r"(?s)train.epochs=0.*optim.lr=0"),  # all problems at once
        (["seed=x"], ConfigCompositionException, r"seed=x"),  # a wrong type: refused by the schema while composing
    ],
)
def test_config_errors_fail_before_any_output(tmp_path, overrides, error, match):
    out = tmp_path / "run"
    with pytest.raises(error, match=match):
        synthetic = not any(o.startswith("data=") for o in overrides)
        run_inprocess(out, [*([*SYN, "data.n_a=32", "data.n_b=32"] if synthetic else SMALL), *overrides])
    assert not out.exists() or not any(out.iterdir())



# ---------------------------------------------------------------------------- run folders (issue 13)

ONE_EPOCH = [*SYN, "train.epochs=1", "data.n_a=8", "data.n_b=8"]


@pytest.mark.slow
def test_cli_missing_input_folder_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lcgan.encode", "vae=approx", f"input_dir={tmp_path / 'nope'}",
                           f"output_dir={tmp_path / 'latents'}", "image_size=64"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2 and proc.stderr.startswith("error: input_dir=") and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "latents").exists()


@pytest.mark.slow
def test_cli_refused_by_an_earlier_run_writes_nothing_into_its_folder(tmp_path):
    # Hydra saves .hydra/ before train() can refuse: the refused run overwrote the earlier run's recorded
    # config, and main() wrote an error.txt that made lcgan.report call the finished run failed
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lcgan.train", *SYN, "train.epochs=1", "data.n_a=8", "data.n_b=8", f"hydra.run.dir={out}"]
    first = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    again = subprocess.run([*cmd, "train.lambda_cyc=3"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already holds a training" in again.stderr and "Traceback" not in again.stderr, again.stderr
    assert not (out / "error.txt").exists()
    assert {p: p.read_bytes() for p in before} == before, "the earlier run's files, .hydra/config.yaml included, are untouched"


@pytest.mark.slow
def test_fresh_run_refuses_a_folder_holding_an_earlier_run(tmp_path):
    out = tmp_path / "run"
    run_inprocess(out, [*SYN, "train.epochs=2", "data.n_a=8", "data.n_b=8"])
    before = {p: p.read_bytes() for p in [*(out / "model").iterdir(), out / "logs" / "train_log.jsonl"]}
    with pytest.raises(FileExistsError, match=rf"{re.escape(str(out))} already holds a training \(model/best.pt, model/epoch_0002.pt"
                                              r".*train.resume=true.*hydra.run.dir=\.\.\."):
        run_inprocess(out, ONE_EPOCH)  # silently replaced last.pt, best.pt and epoch_*.pt, and dropped its log lines
    assert {p: p.read_bytes() for p in before} == before
    for p in (out / "model").iterdir():  # a log alone is an earlier run too
        p.unlink()
    with pytest.raises(FileExistsError, match=r"already holds a training \(logs/train_log.jsonl\)"):
        run_inprocess(out, ONE_EPOCH)
    with pytest.raises(ValueError, match="train.resume=true and train.overwrite=true contradict"):
        run_inprocess(out, [*ONE_EPOCH, "train.resume=true", "train.overwrite=true"])
    (out / "logs" / "train_log.jsonl").unlink()
    run_inprocess(out, [*SYN, "train.epochs=2", "data.n_a=8", "data.n_b=8"])  # an emptied folder takes a fresh run
    run_inprocess(out, [*ONE_EPOCH, "train.overwrite=true"])  # explicit: the earlier run's files go, nothing mixes
    assert sorted(p.name for p in (out / "model").iterdir()) == ["best.pt", "epoch_0001.pt", "last.pt"]
    assert [r["epoch"] for r in read_log(out)] == [1]
    with pytest.raises(ConfigCompositionException, match="train.overwrite=maybe"):  # the schema: a bool (yes/no, true/false)
        run_inprocess(tmp_path / "other", [*ONE_EPOCH, "train.overwrite=maybe"])


@pytest.mark.slow
def test_second_training_in_one_folder_fails_at_once_and_a_killed_runs_lock_does_not_block(tmp_path):
    out = tmp_path / "run"
    with training(out, PREEMPT) as run:
        run.wait_for(MID_EPOCH.format(epoch=1))
        for extra in ([], ["train.resume=true"]):  # fresh or resuming: both would interleave with the running one
            t0 = time.monotonic()
            with pytest.raises(RuntimeError, match=rf"{re.escape(str(out))} is in use by another training "
                                                   rf"\(pid {run.proc.pid} on .*choose another folder: hydra.run.dir"):
                run_inprocess(out, [*PREEMPT, *extra])
            assert time.monotonic() - t0 < 30  # at once, not after its own epoch
        run.proc.send_signal(signal.SIGKILL)  # the OS drops the lock with the process
        assert run.wait() == -signal.SIGKILL
    assert (out / ".lock").exists()
    if not (out / "model" / "last.pt").exists():  # killed before its first save: nothing to resume, a fresh run may start
        run_inprocess(out, PREEMPT)
    else:
        run_inprocess(out, [*PREEMPT, "train.resume=true"])
    assert [r["epoch"] for r in read_log(out)] == [1, 2]


@pytest.mark.slow
def test_resume_refuses_a_run_that_differs_from_the_checkpoint(tmp_path):
    a, b = write_latents(tmp_path / "A", 16, seed=1), write_latents(tmp_path / "B", 16, seed=2)
    base = [*SMALL, "data=latents", f"data.a_dir={a}", f"data.b_dir={b}", "train.epochs=2", "data.flip=false"]
    out = tmp_path / "run"
    run_inprocess(out, [*base, "train.epochs=1"])
    resume = [*base, "train.resume=true"]
    cases = [
        (["data.latent_divisor=5"], r"data.latent_divisor: 10.0 in the checkpoint, 5.0 now\n"),
        (["data.latents_scaled=true"], r"data.latents_scaled: False in the checkpoint, True now"),
        (["data.latent_norm=channel"], r"data.latent_norm: divisor in the checkpoint, channel now"),
        (["model.generator.ngf=16"], r"a different model \(model.generator.ngf=8 in the checkpoint, 16 now\)"),
        (["train.ema_decay=0.9"], r"it has no EMA weights \(saved with train.ema_decay=0\)"),
        ([f"data.b_dir={a}"], rf"different data: the domains' channel statistics differ .*data.b_dir='{re.escape(str(b))}' in the checkpoint"),
    ]
    for extra, match in cases:
        with pytest.raises(ValueError, match=rf"(?s)cannot resume from {re.escape(str(out / 'model' / 'last.pt'))}.*{match}"):
            run_inprocess(out, [*resume, *extra])
    # a checkpoint saved mid-epoch (step 1 of 2 at batch 8): only the same batch size and data can continue it
    ck = checkpoint.load(out / "model" / "last.pt")
    ck.update(epoch=0, step=1, metrics=None, order={"perm_a": torch.randperm(16), "perm_b": torch.randperm(16)},
              sums=torch.zeros(len(LOSS_KEYS)))
    mid = tmp_path / "mid.pt"
    checkpoint.save(ck, mid)
    with pytest.raises(ValueError, match=r"train.batch_size: 8 in the checkpoint, 4 now; it stopped mid-epoch \(step 1\)"):
        run_inprocess(out, [*resume, f"train.resume_path={mid}", "train.batch_size=4"])
    # an older lcgan's mid-epoch sums (before loss_spec and loss_anchor) continue; sums that are not a loss vector are refused
    for bad, what in ((torch.zeros(len(LOSS_KEYS) + 1), rf"a \({len(LOSS_KEYS) + 1},\) torch.float32 tensor"), ([0.0], "list")):
        checkpoint.save({**ck, "sums": bad}, tmp_path / "bad_sums.pt")
        with pytest.raises(ValueError, match=rf"loss sums \('sums'\) are {what}, not a float vector"):
            run_inprocess(out, [*resume, f"train.resume_path={tmp_path / 'bad_sums.pt'}"])
    old = tmp_path / "old_sums.pt"
    checkpoint.save({**ck, "sums": torch.full((LOSS_KEYS.index("loss_anchor"),), 3.0)}, old)  # the keys up to loss_spec
    older = tmp_path / "older_run"
    shutil.copytree(out, older)
    (older / "logs" / "train_log.jsonl").unlink()  # so the resumed epoch writes its own line (the log keeps one per epoch)
    run_inprocess(older, [*resume, f"train.resume_path={old}"])
    line = read_log(older)[0]  # epoch 1: the saved step's sums (3 each) and this run's second step, over 2 steps
    assert line["epoch"] == 1 and line["loss_cyc"] > 1.5 and line["loss_anchor"] == 0 and line["loss_cyc_decoded"] == 0
    fewer = tmp_path / "A_fewer"
    fewer.mkdir()
    for p in sorted(a.iterdir())[:10]:
        (fewer / p.name).write_bytes(p.read_bytes())
    with pytest.raises(ValueError, match=r"data: domain A has 10 latents now, fewer than the checkpoint's mid-epoch order"):
        run_inprocess(out, [*resume, f"train.resume_path={mid}", f"data.a_dir={fewer}"])
    assert checkpoint.load(out / "model" / "last.pt")["epoch"] == 1 and [r["epoch"] for r in read_log(out)] == [1]
    import lcgan.models

    class Renamed(lcgan.models.ResnetGenerator):  # a module that loads an older key layout through its own hook
        def _load_from_state_dict(self, state, prefix, *args):
            if prefix + "old_name" in state:
                state[prefix + "net.1.weight"] = state.pop(prefix + "old_name")
            super()._load_from_state_dict(state, prefix, *args)

    ck = checkpoint.load(out / "model" / "last.pt")
    for net in ("G", "F"):
        ck[net]["old_name"] = ck[net].pop("net.1.weight")
    old = tmp_path / "old_layout.pt"
    checkpoint.save(ck, old)
    with pytest.raises(ValueError, match=r"a different model \(G.net.1.weight: absent in the checkpoint, \(8, 4, 7, 7\) now"):
        run_inprocess(out, [*resume, f"train.resume_path={old}"])
    with pytest.MonkeyPatch.context() as mp:  # a generator that converts that layout when loading resumes from it
        mp.setattr(lcgan.models, "ResnetGenerator", Renamed)
        run_inprocess(out, [*resume, f"train.resume_path={old}"])
    assert [r["epoch"] for r in read_log(out)] == [1, 2]


@pytest.mark.slow
def test_cli_resume_takes_the_runs_own_configuration(tmp_path):
    """Issue 16: `train.resume=true hydra.run.dir=RUN` alone continues RUN as it was started (it rebuilt the
    default data and crashed on a tensor size), leaves its recorded .hydra/ alone, notes itself in
    logs/resumes.jsonl, and refuses an override that would change what the run learns, writing nothing."""
    out = tmp_path / "run"
    cli = lambda *args: subprocess.run([sys.executable, "-m", "lcgan.train", *args, f"hydra.run.dir={out}"],  # noqa: E731
                                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    first = cli(*ONE_EPOCH)  # SYN: a smaller model and latents than the defaults
    assert first.returncode == 0, first.stderr[-2000:]
    record = {p: p.read_bytes() for p in (out / ".hydra").iterdir()}
    resumed = cli("train.resume=true", "train.epochs=2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout and [r["epoch"] for r in read_log(out)] == [1, 2]
    assert {p: p.read_bytes() for p in (out / ".hydra").iterdir()} == record, "the run's record is not rewritten"
    [line] = [json.loads(x) for x in (out / "logs" / "resumes.jsonl").read_text().splitlines()]
    assert line["overrides"] == ["train.resume=true", "train.epochs=2"] and line["epoch"] == 1 and line["step"] == 0
    assert checkpoint.load(out / "model" / "last.pt")["cfg"]["model"]["generator"]["ngf"] == 8
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    refused = cli("train.resume=true", "train.epochs=3", "train.lambda_cyc=3", "model.generator.ngf=8")  # the same ngf: fine
    assert refused.returncode != 0
    refusal = r"changes what the run learns: train.lambda_cyc=3.0 \(the run: 10.0\)\. .*hydra.run.dir="
    assert re.search(refusal, refused.stderr), refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr and not (out / "error.txt").exists(), refused.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before, "nothing written"


@pytest.mark.slow
def test_resume_config_recomposes_the_record_and_accepts_only_safe_changes(tmp_path):
    from hydra import initialize_config_dir

    from lcgan import rundir
    from tests.conftest import CONF

    out = tmp_path / "run"
    (out / ".hydra").mkdir(parents=True)
    (out / ".hydra" / "overrides.yaml").write_text("- model=resnet6\n- model.generator.ngf=8\n- optim.betas=[0.5,0.9]\n"
                                                   "- +experiment=plain\n- train.overwrite=true\n")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = rundir.resume_config(out, ["train.resume=true", "train.epochs=7", "logger=none", "train.keep_epochs=3"])
        assert (cfg.model.generator.ngf, cfg.model.generator.n_blocks, list(cfg.optim.betas)) == (8, 6, [0.5, 0.9])
        assert cfg.model.generator.output == "tanh", "+experiment=plain taken from the record"
        assert (cfg.train.epochs, cfg.train.keep_epochs, cfg.train.resume, cfg.train.overwrite) == (7, 3, True, False)
        for change, key in (["model=resnet9"], "model.generator.n_blocks"), (["seed=3"], "seed"), (["vae=taesd"], "vae."):
            with pytest.raises(rundir.ResumeRefused, match=rf"changes what the run learns: {re.escape(key)}"):
                rundir.resume_config(out, ["train.resume=true", *change])
        assert rundir.resume_config(tmp_path / "unrecorded", ["train.resume=true"]) is None  # train(cfg) from Python: as given


@pytest.mark.parametrize("line, why", [
    ("model.generator._target_=os.system", "Hydra acts on"),
    ("model.generator._partial_=true", "Hydra acts on"),
    ("hydra.run.dir=/elsewhere", "Hydra acts on"),
    ("hydra/launcher=joblib", "Hydra acts on"),
    ("+train.foo=1", "not a config group"),
    ("++train.epochs=1", "forced addition"),
    ("~train.epochs", "deletion"),
    ("seed=1,2", "sweep"),
    ("model@x=small", "package"),
    ("train.lambda_cyc=${oc.env:HOME}", "interpolation"),
    ("data.a_dir='quoted ${now:%H}'", "interpolation"),
    ("train.lambda_cyc={a: 1}", "not a scalar"),
    ("not an override", "not a valid override"),
])
def test_a_crafted_run_record_is_refused_as_data(tmp_path, line, why):
    from lcgan import rundir

    record = tmp_path / ".hydra" / "overrides.yaml"
    record.parent.mkdir()
    record.write_text(f"- device=cpu\n- {json.dumps(line)}\n")
    with pytest.raises(rundir.ResumeRefused, match=rf"overrides.yaml: .* {why}.*never runs what one names"):
        rundir.recorded_overrides(tmp_path)
    for text in ("{a: 1}", "just text", "- [1, 2]"):  # not Hydra's list of override strings
        record.write_text(text)
        with pytest.raises(rundir.ResumeRefused, match="overrides.yaml"):
            rundir.recorded_overrides(tmp_path)


# ---------------------------------------------------------------------------- tracebacks that became clear errors (issue 13)


@pytest.mark.parametrize("overrides, match", [
    (["seed=1180591620717411303424"], r"seed=1180591620717411303424: must be a 64-bit integer"),  # 2**70: torch's overflow
    (["model.discriminator.ndf=0"], r"model.discriminator.ndf=0: must be an integer >= 1"),  # torch's error
    (["train.epoch_files=all"], r"train.epoch_files='all': must be one of generators, full, none"),
    (["train.keep_epochs=-1"], r"train.keep_epochs=-1: must be an integer >= 0"),
])
def test_more_config_errors_name_the_key(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        run_inprocess(tmp_path / "run", [*ONE_EPOCH, *overrides])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("payload, match", [
    ("tensor", r"it holds a Tensor, not an lcgan training checkpoint \(lacks G, F"),  # was a TypeError
    ("no_g", r"it holds a dict with keys \['cfg', 'epoch'\], not an lcgan training checkpoint \(lacks G, F"),  # was a KeyError
    ("folder", r"train.resume=true but .*elsewhere does not exist"),
])
def test_resume_path_that_is_not_a_training_checkpoint(tmp_path, payload, match):
    target = tmp_path / ("elsewhere" if payload == "folder" else "ck.pt")
    if payload == "folder":
        target.mkdir()
    else:
        checkpoint.save(torch.zeros(3) if payload == "tensor" else {"cfg": {}, "epoch": 1}, target)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        run_inprocess(tmp_path / "run", [*ONE_EPOCH, "train.resume=true", f"train.resume_path={target}"])
    with pytest.raises(IsADirectoryError, match="is a folder; give the .pt file"):
        checkpoint.load(tmp_path)


def test_bad_data_is_named_not_a_torch_error(tmp_path):
    same = tmp_path / "same"
    same.mkdir()
    for i in range(8):  # one latent copied 8 times: no variance to match (was "non-finite ... Lower optim.lr")
        torch.save(torch.ones(4, 16, 16), same / f"{i}.pt")
    b = write_latents(tmp_path / "B", 8, seed=1)
    with pytest.raises(ValueError, match=r"domain A's latents do not vary in channel\(s\) \[0, 1, 2, 3\]"):
        latent_folders(str(same), str(b))
    tiny_a, tiny_b = write_latents(tmp_path / "tA", 8, shape=(4, 2, 2)), write_latents(tmp_path / "tB", 8, shape=(4, 2, 2), seed=1)
    with pytest.raises(ValueError, match=r"latents of 2x2 are too small for the generator \(min 4\)"):  # was torch's padding error
        run_inprocess(tmp_path / "run", [*SMALL, "data=latents", f"data.a_dir={tiny_a}", f"data.b_dir={tiny_b}"])
    (b / "manifest.json").write_text('{"lcgan_manifest": 1, "latent_sp')  # cut short by a crash
    with pytest.raises(ValueError, match=rf"{re.escape(str(b / 'manifest.json'))} is not readable JSON"):  # was a JSON error naming no file
        read_manifest(b)
    empty = tmp_path / "empty_test"
    empty.mkdir()
    from lcgan.scoring import read_source

    with pytest.raises(ValueError, match=rf"'{re.escape(str(empty))}' holds no images"):  # was an IndexError in evaluate
        read_source(list_images(empty), empty, 32, 1)


def test_encode_on_a_full_disk_names_the_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    src = tmp_path / "images"
    src.mkdir()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(src / "ok.png")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    out = tmp_path / "latents"
    with pytest.raises(OSError, match=rf"cannot write {re.escape(str(out / 'ok.pt'))}: No space left on device"):
        encode(encode_cfg("vae=approx", f"input_dir={src}", f"output_dir={out}", "image_size=32"))
    assert not list(out.glob(".*")) and not list(out.glob("*.pt"))  # was torch's inline_container error and a stray .tmp


def test_report_survives_one_broken_job_folder(tmp_path, monkeypatch):
    from lcgan.report import write_report

    monkeypatch.setenv("LCGAN_TEST_SECRET", "s3cret")
    root = tmp_path / "multirun"
    for num in (0, 1):
        run_inprocess(root / str(num), [*ONE_EPOCH, f"seed={num}"])
        (root / str(num) / ".hydra").mkdir()
        (root / str(num) / ".hydra" / "config.yaml").write_text("train:\n  epochs: 1\n")
        (root / str(num) / ".hydra" / "overrides.yaml").write_text(f"- seed={num}\n")
    (root / "1" / ".hydra" / "config.yaml").write_text("train: {epochs: [1,\n")  # cut short
    (root / "0" / ".hydra" / "overrides.yaml").write_text("- seed=0\n- note=${oc.env:LCGAN_TEST_SECRET}\n")  # read as data
    rows = write_report(root, quiet=True)
    assert [(r["job"], r["status"]) for r in rows] == [("0", "completed"), ("1", "failed")]
    assert rows[1]["error"].startswith("unreadable job folder:") and (root / "report.md").is_file()
    assert "s3cret" not in (root / "report.csv").read_text() and "${oc.env:LCGAN_TEST_SECRET}" in (root / "report.csv").read_text()
