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

from lcgan.layout import RunFolder


class FolderInUse(RuntimeError):
    """Another training holds the folder's lock."""


class FolderHoldsRun(FileExistsError):
    """The folder holds an earlier training that a fresh run would replace."""


class ResumeRefused(ValueError):
    """A resume whose command line would change the run, or whose run folder holds a record that is not plain data."""


# refusals of a folder that is not this run's, or of a resume that is not this run: nothing (not even
# error.txt) is written into the folder
REFUSALS = (FolderInUse, FolderHoldsRun, ResumeRefused)


def checkpoint_tag(checkpoint: str | Path) -> str:
    """A folder name for outputs about ``checkpoint`` that differs between runs: the last two parts of its
    run folder and its stem (``outputs/train/2026-11-29/11-45-00/model/last.pt`` -> ``2026-11-29_11-45-00_last``),
    so evaluating ``last.pt`` of two runs never writes to one folder."""
    path = Path(checkpoint).resolve()
    run = (RunFolder.of_checkpoint(path) or RunFolder(path.parent)).root
    return "_".join([*(p for p in run.parts[-2:] if p != run.anchor), path.stem])


def previous_outputs(out: Path) -> list[Path]:
    """What a training leaves in ``out`` that a fresh run would replace or mix with."""
    run = RunFolder(out)
    found = sorted(p for p in (run.last, run.best, *run.epoch_checkpoints()) if p.is_file())
    return found + ([run.log] if run.log.is_file() and run.log.stat().st_size else [])


class RunLock:
    """An exclusive ``flock`` on ``out/.lock``; released by :meth:`release` or by the process's death."""

    def __init__(self, out: Path) -> None:
        self.path = RunFolder(out).lock
        try:
            out.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a+")  # noqa: SIM115 (held, with its lock, until the run ends)
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
        if [p.name for p in self.path.parent.iterdir()] == [self.path.name]:  # removed while held: a waiting opener sees another inode
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
                             f"hydra.run.dir=... (train.overwrite=true deletes them and starts anew here)")
    return found


def refuse_busy(out: Path) -> None:
    """:class:`FolderInUse` when a live training holds ``out``'s lock; creates and changes nothing."""
    lock = RunFolder(out).lock
    if not lock.is_file():
        return
    with open(lock) as f:
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
                         "in this folder, overwrite starts it anew; set one")
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


def check_resume(ck: dict, path: Path, need: list[str], cfg: dict, networks: dict[str, torch.nn.Module], convention: dict,
                 domain_stats: dict, sizes: tuple[int, int]) -> None:
    """Refuse to resume ``ck`` (from ``path``) into a run that differs in what it means.

    ``need``: the keys the run's state loads (``TrainState.required``); ``cfg``: this run's resolved
    config; ``networks``: G, F, D_A, D_B as built; ``convention`` and ``domain_stats``: this run's, as a
    checkpoint records them; ``sizes``: latents in A and B.
    """
    missing = [k for k in need if k not in ck] if isinstance(ck, dict) else need
    if isinstance(ck, dict) and missing and {"G", "F"} <= ck.keys() and "D_A" in missing:
        raise ValueError(f"cannot resume from {path}: it holds the generators alone (an epoch file of train.epoch_files=generators, "
                         "for evaluation and translation); resume from the run's model/last.pt or model/best.pt")
    if isinstance(ck, dict) and missing and missing == [k for k in ("G_ema", "F_ema") if k in need]:
        raise ValueError(f"cannot resume from {path}: it has no EMA weights (saved with train.ema_decay=0) but this run keeps "
                         f"an EMA (train.ema_decay={cfg.get('train', {}).get('ema_decay')}); resume with train.ema_decay=0")
    if missing:  # a tensor, or another program's dict (was a TypeError or KeyError)
        got = f"a dict with keys {sorted(map(str, ck))[:8]}" if isinstance(ck, dict) else f"a {type(ck).__name__}"
        raise ValueError(f"cannot resume from {path}: it holds {got}, not an lcgan training checkpoint (lacks {', '.join(missing[:6])}); "
                         "point train.resume_path at a model/last.pt (or a full model/epoch_*.pt) of lcgan.train")
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
                            f"{'channel' if 'channel_mean' in convention else 'divisor'} now")
        elif "channel_mean" in rec and not (_close(rec["channel_mean"], convention["channel_mean"])
                                            and _close(rec.get("channel_std"), convention.get("channel_std"))):
            problems.append("data.latent_norm=channel: the per-channel statistics of the latent files differ (other data)")
    # the networks: every tensor's name and shape
    shape_problems = []
    for key, net in networks.items():
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
                                          f"{tuple(m.shape) if m is not None else 'absent'} now")
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
                            f"it stopped mid-epoch (step {ck['step']}), which only the same batch size can continue")
        for perm, n, name in ((order.get("perm_a"), sizes[0], "A"), (order.get("perm_b"), sizes[1], "B")):
            if isinstance(perm, torch.Tensor) and perm.numel() and int(perm.max()) >= n:
                problems.append(f"data: domain {name} has {n} latents now, fewer than the checkpoint's mid-epoch order "
                                f"(step {ck['step']}) draws from ({int(perm.max()) + 1} or more)")
    if problems:
        raise ValueError(f"cannot resume from {path}: this run differs from the one it saved:\n  " + "\n  ".join(problems)
                         + "\nResume with the checkpoint's settings, or start a new run (another hydra.run.dir)")


