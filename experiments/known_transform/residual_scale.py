"""Does a trained G move too little or too much? Its learned correction scaled by s, scored with the truth.

    python experiments/known_transform/residual_scale.py --recipe pfTcpU --seeds 0,1 --transforms dark_edges --scales 0,1,2,4,6

A residual generator is ``G(z) = anchor(z) + net(z)``, ``net`` starting at 0 (its last conv zero-initialised). Scaling
that last conv's weight and bias by ``s`` gives ``anchor(z) + s net(z)``: s = 0 is the start map, 1 the trained G,
s > 1 the same correction pushed further. Each is scored as ``run.py`` scores a run (G, decode, the run's
post-stage, clamp) against the transformed truth. Choosing s by that score needs pairs, so this is a diagnostic of
where training stops, not a recipe.

Reads the runs ``screen.sh``/``run.py`` left (``OUT/runs/<transform>/<recipe>_s<seed>/seed<seed>/model/last.pt``).
"""
from __future__ import annotations

import json

import run as kt
import torch

from lcgan import checkpoint


def scaled_scores(path, vae, test: dict, scales: list[float]) -> dict[float, float]:
    """PSNR of the run's output with G's correction scaled by each of ``scales``, on one test set."""
    return {s: kt.psnr(y, test["y"]).mean().item() for s, _, y in kt.scaled_outputs(path, vae, test["z_x"], scales)}


def add_run_options(ap, scales: str) -> None:
    """The options that find a screen's runs and the scales tried (this probe's and ``scale_select.py``'s)."""
    ap.add_argument("--recipe", required=True, help="the runs' recipe name (screen.sh's NAME)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--scales", default=scales)
    ap.add_argument("--checkpoint", default="last.pt", help="which of each run's model/ files (e.g. epoch_0046.pt: 1012 steps at batch 16)")
    ap.add_argument("--vae-device", default="cpu")


def open_runs(args) -> tuple[list[float], dict, object, object]:
    """The scales, ``{(transform, seed): checkpoint}`` of the runs named by :func:`add_run_options` (all must exist:
    checked before the VAE loads), the VAE and run.py's data folder."""
    runs = {(t, seed): args.out / "runs" / t / f"{args.recipe}_s{seed}" / f"seed{seed}" / "model" / args.checkpoint
            for t in args.transforms.split(",") for seed in (int(s) for s in args.seeds.split(","))}
    if missing := [str(p) for p in runs.values() if not p.is_file()]:  # before any decode: they cost minutes on a CPU
        raise SystemExit(f"no run at {', '.join(missing)}: give the --out, --recipe, --seeds and --checkpoint that screen.sh or run.py trained")
    return [float(s) for s in args.scales.split(",")], runs, kt.load_vae(args.shared, args.vae_device), kt.data_folder(args.out, args.image_size)


def main() -> None:
    ap = kt.probe_parser(__doc__, "sharpen,dark_edges,null")
    add_run_options(ap, "0,0.5,1,1.5,2,3,4,6")
    ap.add_argument("--set", default="test", help="the test set scored (test or afhq)")
    args = ap.parse_args()
    scales, runs, vae, data = open_runs(args)
    results = {}
    print(f"| transform | seed | {' | '.join(f's = {s:g}' for s in scales)} |")
    print(f"| --- | ---: | {' | '.join('---:' for _ in scales)} |")
    for transform in args.transforms.split(","):
        test = kt.with_truth(vae, torch.load(data / f"{args.set}.pt", weights_only=True), transform)
        for (t, seed), path in runs.items():
            if t != transform:
                continue
            scores = scaled_scores(path, vae, test, scales)
            results[f"{transform}/{seed}"] = scores
            print(f"| {transform} | {seed} | {' | '.join(f'{v:.2f}' for v in scores.values())} |", flush=True)
    name = f"residual_scale_{args.recipe}_{args.set}.json"
    checkpoint.atomic_write_bytes(args.out / name, json.dumps(results, indent=1).encode())


if __name__ == "__main__":
    main()
