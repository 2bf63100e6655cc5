"""How far can the suite's generator go from these photos if it had pairs? A paired bound for the trained recipes.

The suite's generator (``+experiment=known_transform``: ``conf/model/small.yaml``'s residual ResnetGenerator, started at
the identity) trained by regression on *pairs*: A-train's crops and their flips (run.py's own, the same photos and
crops) against their transformed truth, latent MSE between ``G(encode(x))`` and ``encode(T(x))``, Adam as
``conf/optim/adam.yaml``, batch 16. Scored as every row of the suite: PSNR of ``decode(G(z))`` against ``T(x)`` on the
held-out test photos and on the afhq photos, at each of ``--eval-steps``.

A reference, not a strict bound: the objective is a latent one and the length the suite's, so where a closed-form map
is already near the oracle (grade) it can end below that map. Where it ends above the best closed-form map, the gap is
room that this generator can take from these photos given pairs; the gap between it and a trained recipe is what the
unpaired signal fails to deliver of it. (The suite's paired 1x1 affine row is fitted on the *test* pairs; this one
sees only training pairs.)

    python experiments/known_transform/paired_bound.py --transforms dark_edges,grade --out OUT --device cuda
    python experiments/known_transform/paired_bound.py --table results/paired_bound results/suite_256px results/b_same
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


def pairs(shared: Path, vae, transform: str, size: int, crops: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A-train's latents (crops, then their pixel flips, as run.py writes them) and the latents of their truth."""
    x, _ = photo_crops(split_photos(shared, None, seed)["a"], crops, size, seed + 1)  # run.py's A-train crops
    x = torch.cat([x, x.flip(-1)])
    return encode(vae, x), encode(vae, TRANSFORMS[transform](x))


def fit(z_x: torch.Tensor, z_y: torch.Tensor, tests: dict, vae, steps: list[int], seed: int, device: str, batch: int = 16) -> list[dict]:
    """Train the suite's generator on the pairs, scoring it on every test set at each of ``steps``."""
    cfg = compose_train(["+experiment=known_transform", "model.generator.anchor=identity"])
    torch.manual_seed(seed)
    g = instantiate(cfg.model.generator, in_channels=z_x.shape[1]).to(device)
    opt = torch.optim.Adam(g.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
    scale = z_x.std().item()  # the generator sees latents of unit scale, as training's model space
    z_x, z_y = (z.to(device) / scale for z in (z_x, z_y))
    gen, rows = torch.Generator(device=device).manual_seed(seed), []
    for step in range(1, max(steps) + 1):
        idx = torch.randint(0, len(z_x), (batch,), device=device, generator=gen)
        loss = F.mse_loss(g(z_x[idx]), z_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step in steps:
            g.eval()
            row = {"step": step, "loss": loss.item()}
            with torch.no_grad():
                for key, test in tests.items():
                    z = torch.cat([g(c.to(device) / scale) * scale for c in test["z_x"].split(64)]).cpu()
                    psnr, psnr_vae, _, val = score_latents(vae, test, z)
                    row.update({f"psnr_{key}": psnr, f"psnr_vae_{key}": psnr_vae, f"val_{key}": val})
            rows.append(row)
            g.train()
    return rows


def table(folder: Path, bars: list[Path]) -> str:
    """Medians over seeds of each transform's scores at each length, beside the best unpaired closed-form map
    (``results_<transform>_baselines.json`` in each of ``bars``: the suite's, the control's) and the oracle."""
    from statistics import median

    from summarize import ORDER, UNPAIRED

    lines = []
    for test in ("test", "afhq"):
        lines += [f"\n### `{test}`: PSNR dB, median of the seeds (each seed)\n",
                  "| transform | " + " | ".join(f"paired, {s} steps" for s in ("1012", "4048")) + " | "
                  + " | ".join(f"best closed-form map ({b.name})" for b in bars) + " | oracle |",
                  "| --- | " + " | ".join("---:" for _ in range(3 + len(bars))) + " |"]
        for t in ORDER:
            runs = [json.loads(f.read_text()) for f in sorted(folder.glob(f"paired_bound_{t}_s*.json"))]
            if not runs:
                continue
            cells = []
            for step in (1012, 4048):
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
                    help="no training: print the table of the paired_bound_*.json in the first DIR beside the baselines of the others")
    ap.add_argument("--transforms", default=",".join(t for t in TRANSFORMS if t != "null"))
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "known_transform", help="run.py's --out: its data folder is reused")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--crops", type=int, default=4)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--eval-steps", default="1012,4048")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where G trains and the VAE runs")
    args = ap.parse_args()
    if args.table:
        print(table(args.table[0], args.table[1:]))
        return
    args.shared = args.shared.resolve()
    steps = sorted(int(s) for s in args.eval_steps.split(","))
    vae = load_vae(args.shared, args.device)
    data = args.out / f"data_{args.image_size}px_{args.crops}crops"
    for t in args.transforms.split(","):
        t0 = time.time()
        sets = prepare(args.shared, data, t, args.image_size, args.crops, None, args.split_seed, vae)
        tests = {k: with_truth(vae, v, t) for k, v in sets.items()}
        z_x, z_y = pairs(args.shared, vae, t, args.image_size, args.crops, args.split_seed)
        for seed in (int(s) for s in args.seeds.split(",")):
            rows = fit(z_x, z_y, tests, vae, steps, seed, args.device)
            result = {"transform": t, "seed": seed, "pairs": len(z_x), "device": torch.cuda.get_device_name() if args.device.startswith("cuda")
                      else "CPU", "seconds": round(time.time() - t0, 1), "rows": rows}
            checkpoint.atomic_write_bytes(args.out / f"paired_bound_{t}_s{seed}.json", json.dumps(result, indent=2).encode())
            print(f"{t} seed {seed}: " + " | ".join(f"step {r['step']}: test {r['psnr_test']:.2f} dB"
                                                     + (f", afhq {r['psnr_afhq']:.2f}" if "psnr_afhq" in r else "") for r in rows), flush=True)


if __name__ == "__main__":
    main()
