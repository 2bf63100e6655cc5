"""How much the seed decides the post-filter's first fit: identity + the filter, fitted by several schedules, 4 seeds.

``train.post_filter`` starts each generator's pixel filter from :func:`lcgan.postfilter.fit_filter`: 300 Adam steps on
batches of 32 decodes, the batches drawn with the run's seed. At a constant lr the last batches decide where the
filter ends, so the seed moves the start. Here each schedule fits the A->B filter on the untranslated decodes of
A-train (the suite's 352 latents), as the start does where the colour gate is shut, and the filter alone is scored:
PSNR of ``h * decode(z)`` against the transformed truth, on both test sets.

    python experiments/known_transform/run.py --transform sharpen --no-train --image-size 256 --lpips off --out OUT
    python experiments/known_transform/filter_fit.py --transforms sharpen --out OUT --vae-device cuda
"""
from __future__ import annotations

import json
import time

import torch
from run import PostFilter, data_folder, load_folder, load_vae, probe_parser, psnr, with_truth

from lcgan import checkpoint
from lcgan.postfilter import fit_filter

SCHEDULES = {  # name: fit_filter's keywords; "constant" is the fit before 2026-12-01, "cosine" the fit since
    "constant": dict(decay=False),
    "cosine": dict(),
    "cosine, 1200 steps": dict(steps=1200),
    "cosine, 1200 steps of 128": dict(steps=1200, batch=128),
}


def main() -> None:
    ap = probe_parser(__doc__, "soft_focus,sharpen,split_tone,dark_edges,null")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--vae-device", default="cpu")
    args = ap.parse_args()
    data = data_folder(args.out, args.image_size)
    vae = load_vae(args.shared, args.vae_device)
    z_a, xa = load_folder(data / "a")[0], None
    results = {}
    print("| transform | schedule | test: min-max over seeds (mean) | afhq: min-max (mean) | s a fit |")
    print("| --- | --- | --- | --- | ---: |")
    for transform in args.transforms.split(","):
        sets = {k: torch.load(data / f"{k}.pt", weights_only=True) for k in ("test", "afhq") if (data / f"{k}.pt").is_file()}
        tests = {k: with_truth(vae, v, transform) for k, v in sets.items()}
        with torch.no_grad():  # run.py's --pixel-filter: B's decoded spectrum, decodes on the VAE's device
            pf = PostFilter(vae, z_a, load_folder(data / transform / "b")[0], 9, 300)
            xa = pf.decode(z_a) if xa is None else xa  # A's decodes: the same for every transform
            plain = {k: pf.decode(t["z_x"]) for k, t in tests.items()}
        for name, kw in SCHEDULES.items():
            scores, t0 = [], time.time()
            for seed in range(args.seeds):
                h = fit_filter(xa, pf.target, pf.size, seed=seed, **kw)
                with torch.no_grad():
                    scores.append({k: psnr(h(x).clamp(-1, 1).cpu(), tests[k]["y"]).mean().item() for k, x in plain.items()})
            results[f"{transform}/{name}"] = scores
            cells = [f"{min(v):.2f}-{max(v):.2f} ({sum(v) / len(v):.3f})" for v in ([s[k] for s in scores] for k in plain)]
            print(f"| {transform} | {name} | {' | '.join(cells)} | {(time.time() - t0) / args.seeds:.1f} |", flush=True)
    checkpoint.atomic_write_bytes(args.out / "filter_fit.json", json.dumps(results, indent=1).encode())


if __name__ == "__main__":
    main()
