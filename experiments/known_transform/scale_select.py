"""Can unpaired held-out data say how far G should go? Distances that need no truth, beside PSNR, per residual scale.

    python experiments/known_transform/scale_select.py --recipe pfTcpUc --seeds 0,1,2 --transforms dark_edges,sharpen,null

``residual_scale.py`` showed that on dark_edges the preset's G learns the right correction at a fifth of its size,
while on ``null`` every push costs. This scores G's correction scaled by ``s`` (``anchor(z) + s net(z)``) with
distances a user could compute: the run's outputs of one half of the test photos against the transformed photos of
the *other* half (unpaired: other photos), both ways, averaged; B as the transformed photos, and (``_rec``) as a
user holds it, latents decoded by the same VAE. Candidates: the sliced Wasserstein distance and the
Frechet (Gaussian) distance of decoded pixel patches (``px_swd<p>``, ``px_fd<p>``, p x p pixels, stride p/2) and of
3x3 latent patches (``lat_swd``, ``lat_fd``; G's latents against the truth's). The PSNR (against the truth) shows
what each distance's choice of ``s`` would have scored; ``--sets test,afhq`` also scores the AFHQ photos at every
``s``, so a choice made on the test photos can be checked on a collection it never saw.

``--calibrate`` runs the product's own path instead (``lcgan.gain.calibrate``, as ``train.gain_scales`` does at the end
of training) on a copy of each run, the test halves as its held-out folders, and scores the copy as evaluate loads it.

Reads the runs ``screen.sh`` left (as ``residual_scale.py``); writes ``OUT/scale_select_<recipe>_<checkpoint>_<transforms>.json``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import run as kt
import torch
from residual_scale import add_run_options, open_runs

from lcgan import checkpoint, fid, gain
from lcgan.baselines import sliced_wasserstein
from lcgan.data import spread_picks
from lcgan.gain import pixel_patches, sliced_w1
from lcgan.latent_files import load_latent_dir
from lcgan.translator import load_translator


def latent_patches(z: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.unfold(z.double(), 3).transpose(1, 2).reshape(-1, z.shape[1] * 9)


def frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """The Frechet distance of the Gaussians fitted to two point sets (lcgan.fid's, clean-fid's formula)."""
    return fid.frechet(*fid.gaussian(a.cpu().numpy()), *fid.gaussian(b.cpu().numpy()))


def distances(y: torch.Tensor, z: torch.Tensor, test: dict, device="cpu", sizes: tuple[int, ...] = (4, 8)) -> dict[str, float]:
    """The unpaired distances of outputs ``y`` (latents ``z``) of the test crops: each half against the other half's truth
    (the crops are in photo order, 4 a photo: the halves share no photo), averaged over the two ways; computed on ``device``."""
    h = len(y) // 2
    y, z, test = y.to(device), z.to(device), {k: test[k].to(device) for k in ("y", "y_rec", "z_y")}
    halves = ((slice(0, h), slice(h, None)), (slice(h, None), slice(0, h)))
    out = {}
    for p in sizes:
        for ref, tag in (("y", ""), ("y_rec", "_rec")):  # B as photos, or as a user has it: latents, decoded
            pairs = [(pixel_patches(y[i], p), pixel_patches(test[ref][j], p)) for i, j in halves]
            out[f"px_swd{p}{tag}"] = sum(sliced_w1(a, b) for a, b in pairs) / 2
            out[f"px_fd{p}{tag}"] = sum(frechet(a, b) for a, b in pairs) / 2
    out["lat_swd"] = sum(sliced_wasserstein(z[i], test["z_y"][j]) for i, j in halves) / 2
    out["lat_fd"] = sum(frechet(latent_patches(z[i]), latent_patches(test["z_y"][j])) for i, j in halves) / 2
    return out


def training_latents(data: Path, transform: str, n: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` raw latents of each training folder (A-train, B-train of ``transform``), one a photo first, spread evenly
    over the photos (:func:`lcgan.data.spread_picks`'s order, then the rest of each photo's crops)."""
    out = []
    for folder in (data / "a", data / transform / "b"):
        files = sorted(f.name for f in folder.glob("*.pt"))
        first = spread_picks(len(files), files, len(files)).tolist()
        picked = set(first)
        order = first + [i for i in range(len(files)) if i not in picked]
        out.append(torch.stack([torch.load(folder / files[i], weights_only=True) for i in order[:n]]))
    return out[0], out[1]


