"""Does the cross-fit's side run agree with its full run on what G should change? Transfer the side's correction, not its scale.

    python experiments/known_transform/agreement.py --recipe xfA --seeds 3,4,5 --transforms sepia,dark_edges --vae-device cuda

``train.gain_crossfit`` gives the full run the scale ``g`` its side run chose: ``G_full(z) = anchor(z) + g net_full(z)``.
That assumes the two nets learned the same correction. Along ``s`` a correction that is only partly aligned with the
truth moves the outputs' distribution toward B while the pixels move away from the truth (the perception-distortion
trade-off, results/gain.md): the side run's distance then rewards a large ``g``, and on sepia the full run loses
0.4-2.5 dB there. What two runs share is more likely to be the transform than what each learned by chance. So here
the full run takes the scale at which *its* correction is nearest, pixel for pixel, to the correction the side run
chose, ``C_side = out_side(z; g) - out_side(z; 0)`` (outputs: G, decode, the run's post-stage, clamp; each run against
its own start): ``s = argmin_s ||C_side - (out_full(z; s) - out_full(z; 0))||`` over the scale grid (``agree``:
``lcgan.gain.transfer``, what ``train.gain_transfer=correction`` records), the side's ``g`` where that is above 0 and
0 where it is 0 (``agreement``, ``train.gain_transfer=agreement``), beside the cosine of ``C_side`` and
``D = out_full(z; 1) - out_full(z; 0)``. Where the nets agree ``agree`` keeps about ``g``; where they point apart, the start.
No truth and no held-out photos: ``z`` is 128 of the training latents of A, evenly spaced, as lcgan.train takes them.
The test photos' PSNR at every scale is recorded beside it only to score each choice. (The first version of this file,
which wrote ``results/crossfit_agree/agreement_xfA_sepia+dark_edges.json``, took 128 latents spread over the photos
and also printed the continuous least-squares scale ``g <C_side, D> / ||D||^2``, which went to 4-17 on dark_edges.)

Reads the runs ``screen.sh`` left with ``train.gain_crossfit`` (each scored epoch file carries the side run's choice);
writes ``OUT/agreement_<recipe>_<transforms>.json`` and prints one line a run and length. ``--tables FILE...`` prints
the medians of every rule by transform, seed group and length from such files (results/gain.md's table), then the 2x
check over all their seeds pooled: how many seed triples would miss it under each rule and at the best scale:

    python experiments/known_transform/agreement.py --tables experiments/known_transform/results/crossfit_agree/agreement_*.json
"""
from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path

import run as kt
import torch

from lcgan import checkpoint, gain
from lcgan.latent_files import load_latent_dir
from lcgan.layout import RunFolder
from lcgan.translator import load_translator


def side_file(full: Path, run: RunFolder) -> Path:
    """The side run's epoch file at as many steps as the full run's ``full`` (as run.py's ``crossfit_epochs`` finds it)."""
    side = RunFolder(run.crossfit_side)
    steps = json.loads(run.log.read_text().splitlines()[0])["steps"]
    side_steps = json.loads(side.log.read_text().splitlines()[0])["steps"]
    epoch = int(full.stem.split("_")[1])
    return min(side.epoch_checkpoints(), key=lambda p: abs(int(p.stem.split("_")[1]) * side_steps - epoch * steps))


def cosine(side, full, vae, raw: torch.Tensor, g: float) -> float:
    """The cosine of the side run's chosen correction of G and the full run's at s = 1 (decoded pixels)."""
    z = gain.evenly(raw, 128).to(vae.device)
    a = gain.scaled_render(side, vae, z, "g_ab", g) - gain.scaled_render(side, vae, z, "g_ab", 0.0)
    b = gain.scaled_render(full, vae, z, "g_ab", 1.0) - gain.scaled_render(full, vae, z, "g_ab", 0.0)
    return (a * b).sum().item() / max((a.norm() * b.norm()).item(), 1e-12)


RULES = {"scale": lambda r: r["g"], "correction": lambda r: r["agree"], "agreement": lambda r: r["g"] if r["agree"] > 0 else 0.0}


