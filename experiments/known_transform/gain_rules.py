"""Rules for choosing the gain, scored offline on both held-out protocols from one set of runs.

    python experiments/known_transform/gain_rules.py experiments/known_transform/results/scale_select/afhq_protocol

Reads ``scale_select.py --sets test,afhq --val-afhq`` files (``scale_select_<recipe>_epoch_<n>_<transform>*.json``: per
run and scale, the test PSNR and two held-out distances) and the runs' ``results_*.json`` (the bar of each transform,
:func:`summarize.bar`) in one folder. Each distance is a protocol of ``lcgan.gain``: ``px_swd4_rec`` the test photos'
halves against each other, ``val_afhq_swd`` the AFHQ folders of ``run.py --held-out afhq`` (what ``train.gain_scales``
reads there). Each rule picks a scale per run from the distances alone; the table gives the median of the runs' test
PSNR at their picks. Rules: the nearest scale (``shrink`` 0, ``train.gain_tolerance=0``), and the smallest scale
that goes ``1 - shrink`` of the way from the start's distance to the nearest one's.

``--crossfit SIDE``: a third protocol that needs no photos beyond the training folders. Side runs of the same recipe
and seed trained on 80% of the training photos (``data.val_fraction=0.2 train.gain_scales=...``, their ``results_*.json``
and ``logs/gain.json`` in SIDE) chose G's gain on the other 20%; the table applies each side run's choice to the
full-data run of its seed in FOLDER, at the length nearest the side run's steps.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from summarize import ORDER, bar

from lcgan.gain import pick  # the product's rule: the nearest scale, or the smallest within `shrink` of the way back

PROTOCOLS = {"px_swd4_rec": "test halves", "val_afhq_swd": "AFHQ held-out"}
STEPS = 22  # steps an epoch of the full runs scored here: 352 latents a domain at batch 16 (screen.sh)


def load(folder: Path) -> tuple[dict, dict]:
    """``{(transform, epoch): {run: {scale: row}}}`` and each transform's bar on the test photos."""
    runs: dict = defaultdict(dict)
    for p in sorted(folder.glob("scale_select_*_epoch_*.json")):
        m = re.search(r"_epoch_(\d+)_([a-z_]+?)(_s[\d+]+)?\.json$", p.name)
        for key, rows in json.loads(p.read_text()).items():
            runs[m.group(2), int(m.group(1))][key] = {float(s): r for s, r in rows.items()}
    bars = {}
    for p in sorted(folder.glob("results_*.json")):
        r = json.loads(p.read_text())
        bars[r["transform"]] = bar(r["baselines"]["test"], r["transform"])
    return runs, bars


def side_gains(side: Path) -> tuple[dict, dict]:
    """``{(transform, seed): {step: (G's gain, {scale: distance} or None, the run's rule)}}`` of the side runs' scored
    epoch files (not best.pt), and each transform's bars ``{"test": ..., "afhq": ...}``. The distances come from the
    runs' ``logs/gain.json`` (its last epoch) and ``run.py``'s ``logs/gain_epoch_<n>.json``, kept in SIDE as
    ``gain_<transform>_s<seed>*.json``; the rule, ``(gain_shrink, gain_tolerance)``, from the same files (files written
    before ``gain_shrink`` existed chose the nearest scale: (0, 0)); a run without such a file has no known rule."""
    gains: dict = defaultdict(dict)
    bars: dict = {}
    for p in sorted(side.glob("results_*.json")):
        r = json.loads(p.read_text())
        t = r["transform"]
        bars[t] = {k: bar(v, t) for k, v in r["baselines"].items()}
        for seed, rows in r["runs"].items():
            dists, rule = {}, None
            for f in sorted(side.glob(f"gain_{t}_s{seed}*.json")):
                table = json.loads(f.read_text())
                rule = (table.get("gain_shrink", 0.0), table.get("gain_tolerance", 0.0))
                for key, entry in table.items():
                    m = re.fullmatch(r"epoch_(\d+)\.pt", key)
                    epoch = table["epoch"] if key == "last.pt" else m and int(m.group(1))
                    if epoch:
                        dists[epoch] = {float(k): v for k, v in entry["dist_g_ab"].items()}
            for row in rows:
                if not row.get("best") and "gain" in row:
                    gains[t, seed][row["step"]] = (row["gain"]["g_ab"], dists.get(row["epoch"]), rule)
    return gains, bars


