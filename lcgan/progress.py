"""What a training run tells its user on the console: throughput, the ETA of the whole run, and the
closing paragraph (best epoch, where the files are, the next commands)."""
from __future__ import annotations

import math
from pathlib import Path

from lcgan.baselines import BASELINE_SUFFIX, BASELINES, validation_key
from lcgan.layout import RunFolder

# a timing window shorter than this is noise (or a clock tick): no rate is computed from it
MIN_WINDOW_SEC = 1e-3


def rate(count: float, seconds: float) -> float | None:
    """``count / seconds``, or None when the window is too short to time."""
    return count / seconds if seconds >= MIN_WINDOW_SEC else None


def fmt_rate(value: float | None) -> str:
    """Three significant digits, never "0" for a slow run: 1234 -> "1234", 12.34 -> "12.3", 0.00123 -> "0.00123"."""
    if value is None or not math.isfinite(value):
        return "?"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def fmt_duration(seconds: float | None) -> str:
    """``3725`` -> "1:02:05"; ``None`` -> "?"."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class RunClock:
    """The ETA of the whole run from measured epoch times. The first epoch this process trains is
    left out once a later one is measured: it pays for warm-up (compilation, cuDNN autotuning, caches)."""

    def __init__(self, total_epochs: int) -> None:
        self.total_epochs = total_epochs
        self.per_epoch: list[float] = []  # seconds of one whole epoch (steps, validation, saving)

    def epoch_done(self, seconds: float, fraction: float = 1.0) -> None:
        """``fraction``: the share of the epoch this process trained (less after a mid-epoch resume)."""
        self.per_epoch.append(seconds / max(fraction, 1e-6))

    def eta(self, epochs_done: int) -> float | None:
        """Seconds left for the epochs after ``epochs_done``; None before any epoch was timed."""
        if not self.per_epoch:
            return None
        timed = self.per_epoch[1:] or self.per_epoch
        return (self.total_epochs - epochs_done) * sum(timed) / len(timed)


def summary_line(m: dict, epochs: int, eta_sec: float | None = None) -> str:
    """The console line of an epoch: its losses, rate, the run's ETA, and the validation metric against the baselines."""
    line = (f"Epoch {m['epoch']}/{epochs} | G {m['loss_G']:.3f} D {m['loss_D']:.3f} cyc {m['loss_cyc']:.3f} "
            f"id {m['loss_id']:.3f} | lr {m['lr']:.2e} | {fmt_rate(m.get('pairs_per_sec'))} pairs/s | "
            f"run ETA {fmt_duration(eta_sec)}")
    base = lambda suffix: ", ".join(f"{k.replace('_', '-')} {m[f'base_{k}{suffix}']:.3f}" for k in BASELINES)  # noqa: E731
    if "val_swd" in m:
        line += f" | val_swd {m['val_swd']:.3f} (identity 1, {base('_val_swd')})"
    if "err" in m:
        line += f" | err G {m['err_G']:.3f} F {m['err_F']:.3f} (identity 1, {base('_G')})"
    return line


def _resume_overrides(out: Path) -> str:
    """The overrides the run was started with (Hydra keeps them in ``.hydra/overrides.yaml``)."""
    path = RunFolder(out).overrides
    if not path.is_file():
        return "<the same overrides>"  # train(cfg) called from Python: no Hydra folder
    from omegaconf import OmegaConf
    kept = [o for o in OmegaConf.load(path) if not str(o).lstrip("+~").startswith(("hydra.run.dir=", "train.resume=", "train.epochs=", "out_dir="))]
    return " ".join(str(o) for o in kept)


def closing_note(rows: list[dict], out: Path, epochs: int) -> str:
    """One paragraph at the end of a run: best epoch and metric, the final metric against the
    closed-form baselines, the run's files, and how to evaluate or continue it."""
    if not rows:
        return f"No epoch finished; nothing was written under {out}."
    key = validation_key(rows[-1]) or "val_metric"
    scored = [r for r in rows if math.isfinite(float(r.get("val_metric", r.get(key, math.nan))))]  # what picked best.pt
    last, run = rows[-1], RunFolder(out)
    parts = []
    if scored:
        best = min(scored, key=lambda r: r[key])
        parts.append(f"Best epoch {best['epoch']}/{epochs}: {key} {best[key]:.4g} (lower is better), saved as {run.best}.")
        suffix = BASELINE_SUFFIX.get(key)
        bases = [(n, last.get(f"base_{n}{suffix}")) for n in BASELINES] if suffix else []
        bases = [(n.replace("_", "-"), v) for n, v in bases if isinstance(v, (int, float))]
        text = f"Final epoch {last['epoch']}: {key} {last[key]:.4g}"
        if bases:
            text += " against the closed-form baselines " + ", ".join(f"{n} {v:.4g}" for n, v in bases)
            text += " (beats them all)." if last[key] < min(v for _, v in bases) else " (does not beat them all)."
        else:
            text += "."
        parts.append(text)
    else:
        why = (" (train.lambda_cyc=0: the cycle loss, the metric without a validation split, is not trained; hold out images "
               "with data.val_fraction=0.1 for one)" if key == "loss_cyc" and all(r.get(key) == 0 for r in rows) else "")
        parts.append(f"No epoch has a finite {key}{why}; model/best.pt was not written.")
    parts.append(f"Checkpoints are in {run.model}/ ({run.best.name}, {run.last.name}, epoch_*.pt), the log and curves in {run.logs}/ "
                 f"({run.log.name}, {run.curves.name}), the pictures in {run.pictures}/.")
    ckpt = run.best if run.best.exists() else run.last
    parts.append(f"Evaluate: python -m lcgan.evaluate checkpoint={ckpt} eval.testA_dir=<images A> eval.testB_dir=<images B>.")
    what = "Train longer" if last["epoch"] >= epochs else "Continue it"
    extra = f" train.epochs=<more than {epochs}>" if last["epoch"] >= epochs else f" train.epochs={epochs}"
    command = " ".join(filter(None, ["python -m lcgan.train", _resume_overrides(out), extra.strip(), "train.resume=true", f"hydra.run.dir={out}"]))
    parts.append(f"{what}: {command}")
    return " ".join(parts)
