"""Does a recipe learn more once the photo sets' content differences are gone? The suite beside its control.

``run.py --b-photos same`` trains on domains that show the same photos (B-train: other random crops of A-train's
photos, transformed; still unpaired). The suite's A and B show different photos, so a discriminator can tell them
apart by what they show as well as by the transform. For each recipe, output and transform this prints the median
over seeds, at one length, of the recipe's PSNR minus the suite's bar (the best of identity and every unpaired
closed-form map, refitted on each setting's own training latents; null: identity - 0.2 dB), in both settings.
If the content differences were what holds a recipe back, its margin over the bar would grow in the control.

    python experiments/known_transform/b_same.py results/suite_256px results/b_same --recipes pfT,pfTpRUe --step 1012
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from summarize import ORDER, bar

OUTPUTS = {"psnr": "G", "psnr_pf": "G + its post-filter", "psnr_ema": "EMA G", "psnr_pf_ema": "EMA G + its post-filter"}


def margins(folder: Path, recipe: str, transform: str, step: int, key: str, test: str) -> tuple[float | None, float | None]:
    """The median of ``key`` over the recipe's seeds at ``step`` minus the bar, and the bar (None, bar: no such rows)."""
    values, best = [], None
    for f in sorted(folder.glob(f"results_{transform}_{recipe}_s*.json")):
        r = json.loads(f.read_text())
        best = bar(r["baselines"][test], transform)
        name = key if test == "test" else f"{key}_{test}"
        values += [row[name] for rows in r["runs"].values() for row in rows if row.get("step") == step and not row.get("best") and name in row]
    return (statistics.median(values) - best if values else None), best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", type=Path, help="the suite's result files (run.py's --out)")
    ap.add_argument("control", type=Path, help="the control's (run.py --b-photos same: OUT/b_same)")
    ap.add_argument("--recipes", default="pfT")
    ap.add_argument("--step", type=int, default=1012)
    args = ap.parse_args()
    for test in ("test", "afhq"):
        print(f"\n### `{test}`: median over seeds at {args.step} steps minus the bar, dB\n")
        print("| recipe | output | B-train shows | " + " | ".join(ORDER) + " |")
        print("| --- | --- | --- | " + " | ".join("---:" for _ in ORDER) + " |")
        for recipe in args.recipes.split(","):
            for key, label in OUTPUTS.items():
                rows = {s: [margins(folder, recipe, t, args.step, key, test)[0] for t in ORDER]
                        for s, folder in (("other photos (suite)", args.suite), ("A's photos (control)", args.control))}
                if all(m is None for ms in rows.values() for m in ms):
                    continue
                for setting, ms in rows.items():
                    print(f"| {recipe} | {label} | {setting} | " + " | ".join("-" if m is None else f"{m:+.2f}" for m in ms) + " |")
        for setting, folder in (("other photos (suite)", args.suite), ("A's photos (control)", args.control)):
            bars = [margins(folder, args.recipes.split(",")[0], t, args.step, "psnr", test)[1] for t in ORDER]
            print(f"| bar (dB) | | {setting} | " + " | ".join("-" if b is None else f"{b:.2f}" for b in bars) + " |")


if __name__ == "__main__":
    main()
