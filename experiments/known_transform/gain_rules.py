"""Rules for choosing the gain, scored offline on both held-out protocols from one set of runs.

    python experiments/known_transform/gain_rules.py experiments/known_transform/results/scale_select/afhq_protocol

Reads ``scale_select.py --sets test,afhq --val-afhq`` files (``scale_select_<recipe>_epoch_<n>_<transform>*.json``: per
run and scale, the test PSNR and two held-out distances) and the runs' ``results_*.json`` (the bar of each transform,
:func:`summarize.bar`) in one folder. Each distance is a protocol of ``lcgan.gain``: ``px_swd4_rec`` the test photos'
halves against each other, ``val_afhq_swd`` the AFHQ folders of ``run.py --held-out afhq`` (what ``train.gain_scales``
reads there). Each rule picks a scale per run from the distances alone; the table gives the median of the runs' test
PSNR at their picks. Rules: the nearest scale (``shrink`` 0, ``train.gain_tolerance=0``), and the smallest scale
that goes ``1 - shrink`` of the way from the start's distance to the nearest one's.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from summarize import ORDER, bar

PROTOCOLS = {"px_swd4_rec": "test halves", "val_afhq_swd": "AFHQ held-out"}


def pick(dist: dict[float, float], shrink: float) -> float:
    """The smallest scale whose distance is within ``shrink`` of the way from the nearest one's back to the start's."""
    nearest = min(dist, key=lambda s: (dist[s], s))
    start = dist[min(dist)]
    return min(s for s in dist if dist[s] <= dist[nearest] + shrink * (start - dist[nearest]))


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--shrink", default="0,0.1,0.25", help="the rules: 0 is the nearest scale")
    ap.add_argument("--seeds", default=None, help="only these seeds' runs (e.g. 3,4,5); default: every run in the folder")
    args = ap.parse_args()
    runs, bars = load(args.folder)
    if args.seeds:
        keep = set(args.seeds.split(","))
        runs = {k: {run: rows for run, rows in v.items() if run.split("/")[1] in keep} for k, v in runs.items()}
    rules = [float(x) for x in args.shrink.split(",")]
    print("| transform (bar) | steps | runs | protocol | " + " | ".join(f"shrink {r:g}: scales, median (margin)" for r in rules) + " |")
    print("| --- | ---: | ---: | --- | " + " | ".join("---" for _ in rules) + " |")
    for (t, epoch), by_run in sorted(runs.items(), key=lambda kv: (ORDER.index(kv[0][0]), kv[0][1])):
        for key, name in PROTOCOLS.items():
            cells = []
            for r in rules:
                picks = [pick({s: row[key] for s, row in rows.items()}, r) for rows in by_run.values()]
                med = statistics.median(rows[s]["psnr"] for rows, s in zip(by_run.values(), picks))
                cells.append(f"{', '.join(f'{s:g}' for s in picks)}: {med:.3f} ({med - bars[t]:+.3f})")
            print(f"| {t} ({bars[t]:.3f}) | {epoch * 22} | {len(by_run)} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
