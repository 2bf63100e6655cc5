"""Training curves of one run, drawn with PIL from ``logs/train_log.jsonl`` into ``logs/curves.png``.

Two panels against the epoch: the losses (G, D, cyc, id), and the validation metric
(``lcgan.baselines.validation_metric``) with its closed-form baselines dashed. Also the PIL drawing
helpers (palette, font) that ``lcgan.report``'s sweep plot shares.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from lcgan.baselines import BASELINE_SUFFIX, BASELINES, validation_key
from lcgan.checkpoint import atomic_write_bytes

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
LOSSES = ("loss_G", "loss_D", "loss_cyc", "loss_id")
# the losses a train.lambda_* switches on (0 otherwise): drawn and reported only for runs that have them
EXTRA_LOSSES = ("loss_swd", "loss_spec", "loss_anchor", "loss_nce", "loss_cyc_decoded")


def losses_of(rows: list[dict]) -> tuple[str, ...]:
    """:data:`LOSSES` and those of :data:`EXTRA_LOSSES` that are not 0 in some row (log lines or sweep jobs)."""
    return (*LOSSES, *(k for k in EXTRA_LOSSES if any(r.get(k) for r in rows)))


def load_font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def read_log(path: str | Path) -> list[dict]:
    """The epoch lines of a run's ``train_log.jsonl``, the last line per epoch (a resume may repeat one)."""
    by_epoch = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_epoch[row["epoch"]] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def _dashed(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], colour, dash: int = 5) -> None:
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        length = math.hypot(x1 - x0, y1 - y0) or 1.0
        for s in range(0, int(length), 2 * dash):
            a, b = s / length, min(s + dash, length) / length
            draw.line([x0 + a * (x1 - x0), y0 + a * (y1 - y0), x0 + b * (x1 - x0), y0 + b * (y1 - y0)], fill=colour, width=2)


def _panel(draw, box, title: str, epochs: list[int], series: list[tuple[str, list[float], tuple, bool]]) -> None:
    """One axes box: ``series`` are (label, values per epoch, colour, dashed); non-finite values are skipped."""
    x0, y0, x1, y1 = box
    small = load_font(11)
    left, top, bottom, legend_w = 50, 22, 30, 120
    ax0, ay0, ax1, ay1 = x0 + left, y0 + top, x1 - legend_w, y1 - bottom
    draw.rectangle([ax0, ay0, ax1, ay1], outline=(90, 90, 90))
    draw.text((ax0, y0 + 4), title, fill="black", font=load_font(13))
    finite = [v for _, vs, _, _ in series for v in vs if math.isfinite(v)]
    if not finite:
        draw.text((ax0 + 8, ay0 + 8), "nothing finite to plot yet", fill="black", font=small)
        return
    lo, hi = min(finite), max(finite)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    lo, hi = lo - pad, hi + pad
    e_lo, e_hi = min(epochs), max(epochs)
    xs = lambda e: ax0 + 6 + (e - e_lo) / ((e_hi - e_lo) or 1) * (ax1 - ax0 - 12)  # noqa: E731
    ys = lambda v: ay0 + (hi - v) / (hi - lo) * (ay1 - ay0)  # noqa: E731
    for t in range(5):
        v = lo + (hi - lo) * t / 4
        draw.line([ax0 - 4, ys(v), ax0, ys(v)], fill=(90, 90, 90))
        draw.text((x0 + 2, ys(v) - 7), f"{v:.3g}", fill="black", font=small)
    for e in sorted({e_lo, e_hi, epochs[len(epochs) // 2]}):
        draw.text((xs(e) - 6, ay1 + 4), str(e), fill="black", font=small)
    draw.text(((ax0 + ax1) / 2 - 16, y1 - 14), "epoch", fill="black", font=small)
    for n, (label, values, colour, dashed) in enumerate(series):
        pts = [(xs(e), ys(v)) for e, v in zip(epochs, values) if math.isfinite(v)]
        if len(pts) == 1:
            draw.ellipse([pts[0][0] - 3, pts[0][1] - 3, pts[0][0] + 3, pts[0][1] + 3], fill=colour)
        elif dashed:
            _dashed(draw, pts, colour)
        else:
            draw.line(pts, fill=colour, width=2)
        ly = ay0 + 16 * n
        (_dashed if dashed else (lambda d, p, c: d.line(p, fill=c, width=2)))(draw, [(ax1 + 8, ly + 7), (ax1 + 26, ly + 7)], colour)
        draw.text((ax1 + 30, ly), label, fill="black", font=small)


def plot_curves(rows: list[dict], panel: tuple[int, int] = (480, 300)) -> Image.Image:
    """Losses and the validation metric (baselines dashed) against the epoch, side by side."""
    pw, ph = panel
    img = Image.new("RGB", (2 * pw, ph), "white")
    draw = ImageDraw.Draw(img)
    if not rows:
        draw.text((10, 10), "no epoch logged yet", fill="black", font=load_font(13))
        return img
    epochs = [r["epoch"] for r in rows]
    get = lambda k: [float(r.get(k, math.nan)) for r in rows]  # noqa: E731
    losses = [(k.removeprefix("loss_"), get(k), PALETTE[i], False) for i, k in enumerate(losses_of(rows))]
    _panel(draw, (0, 0, pw, ph), "losses", epochs, losses)
    key = validation_key(rows[-1]) or "val_metric"
    metric = [(key, get(key), PALETTE[3], False)]
    suffix = BASELINE_SUFFIX.get(key)
    if suffix:
        metric += [(name.replace("_", "-"), get(f"base_{name}{suffix}"), PALETTE[4 + i], True) for i, name in enumerate(BASELINES)]
    _panel(draw, (pw, 0, 2 * pw, ph), f"validation: {key} (lower is better)", epochs, metric)
    return img


def write_curves(log_path: str | Path, png_path: str | Path) -> Path:
    """Plot a run's log into ``png_path``, atomically (a reader never sees half a picture)."""
    buf = io.BytesIO()
    plot_curves(read_log(log_path)).save(buf, format="PNG")
    atomic_write_bytes(png_path, buf.getvalue())
    return Path(png_path)
