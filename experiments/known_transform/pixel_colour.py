"""Is a colour transform identifiable in decoded pixels where latent maps are not? Closed-form colour maps, CPU.

On sepia every unpaired latent map ends 1.5 dB under the paired 1x1 affine one (21.09 against 22.62): many latent maps
push A's latent vectors onto B's, and optimal transport picks the least-displacement one, not the true one. In RGB,
sepia and split toning *are* low-dimensional colour maps (a 3x3 matrix, per-channel curves), and the pixel filter
(``pixel_filter.py``) showed a prior that is identifiable in pixels and not in latents. This fits the project's own
closed-form maps (``lcgan.baselines.fit``: per-channel moment matching, Gaussian OT, the shrunk Gaussian OT) between
the *decoded* colours of A-train and B-train, without pairs, and applies them after decoding (a pixel stage, never
re-encoded), alone and after the latent start map (the preset's shrunk Gaussian OT, the map then fitted from
``decode(start(A))`` to ``decode(B)``). Rows: PSNR against the truth on the held-out test crops; the suite's bar (the
best of identity and every unpaired latent map) and its paired rows are read from ``results/suite_256px``.
Fitting uses one flip of each crop (176 latents a domain). ``gated``: the pixel map only where the two sets of decodes differ
beyond chance (:func:`lcgan.baselines.divergence_test`: the symmetric KL divergence of their colour Gaussians, p < 0.05
over 64 re-splits of the pooled photos), else none (identity, or the start map alone).

    python experiments/known_transform/run.py --transform sepia --no-train --image-size 256 --lpips off --out OUT
    python experiments/known_transform/pixel_colour.py --transforms sepia,grade,split_tone,null --out OUT
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from run import data_folder, decode, load_one_flip, load_vae, paired_affine, probe_parser, psnr, with_truth

from lcgan.baselines import divergence_test, fit

MAPS = ("moment_match", "gaussian_ot", "gaussian_ot_shrunk")
ALPHA = 0.05  # the gate: a pixel map only where the decoded colours differ beyond chance at this level
START = "gaussian_ot_shrunk"  # where the preset's generators start (conf/model/*.yaml)


def main() -> None:
    ap = probe_parser(__doc__, "grade,sepia,split_tone,soft_focus,sharpen,dark_edges,null")
    ap.add_argument("--test", default="test", choices=("test", "afhq"), help="the held-out photos: the collection's, or the AFHQ ones")
    ap.add_argument("--bars", type=Path, default=Path(__file__).parent / "results" / "suite_256px")
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = data_folder(args.out, args.image_size)
    vae = load_vae(args.shared)
    a, groups_a = load_one_flip(data / "a")
    xa = decode(vae, a)
    test0 = torch.load(data / f"{args.test}.pt", weights_only=True)
    cols = (["pixel " + m for m in MAPS] + ["start + pixel " + m for m in MAPS]
            + ["KL (p)", "gated pixel gaussian_ot", "gated pixel moment_match", "KL after start (p)", "start + gated pixel gaussian_ot",
               "start + gated pixel moment_match"])
    print(f"{len(a)} A latents decoded; PSNR dB on {len(test0['x'])} {args.test} crops")
    print("| transform | identity | bar (best unpaired latent map) | " + " | ".join(cols)
          + " | paired RGB affine (test pairs) | paired latent affine | oracle |")
    print("| --- |" + " ---: |" * (len(cols) + 5))
    for transform in args.transforms.split(","):
        t0 = time.time()
        b, groups_b = load_one_flip(data / transform / "b")
        xb = decode(vae, b)
        test = with_truth(vae, test0, transform)
        y = test["y"]
        xt = decode(vae, test["z_x"])
        start = fit(START, a, b, groups_a, groups_b)
        xsa, xst = decode(vae, start(a)), decode(vae, start(test["z_x"]))
        cells = [psnr(fit(m, xa, xb, groups_a, groups_b)(xt).clamp(-1, 1), y).mean().item() for m in MAPS]
        cells += [psnr(fit(m, xsa, xb, groups_a, groups_b)(xst).clamp(-1, 1), y).mean().item() for m in MAPS]
        scores = [f"{c:.2f}" for c in cells]
        for i, (src, plain) in enumerate(((xa, xt), (xsa, xst))):  # the pixel maps alone, then after the start map
            kl, p = divergence_test(src, xb, groups_a, groups_b)
            scores.append(f"{kl:.2f} ({p:.3f})")
            scores += [scores[3 * i + MAPS.index(m)] if p < ALPHA else f"{psnr(plain, y).mean().item():.2f}" for m in ("gaussian_ot", "moment_match")]
        rows = json.loads((args.bars / f"results_{transform}_baselines.json").read_text())["baselines"][args.test]
        bar = max((v[0], k) for k, v in rows.items() if k not in ("paired_affine", "oracle", "pixels_identity"))
        print(f"| {transform} | {psnr(xt, y).mean().item():.2f} | {bar[0]:.2f} ({bar[1]}) | " + " | ".join(scores)
              + f" | {psnr(paired_affine(xt, y).clamp(-1, 1), y).mean().item():.2f} | {rows['paired_affine'][0]:.2f} | "
              f"{rows['oracle'][0]:.2f} |  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