def held_out_distances(path: Path, vae, data: Path, transform: str, scales: list[float]) -> dict[float, float]:
    """G's held-out distance at each scale on the AFHQ folders that ``run.py --held-out afhq`` wrote, as ``lcgan.train``
    computes it with ``train.gain_scales`` (:func:`lcgan.gain.calibrate`, the same latents, order and decoding)."""
    t = load_translator(path, vae.device, use_gain=False)
    val = [t.convention.file_to_model(load_latent_dir(d, str(d))[0]) for d in (data / "afhq_val_a", data / transform / "afhq_val_b")]
    return {float(k): v for k, v in gain.calibrate(t, vae, *val, scales)["dist_g_ab"].items()}


def calibrated(path: Path, vae, sets: dict, scales: list[float], work: Path, tolerance: float, shrink: float, train=None) -> dict:
    """``lcgan.gain.calibrate`` itself, as ``lcgan.train`` runs it, on a copy of the run's checkpoint: G's gain chosen on
    the first half of the test crops against the second half's targets (decoded), F's the other way (or, given
    ``train``, on the training folders' latents: no held-out photos at all); then the copy loaded as evaluate loads it
    (the gain applied) and scored on every crop of each set."""
    copy = work / f"{path.parent.parent.parent.name}_{path.parent.parent.name}_{path.name}"
    shutil.copyfile(path, copy)
    t, h = load_translator(copy, vae.device, use_gain=False), len(sets["test"]["z_x"]) // 2
    c = t.convention
    za, zb = train if train is not None else (sets["test"]["z_x"][:h], sets["test"]["z_y"][h:])
    chosen = gain.calibrate(t, vae, c.raw_to_model(za, vae.space), c.raw_to_model(zb, vae.space), scales, tolerance=tolerance,
                            shrink=shrink)
    gain.record(copy, {"g_ab": chosen["g_ab"], "g_ba": chosen["g_ba"]})
    t = load_translator(copy, vae.device)
    out = {"gain": chosen}
    for key, test in sets.items():
        y = kt.filtered_decode(vae, t.pixel_filter("g_ab"), kt.generator(t, vae)(test["z_x"]))
        out["psnr" + ("" if key == "test" else f"_{key}")] = kt.psnr(y, test["y"]).mean().item()
    return out


