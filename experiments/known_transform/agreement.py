"""Does the cross-fit's side run agree with its full run on what G should change? Transfer the side's correction, not its scale.

    python experiments/known_transform/agreement.py --recipe xfA --seeds 3,4,5 --transforms sepia,dark_edges --vae-device cuda

``train.gain_crossfit`` gives the full run the scale ``g`` its side run chose: ``G_full(z) = anchor(z) + g net_full(z)``.
That assumes the two nets learned the same correction. Along ``s`` a correction that is only partly aligned with the
truth moves the outputs' distribution toward B while the pixels move away from the truth (the perception-distortion
trade-off, results/gain.md): the side run's distance then rewards a large ``g``, and on sepia the full run loses
0.4-2.5 dB there. What two runs share is more likely to be the transform than what each learned by chance. So here
the full run takes the scale at which *its* correction is nearest, pixel for pixel, to the correction the side run
chose, ``C_side = out_side(z; g) - out_side(z; 0)`` (outputs: G, decode, the run's post-stage, clamp; each run against
its own start): ``s = argmin_s ||C_side - (out_full(z; s) - out_full(z; 0))||`` over the scale grid (``agree``), and its
continuous least-squares form ``g <C_side, D> / ||D||^2`` with ``D = out_full(z; 1) - out_full(z; 0)`` (``agree_lin``).
Where the nets agree it keeps ``g``; where the full net's correction holds more than the side's, it shrinks. No truth
and no held-out photos: ``z`` is 128 training latents of A (spread over the photos). The test photos' PSNR at every
scale is recorded beside it only to score each choice.

Reads the runs ``screen.sh`` left with ``train.gain_crossfit`` (each scored epoch file carries the side run's choice);
writes ``OUT/agreement_<recipe>_<transforms>.json`` and prints one line a run and length.
"""
from __future__ import annotations

import json
from pathlib import Path

import run as kt
import torch
from residual_scale import scaled_outputs
from scale_select import training_latents

from lcgan import checkpoint
from lcgan.layout import RunFolder


def outputs(path: Path, vae, z: torch.Tensor, scales: list[float]) -> dict[float, torch.Tensor]:
    """The run's output images of ``z`` at each scale of G's correction (the recorded gain left out)."""
    return {s: y for s, _, y in scaled_outputs(path, vae, z, scales)}


def side_file(full: Path, run: RunFolder) -> Path:
    """The side run's epoch file at as many steps as the full run's ``full`` (as run.py's ``crossfit_epochs`` finds it)."""
    side = RunFolder(run.crossfit_side)
    steps = json.loads(run.log.read_text().splitlines()[0])["steps"]
    side_steps = json.loads(side.log.read_text().splitlines()[0])["steps"]
    epoch = int(full.stem.split("_")[1])
    return min(side.epoch_checkpoints(), key=lambda p: abs(int(p.stem.split("_")[1]) * side_steps - epoch * steps))


def agree(c_side: torch.Tensor, full: dict[float, torch.Tensor]) -> tuple[float, dict[float, float]]:
    """The grid scale whose correction is nearest ``c_side`` (mean squared pixel difference), and every scale's."""
    err = {s: (y - full[0.0] - c_side).pow(2).mean().item() for s, y in full.items()}
    return min(err, key=lambda s: (err[s], s)), err


def main() -> None:
    ap = kt.probe_parser(__doc__, "sepia,dark_edges")
    ap.add_argument("--recipe", required=True, help="the runs' recipe name (screen.sh's NAME), trained with train.gain_crossfit")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--scales", default="0,0.5,1,1.5,2,3,4,6,8")
    ap.add_argument("--vae-device", default="cpu")
    args = ap.parse_args()
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
        z = training_latents(data, transform)[0]
        for (t, seed), run in runs.items():
            if t != transform:
                continue
            for full in run.epoch_checkpoints():
                if "gain" not in (ck := checkpoint.load(full)):
                    continue  # not scored by run.py
                g, side = float(ck["gain"]["g_ab"]), side_file(full, run)
                ys = outputs(side, vae, z, sorted({0.0, g}))
                c_side = ys[g] - ys[0.0]
                fulls = outputs(full, vae, z, scales)
                s_grid, err = agree(c_side, fulls)
                d = fulls[1.0] - fulls[0.0]
                s_lin = max(0.0, g * (c_side * d).sum().item() / max((d * d).sum().item(), 1e-12))
                cos = (c_side * d).sum().item() / max((c_side.norm() * d.norm()).item(), 1e-12)
                grid = sorted({*scales, g, s_lin})
                psnr = {s: kt.psnr(y, test["y"]).mean().item() for s, _, y in scaled_outputs(full, vae, test["z_x"], grid)}
                row = {"side": side.name, "g": g, "agree": s_grid, "agree_lin": s_lin, "cos": cos, "err": err,
                       "psnr": {f"{s:g}": v for s, v in psnr.items()}}
                results[f"{transform}/{seed}/{full.stem}"] = row
                print(f"{transform} seed {seed} {full.stem} (side {side.stem}): cos {cos:.3f}; side's g {g:g}: {psnr[g]:.3f}; "
                      f"agree {s_grid:g}: {psnr[s_grid]:.3f}; agree_lin {s_lin:.2f}: {psnr[s_lin]:.3f}; "
                      f"best s {max(psnr, key=psnr.get):g}: {max(psnr.values()):.3f}", flush=True)
                checkpoint.atomic_write_bytes(args.out / name, json.dumps(results, indent=1).encode())


if __name__ == "__main__":
    main()