def crossfit(runs: dict, gains: dict, bars: dict, rules: list[float]) -> list[str]:
    """Markdown rows: per transform, length and test set, each rule's picks from the side runs' distances (or the gain
    they recorded, under the rule they ran, where the distances were not kept) and the full-data runs' PSNR there."""
    lines = []
    for (t, epoch), by_run in sorted(runs.items(), key=lambda kv: (ORDER.index(kv[0][0]), kv[0][1])):
        epochs = sorted(e for tt, e in runs if tt == t)
        side = {}
        for run in by_run:
            steps = gains.get((t, run.split("/")[1]), {})
            mine = [s for s in steps if min(epochs, key=lambda e, s=s: abs(e * STEPS - s)) == epoch]
            if mine:
                side[run] = steps[mine[0]]
        if not side:
            continue
        seeds = ", ".join(run.split("/")[1] for run in side)
        for key, test in (("psnr", "test"), ("psnr_afhq", "afhq")):
            if not all(key in by_run[run][0.0] for run in side):
                continue
            cells = []
            for r in rules:
                picks = {run: pick(dist, r) if dist else (g if rule == (r, 0.0) else None) for run, (g, dist, rule) in side.items()}
                if None in picks.values():
                    cells.append("")
                    continue
                med = statistics.median(by_run[run][g][key] for run, g in picks.items())
                cells.append(f"{', '.join(f'{g:g}' for g in picks.values())}: {med:.3f} ({med - bars[t][test]:+.3f})")
            lines.append(f"| {t} ({bars[t][test]:.3f}) | {epoch * STEPS} | {seeds} | {test} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--shrink", default="0,0.1,0.25", help="the rules: 0 is the nearest scale")
    ap.add_argument("--seeds", default=None, help="only these seeds' runs (e.g. 3,4,5); default: every run in the folder")
    ap.add_argument("--crossfit", type=Path, default=None, help="a folder of side runs' results_*.json: score their gains (above)")
    args = ap.parse_args()
    runs, bars = load(args.folder)
    if args.seeds:
        keep = set(args.seeds.split(","))
        runs = {k: {run: rows for run, rows in v.items() if run.split("/")[1] in keep} for k, v in runs.items()}
    rules = [float(x) for x in args.shrink.split(",")]
    head = " | ".join(f"shrink {r:g}: scales, median (margin)" for r in rules)
    if args.crossfit:
        print(f"| transform (bar) | steps | seeds | test set | {head} |")
        print("| --- | ---: | --- | --- | " + " | ".join("---" for _ in rules) + " |")
        print("\n".join(crossfit(runs, *side_gains(args.crossfit), rules)))
        return
    print(f"| transform (bar) | steps | runs | protocol | {head} |")
    print("| --- | ---: | ---: | --- | " + " | ".join("---" for _ in rules) + " |")
    for (t, epoch), by_run in sorted(runs.items(), key=lambda kv: (ORDER.index(kv[0][0]), kv[0][1])):
        for key, name in PROTOCOLS.items():
            cells = []
            for r in rules:
                picks = [pick({s: row[key] for s, row in rows.items()}, r) for rows in by_run.values()]
                med = statistics.median(rows[s]["psnr"] for rows, s in zip(by_run.values(), picks))
                cells.append(f"{', '.join(f'{s:g}' for s in picks)}: {med:.3f} ({med - bars[t]:+.3f})")
            print(f"| {t} ({bars[t]:.3f}) | {epoch * STEPS} | {len(by_run)} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