def main() -> None:
    ap = kt.probe_parser(__doc__, "dark_edges,sharpen,null")
    add_run_options(ap, "0,0.5,1,1.5,2,3,4,6,8")
    ap.add_argument("--sets", default="test", help="test, or test,afhq: also the AFHQ photos' PSNR at every scale")
    ap.add_argument("--calibrate", action="store_true", help="instead: lcgan.gain.calibrate on a copy of each run (test halves "
                    "as the held-out folders), then its PSNR with the recorded gain applied")
    ap.add_argument("--tolerance", type=float, default=None, help="--calibrate's train.gain_tolerance (default: conf/train.yaml's)")
    ap.add_argument("--shrink", type=float, default=None, help="--calibrate's train.gain_shrink (default: conf/train.yaml's)")
    ap.add_argument("--val-afhq", action="store_true", help="also G's distance at each scale on the AFHQ held-out folders of "
                    "run.py --held-out afhq (val_afhq_swd: what train.gain_scales chooses by)")
    ap.add_argument("--held-out", default="test", choices=["test", "train"], help="--calibrate's held-out latents: the test "
                    "halves, or the training folders themselves (128 latents a domain, spread over the photos)")
    args = ap.parse_args()
    scales, runs, vae, data = open_runs(args)
    if args.calibrate:
        return calibrate_runs(args, runs, vae, data, scales)
    results, name = {}, f"scale_select_{args.recipe}_{args.checkpoint.removesuffix('.pt')}_{args.transforms.replace(',', '+')}.json"
    for transform in args.transforms.split(","):
        sets = {k: kt.with_truth(vae, torch.load(data / f"{k}.pt", weights_only=True), transform) for k in args.sets.split(",")}
        for (t, seed), path in runs.items():
            if t != transform:
                continue
            rows = {}
            for s, z, y in kt.scaled_outputs(path, vae, sets["test"]["z_x"], scales):
                rows[s] = {"psnr": kt.psnr(y, sets["test"]["y"]).mean().item(), **distances(y, z, sets["test"], vae.device)}
            if "afhq" in sets:
                for s, _, y in kt.scaled_outputs(path, vae, sets["afhq"]["z_x"], scales):
                    rows[s]["psnr_afhq"] = kt.psnr(y, sets["afhq"]["y"]).mean().item()
            if args.val_afhq:
                for s, d in held_out_distances(path, vae, data, transform, scales).items():
                    rows[s]["val_afhq_swd"] = d
            results[f"{transform}/{seed}"] = rows
            keys = [k for k in next(iter(rows.values())) if k != "psnr"]
            print(f"{transform} seed {seed}: PSNR " + " ".join(f"{s:g}:{r['psnr']:.2f}" for s, r in rows.items()), flush=True)
            for k in keys:
                best = min(rows, key=lambda s: rows[s][k]) if not k.startswith("psnr") else max(rows, key=lambda s: rows[s][k])
                print(f"  {k:>13}: best s {best:g} (PSNR {rows[best]['psnr']:.2f}); " + " ".join(f"{r[k]:.4g}" for r in rows.values()), flush=True)
            checkpoint.atomic_write_bytes(args.out / name, json.dumps(results, indent=1).encode())


def calibrate_runs(args, runs: dict, vae, data: Path, scales: list[float]) -> None:
    """``--calibrate``: the product's path on each run; ``OUT/gain_check_<recipe>_<checkpoint>_<transforms>_s<seeds>.json``."""
    conf = kt.compose_train([]).train
    tolerance = conf.gain_tolerance if args.tolerance is None else args.tolerance
    shrink = conf.gain_shrink if args.shrink is None else args.shrink
    work = args.out / "gain_check"
    work.mkdir(parents=True, exist_ok=True)
    results, name = {}, (f"gain_check_{args.recipe}_{args.checkpoint.removesuffix('.pt')}_{args.transforms.replace(',', '+')}"
                         f"_s{args.seeds.replace(',', '+')}_tol{tolerance:g}{f'_shrink{shrink:g}' if shrink else ''}"
                         f"{'_train' if args.held_out == 'train' else ''}.json")
    # the seeds in the name too: one process a seed must not share a file
    for transform in args.transforms.split(","):
        sets = {k: kt.with_truth(vae, torch.load(data / f"{k}.pt", weights_only=True), transform) for k in args.sets.split(",")}
        train = training_latents(data, transform) if args.held_out == "train" else None
        for (t, seed), path in runs.items():
            if t == transform:
                results[f"{transform}/{seed}"] = row = calibrated(path, vae, sets, scales, work, tolerance, shrink, train)
                print(f"{transform} seed {seed}: gain G {row['gain']['g_ab']:g}, F {row['gain']['g_ba']:g}; "
                      + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k.startswith("psnr")), flush=True)
                checkpoint.atomic_write_bytes(args.out / name, json.dumps(results, indent=1).encode())


if __name__ == "__main__":
    main()