# ---------------------------------------------------------------------------------------- a resume remembers its run

# What a resume may change in the run's recorded configuration: how long it runs (the LR schedule follows;
# resume stays exact), how it reports, draws and saves, how it starts, the tracker, and speed switches with
# the same math (and `device`: a CUDA run computes under train.amp, the CPU in fp32, so the numbers move at the
# switch, but the optimizer, buffers and RNG carry over). Everything else is what the run learns: changing it
# is a new run. A key or group prefix.
SAFE_ON_RESUME = (
    "train.epochs", "optim.lr_constant_epochs", "optim.lr_decay_epochs",
    "train.log_every", "train.vis_every", "train.n_vis", "train.ckpt_every", "train.epoch_files", "train.keep_epochs",
    "train.resume", "train.resume_path", "train.resume_restore_rng", "train.overwrite", "logger",
    "device", "train.compile", "train.cuda_graphs", "train.cudnn_benchmark", "train.channels_last",
)
# how this invocation starts, not what the run is: never taken from the record
INVOCATION = ("train.resume", "train.resume_path", "train.overwrite")
# config keys that make Hydra import or call something
_CALLABLE_KEYS = {"_target_", "_partial_", "_args_", "_recursive_", "_convert_"}


def _safe_to_change(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in SAFE_ON_RESUME)


