"""The run folder of a training: one training at a time, never silently overwritten, and resumed
only into the run it was.

- :func:`claim`: a lock on ``out/.lock`` (``flock``, held for the whole training; the OS drops it
  when the process dies, so a killed run never blocks its resume), and a fresh run refuses a folder
  that already holds checkpoints or log lines unless ``train.overwrite=true``.
- :func:`check_resume`: what a checkpoint recorded (config, latent convention, domain statistics,
  state-dict shapes, a mid-epoch order) against the run that resumes it; a difference is an error
  naming the setting.
"""
from __future__ import annotations

import copy
import fcntl
import math
import os
import socket
from pathlib import Path

import torch

LOCK = ".lock"


class FolderInUse(RuntimeError):
    """Another training holds the folder's lock."""


class FolderHoldsRun(FileExistsError):
    """The folder holds an earlier training that a fresh run would replace."""


# refusals of a folder that is not this run's: nothing (not even error.txt) is written into it
REFUSALS = (FolderInUse, FolderHoldsRun)


def checkpoint_tag(checkpoint: str | Path) -> str:
    """A folder name for outputs about ``checkpoint`` that differs between runs: the last two parts of its
    run folder and its stem (``outputs/train/2026-11-29/11-45-00/model/last.pt`` -> ``2026-11-29_11-45-00_last``),
    so evaluating ``last.pt`` of two runs never writes to one folder."""
    path = Path(checkpoint).resolve()
    run = path.parent.parent if path.parent.name == "model" else path.parent
    return "_".join([*(p for p in run.parts[-2:] if p != run.anchor), path.stem])


def previous_outputs(out: Path) -> list[Path]:
    """What a training leaves in ``out`` that a fresh run would replace or mix with."""
    model = out / "model"
    found = sorted(model.glob("*.pt")) if model.is_dir() else []
    found = [p for p in found if p.name in ("last.pt", "best.pt") or p.name.startswith("epoch_")]
    log = out / "logs" / "train_log.jsonl"
    return found + ([log] if log.is_file() and log.stat().st_size else [])


class RunLock:
    """An exclusive ``flock`` on ``out/.lock``; released by :meth:`release` or by the process's death."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK
        try:
            out.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a+")
        except OSError as e:  # a file in the way, a read-only folder: said here, before any work
            raise OSError(e.errno, f"cannot write {out}: {e.strerror or e}; check that the folder exists, is writable "
                          "and has free space, or choose another output folder (hydra.run.dir=...)") from e
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(self.file.fileno()).st_ino != os.stat(self.path).st_ino:  # released and removed meanwhile
                raise BlockingIOError
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise FolderInUse(f"{out} is in use by another training ({holder}); two runs in one folder would mix their "
                               f"checkpoints and log. Wait for it to end, or choose another folder: hydra.run.dir=...") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self.file.flush()

    def release(self) -> None:
        """Unlock; a run that failed before any output leaves its folder as it found it (no ``.lock``)."""
        if self.file.closed:
            return
        if [p.name for p in self.path.parent.iterdir()] == [LOCK]:  # removed while held: a waiting opener sees another inode
            self.path.unlink(missing_ok=True)
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def refuse_earlier_run(out: Path, resume: bool, overwrite: bool) -> list[Path]:
    """The earlier run's outputs that this run may replace (``overwrite``), or :class:`FolderHoldsRun`."""
    found = [] if resume else previous_outputs(out)
    if found and not overwrite:
        names = ", ".join(str(p.relative_to(out)) for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise FolderHoldsRun(f"{out} already holds a training ({names}); a fresh run would replace its checkpoints and mix its log. "
                             f"Continue it with train.resume=true, or start a new run in another folder: "
                             f"hydra.run.dir=... (train.overwrite=true deletes them and starts anew here)")  # fmt: skip
    return found


def refuse_busy(out: Path) -> None:
    """:class:`FolderInUse` when a live training holds ``out``'s lock; creates and changes nothing."""
    if not (out / LOCK).is_file():
        return
    with open(out / LOCK) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FolderInUse(f"{out} is in use by another training ({f.read().strip() or 'another process'}); two runs in one "
                              "folder would mix their checkpoints and log. Wait for it to end, or choose another folder: "
                              "hydra.run.dir=...") from None
        fcntl.flock(f, fcntl.LOCK_UN)


def claim(out: Path, resume: bool, overwrite: bool) -> RunLock:
    """Lock ``out`` for this training; a fresh run refuses earlier outputs unless ``overwrite``,
    which deletes them (the checkpoints and log of the earlier run in this folder, nothing else)."""
    if resume and overwrite:
        raise ValueError("train.resume=true and train.overwrite=true contradict each other: resume continues the run "
                         "in this folder, overwrite starts it anew; set one")  # fmt: skip
    lock = RunLock(out)
    try:
        found = refuse_earlier_run(out, resume, overwrite)
        for p in found:
            p.unlink()
        if found:
            print(f"train.overwrite=true: deleted {len(found)} files of the earlier run in {out}")
    except BaseException:
        lock.release()
        raise
    return lock


# ---------------------------------------------------------------------------------------- resume


def _flat(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _close(x, y) -> bool:
    """Equal up to float noise (statistics recomputed on another device differ in the last bits)."""
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_close(a, b) for a, b in zip(x, y))
    if isinstance(x, float) or isinstance(y, float):
        return isinstance(x, (int, float)) and isinstance(y, (int, float)) and math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-6)
    return x == y


