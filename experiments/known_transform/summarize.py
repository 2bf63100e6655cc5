"""One table from many ``run.py`` result files: a row per recipe, medians over seeds.

    python experiments/known_transform/summarize.py outputs/known_transform/results_*.json > table.md

Files of one recipe are grouped by name, a trailing ``_s<seed>`` removed (``run.py --name d0mm_s2``
runs seed 2 of ``d0mm``, so seeds can run in parallel processes); a file holding several seeds
counts each of them.
"""
from __future__ import annotations

import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def _psnr(baselines: dict) -> dict:
    """The PSNR columns of the baseline rows, to the table's precision (LPIPS may be there or not)."""
    return {k: [round(x, 2) for x in v[:2] if not math.isnan(x)] for k, v in baselines.items()}


def load(paths: list[Path]) -> tuple[dict, dict[str, dict]]:
    """Baselines (identical in every file of one data folder) and, per recipe: overrides, rows per seed, synthetic err per seed."""
    recipes: dict[str, dict] = defaultdict(lambda: {"overrides": None, "rows": {}, "synthetic": {}})
    base = None
    for p in paths:
        r = json.loads(p.read_text())
        if base is not None and _psnr(r["baselines"]) != _psnr(base):
            raise ValueError(f"{p}: its baselines differ from the other files' (another data folder?); summarise one data folder at a time")
        base = r["baselines"]
        name = re.sub(r"_s\d+$", "", r["name"])
        rec = recipes[name]
        rec["overrides"] = rec["overrides"] or [o for o in r["overrides"] if not o.startswith(("device=", "train.compile", "train.cuda_graphs", "train.vis_every"))]
        rec["rows"].update({int(s): rows for s, rows in r["runs"].items()})
        rec["synthetic"].update({int(s): v["err"] for s, v in r.get("synthetic", {}).items()})
    return base, dict(recipes)


def median_cell(values: list[float]) -> str:
    return f"**{statistics.median(values):.2f}** ({', '.join(f'{v:.2f}' for v in values)})" if values else ""


def table(base: dict, recipes: dict[str, dict]) -> str:
    steps = sorted({row["step"] for rec in recipes.values() for rows in rec["rows"].values() for row in rows if not row.get("best")})
    head = ["recipe", "overrides", "seeds", *(f"{s} steps" for s in steps), "vs oracle recon., last step", "synthetic err"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for k in ("identity", "mean_shift", "moment_match", "oracle"):
        lines.append(f"| {k} (no training) | | | " + " | ".join(f"{base[k][0]:.2f}" for _ in steps) + f" | {base[k][1]:.2f} | |")
    for name, rec in recipes.items():
        seeds = sorted(rec["rows"])
        at = lambda step, key="psnr": [row[key] for s in seeds for row in rec["rows"][s] if row["step"] == step and not row.get("best") and key in row]  # noqa: E731
        synth = [rec["synthetic"][s] for s in sorted(rec["synthetic"])]
        synth_cell = f"{statistics.median(synth):.3f} ({', '.join(f'{e:.3f}' for e in synth)})" if synth else ""
        last = max(row["step"] for rows in rec["rows"].values() for row in rows)
        last_vae = at(last, "psnr_vae")
        vae_cell = f"{statistics.median(last_vae):.2f}" if last_vae else ""
        lines.append(f"| {name} | `{' '.join(rec['overrides']) or '(defaults)'}` | {','.join(map(str, seeds))} | "
                     + " | ".join(median_cell(at(s)) for s in steps) + f" | {vae_cell} | {synth_cell} |")
        if any(at(s, "psnr_ema") for s in steps):
            lines.append(f"| {name}, EMA generator | | | " + " | ".join(median_cell(at(s, "psnr_ema")) for s in steps) + " | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    paths = [Path(a) for a in (argv if argv is not None else sys.argv[1:])]
    if not paths:
        raise SystemExit("usage: summarize.py RESULTS.json [...]  (the results_<name>.json files of run.py)")
    md = table(*load(paths))
    print(md)
    return md


if __name__ == "__main__":
    main()