def entries(files: list[str]):
    """``(transform, seed, epoch, row)`` of every row of ``agreement_*.json`` files (keyed ``transform/seed/epoch``). An
    item ``ONE:TWO`` pairs the files of two runs of one recipe each trained to its own length (screen.sh's
    ``KT_SCHEDULE=product``: ``NAME1x``, ``NAME2x``): of each only its last scored epoch, its length ``1x``/``2x`` first."""
    for f in files:
        parts = f.split(":")
        if len(parts) > 2 or not all(Path(p).is_file() for p in parts):
            raise SystemExit(f"--tables {f}: give agreement_*.json files, or ONE.json:TWO.json for runs of one length each")
        for label, part in zip(("1x ", "2x ") if len(parts) == 2 else ("",), parts):
            last: dict[tuple, tuple[str, dict]] = {}  # (transform, seed[, epoch]) -> (epoch, row)
            for key, r in json.loads(Path(part).read_text()).items():
                transform, seed, epoch = key.split("/")
                if label and epoch < last.get((transform, seed), ("",))[0]:
                    continue  # zero-padded epoch_NNNN names sort by number
                last[(transform, seed) if label else (transform, seed, epoch)] = (epoch, r)
            for (transform, seed, *_), (epoch, r) in last.items():
                yield transform, seed, label + epoch, r


def tables(files: list[str]) -> None:
    """Median test PSNR (G, decode, post-stage) of each rule's scale, by transform, seed group (a file's seeds) and length."""
    print("| transform | seeds | length | " + " | ".join(RULES) + " | best scale (truth) |")
    print("| --- | --- | --- | " + " | ".join("---:" for _ in RULES) + " | ---: |")
    for f in files:
        groups: dict[tuple[str, str], dict[str, dict]] = {}
        for transform, seed, epoch, r in entries([f]):
            groups.setdefault((transform, epoch), {})[seed] = r
        for (transform, epoch), by_seed in sorted(groups.items()):
            seeds = sorted(by_seed, key=int)
            med = [statistics.median(by_seed[sd]["psnr"][f"{rule(by_seed[sd]):g}"] for sd in seeds) for rule in RULES.values()]
            best = statistics.median(max(by_seed[sd]["psnr"].values()) for sd in seeds)
            print(f"| {transform} | {','.join(seeds)} | {epoch} | " + " | ".join(f"{m:.3f}" for m in med) + f" | {best:.3f} |")
    decay(files)


