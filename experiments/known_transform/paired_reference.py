"""How far can the suite's generator go from these photos if it had pairs? A paired reference for the trained recipes.

The suite's generator (``+experiment=known_transform``: ``conf/model/small.yaml``'s residual ResnetGenerator, started at
the identity) trained by regression on *pairs*: A-train's crops and their flips (run.py's own, the same photos and
crops) against their transformed truth, by the MSE between ``G(encode(x))`` and ``encode(T(x))`` (``--loss latent``)
or between ``decode(G(encode(x)))`` and ``T(x)`` (``--loss pixel``: the score's own error, through the VAE's decoder run
as torch ops), Adam as ``conf/optim/adam.yaml``, batch 16. Scored as every row of the suite: PSNR of ``decode(G(z))`` against ``T(x)`` on the
held-out test photos and on the afhq photos, at each of ``--eval-steps``.

A reference, not a strict bound: the length is the suite's and, with ``--loss latent``, the objective a latent one, so
where a closed-form map is already near the oracle (grade) it can end below that map. Where it ends above the best closed-form map, the gap is
room that this generator can take from these photos given pairs; the gap between it and a trained recipe is what the
unpaired signal fails to deliver of it. (The suite's paired 1x1 affine row is fitted on the *test* pairs; this one
sees only training pairs.)

    python experiments/known_transform/paired_reference.py --transforms dark_edges,grade --out OUT --device cuda
    python experiments/known_transform/paired_reference.py --table results/paired_reference results/suite_256px results/b_same
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from run import REPO, TRANSFORMS, compose_train, encode, load_vae, photo_crops, prepare, score_latents, split_photos, with_truth

from lcgan import checkpoint


def pairs(shared: Path, vae, transform: str, size: int, crops: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A-train's latents (crops, then their pixel flips, as run.py writes them), their truth's latents and pixels."""
    x, _ = photo_crops(split_photos(shared, None, seed)["a"], crops, size, seed + 1)  # run.py's A-train crops
    x = torch.cat([x, x.flip(-1)])
    y = TRANSFORMS[transform](x)
    return encode(vae, x), encode(vae, y), y


