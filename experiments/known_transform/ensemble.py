"""Seed ensembles of trained runs: the average of K runs' outputs, scored like one run's.

    python experiments/known_transform/ensemble.py --recipe pfTcpU --seeds 0,1,2 [--vae-device cuda]

A translator trained on 44 photos a domain moves away from its start partly by chance: its seeds agree on a
transform's score within 0.05 dB, yet their outputs need not agree. The average of the seeds' outputs (G, decode,
the run's post-stage, clamp; as ``run.py`` scores a checkpoint) keeps what they share and shrinks what they do not.
The closed-form maps have no seeds, so the bar they set is unchanged. (A mirrored-crop average is no such test: the
vaelight latents of a mirrored photo are not the mirrored latents, and averaging two VAE round trips lifts every
row, identity's too.)

Reads the runs ``screen.sh``/``suite.sh`` left (``OUT/runs/<transform>/<recipe>_s<seed>/seed<seed>/model/``: each
scored ``epoch_XXXX.pt`` and ``best.pt``) and writes ``results_<transform>_<recipe>+ens<K>.json`` (one "seed": the
ensemble) for ``summarize.py``. A recipe's median over 3 ensembles needs 3K runs: seeds 0-2, 3-5, 6-8 as ``--seeds``
groups ``0,1,2/3,4,5/6,7,8`` write ``+ens3_s0``, ``_s1``, ``_s2``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import run as kt
import torch

from lcgan import checkpoint
from lcgan.translator import load_translator


def outputs(path: Path, vae, z: torch.Tensor) -> torch.Tensor:
    """The run's output pixels for latents ``z`` (N, 4, h, w): G, decode, its post-stage, clamped; on the CPU."""
    t = load_translator(path, vae.device)
    with torch.no_grad():
        return kt.filtered_decode(vae, t.pixel_filter("g_ab"), kt.generator(t, vae)(z))


def row(ck: dict, label, members: dict[str, torch.Tensor], tests: dict) -> dict:
    """A ``run.py`` row for the mean of the members' outputs (``members[set]``: K, N, 3, H, W). Its ``psnr`` is the
    output's (G, decode, post-stage): what ``run.py`` calls ``psnr_pf`` for runs with a post-stage, so these recipes'
    lines compare with ``<recipe> + pixel filter``. Beside it, per test set: ``psnr_members`` (the members' own, their
    mean) and ``psnr_limit``, the bias-variance estimate of infinitely many members (each image's squared error minus
    the seeds' unbiased variance): how much any average over seeds could give."""
    out = {"epoch": ck["epoch"], "step": ck["epoch"] * ck["metrics"]["steps"]}
    if label == "best":
        out["best"] = True
    for name, xs in members.items():
        tag, y = ("" if name == "test" else f"_{name}"), tests[name]["y"]
        mean = xs.mean(0)
        out["psnr" + tag], out["psnr_vae" + tag] = kt.psnr_pair(mean, tests[name])
        out["psnr_members" + tag] = torch.stack([kt.psnr(x, y) for x in xs]).mean().item()
        k = len(xs)
        if k > 1:
            spread = (xs - mean).pow(2).mean(dim=(0, 2, 3, 4))  # per image: the members' mean squared distance to their mean
            limit = (mean - y).pow(2).mean(dim=(1, 2, 3)) - spread / (k - 1)
            out["psnr_limit" + tag] = (10 * torch.log10(4 / limit.clamp_min(1e-10))).mean().item()
    return out


def labels(model: Path) -> list:
    """The scored epochs (every ``epoch_XXXX.pt`` left) and ``best``."""
    found = sorted(int(f.stem.split("_")[1]) for f in model.glob("epoch_*.pt"))
    return found + (["best"] if (model / "best.pt").is_file() else [])


def main(argv: list[str] | None = None) -> dict:
    ap = kt.probe_parser(__doc__, "grade,sepia,split_tone,soft_focus,sharpen,dark_edges,null")
    ap.add_argument("--recipe", required=True, help="the runs' recipe name (screen.sh's NAME)")
    ap.add_argument("--seeds", default="0,1,2", help="the seeds averaged, comma separated; several ensembles separated by '/'")
    ap.add_argument("--vae-device", default="cpu")
    ap.add_argument("--crops", type=int, default=4, help="as the runs' run.py had it (their data folder)")
    ap.add_argument("--photos", type=int, default=None, help="as the runs' run.py had it (tests)")
    ap.add_argument("--sets", default="test,afhq", help="the test sets scored, comma separated (each decode costs on a CPU)")
    args = ap.parse_args(argv)
    groups = [[int(s) for s in g.split(",")] for g in args.seeds.split("/")]
    vae = kt.load_vae(args.shared, args.vae_device)
    data = kt.data_folder(args.out, args.image_size, args.crops, args.photos)
    written = {}
    for transform in args.transforms.split(","):
        sets = kt.prepare(args.shared, data, transform, args.image_size, args.crops, args.photos, 0, vae)
        if unknown := set(args.sets.split(",")) - set(sets):
            raise SystemExit(f"--sets {args.sets}: no test set {', '.join(sorted(unknown))} in {data} (it has {', '.join(sets)})")
        tests = {k: kt.with_truth(vae, v, transform) for k, v in sets.items() if k in args.sets.split(",")}
        for g, seeds in enumerate(groups):
            name = f"{args.recipe}+ens{len(seeds)}" + (f"_s{g}" if len(groups) > 1 else "")
            result = ensemble(args.out, transform, args.recipe, seeds, g, vae, tests)
            path = args.out / f"results_{transform}_{name}.json"
            checkpoint.atomic_write_bytes(path, json.dumps({**result, "name": name}, indent=2).encode())
            written[str(path)] = result
            print(f"{transform} {name}: " + " | ".join(
                f"{'best.pt' if r.get('best') else r['step']}: {r['psnr']:.2f} (members {r['psnr_members']:.2f}, limit "
                f"{r.get('psnr_limit', math.nan):.2f})" for r in result["runs"][g]))
    return written


def ensemble(out: Path, transform: str, recipe: str, seeds: list[int], index: int, vae, tests: dict) -> dict:
    """One ensemble's result in ``run.py``'s layout, its "seed" the ensemble's ``index``, at every checkpoint all seeds have."""
    src = out / f"results_{transform}_{recipe}_s{seeds[0]}.json"
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no run of recipe {recipe!r} on {transform} here (--out, --recipe, --seeds)")
    meta = json.loads(src.read_text())
    models = [out / "runs" / transform / f"{recipe}_s{s}" / f"seed{s}" / "model" for s in seeds]
    common = [e for e in labels(models[0]) if all(e in labels(m) for m in models)]
    rows = []
    for label in common:
        paths = [m / ("best.pt" if label == "best" else f"epoch_{label:04d}.pt") for m in models]
        members = {k: torch.stack([outputs(p, vae, t["z_x"]) for p in paths]) for k, t in tests.items()}
        # best.pt's epoch differs between seeds: the row keeps the first seed's, marked best
        rows.append(row(checkpoint.load(paths[0]), label, members, tests))
    keep = ("transform", "overrides", "sizes", "baselines", "device")
    return {**{k: meta[k] for k in keep if k in meta}, "runs": {index: rows}, "synthetic": {},
            "averaged": [f"{recipe}_s{s}" for s in seeds]}


if __name__ == "__main__":
    main()
