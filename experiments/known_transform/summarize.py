"""One table from many ``run.py`` result files: a row per recipe, medians over seeds.

    python experiments/known_transform/summarize.py outputs/known_transform/results_*.json > table.md
    python experiments/known_transform/summarize.py --twice xfGs1:xfGs2 results_*.json   # + the 2x check of two runs
    python experiments/known_transform/summarize.py --twice xfGs1,xfGs1x:xfGs2,xfGs2x results_*.json   # seeds of two names pooled

Files written with ``--transform`` (the suite) make one table per test set, a column per transform,
and the rank agreement of the unpaired validation score with PSNR (:func:`suite_table`).

Files of one recipe are grouped by name, a trailing ``_s<seed>`` removed (``run.py --name d0mm_s2``
runs seed 2 of ``d0mm``, so seeds can run in parallel processes); a file holding several seeds
counts each of them.
"""
from __future__ import annotations

import itertools
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from lcgan.baselines import BASELINES


def _psnr(baselines: dict) -> dict:
    """The PSNR columns of the baseline rows, to the table's precision (LPIPS may be there or not)."""
    return {k: [round(x, 2) for x in v[:2] if not math.isnan(x)] for k, v in baselines.items()}


SPEED_KEYS = ("device=", "train.compile", "train.cuda_graphs", "train.vis_every")  # overrides that do not change the recipe


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
        rec["overrides"] = rec["overrides"] or [o for o in r["overrides"] if not o.startswith(SPEED_KEYS)]
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
        def at(step: int, key: str = "psnr", seeds=seeds, rec=rec) -> list[float]:
            return [row[key] for s in seeds for row in rec["rows"][s] if row["step"] == step and not row.get("best") and key in row]

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


BEST = -1  # the "step" of best.pt rows: whichever epoch the run's validation metric kept
TIE_DB = 0.05  # differences this small are within seed-to-seed spread (0.01-0.05 dB): a tie, not a win
MIN_SEEDS = 3  # the test is a median of 3 seeds: recipes with fewer stay out of the standings
UNPAIRED = ("identity", *BASELINES)  # rows a user without pairs can have (results of older runs may lack some)
ORDER = ("grade", "sepia", "split_tone", "soft_focus", "sharpen", "dark_edges", "null")  # run.py's transforms, table order
FILTERED = (*(f"{k}+pf" for k in UNPAIRED), *(f"{k}+pf (decoupled)" for k in BASELINES))  # run.py --pixel-filter --no-train


def bar(rows: dict, transform: str) -> float:
    """What a trained recipe must beat on one test set: the best of identity and every unpaired closed-form map;
    on ``null`` (nothing to learn), identity's score less 0.2 dB (a translator may cost at most that)."""
    return rows["identity"][0] - 0.2 if transform == "null" else max(rows[k][0] for k in UNPAIRED if k in rows)


def standings(scores: dict[str, dict[str, tuple[float, float]]], top: int = 5) -> list[str]:
    """Where the suite stands: ``scores`` maps a recipe to {transform: (median PSNR, margin over the bar)}. The
    highest median of each transform with its recipe, then the recipes that win the most transforms (a win: the
    margin above TIE_DB), ties broken by how far they fall short of the bar elsewhere."""
    if not scores:
        return []
    transforms = list(next(iter(scores.values())))
    best = [max(scores, key=lambda n, t=t: scores[n][t][0]) for t in transforms]
    tally = {n: (sum(m > TIE_DB for _, m in s.values()), sum(min(m, 0.0) for _, m in s.values())) for n, s in scores.items()}
    rank = sorted(tally, key=lambda n: (-tally[n][0], -tally[n][1]))
    return [f"Where the suite stands (recipes with {MIN_SEEDS} or more seeds on every transform, each at its last scored length):",
            "- the highest median of each transform (its margin over the bar): "
            + ", ".join(f"{t} {scores[n][t][0]:.2f} `{n}` ({scores[n][t][1]:+.2f})" for t, n in zip(transforms, best)),
            "- the most wins (above the bar by more than 0.05 dB), then the least shortfall: "
            + ", ".join(f"`{n}` {tally[n][0]} of {len(transforms)} (short {tally[n][1]:.2f} dB)" for n in rank[:top]), ""]


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / den if den else math.nan


