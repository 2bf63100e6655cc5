"""Sweep report: the library behind ``python -m lcgan.report PATH_TO_MULTIRUN`` and the ``SweepReport`` Hydra callback.

Reads every job folder under PATH (a folder holding ``.hydra/config.yaml``): its overrides, config,
``logs/train_log.jsonl``, ``error.txt`` and the evaluation summary if there is one
(``eval/summary.json`` or ``eval/<checkpoint_stem>/summary.json`` inside the job folder), and writes
into PATH, atomically:

- ``report.csv`` / ``report.md``: one row per job, best first: the swept values, status
  (completed | failed | incomplete), final losses, the validation metric (``lcgan.baselines.validation_metric``,
  what ``train()`` returns: ``err`` on synthetic data, ``val_swd`` with a validation split, else ``loss_cyc``),
  the zero-parameter baselines and whether the job beats them, ``eval/*`` metrics, and the first line of the error of a failed job;
- ``report.png``: the metric against each swept parameter, one line per setting of the others,
  seeds averaged (mean ± std as error bars), the best baseline dashed.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import statistics
from pathlib import Path

from omegaconf import OmegaConf
from PIL import Image, ImageDraw

from lcgan.baselines import BASELINES, validation_key
from lcgan.checkpoint import atomic_write_bytes
from lcgan.curves import EXTRA_LOSSES, LOSSES, PALETTE, load_font, losses_of
from lcgan.layout import RunFolder, run_folders

STATUS_ORDER = {"completed": 0, "incomplete": 1, "failed": 2}
SEED_KEYS = ("seed",)  # averaged over in the aggregate table and the plot


def find_jobs(root: Path) -> list[Path]:
    """Job folders under ``root`` (``root`` itself for a single run), numeric names in numeric order."""
    key = lambda p: [int(s) if s.isdigit() else s for s in p.relative_to(root).parts]  # noqa: E731
    return sorted(run_folders(root), key=key)


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """``["train.lambda_cyc=5", "+experiment=grid"]`` -> ``{"train.lambda_cyc": "5", "experiment": "grid"}``."""
    out = {}
    for line in lines:
        key, _, value = line.partition("=")
        out[key.lstrip("+~")] = value
    return out


def error_line(text: str) -> str:
    """The exception of a traceback, its message lines joined: ``ConfigError: invalid config ...: data.latent_divisor=0 ...``."""
    lines = [ln for ln in text.rstrip().splitlines() if ln.strip()]
    starts = [i for i, ln in enumerate(lines) if not ln[0].isspace() and not ln.startswith(("Traceback", "During handling", "The above"))]
    if not starts:
        return lines[-1].strip() if lines else ""
    head, *rest = lines[starts[-1]:]
    head = head.split(": ", 1)
    head[0] = head[0].rsplit(".", 1)[-1]  # lcgan.config.ConfigError -> ConfigError
    return " ".join([": ".join(head), *(ln.strip() for ln in rest)])


def read_eval(job: Path) -> dict[str, float]:
    """Numeric entries of the job's evaluation summary, flattened as ``eval/<key>/<key>``; {} without one.

    Run ``python -m lcgan.evaluate checkpoint=<job>/model/last.pt eval.out_dir=<job>/eval/last`` to
    put one there; of ``lcgan.evaluate``'s summary only the scores under ``directions`` are read.
    """
    found = RunFolder(job).eval_summaries()
    if not found:
        return {}
    path = found[0]

    def flat(d: dict, prefix: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}/"))
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"{prefix}{k}"] = float(v)
        return out

    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    if not isinstance(summary, dict):
        return {}
    # lcgan.evaluate's summary keeps its scores under "directions" (A2B/B2A -> model/baselines -> metric)
    return flat(summary["directions"] if isinstance(summary.get("directions"), dict) else summary, "eval/")


def read_job(job: Path, root: Path) -> dict:
    """Everything the report needs from one job folder, as a flat dict."""
    # data only, never resolved: out_dir is a ${hydra:} interpolation, and a resolver (oc.env, ...) would read
    # what the folder's author chose rather than what the job ran with
    run = RunFolder(job)
    cfg = OmegaConf.to_container(OmegaConf.load(run.hydra_config), resolve=False)
    overrides_path = run.overrides
    overrides = parse_overrides([str(o) for o in OmegaConf.to_container(OmegaConf.load(overrides_path), resolve=False)]) \
        if overrides_path.is_file() else {}
    log_path = run.log
    rows = []
    if log_path.is_file():
        for line in log_path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut by a crash
                rows.append(json.loads(line))
    epochs = (cfg.get("train") or {}).get("epochs") if isinstance(cfg, dict) else None
    epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None
    done = rows[-1]["epoch"] if rows else 0
    err_path = run.error
    stale = err_path.is_file() and log_path.is_file() and err_path.stat().st_mtime < log_path.stat().st_mtime
    if epochs is not None and done >= epochs and (not err_path.is_file() or stale):
        status = "completed"  # an error.txt older than the log is from an attempt that was resumed since
    elif err_path.is_file():
        status = "failed"
    else:
        status = "incomplete"  # running, killed (OOM, time limit) or preempted
    last = rows[-1] if rows else {}
    out = {"job": str(job.relative_to(root)) or ".", "status": status, "epochs": f"{done}/{epochs}", "overrides": overrides}
    out.update({k: last[k] for k in (*LOSSES, *EXTRA_LOSSES) if k in last})
    for k in ("err", "err_G", "err_F", "val_swd"):
        if k in last:
            out[k] = last[k]
    for name in BASELINES:
        if f"base_{name}_G" in last:
            out[f"base_{name}"] = (last[f"base_{name}_G"] + last[f"base_{name}_F"]) / 2
    if "beats_baselines" in last:
        out["beats_baselines"] = last["beats_baselines"]
    elif "err" in last and "base_mean_shift" in out:
        out["beats_baselines"] = last["err"] < best_baseline(out)
    out.update(read_eval(job))
    out["error"] = error_line(err_path.read_text(errors="replace")) if status == "failed" else ""
    return out


def best_baseline(row: dict) -> float:
    """The lowest ``err`` of the closed-form baselines a job logged (older logs have fewer of them)."""
    return min((row[f"base_{n}"] for n in BASELINES if f"base_{n}" in row), default=math.inf)


def _read_job_or_say_why(job: Path, root: Path) -> dict:
    """One broken job folder (a cut config.yaml, a log of the wrong type) is a failed row, never the whole report's end."""
    try:
        return read_job(job, root)
    except Exception as e:
        return {"job": str(job.relative_to(root)) or ".", "status": "failed", "epochs": "?", "overrides": {},
                "error": f"unreadable job folder: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}


def swept_keys(jobs: list[dict]) -> list[str]:
    """Override keys whose value is not the same in every job, in command-line order."""
    keys = list(dict.fromkeys(k for j in jobs for k in j["overrides"]))
    if len(jobs) == 1:
        return keys
    return [k for k in keys if len({j["overrides"].get(k) for j in jobs}) > 1]


def _value(s: str | None):
    """Override strings as numbers where they are numbers, for sorting and plotting."""
    try:
        return float(s)
    except (TypeError, ValueError):
        return s


def _sort_key(value) -> tuple:
    return (0, value, "") if isinstance(value, float) else (1, 0.0, str(value))


def table(root: Path, metric: str | None = None) -> tuple[list[dict], list[str], str]:
    """(rows best first, swept keys, metric name) for the jobs under ``root``."""
    jobs = [_read_job_or_say_why(j, root) for j in find_jobs(root)]
    keys = swept_keys(jobs)
    metric = metric or validation_key(k for j in jobs for k in j) or "loss_cyc"  # what train() returned
    rows = []
    for j in jobs:
        row = {"job": j["job"], "status": j["status"], **{k: j["overrides"].get(k, "") for k in keys}}
        row.update({k: v for k, v in j.items() if k not in ("job", "status", "overrides")})
        rows.append(row)

    def rank(r: dict) -> tuple:
        m = r.get(metric)
        return (STATUS_ORDER[r["status"]], m if isinstance(m, (int, float)) and math.isfinite(m) else math.inf)

    return sorted(rows, key=rank), keys, metric


def aggregate(rows: list[dict], keys: list[str], metric: str) -> list[dict]:
    """Completed jobs grouped by the swept values other than the seed: n, mean and std of the metric."""
    group_keys = [k for k in keys if k not in SEED_KEYS]
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if r["status"] == "completed" and isinstance(r.get(metric), (int, float)):
            groups.setdefault(tuple(r[k] for k in group_keys), []).append(float(r[metric]))
    out = [{**dict(zip(group_keys, g)), "n": len(v), "mean": statistics.fmean(v),
            "std": statistics.stdev(v) if len(v) > 1 else 0.0} for g, v in groups.items()]
    return sorted(out, key=lambda r: r["mean"])


def columns(rows: list[dict], keys: list[str], metric: str, max_eval: int | None = None) -> list[str]:
    """Table columns in reading order; ``max_eval`` caps the ``eval/*`` ones (the Markdown table)."""
    present = list(dict.fromkeys(k for r in rows for k in r))
    fixed = ["job", "status", *keys, "epochs", metric]
    rest = [*losses_of(rows), "err", "err_G", "err_F", "val_swd", *(f"base_{n}" for n in BASELINES), "beats_baselines"]
    evals = sorted(k for k in present if k.startswith("eval/"))[:max_eval]
    return [c for c in dict.fromkeys([*fixed, *rest, *evals, "error"]) if c in present or c in fixed]


def fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return "" if v is None else str(v)


def to_csv(rows: list[dict], cols: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def md_table(rows: list[dict], cols: list[str]) -> str:
    cell = lambda v: fmt(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(root: Path, rows: list[dict], keys: list[str], metric: str, agg: list[dict]) -> str:
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUS_ORDER}
    lines = [f"# Sweep report: `{root}`", "",
             f"{len(rows)} jobs: {counts['completed']} completed, {counts['failed']} failed, {counts['incomplete']} incomplete. "
             f"Swept: {', '.join(f'`{k}`' for k in keys) or 'nothing'}. Sorted by `{metric}` (lower is better)."]
    if "base_mean_shift" in columns(rows, keys, metric):
        lines.append("Baselines: `err` of the closed-form maps of `lcgan.baselines` (mean-shift, moment-matching, Gaussian OT, "
                     "3x3-patch Gaussian OT; 1 = the identity); `beats_baselines`: the job's `err` is below every one.")
    lines += ["", md_table(rows, columns(rows, keys, metric, max_eval=8)), ""]
    if any(k in SEED_KEYS for k in keys):
        cols = [*(k for k in keys if k not in SEED_KEYS), "n", "mean", "std"]
        lines += [f"## `{metric}` over seeds (mean ± std of completed jobs)", "", md_table(agg, cols), ""]
    lines += ["![metric against each swept parameter](report.png)", ""]
    return "\n".join(lines)


# --- the plot, drawn with PIL so it needs nothing beyond the package's dependencies ---
def plot(rows: list[dict], keys: list[str], metric: str, panel: tuple[int, int] = (380, 300)) -> Image.Image:
    """One panel per swept parameter: x its values, y the metric (seed mean ± std), a line per setting of the others."""
    done = [r for r in rows if r["status"] == "completed" and isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    params = [k for k in keys if k not in SEED_KEYS] or ["job"]
    font, small = load_font(13), load_font(11)
    pw, ph = panel
    legend_rows = []
    canvas_h = ph + 22
    img = Image.new("RGB", (pw * len(params), canvas_h), "white")
    draw = ImageDraw.Draw(img)
    if not done:
        draw.text((10, 10), f"no completed job with a finite {metric}", fill="black", font=font)
        return img
    values = [r[metric] for r in done]
    base = [best_baseline(r) for r in done if "base_mean_shift" in r]
    lo, hi = min(values + base), max(values + base)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    lo, hi = (lo - pad if lo - pad > 0 or lo < 0 else 0.0), hi + pad  # errors are >= 0: no negative axis
    left, right, top, bottom = 56, 14, 26, 44
    for n, p in enumerate(params):
        x0 = n * pw
        ys = lambda v: top + (hi - v) / (hi - lo) * (ph - top - bottom)  # noqa: E731
        draw.rectangle([x0 + left, top, x0 + pw - right, ph - bottom], outline=(90, 90, 90))
        draw.text((x0 + left, 6), f"{metric} vs {p}", fill="black", font=font)
        for t in range(5):
            v = lo + (hi - lo) * t / 4
            draw.line([x0 + left - 4, ys(v), x0 + left, ys(v)], fill=(90, 90, 90))
            draw.text((x0 + 4, ys(v) - 7), f"{v:.3g}", fill="black", font=small)
        xs_vals = sorted({_value(r.get(p)) for r in done}, key=_sort_key) if p != "job" else [r["job"] for r in done]
        span = pw - left - right
        xpos = {v: x0 + left + span * (i + 0.5) / len(xs_vals) for i, v in enumerate(xs_vals)}
        for v, x in xpos.items():
            draw.text((x - 10, ph - bottom + 6), fmt(v), fill="black", font=small)
        if base:
            yb = ys(statistics.fmean(base))
            for xd in range(x0 + left, x0 + pw - right, 8):
                draw.line([xd, yb, xd + 4, yb], fill=(120, 120, 120))
            draw.text((x0 + pw - right - 80, yb - 14), "best baseline", fill=(120, 120, 120), font=small)
        others = [k for k in params if k != p]
        lines: dict[tuple, dict] = {}
        for r in done:
            label = tuple((k, r.get(k)) for k in others)
            xv = _value(r.get(p)) if p != "job" else r["job"]
            lines.setdefault(label, {}).setdefault(xv, []).append(r[metric])
        for i, (label, pts) in enumerate(sorted(lines.items(), key=lambda kv: [_sort_key(_value(v)) for _, v in kv[0]])):
            colour = PALETTE[i % len(PALETTE)]
            jitter = (i - (len(lines) - 1) / 2) * 4  # error bars of different lines side by side
            path = []
            for xv in sorted(pts, key=_sort_key):
                m = statistics.fmean(pts[xv])
                s = statistics.stdev(pts[xv]) if len(pts[xv]) > 1 else 0.0
                x, y = xpos[xv] + jitter, ys(m)
                if s:
                    draw.line([x, ys(m - s), x, ys(m + s)], fill=colour, width=2)
                    draw.line([x - 4, ys(m - s), x + 4, ys(m - s)], fill=colour)
                    draw.line([x - 4, ys(m + s), x + 4, ys(m + s)], fill=colour)
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
                path.append((x, y))
            if len(path) > 1:
                draw.line(path, fill=colour, width=2)
            text = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in label) or "all"
            legend_rows.append((n, colour, text))
        draw.text((x0 + left + span / 2 - 30, ph - 18), p.rsplit(".", 1)[-1], fill="black", font=font)
    # legends: one column per panel, the lines of that panel
    per_panel = max(sum(1 for n, *_ in legend_rows if n == k) for k in range(len(params)))
    out = Image.new("RGB", (img.width, canvas_h + 16 * per_panel + 8), "white")
    out.paste(img, (0, 0))
    d = ImageDraw.Draw(out)
    counters = [0] * len(params)
    for n, colour, text in legend_rows:
        y = canvas_h + 16 * counters[n]
        counters[n] += 1
        d.line([n * pw + left, y + 7, n * pw + left + 18, y + 7], fill=colour, width=3)
        d.text((n * pw + left + 24, y), text, fill="black", font=small)
    if any(k in SEED_KEYS for k in keys):
        d.text((out.width - 150, 6), "mean ± std over seeds", fill=(90, 90, 90), font=small)
    return out


def write_report(root: str | Path, metric: str | None = None, top: int = 5, quiet: bool = False) -> list[dict]:
    """Write report.csv, report.md and report.png into ``root``; returns the rows, best first."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; give the sweep folder, e.g. multirun/2025-01-31/12-00-00")
    rows, keys, metric = table(root, metric)
    if not rows:
        raise FileNotFoundError(f"no job folders (with .hydra/config.yaml) under {root}; is it a Hydra multirun folder?")
    cols = columns(rows, keys, metric)
    agg = aggregate(rows, keys, metric)
    atomic_write_bytes(root / "report.csv", to_csv(rows, cols).encode())
    atomic_write_bytes(root / "report.md", to_markdown(root, rows, keys, metric, agg).encode())
    buf = io.BytesIO()
    plot(rows, keys, metric).save(buf, format="PNG")
    atomic_write_bytes(root / "report.png", buf.getvalue())
    if not quiet:
        shown = [c for c in cols if c not in ("error",)][: 6 + len(keys)]
        width = {c: max(len(c), *(len(fmt(r.get(c))) for r in rows[:top])) for c in shown}
        print("  ".join(c.ljust(width[c]) for c in shown))
        for r in rows[:top]:
            print("  ".join(fmt(r.get(c)).ljust(width[c]) for c in shown))
        failed = [r for r in rows if r["status"] == "failed"]
        for r in failed:
            print(f"job {r['job']} failed: {r['error'][:200]}")
        print(f"{len(rows)} jobs; wrote {root / 'report.md'}, report.csv, report.png")
    return rows