def decay(files: list[str]) -> None:
    """The 2x check over every seed of ``files``, each transform's two lengths pooled: per rule (and the best scale, which
    needs the truth) the medians at each length, the median paired change, and how many of all seed triples would miss
    the issue's strict check (the triple's median at 2x the steps below its median at 1x). Where even the best scale
    misses it often, the trained correction has stopped improving and the check is a coin toss on seeds."""
    by: dict[str, dict[int, dict[str, dict]]] = {}
    for transform, seed, epoch, r in entries(files):
        runs = by.setdefault(transform, {}).setdefault(int(seed), {})
        if epoch in runs:  # pooled seeds must be different runs
            raise SystemExit(f"--tables: seed {seed} of {transform} at {epoch} is given more than once; pool files of "
                             "different seeds, each seed in one file of two lengths or in one ONE:TWO pair")
        runs[epoch] = r
    rules = {**RULES, "best scale (truth)": None}
    print("\n| transform | seeds | rule | median 1x | median 2x | median paired change | triples missing the 2x check |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for transform, seeds in sorted(by.items()):
        if odd := [f"{sd} ({', '.join(runs)})" for sd, runs in sorted(seeds.items()) if len(runs) != 2]:
            print(f"({transform}: left out of the check, not two lengths: seed {'; '.join(odd)})")
        seeds = {sd: runs for sd, runs in sorted(seeds.items()) if len(runs) == 2}
        if not seeds:
            continue
        triples = list(itertools.combinations(seeds, 3))
        for name, rule in rules.items():
            score = {sd: [r["psnr"][f"{rule(r):g}"] if rule else max(r["psnr"].values()) for _, r in sorted(runs.items())]
                     for sd, runs in seeds.items()}
            miss = sum(statistics.median(score[sd][1] for sd in t) < statistics.median(score[sd][0] for sd in t) for t in triples)
            one, two = (statistics.median(v[i] for v in score.values()) for i in (0, 1))
            change = statistics.median(v[1] - v[0] for v in score.values())
            print(f"| {transform} | {len(seeds)} | {name} | {one:.3f} | {two:.3f} | {change:+.3f} | {miss} of {len(triples)} |")


def main() -> None:
    ap = kt.probe_parser(__doc__, "sepia,dark_edges")
    ap.add_argument("--tables", nargs="+", metavar="FILE", help="instead: the medians of every rule from agreement_*.json files")
    ap.add_argument("--recipe", help="the runs' recipe name (screen.sh's NAME), trained with train.gain_crossfit")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--scales", default="0,0.5,1,1.5,2,3,4,6,8")
    ap.add_argument("--vae-device", default="cpu")
    args = ap.parse_args()
    if args.tables:
        return tables(args.tables)
    if not args.recipe:
        ap.error("--recipe is required (the runs' recipe name), unless --tables")
    scales = sorted({0.0, 1.0, *(float(s) for s in args.scales.split(","))})
    runs = {(t, int(s)): RunFolder(args.out / "runs" / t / f"{args.recipe}_s{s}" / f"seed{s}")
            for t in args.transforms.split(",") for s in args.seeds.split(",")}
    if missing := [str(r.root) for r in runs.values() if not r.crossfit_side.is_dir()]:
        raise SystemExit(f"no cross-fit run at {', '.join(missing)}: give the --out, --recipe and --seeds that screen.sh trained "
                         "with train.gain_crossfit")
    vae, data = kt.load_vae(args.shared, args.vae_device), kt.data_folder(args.out, args.image_size)
    results, name = {}, f"agreement_{args.recipe}_{args.transforms.replace(',', '+')}.json"
    for transform in args.transforms.split(","):
        test = kt.with_truth(vae, torch.load(data / "test.pt", weights_only=True), transform)
        files = [load_latent_dir(data / "a", "A")[0], load_latent_dir(data / transform / "b", "B")[0]]
        for (t, seed), run in runs.items():
            if t != transform:
                continue
            for full in run.epoch_checkpoints():
                if "gain" not in (ck := checkpoint.load(full)):
                    continue  # not scored by run.py
                side = side_file(full, run)
                g = float(checkpoint.load(side)["gain"]["g_ab"])
                side_t, full_t = (load_translator(p, vae.device, use_gain=False) for p in (side, full))
                z = [full_t.convention.file_to_model(f) for f in files]
                chosen = gain.transfer(side_t, full_t, vae, *z, {"g_ab": g, "g_ba": 0.0}, scales, "agreement")
                cos = cosine(side_t, full_t, vae, full_t.convention.model_to_raw(z[0], vae.space), g) if g else 0.0
                grid = sorted({*scales, g})
                psnr = {s: kt.psnr(y, test["y"]).mean().item() for s, _, y in kt.scaled_outputs(full, vae, test["z_x"], grid)}
                s_agree, s_gate = chosen["nearest_g_ab"], chosen["g_ab"]  # train.gain_transfer=correction, =agreement
                results[f"{transform}/{seed}/{full.stem}"] = {"side": side.name, "g": g, "agree": s_agree, "agreement": s_gate,
                                                              "cos": cos, "err": chosen["err_g_ab"], "recorded": ck["gain"]["g_ab"],
                                                              "psnr": {f"{s:g}": v for s, v in psnr.items()}}
                print(f"{transform} seed {seed} {full.stem} (side {side.stem}): cos {cos:.3f}; side's g {g:g}: {psnr[g]:.3f}; "
                      f"agree {s_agree:g}: {psnr[s_agree]:.3f}; agreement {s_gate:g}: {psnr[s_gate]:.3f} "
                      f"(recorded: {ck['gain']['g_ab']:g}); "
                      f"best s {max(psnr, key=psnr.get):g}: {max(psnr.values()):.3f}", flush=True)
                checkpoint.atomic_write_bytes(args.out / name, json.dumps(results, indent=1).encode())


if __name__ == "__main__":
    main()