def collect(results: list[dict]) -> tuple[list[str], dict, dict, dict]:
    """The suite's files as (transforms in table order, baselines: transform -> test set -> row, recipes: label ->
    transform -> step -> seed -> row, overrides: label -> recipe overrides). A label is a recipe's name, its
    ``best.pt`` (step BEST), its EMA generator and each of those with the fitted pixel post-filter."""
    transforms = [t for t in ORDER if any(r["transform"] == t for r in results)]
    transforms += sorted({r["transform"] for r in results} - set(transforms))
    base: dict = defaultdict(lambda: defaultdict(dict))  # transform -> test set -> row; files of older runs may lack rows
    for r in results:
        for test_set, rows in r["baselines"].items():
            base[r["transform"]][test_set].update(rows)
    recipes: dict[str, dict] = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))  # name -> transform -> step -> seed -> row
    overrides = {}
    for r in results:
        name = re.sub(r"_s\d+$", "", r["name"])
        if name == "baselines":
            continue
        overrides[name] = [o for o in r["overrides"] if not o.startswith(SPEED_KEYS)]
        for seed, rows in r["runs"].items():
            for scored in rows:
                # train.ema_decay > 0: the same checkpoint's EMA generator, a recipe of its own ("<name> (EMA)"); G's
                # scale grid is not the EMA's (runs scored before the EMA had its own grid have none)
                ema = {k.replace("_ema", ""): v for k, v in scored.items() if "_ema" in k}
                own = {k: v for k, v in scored.items() if "_by_scale" not in k}
                variants = [(name, scored)] + ([(f"{name} (EMA)", {**own, **ema})] if ema else [])
                for base_name, row in variants:
                    # best.pt, the checkpoint a user without ground truth keeps: a recipe of its own, at no fixed step
                    label, step = (f"{base_name} best.pt", BEST) if row.get("best") else (base_name, row["step"])
                    overrides[base_name] = overrides[label] = overrides[name]
                    recipes[label][r["transform"]][step][int(seed)] = row
                    if "psnr_pf" in row:  # run.py --pixel-filter: the same checkpoint with its fitted post-filter
                        overrides[label + " + pixel filter"] = overrides[name]
                        pf = {k.replace("_pf", ""): v for k, v in row.items() if "_pf" in k}
                        no_val = {k: None for k in row if k.startswith("val")}  # a latent score: the filter acts on pixels
                        recipes[label + " + pixel filter"][r["transform"]][step][int(seed)] = {**row, **pf, **no_val}
    return transforms, base, recipes, overrides