def check_resume(ck: dict, path: Path, cfg: dict, nets: dict[str, torch.nn.Module], convention: dict,
                 domain_stats: dict, sizes: tuple[int, int]) -> None:  # fmt: skip
    """Refuse to resume ``ck`` (from ``path``) into a run that differs in what it means.

    ``cfg``: this run's resolved config; ``nets``: G, F, D_A, D_B as built; ``convention`` and
    ``domain_stats``: this run's, as a checkpoint records them; ``sizes``: latents in A and B.
    """
    need = ("G", "F", "D_A", "D_B", "opt_G", "opt_D", "sched_G", "sched_D", "scaler", "buffer_A", "buffer_B", "epoch", "step", "rng")
    missing = [k for k in need if k not in ck] if isinstance(ck, dict) else need
    if missing:  # a tensor, or another program's dict (was a TypeError or KeyError)
        got = f"a dict with keys {sorted(map(str, ck))[:8]}" if isinstance(ck, dict) else f"a {type(ck).__name__}"
        raise ValueError(f"cannot resume from {path}: it holds {got}, not an lcgan training checkpoint (lacks {', '.join(missing[:6])}); "
                         "point train.resume_path at a model/last.pt or model/epoch_*.pt of lcgan.train")  # fmt: skip
    was, now = _flat(ck.get("cfg") or {}), _flat(cfg)
    problems = []

    def setting_diff(prefixes: tuple[str, ...]) -> list[str]:
        keys = sorted(k for k in set(was) | set(now) if k.startswith(prefixes) and not _close(was.get(k), now.get(k)))
        return [f"{k}={was.get(k, '(absent)')!r} in the checkpoint, {now.get(k, '(absent)')!r} now" for k in keys]

    # the latent convention: the same file means another model-space latent under another one
    rec = ck.get("convention")
    if isinstance(rec, dict):
        for key, setting in (("latents_scaled", "data.latents_scaled"), ("latent_divisor", "data.latent_divisor")):
            if key in rec and not _close(rec[key], convention.get(key)):
                problems.append(f"{setting}: {rec[key]!r} in the checkpoint, {convention.get(key)!r} now")
        if ("channel_mean" in rec) != ("channel_mean" in convention):
            problems.append(f"data.latent_norm: {'channel' if 'channel_mean' in rec else 'divisor'} in the checkpoint, "
                            f"{'channel' if 'channel_mean' in convention else 'divisor'} now")  # fmt: skip
        elif "channel_mean" in rec and not (_close(rec["channel_mean"], convention["channel_mean"])
                                            and _close(rec.get("channel_std"), convention.get("channel_std"))):  # fmt: skip
            problems.append("data.latent_norm=channel: the per-channel statistics of the latent files differ (other data)")
    # the networks: every tensor's name and shape
    shape_problems = []
    for key, net in nets.items():
        saved = ck.get(key)
        if not isinstance(saved, dict):
            shape_problems.append(f"{key} missing")
            continue
        mine = net.state_dict()
        for name in sorted(set(saved) | set(mine)):
            s, m = saved.get(name), mine.get(name)
            if s is None or m is None or tuple(getattr(s, "shape", ())) != tuple(m.shape):
                try:  # another layout the module converts when loading (e.g. older anchor buffers)
                    copy.deepcopy(net).load_state_dict(saved)
                except Exception:
                    shape_problems.append(f"{key}.{name}: {tuple(s.shape) if s is not None else 'absent'} in the checkpoint, "
                                          f"{tuple(m.shape) if m is not None else 'absent'} now")  # fmt: skip
                break
    if shape_problems:
        diff = setting_diff(("model.",))
        problems.append("a different model (" + "; ".join(diff or shape_problems[:2]) + ")")
    # the data: the training domains' channel statistics, and the epoch order of a mid-epoch checkpoint
    rec_stats = ck.get("domain_stats")  # model space: under another convention they differ anyway, said above
    if not problems and isinstance(rec_stats, dict) and not all(_close(rec_stats.get(k), domain_stats.get(k)) for k in domain_stats):
        diff = setting_diff(("data.",))
        problems.append("different data: the domains' channel statistics differ from those the checkpoint recorded"
                        + (f" ({'; '.join(diff)})" if diff else ""))
    order = ck.get("order")
    if ck.get("step") and isinstance(order, dict):
        batch_was = was.get("train.batch_size")
        if batch_was is not None and batch_was != now.get("train.batch_size"):
            problems.append(f"train.batch_size: {batch_was} in the checkpoint, {now.get('train.batch_size')} now; "
                            f"it stopped mid-epoch (step {ck['step']}), which only the same batch size can continue")  # fmt: skip
        for perm, n, name in ((order.get("perm_a"), sizes[0], "A"), (order.get("perm_b"), sizes[1], "B")):
            if isinstance(perm, torch.Tensor) and perm.numel() and int(perm.max()) >= n:
                problems.append(f"data: domain {name} has {n} latents now, fewer than the checkpoint's mid-epoch order "
                                f"(step {ck['step']}) draws from ({int(perm.max()) + 1} or more)")  # fmt: skip
    if problems:
        raise ValueError(f"cannot resume from {path}: this run differs from the one it saved:\n  " + "\n  ".join(problems)
                         + "\nResume with the checkpoint's settings, or start a new run (another hydra.run.dir)")