def parse_override(text, where: str, fix: str):
    """``text`` as one Hydra override, if it is a plain ``key=value`` (or ``+group=option``): never a
    sweep, deletion, package or interpolation, never a ``hydra`` key or one that names code."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType, ValueType

    from lcgan import CONF_DIR

    def refuse(why: str) -> ResumeRefused:
        shown = repr(text) if len(repr(text)) < 120 else repr(text)[:117] + "..."
        return ResumeRefused(f"{where}: {shown} {why}; lcgan takes only plain key=value settings from a run folder and "
                             f"never runs what one names. {fix}")

    if not isinstance(text, str):
        raise refuse("is not an override string")
    try:
        [override] = OverridesParser.create().parse_overrides([text])
    except Exception:
        raise refuse("is not a valid override") from None
    key = override.key_or_group
    parts = key.replace("/", ".").split(".")
    if parts[0] == "hydra" or _CALLABLE_KEYS & set(parts):
        raise refuse("sets a key that Hydra acts on (hydra.*, _target_, _partial_, _args_, ...)")
    if override.type not in (OverrideType.CHANGE, OverrideType.ADD):
        raise refuse("is not a plain key=value (a deletion or forced addition)")
    if override.package is not None or override.value_type is not ValueType.ELEMENT:
        raise refuse("is not a plain key=value (a package, sweep or function)")
    if override.type is OverrideType.ADD and not (Path(CONF_DIR) / key).is_dir():
        raise refuse("adds a key (+key=...) that is not a config group of lcgan's conf/")
    value = override.value()
    scalars = (str, int, float, bool, type(None))
    if not (isinstance(value, scalars) or (isinstance(value, list) and all(isinstance(v, scalars) for v in value))):
        raise refuse("has a value that is not a scalar or a list of scalars")
    if any(isinstance(v, str) and "${" in v for v in (value if isinstance(value, list) else [value])):
        raise refuse("holds an interpolation (${...})")
    return override


def recorded_overrides(out: Path) -> list[str] | None:
    """The overrides that started the run in ``out`` (``.hydra/overrides.yaml``), each checked as data by
    :func:`parse_override`; None when the folder has no record (a run started from Python)."""
    import yaml

    path = RunFolder(out).overrides  # Hydra's record of the command line that started the run
    if not path.is_file():
        return None
    fix = f"Restore {path} from the run's original command line, or start a new run (another hydra.run.dir)"
    try:
        items = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ResumeRefused(f"{path} is not readable YAML ({type(e).__name__}); {fix}") from None
    if items is None:
        return []
    if not isinstance(items, list):
        raise ResumeRefused(f"{path} holds a {type(items).__name__}, not Hydra's list of overrides; {fix}")
    for text in items:
        parse_override(text, str(path), fix)
    return items


def resume_config(out: Path, command: list[str], config_name: str = "train"):
    """The run's own configuration for ``train.resume=true hydra.run.dir=out``: the current config tree
    composed with the overrides the run was started with, then this command's overrides, which may
    change only :data:`SAFE_ON_RESUME` (ResumeRefused names any other). None when ``out`` has no record.
    Call it inside an initialised Hydra (``@hydra.main`` or ``initialize_config_dir``)."""
    from hydra import compose
    from omegaconf import OmegaConf

    recorded = recorded_overrides(out)
    if recorded is None:
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    key = lambda text: parser.parse_overrides([text])[0].key_or_group  # noqa: E731  (the command was parsed by Hydra already)
    mine = {key(t) for t in command}
    kept = [t for t in recorded if key(t) not in INVOCATION]
    was = compose(config_name=config_name, overrides=kept)
    now = compose(config_name=config_name, overrides=[t for t in kept if key(t) not in mine] + list(command))
    flat_was, flat_now = _flat(OmegaConf.to_container(was)), _flat(OmegaConf.to_container(now))
    changed = sorted(k for k in set(flat_was) | set(flat_now) if flat_was.get(k) != flat_now.get(k) and not _safe_to_change(k))
    if changed:
        shown = "; ".join(f"{k}={flat_now.get(k, '(absent)')!r} (the run: {flat_was.get(k, '(absent)')!r})" for k in changed[:6])
        raise ResumeRefused(
            f"train.resume=true continues {out} with the configuration it was started with ({RunFolder(out).overrides}); this command "
            f"changes what the run learns: {shown}{' ...' if len(changed) > 6 else ''}. A resume may change only "
            f"{', '.join(SAFE_ON_RESUME[:9])}, logger, device and speed switches. Drop those overrides to continue the run, "
            f"or start a new run with them in another folder (hydra.run.dir=...)")
    return now


def command_overrides() -> list[str] | None:
    """This process's command-line overrides when it runs as a Hydra app, else None (``train(cfg)`` from Python)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def record_resume(out: Path, checkpoint_path: Path, epoch: int, step: int) -> None:
    """Append this resume to ``logs/resumes.jsonl``; the run's ``.hydra/`` record is never rewritten."""
    import datetime

    from lcgan.checkpoint import append_jsonl

    append_jsonl(RunFolder(out).resumes, {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                 "checkpoint": str(checkpoint_path), "epoch": epoch, "step": step,
                                 "overrides": command_overrides()})
