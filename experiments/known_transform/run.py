"""Known-transform benchmark: unpaired translation on real photographs where the answer is known.

    python experiments/known_transform/run.py                                   # CPU: 128px crops, model=small, 3 eval points
    python experiments/known_transform/run.py --seeds 0,1,2 model.generator.output=tanh   # a recipe, 3 seeds
    python experiments/known_transform/run.py --image-size 256 --eval-steps 1000,5000,20000 model=resnet6 train.epochs=400  # GPU

Photographs of ``<shared>/data/{kodak24,cbsd68,mcmaster}`` (110) are split, by photo, into three
disjoint sets: A-train (natural crops), B-train (crops of *other* photos with the fixed colour grade
:func:`grade` applied: unpaired) and test (held-out photos; the truth is the graded crop). Crops are
encoded with the real ``vaelight`` ONNX VAE. Each trained model's G is scored by the PSNR of
``decode(G(encode(x)))`` against ``grade(x)`` on the test crops, beside four rows that need no
training: identity ``decode(encode(x))``, the mean-shift and moment-matching latent baselines (fitted
on the training latents only) and the oracle ``decode(encode(grade(x)))``, the VAE's ceiling.

Training is ``lcgan.train.train(cfg)`` on the real config: ``conf/train.yaml`` + ``+experiment=known_transform``
(``experiments/known_transform.yaml``) + the positional Hydra overrides (the recipe) + ``seed``.
Outputs (under ``--out``): ``data_<size>px/`` (latent folders a/, b/, test.pt; reused when present),
``runs/<name>/seed<k>/`` (training runs), ``results_<name>.json`` and ``.md`` (the table).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lcgan import checkpoint
from lcgan.baselines import mean_shift, moment_match
from lcgan.images import list_images, read_rgb
from lcgan.latents import Convention
from lcgan.vae import OnnxVAE

REPO = Path(__file__).resolve().parents[2]
PHOTO_SETS = ("kodak24", "cbsd68", "mcmaster")  # 24 + 68 + 18 natural photographs
# The transform of domain B: a warm "film" grade, per-channel tone curves on [0, 1] pixels,
#   out_c = lift_c + (1 - lift_c) * gain_c * x_c ** gamma_c   (then clipped to [0, 1]).
# Red lifted and brightened, blue crushed and darkened: a warm cast that depends on intensity,
# so a constant latent shift cannot express it exactly.
GRADE_GAMMA = (0.65, 1.00, 1.60)
GRADE_GAIN = (1.00, 0.92, 0.75)
GRADE_LIFT = (0.08, 0.02, 0.00)


def grade(x: torch.Tensor) -> torch.Tensor:
    """The documented colour grade on images ``(N, 3, H, W)`` in [-1, 1]."""
    v = lambda t: torch.tensor(t, dtype=x.dtype).view(1, 3, 1, 1)  # noqa: E731
    p = x.add(1).div(2).clamp(0, 1)
    p = v(GRADE_LIFT) + (1 - v(GRADE_LIFT)) * v(GRADE_GAIN) * p.pow(v(GRADE_GAMMA))
    return p.clamp(0, 1).mul(2).sub(1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak-to-peak 2, i.e. 1 on [0, 1] pixels)."""
    mse = (x.float() - y.float()).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return 10 * torch.log10(4 / mse)


def split_photos(shared: Path, n_photos: int | None, seed: int) -> dict[str, list[Path]]:
    """Photos shuffled with ``seed``, cut 40% A-train / 40% B-train / 20% test (disjoint)."""
    photos = [p for s in PHOTO_SETS for p in list_images(shared / "data" / s)]
    if not photos:
        raise FileNotFoundError(f"no photographs under {shared}/data/{{{','.join(PHOTO_SETS)}}}; set --shared to the project's shared folder")
    order = torch.randperm(len(photos), generator=torch.Generator().manual_seed(seed)).tolist()
    photos = [photos[i] for i in order][:n_photos]
    n_test = max(1, round(0.2 * len(photos)))
    n_a = (len(photos) - n_test) // 2
    return {"a": photos[:n_a], "b": photos[n_a:len(photos) - n_test], "test": photos[len(photos) - n_test:]}


