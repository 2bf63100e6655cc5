"""How much does the suite's bar depend on the photo split? The closed-form rows of several splits side by side.

The suite scores every recipe on one random split of the photos (``run.py --split-seed 0``). Each transform's bar is
the best of identity and the unpaired closed-form maps on that split's test photos, so which map sets it, and by how
much, is partly the split's luck. This prints every map's score on each split, and per transform each split's best
map with its margin over the next best: the variation a recipe's verdict inherits from the split.

    for s in 1 2; do for t in grade sepia split_tone soft_focus sharpen dark_edges null; do
      python experiments/known_transform/run.py --transform $t --no-train --image-size 256 --lpips off --split-seed $s --out OUT$s
    done; done
    python experiments/known_transform/splits.py results/suite_256px/results_*_baselines.json OUT1/results_*.json OUT2/results_*.json
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from summarize import ORDER, TIE_DB, UNPAIRED

LABELS = {"suite_256px": "split0"}  # the suite's own results folder holds run.py's default split (--split-seed 0)


def split_of(path: Path) -> str:
    """The split a baselines file belongs to: its folder (each split is written to its own --out)."""
    return LABELS.get(path.parent.name, path.parent.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="run.py --no-train result files, one folder per split")
    ap.add_argument("--test-set", default="test")
    args = ap.parse_args()
    rows: dict[str, dict[str, dict[str, float]]] = {}  # transform -> split -> map -> PSNR
    for f in args.files:
        r = json.loads(f.read_text())
        if not re.search(r"_(baselines|default)\.json$", f.name):
            continue
        base = r["baselines"][args.test_set]
        rows.setdefault(r["transform"], {})[split_of(f)] = {k: base[k][0] for k in UNPAIRED if k in base}
    splits = sorted({s for t in rows.values() for s in t})
    print(f"test set `{args.test_set}`: PSNR dB of identity and the unpaired closed-form maps, one column per split "
          f"({', '.join(splits)}); each transform's bar in bold\n")
    print("| transform | map | " + " | ".join(splits) + " |")
    print("| --- | --- |" + " --- |" * len(splits))
    transforms = [t for t in ORDER if t in rows] + sorted(set(rows) - set(ORDER))
    for t in transforms:
        for m in UNPAIRED:
            cells = []
            for s in splits:
                scores = rows[t].get(s, {})
                v = scores.get(m)
                cells.append("" if v is None else f"**{v:.2f}**" if v == max(scores.values()) else f"{v:.2f}")
            print(f"| {t} | {m} | " + " | ".join(cells) + " |")
    print("\nPer transform: the best map of each split and its margin over the second best (a tie within "
          f"{TIE_DB} dB is within seed-to-seed spread)\n")
    for t in transforms:
        parts = []
        for s in splits:
            if s in rows[t]:
                ranked = sorted(rows[t][s].items(), key=lambda kv: -kv[1])
                parts.append(f"{s}: {ranked[0][0]} (+{ranked[0][1] - ranked[1][1]:.2f} over {ranked[1][0]})")
        print(f"- {t}: " + "; ".join(parts))


if __name__ == "__main__":
    main()