def fit(z_x: torch.Tensor, target: torch.Tensor, tests: dict, vae, steps: list[int], seed: int, device: str, loss: str = "latent",
        batch: int = 16) -> list[dict]:
    """Train the suite's generator on the pairs (``target``: the truth's latents, or its pixels for ``loss="pixel"``),
    scoring it on every test set at each of ``steps``."""
    cfg = compose_train(["+experiment=known_transform", "model.generator.anchor=identity"])
    torch.manual_seed(seed)
    g = instantiate(cfg.model.generator, in_channels=z_x.shape[1]).to(device)
    opt = torch.optim.Adam(g.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
    scale = z_x.std().item()  # the generator sees latents of unit scale, as training's model space
    z_x = z_x.to(device) / scale
    target = target.to(device) / (scale if loss == "latent" else 1)
    gen, rows = torch.Generator(device=device).manual_seed(seed), []
    for step in range(1, max(steps) + 1):
        idx = torch.randint(0, len(z_x), (batch,), device=device, generator=gen)
        out = g(z_x[idx])
        err = F.mse_loss(out if loss == "latent" else vae.decode_with_grad(out * scale), target[idx])
        opt.zero_grad(set_to_none=True)
        err.backward()
        opt.step()
        if step in steps:
            g.eval()
            row = {"step": step, "loss": err.item()}
            with torch.no_grad():
                for key, test in tests.items():
                    z = torch.cat([g(c.to(device) / scale) * scale for c in test["z_x"].split(64)]).cpu()
                    psnr, psnr_vae, _, val = score_latents(vae, test, z)
                    row.update({f"psnr_{key}": psnr, f"psnr_vae_{key}": psnr_vae, f"val_{key}": val})
            rows.append(row)
            g.train()
    return rows


def table(folder: Path, bars: list[Path], prefix: str = "paired_reference") -> str:
    """Medians over seeds of each transform's scores at each length, beside the best unpaired closed-form map
    (``results_<transform>_baselines.json`` in each of ``bars``: the suite's, the control's) and the oracle."""
    from statistics import median

    from summarize import ORDER, UNPAIRED

    runs_of = {t: [json.loads(f.read_text()) for f in sorted(folder.glob(f"{prefix}_{t}_s*.json"))] for t in ORDER}
    steps = sorted({r["step"] for runs in runs_of.values() for run in runs for r in run["rows"]})
    lines = []
    for test in ("test", "afhq"):
        lines += [f"\n### `{test}`: PSNR dB, median of the seeds (each seed)\n",
                  "| transform | " + " | ".join(f"paired, {s} steps" for s in steps) + " | "
                  + " | ".join(f"best closed-form map ({b.name})" for b in bars) + " | oracle |",
                  "| --- | " + " | ".join("---:" for _ in range(len(steps) + len(bars) + 1)) + " |"]
        for t, runs in runs_of.items():
            if not runs:
                continue
            cells = []
            for step in steps:
                v = [r[f"psnr_{test}"] for run in runs for r in run["rows"] if r["step"] == step]
                cells.append(f"**{median(v):.2f}** ({', '.join(f'{x:.2f}' for x in v)})" if v else "")
            oracle = ""
            for b in bars:
                f = b / f"results_{t}_baselines.json"
                if not f.is_file():
                    cells.append("")
                    continue
                base = json.loads(f.read_text())["baselines"][test]
                best = max(UNPAIRED, key=lambda k: base[k][0] if k in base else -1)
                cells.append(f"{base[best][0]:.2f} ({best})")
                oracle = f"{base['oracle'][0]:.2f}"
            lines.append(f"| {t} | " + " | ".join(cells) + f" | {oracle} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", nargs="+", type=Path, metavar="DIR",
                    help="no training: print the table of the paired_reference_*.json in the first DIR beside the baselines of the others")
    ap.add_argument("--transforms", default=",".join(t for t in TRANSFORMS if t != "null"))
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "known_transform", help="run.py's --out: its data folder is reused")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--crops", type=int, default=4)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--eval-steps", default="1012,4048")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where G trains and the VAE runs")
    ap.add_argument("--loss", choices=("latent", "pixel"), default="latent",
                    help="latent: MSE to the truth's latents; pixel: MSE of the decoded output to the truth (files paired_reference_pixel_*)")
    args = ap.parse_args()
    prefix = "paired_reference" + ("_pixel" if args.loss == "pixel" else "")
    if args.table:
        print(table(args.table[0], args.table[1:], prefix))
        return
    args.shared = args.shared.resolve()
    steps = sorted(int(s) for s in args.eval_steps.split(","))
    vae = load_vae(args.shared, args.device, backend="torch" if args.loss == "pixel" else None)  # pixel: a differentiable decoder
    data = args.out / f"data_{args.image_size}px_{args.crops}crops"
    for t in args.transforms.split(","):
        t0 = time.time()
        sets = prepare(args.shared, data, t, args.image_size, args.crops, None, args.split_seed, vae)
        tests = {k: with_truth(vae, v, t) for k, v in sets.items()}
        z_x, z_y, y = pairs(args.shared, vae, t, args.image_size, args.crops, args.split_seed)
        for seed in (int(s) for s in args.seeds.split(",")):
            rows = fit(z_x, z_y if args.loss == "latent" else y, tests, vae, steps, seed, args.device, args.loss)
            device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
            result = {"transform": t, "seed": seed, "loss": args.loss, "pairs": len(z_x), "device": device,
                      "seconds": round(time.time() - t0, 1), "rows": rows}
            checkpoint.atomic_write_bytes(args.out / f"{prefix}_{t}_s{seed}.json", json.dumps(result, indent=2).encode())
            print(f"{t} seed {seed}: " + " | ".join(f"step {r['step']}: test {r['psnr_test']:.2f} dB"
                                                     + (f", afhq {r['psnr_afhq']:.2f}" if "psnr_afhq" in r else "") for r in rows), flush=True)


if __name__ == "__main__":
    main()