def suite_table(results: list[dict]) -> str:
    """Per test set: rows without training and each recipe at each scored step (median over seeds, seeds
    in brackets), a column per transform; whether each recipe beats identity and every unpaired
    closed-form map; and how well the unpaired validation score ranks checkpoints and baselines like PSNR."""
    transforms, base, recipes, overrides = collect(results)
    out = []
    for test_set in next(iter(base.values())):
        tag = "" if test_set == "test" else f"_{test_set}"
        out += [f"### test set `{test_set}`: PSNR vs truth, dB", "",
                "| row | " + " | ".join(transforms) + " |", "| --- |" + " --- |" * len(transforms)]
        for k in (*UNPAIRED, *FILTERED, "paired_affine", "oracle"):
            if k in FILTERED and not any(k in base[t][test_set] for t in transforms):
                continue
            cells = (f"{base[t][test_set][k][0]:.2f}" if k in base.get(t, {}).get(test_set, {}) else "" for t in transforms)
            out.append(f"| {k} | " + " | ".join(cells) + " |")
        verdicts, scores = [], {}
        for name in recipes:
            steps = sorted({s for t in recipes[name].values() for s in t})
            for step in steps:
                cells = []
                for t in transforms:
                    vals = [row["psnr" + tag] for _, row in sorted(recipes[name].get(t, {}).get(step, {}).items())
                            if "psnr" + tag in row]  # a result may score some test sets only (ensemble.py --sets)
                    cells.append(median_cell(vals) if vals else "")
                out.append(f"| {name}{'' if step == BEST else f' @ {step} steps'} | " + " | ".join(cells) + " |")
            last = steps[-1]
            wins, scored = [], {}
            for t in transforms:
                vals = [row["psnr" + tag] for row in recipes[name].get(t, {}).get(last, {}).values() if "psnr" + tag in row]
                if not vals:
                    continue
                rows = base[t][test_set]
                best = bar(rows, t)
                margin = statistics.median(vals) - best
                if len(vals) >= MIN_SEEDS:
                    scored[t] = (statistics.median(vals), margin)
                filtered = [rows[k][0] for k in FILTERED if k in rows]  # fitted, but no training of G
                vs_pf = f"; vs the best map + pixel filter {statistics.median(vals) - max(filtered):+.2f}" if filtered and t != "null" else ""
                wins.append(f"{t} {'yes' if margin > TIE_DB else 'tie' if margin > -TIE_DB else 'no'} ({margin:+.2f}{vs_pf})")
            at = "best.pt" if last == BEST else f"{last} steps"
            verdicts.append(f"- `{name}` (`{' '.join(overrides[name]) or '(defaults)'}`), median at {at} minus the best of identity and "
                            f"every unpaired closed-form map (null: minus identity's - 0.2 dB): " + ", ".join(wins))
            if len(scored) == len(transforms):
                scores[name] = scored
        out += ["", *verdicts, "", *standings(scores)]
        regrets = []  # what best.pt gave up against the best checkpoint the suite scored in the same run (0: it kept that one)
        for name in recipes:
            if not name.endswith((" best.pt", " best.pt + pixel filter")):  # the filtered output is what evaluate writes
                continue
            cells = []
            for t in transforms:
                kept = recipes[name].get(t, {}).get(BEST, {})
                scored = recipes[name.replace(" best.pt", "", 1)].get(t, {})
                gaps = [row["psnr" + tag] - max(by_seed[seed]["psnr" + tag] for by_seed in scored.values() if seed in by_seed)
                        for seed, row in kept.items() if "psnr" + tag in row and any(seed in by_seed for by_seed in scored.values())]
                if gaps:
                    cells.append(f"{t} {statistics.median(gaps):+.2f}")
            if cells:
                regrets.append(f"- `{name}` minus the best scored checkpoint of its run (median over seeds): " + ", ".join(cells))
        if regrets:
            out += ["What `best.pt` (no ground truth) gave up against the best checkpoint the suite scored:", *regrets, ""]
        agree = []
        for t in transforms:
            pts = [(base[t][test_set][k][3], base[t][test_set][k][0]) for k in UNPAIRED if k in base[t][test_set]]
            pts += [(row["val" + tag], row["psnr" + tag]) for name in recipes for rows in recipes[name].get(t, {}).values()
                    for row in rows.values() if row.get("val" + tag) is not None and not row.get("best")]  # best.pt: a scored epoch again
            agree.append(f"{t} {spearman([-v for v, _ in pts], [p for _, p in pts]):+.2f} (n={len(pts)})")
        out += ["Rank agreement of the unpaired validation score (lower is better) with PSNR over the unpaired baselines and every "
                "scored checkpoint (Spearman): " + ", ".join(agree), ""]
    return "\n".join(out) + "\n"


def pooled(recipes: dict, side: str) -> list[str]:
    """The recipes one side of ``--twice`` names: ``side`` itself where it is a recipe (names may hold commas), else
    its comma-separated parts."""
    names = [side] if side in recipes else side.split(",")
    for name in names:
        if name not in recipes:
            raise SystemExit(f"--twice: no recipe named {name!r} in the files given (recipes: {', '.join(sorted(recipes))})")
    return names


def check_row(test_set: str, what: str, seeds: list[int], ends: list[dict[int, float]]) -> str:
    """One line of :func:`twice`: the medians of ``ends`` (1x, 2x: seed -> score), each seed's change, the verdict and the
    sets of :data:`MIN_SEEDS` seeds on which it holds."""
    one, two = (statistics.median(e[s] for s in seeds) for e in ends)
    change = ", ".join(f"{ends[1][s] - ends[0][s]:+.2f}" for s in seeds)
    sets = list(itertools.combinations(seeds, MIN_SEEDS))
    held = sum(statistics.median(ends[1][s] for s in c) >= statistics.median(ends[0][s] for s in c) for c in sets)
    return (f"| {test_set} | {what} | {','.join(map(str, seeds))} | {one:.3f} | {two:.3f} | {change} | "
            f"{'yes' if two >= one else 'no'} ({two - one:+.3f}) | {f'{held} of {len(sets)}' if sets else ''} |")