def random_crops(x: torch.Tensor, n: int, size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """``n`` random ``size``-px crops of one image ``(3, H, W)`` at its native resolution."""
    _, h, w = x.shape
    if min(h, w) < size:
        raise ValueError(f"--image-size {size} is larger than a photograph ({w}x{h})")
    tops = torch.randint(0, h - size + 1, (n,), generator=gen).tolist()
    lefts = torch.randint(0, w - size + 1, (n,), generator=gen).tolist()
    return [x[:, t:t + size, l:l + size] for t, l in zip(tops, lefts)]


def read_photo(path: Path, shorter_side: int) -> torch.Tensor:
    """A photograph ``(3, H, W)`` in [-1, 1], scaled (antialiased) so its shorter side is ``shorter_side``."""
    x = read_rgb(path, None)
    scale = shorter_side / min(x.shape[1:])
    return torch.nn.functional.interpolate(x[None], scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)[0].clamp(-1, 1)


def photo_crops(paths: list[Path], n: int, size: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` random ``size``-px crops of each photo, scaled so a crop spans half its shorter side."""
    gen = torch.Generator().manual_seed(seed)
    crops, names = [], []
    for p in paths:
        for k, c in enumerate(random_crops(read_photo(p, 2 * size), n, size, gen)):
            crops.append(c)
            names.append(f"{p.parent.name}_{p.stem}_c{k}")
    return torch.stack(crops), names


def encode(vae: OnnxVAE, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    return torch.cat([vae.encode(c).cpu() for c in x.split(batch)])


def decode(vae: OnnxVAE, z: torch.Tensor, batch: int = 32) -> torch.Tensor:
    return torch.cat([vae.decode(c).cpu() for c in z.split(batch)])


def load_vae(shared: Path) -> OnnxVAE:
    w = shared / "weights" / "vaelight"
    return OnnxVAE(encoder_path=str(w / "VAEencoder.onnx"), decoder_path=str(w / "VAEpreview.onnx"), channels=4, sum_decoder_outputs=True)


def prepare(shared: Path, folder: Path, size: int, crops: int, n_photos: int | None, seed: int, vae: OnnxVAE) -> dict:
    """Latent folders ``a/``, ``b/`` (each crop and its pixel flip, raw latents) and ``test.pt``; reused if present."""
    test_pt = folder / "test.pt"
    if test_pt.is_file():
        return torch.load(test_pt, weights_only=True)
    split = split_photos(shared, n_photos, seed)
    for domain, transform in (("a", lambda x: x), ("b", grade)):
        x, names = photo_crops(split[domain], crops, size, seed + (1 if domain == "a" else 2))
        x = transform(x)
        z = encode(vae, torch.cat([x, x.flip(-1)]))  # flip the pixels, not the latents (as lcgan.encode does)
        (folder / domain).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(names):
            torch.save(z[i].clone(), folder / domain / f"{name}.pt")
            torch.save(z[i + len(names)].clone(), folder / domain / f"{name}_flip.pt")
        manifest = {"lcgan_manifest": 1, "vae": vae.describe(), "latent_space": vae.space.as_dict(), "latents_scaled": False,
                    "image_size": size, "latent_shape": list(z.shape[1:]), "flip_copies": True, "count": len(names),
                    "files": 2 * len(names), "photos": [str(p.relative_to(shared)) for p in split[domain]],
                    "transform": "grade" if domain == "b" else "none"}
        (folder / domain / "manifest.json").write_text(json.dumps(manifest, indent=2))
    x, names = photo_crops(split["test"], crops, size, seed + 3)
    y = grade(x)
    test = {"x": x, "y": y, "z_x": encode(vae, x), "z_y": encode(vae, y), "names": names,
            "photos": {k: [str(p.relative_to(shared)) for p in v] for k, v in split.items()}}
    torch.save(test, test_pt)
    return test


def load_folder(folder: Path) -> torch.Tensor:
    return torch.stack([torch.load(f, weights_only=True) for f in sorted(folder.glob("*.pt"))])


def score_latents(vae: OnnxVAE, test: dict, z: torch.Tensor, lpips=None) -> tuple[float, float, float]:
    """Mean PSNR (dB) of decode(z) against the graded truth, against the oracle's reconstruction
    decode(encode(truth)) (the VAE's own error removed: differences show better), and mean LPIPS
    against the truth (NaN without an LPIPS network)."""
    x = decode(vae, z)
    dist = torch.cat([lpips(a, b) for a, b in zip(x.split(32), test["y"].split(32))]).mean().item() if lpips else math.nan
    return psnr(x, test["y"]).mean().item(), psnr(x, test["y_rec"]).mean().item(), dist


def baseline_rows(vae: OnnxVAE, test: dict, z_a: torch.Tensor, z_b: torch.Tensor, lpips=None) -> dict[str, tuple[float, float, float]]:
    """(PSNR vs truth, PSNR vs oracle reconstruction) of the rows that need no training."""
    return {"identity": score_latents(vae, test, test["z_x"], lpips),
            "mean_shift": score_latents(vae, test, mean_shift(z_a, z_b)(test["z_x"]), lpips),
            "moment_match": score_latents(vae, test, moment_match(z_a, z_b)(test["z_x"]), lpips),
            "oracle": score_latents(vae, test, test["z_y"], lpips),
            "pixels_identity": (psnr(test["x"], test["y"]).mean().item(), math.nan)}


@torch.no_grad()
def score_checkpoint(path: Path, vae: OnnxVAE, test: dict, lpips=None) -> dict[str, float]:
    """PSNR of decode(G(z)) vs the graded truth, with G (and G_ema when the run kept one)."""
    ck = checkpoint.load(path)
    cfg = OmegaConf.create(ck["cfg"])
    conv = Convention(**ck["convention"])  # with data.latent_norm=channel, the training domains' statistics
    g = instantiate(cfg.model.generator, in_channels=test["z_x"].shape[1]).eval()
    out = {"epoch": ck["epoch"], "step": ck["epoch"] * ck["metrics"]["steps"]}
    for key in ("G", "G_ema"):
        if key in ck:
            g.load_state_dict(ck[key])
            z = conv.model_to_raw(g(conv.raw_to_model(test["z_x"], vae.space)), vae.space)
            suffix = "" if key == "G" else "_ema"
            out["psnr" + suffix], out["psnr_vae" + suffix], out["lpips" + suffix] = score_latents(vae, test, z, lpips)
    return out


def load_lpips(mode: str, backbone: str | None):
    """The LPIPS network of ``lcgan.metrics`` for ``--lpips``, or None."""
    if mode == "off":
        return None
    from lcgan.metrics import Lpips, MissingWeightsError

    try:
        return Lpips("alex", backbone_path=backbone, random=mode == "random")
    except MissingWeightsError as e:
        if mode == "on":  # lcgan.metrics names eval.lpips.backbone_path; here the setting is a flag
            raise MissingWeightsError(f"--lpips on: {e}; here pass --lpips-backbone FILE, or --lpips auto to skip LPIPS") from None
        print(f"  LPIPS skipped (--lpips auto; --lpips-backbone sets the weights): {str(e)[:300]}")
        return None


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def train_and_score(args, data: Path, overrides: list[str], seed: int, run: Path, vae: OnnxVAE, test: dict, lpips=None) -> list[dict]:
    """Train one seed, score the checkpoints nearest to ``--eval-steps`` and best.pt; delete the other epoch files."""
    from lcgan.train import train

    enc = args.shared / "weights" / "vaelight"
    cfg = compose_train(["+experiment=known_transform", f"data.a_dir={data / 'a'}", f"data.b_dir={data / 'b'}",
                         f"vae.encoder_path={enc / 'VAEencoder.onnx'}", f"vae.decoder_path={enc / 'VAEpreview.onnx'}",
                         *overrides, f"seed={seed}", f"out_dir={run}"])
    if not (run / "model" / f"epoch_{cfg.train.epochs:04d}.pt").is_file():  # a finished run is scored, not retrained
        train(cfg)
    steps = json.loads((run / "logs" / "train_log.jsonl").read_text().splitlines()[0])["steps"]
    saved = sorted(int(f.stem.split("_")[1]) for f in (run / "model").glob("epoch_*.pt"))  # every train.ckpt_every epochs, and the last
    epochs = sorted({min(saved, key=lambda e: abs(e * steps - s)) for s in args.eval_steps} | {saved[-1]})
    rows = [score_checkpoint(run / "model" / f"epoch_{e:04d}.pt", vae, test, lpips) for e in epochs]
    if (run / "model" / "best.pt").is_file() and cfg.data.val_fraction > 0:
        rows.append({**score_checkpoint(run / "model" / "best.pt", vae, test, lpips), "best": True})
    if not args.keep_checkpoints:
        for f in (run / "model").glob("epoch_*.pt"):
            if int(f.stem.split("_")[1]) not in epochs:
                f.unlink()
    return rows


def synthetic_err(overrides: list[str], seed: int, run: Path) -> dict[str, float]:
    """The same recipe on the embedded synthetic task (its default length): ``err``, 1 = identity."""
    from lcgan.train import train

    keep = [o for o in overrides if not o.startswith(("data.a_dir", "data.b_dir", "data.val_fraction", "data.flip"))]
    train(compose_train([*keep, f"seed={seed}", f"out_dir={run}", "train.vis_every=0"]))
    log = [json.loads(line) for line in (run / "logs" / "train_log.jsonl").read_text().splitlines()]
    return {"err": log[-1]["err"], "err_min": min(r["err"] for r in log), "base_mean_shift": (log[-1]["base_mean_shift_G"] + log[-1]["base_mean_shift_F"]) / 2}


def table(name: str, base: dict, runs: dict[int, list[dict]], synth: dict[int, dict], sizes: dict) -> str:
    """Markdown: baselines, then the model's PSNR per eval point (median over seeds, and each seed)."""
    lines = [f"# known_transform: {name}", "", f"{sizes}", "",
             "| row | step | epoch | PSNR vs truth, dB (median) | PSNR vs oracle recon. (median) | LPIPS vs truth (median) | seeds (vs truth) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    num = lambda v: "" if v is None or math.isnan(v) else f"{v:.4f}"  # noqa: E731
    for k in ("identity", "mean_shift", "moment_match", "oracle"):
        lines.append(f"| {k} | | | {base[k][0]:.2f} | {base[k][1]:.2f} | {num(base[k][2])} | |")
    points = sorted({(r["epoch"], bool(r.get("best"))) for rows in runs.values() for r in rows})
    for epoch, best in points:
        for key in ("psnr", "psnr_ema"):
            pick = [r for rows in runs.values() for r in rows if r["epoch"] == epoch and bool(r.get("best")) == best and key in r]
            vals, vae_vals = [r[key] for r in pick], [r[key.replace("psnr", "psnr_vae")] for r in pick]
            lp_vals = [r.get(key.replace("psnr", "lpips"), math.nan) for r in pick]
            if not vals:
                continue
            step = next(r["step"] for rows in runs.values() for r in rows if r["epoch"] == epoch)
            label = ("model" if key == "psnr" else "model EMA") + (" best.pt" if best else "")
            lines.append(f"| {label} | {step if not best else ''} | {epoch} | {statistics.median(vals):.2f} | {statistics.median(vae_vals):.2f} | "
                         f"{num(statistics.median(lp_vals))} | {', '.join(f'{v:.2f}' for v in vals)} |")
    if synth:
        errs = [s["err"] for s in synth.values()]
        lines += ["", f"synthetic task err (1 = identity, lower is better): median {statistics.median(errs):.3f} "
                  f"({', '.join(f'{e:.3f}' for e in errs)}); mean-shift baseline {next(iter(synth.values()))['base_mean_shift']:.3f}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the training recipe, e.g. model.generator.output=tanh train.lambda_id=0")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the project's shared folder (data/ and weights/)")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "known_transform", help="where data, runs and tables go")
    ap.add_argument("--name", default=None, help="label of this recipe (default: the overrides joined)")
    ap.add_argument("--image-size", type=int, default=128, help="crop size in pixels (128: 16x16 latents; 256 on a GPU)")
    ap.add_argument("--crops", type=int, default=4, help="random crops per photograph (each also flipped in A and B)")
    ap.add_argument("--photos", type=int, default=None, help="use only N photographs (tests)")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the photo split and the crops")
    ap.add_argument("--seeds", default="0", help="training seeds, comma separated; tables report the median")
    ap.add_argument("--eval-steps", default="300,900,1800", help="score the checkpoints nearest these optimisation steps (and the last)")
    ap.add_argument("--no-train", action="store_true", help="only the baselines")
    ap.add_argument("--synthetic", action="store_true", help="also train the recipe on the synthetic default and report its err")
    ap.add_argument("--lpips", choices=("auto", "on", "off", "random"), default="auto",
                    help="LPIPS (alex) against the truth: auto = when its backbone can be had, else skipped with the reason; "
                         "on = required; random = a random backbone (checks the plumbing, meaningless values)")
    ap.add_argument("--lpips-backbone", default=None, help="torchvision AlexNet state dict for LPIPS (e.g. alexnet-owt-7be5be79.pth); default: torchvision's cache/download")
    ap.add_argument("--keep-checkpoints", action="store_true", help="keep every epoch_XXXX.pt (default: only the scored ones)")
    args = ap.parse_intermixed_args(argv)  # recipe overrides may come before or after the options
    args.eval_steps = [int(s) for s in args.eval_steps.split(",") if s]
    args.shared = args.shared.resolve()
    name = re.sub(r"[^\w.,+-]+", "-", args.name or "_".join(args.overrides) or "default")  # a folder name
    t0 = time.time()

    vae = load_vae(args.shared)
    data = args.out / (f"data_{args.image_size}px_{args.crops}crops" + (f"_{args.photos}photos" if args.photos else ""))
    test = prepare(args.shared, data, args.image_size, args.crops, args.photos, args.split_seed, vae)
    test["y_rec"] = decode(vae, test["z_y"])
    z_a, z_b = load_folder(data / "a"), load_folder(data / "b")
    lpips = load_lpips(args.lpips, args.lpips_backbone)
    base = baseline_rows(vae, test, z_a, z_b, lpips)
    sizes = (f"A-train {len(z_a)} latents ({len(test['photos']['a'])} photos), B-train {len(z_b)} ({len(test['photos']['b'])} photos), "
             f"test {len(test['x'])} crops ({len(test['photos']['test'])} photos), {args.image_size}px -> latents {list(z_a.shape[1:])}; "
             f"recipe: {' '.join(args.overrides) or '(preset defaults)'}")
    print(f"known_transform | {sizes}\n  " + " | ".join(f"{k} {v[0]:.2f} dB" for k, v in base.items()))
    runs, synth = {}, {}
    if not args.no_train:
        for seed in (int(s) for s in args.seeds.split(",")):
            runs[seed] = train_and_score(args, data.resolve(), args.overrides, seed, args.out / "runs" / name / f"seed{seed}", vae, test, lpips)
            print(f"  seed {seed}: " + " | ".join(f"epoch {r['epoch']}{' best' if r.get('best') else ''} {r['psnr']:.2f} dB" for r in runs[seed]))
            if args.synthetic:
                synth[seed] = synthetic_err(args.overrides, seed, args.out / "runs" / name / f"synthetic_seed{seed}")
                print(f"  seed {seed}: synthetic err {synth[seed]['err']:.3f}")
    result = {"name": name, "overrides": args.overrides, "sizes": sizes, "baselines": base, "runs": runs, "synthetic": synth,
              "seconds": round(time.time() - t0, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"results_{name}.json").write_text(json.dumps(result, indent=2))
    md = table(name, base, runs, synth, sizes)
    (args.out / f"results_{name}.md").write_text(md)
    print(md)
    return result


if __name__ == "__main__":
    main()
