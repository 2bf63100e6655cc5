"""A prior that the spectrum can identify: a zero-phase, mean-preserving pixel filter, fitted without pairs.

The decoded log spectrum (``lcgan.spectrum``) sees blur and sharpening, but no latent map fitted by it applies
them (``spectral_filter.py``). Here the map is a pixel filter between the VAE's decode and encode:
``z -> encode(h * decode(z))``, ``h`` a 9x9 kernel per colour, symmetric (zero phase: no shift) and summing to 1
(mean colour kept), started at the identity. It is fitted by the spectrum of ``h * decode(A)`` against
``decode(B)``, both fixed, so no gradient passes through the VAE. Scored like every row of the suite.

    python experiments/known_transform/run.py --transform soft_focus --no-train --image-size 256 --lpips off --out OUT
    python experiments/known_transform/pixel_filter.py --transforms soft_focus,sharpen,null --out OUT
"""
from __future__ import annotations

import time

import torch
from run import data_folder, decode, encode, load_folder, load_vae, probe_parser, psnr, score_latents, with_truth

from lcgan.baselines import BASELINES, fit
from lcgan.postfilter import fit_filter  # the filter and its fit, as train.post_filter uses them
from lcgan.spectrum import domain_spectrum

K = 9


def main() -> None:
    ap = probe_parser(__doc__, "soft_focus,sharpen,null")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = data_folder(args.out, args.image_size)
    vae = load_vae(args.shared)
    a, groups_a = load_folder(data / "a")
    xa = decode(vae, a)
    print(f"{len(a)} A latents decoded; seed {args.seed}, {args.steps} steps of {args.batch} images, lr {args.lr}; test crops")
    print("| transform | identity | best unpaired closed-form map | pixel filter | pixel filter, not re-encoded | oracle |")
    print("| --- | --- | --- | --- | --- | --- |")
    for transform in args.transforms.split(","):
        t0 = time.time()
        b, groups_b = load_folder(data / transform / "b")
        test = with_truth(vae, torch.load(data / "test.pt", weights_only=True), transform)
        target = domain_spectrum(lambda z: decode(vae, z), b)
        h = fit_filter(xa, target, K, args.steps, args.batch, args.lr, args.seed)
        with torch.no_grad():
            filtered = h(decode(vae, test["z_x"]))
        score = lambda z, test=test: score_latents(vae, test, z)[0]  # noqa: E731
        closed = max((score(fit(k, a, b, groups_a, groups_b)(test["z_x"])), k) for k in BASELINES)
        print(f"| {transform} | {score(test['z_x']):.2f} | {closed[0]:.2f} ({closed[1]}) | {score(encode(vae, filtered)):.2f} "
              f"| {psnr(filtered, test['y']).mean().item():.2f} | {score(test['z_y']):.2f} |  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