def twice(results: list[dict], short: str, long: str) -> str:
    """The 2x check where each length is its own run (a schedule that follows train.epochs, e.g. the product's
    constant-then-decay): ``short``'s last scored step against ``long``'s, per transform and test set, on the output a
    user gets (the pixel post-filter's where the runs have one), over the seeds both ran; ``short == long``: one run
    trained straight, its last two scored steps. It holds where the median at 2x is at least the median at 1x; the
    last column counts the sets of :data:`MIN_SEEDS` seeds on which it holds (a verdict on 3 seeds is one of those).
    Runs scored with ``run.py --scale-grid`` add a line at G's best gain scale, chosen with the truth: where even that
    falls, the trained correction got worse, and no rule of choosing the gain can hold the check.

    ``short`` and ``long`` may each name several recipes, comma-separated, whose seeds are pooled (runs of one recipe
    under two names, e.g. before and after a rename); a seed in two of them is refused."""
    transforms, base, recipes, _ = collect(results)
    names = {side: pooled(recipes, side) for side in (short, long)}
    what = "its last two scored steps" if short == long else "each at its last scored step"
    out = [f"The 2x check, `{short}` (1x) against `{long}` (2x), {what}:", "",
           f"| test set | transform | seeds | 1x | 2x | change by seed | holds | sets of {MIN_SEEDS} seeds where it holds |",
           "| --- | --- | --- | ---: | ---: | --- | --- | --- |"]
    filtered = all(n + " + pixel filter" in recipes for side in names.values() for n in side)  # both or neither: like against like
    pick = {side: [n + " + pixel filter" if filtered else n for n in ns] for side, ns in names.items()}
    rows, missing = len(out), set()
    for test_set in next(iter(base.values())):
        tag = "" if test_set == "test" else f"_{test_set}"
        for t in transforms:
            ends = []
            for side, back in ((short, 2 if short == long else 1), (long, 1)):  # one run trained straight: its last two steps
                end = {}
                for n in pick[side]:
                    by_step = recipes[n].get(t, {})
                    steps = sorted(s for s in by_step if s != BEST)
                    at = by_step.get(steps[-back], {}) if len(steps) >= back else {}
                    if set(at) & set(end):
                        raise SystemExit(f"--twice {side}: seeds {sorted(set(at) & set(end))} of {t} are in more than one of its "
                                         "recipes; pool recipes of different seeds")
                    end.update(at)
                ends.append(end)
            seeds = sorted(s for s in set(ends[0]) & set(ends[1]) if all("psnr" + tag in e[s] for e in ends))
            if not seeds:
                missing.add(t)
                continue
            out.append(check_row(test_set, t, seeds, [{s: e[s]["psnr" + tag] for s in seeds} for e in ends]))
            if all("psnr_by_scale" + tag in e[s] for e in ends for s in seeds):  # run.py --scale-grid
                best = [{s: max(e[s]["psnr_by_scale" + tag].values()) for s in seeds} for e in ends]
                out.append(check_row(test_set, f"{t}, G's best scale (truth)", seeds, best))
    if len(out) == rows:
        raise SystemExit(f"--twice {short}:{long}: no transform has both lengths scored on a common seed (NAME:NAME needs a run "
                         "scored at two steps or more; best.pt has no step)")
    if missing:
        out.append(f"\nNot in both, or on no common seed, on some test set: {', '.join(t for t in transforms if t in missing)}.")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> str:
    args = list(argv if argv is not None else sys.argv[1:])
    pairs = []  # --twice SHORT:LONG, any number of times
    while "--twice" in args:
        i = args.index("--twice")
        if i + 1 >= len(args) or args[i + 1].count(":") != 1:
            raise SystemExit("--twice takes SHORT:LONG, the names of a recipe's 1x and 2x runs (e.g. --twice xfGs1:xfGs2; "
                             "NAME:NAME for one run trained straight to 2x)")
        pairs.append(args[i + 1].split(":"))
        del args[i:i + 2]
    paths = [Path(a) for a in args]
    if not paths:
        raise SystemExit("usage: summarize.py [--twice SHORT:LONG ...] RESULTS.json [...]  (the results_<name>.json files of run.py)")
    results = [json.loads(p.read_text()) for p in paths]
    suite = all("transform" in r for r in results)
    if pairs and not suite:
        raise SystemExit("--twice compares suite runs: give results files written with run.py --transform")
    md = suite_table(results) if suite else table(*load(paths))
    md += "".join("\n" + twice(results, short, long) for short, long in pairs)
    print(md)
    return md


if __name__ == "__main__":
    main()
