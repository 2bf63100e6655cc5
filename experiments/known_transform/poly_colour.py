"""Does a colour map of degree 2 see split toning where a linear one cannot? Closed-form, CPU.
Split toning moves each pixel's colour by a quadratic function of its luma, so neither the colour gate
(:func:`lcgan.baselines.divergence_test` on RGB Gaussians) nor a linear RGB map can express it. This fits Gaussian OT
between the *degree-2 polynomial features* of the decoded colours (r, g, b, their squares and cross products: 9
channels) of A-train and B-train, without pairs, applies it to the test decodes and keeps the RGB rows; the gate is the
same test on the 9 features. Beside it, the linear pixel Gaussian OT of ``pixel_colour.py``. Uses one flip of each
crop, as ``pixel_colour.py``.
    python experiments/known_transform/run.py --transform split_tone --no-train --image-size 256 --lpips off --out OUT
    python experiments/known_transform/poly_colour.py --transforms split_tone,null --out OUT
"""
from __future__ import annotations

import time

import torch
from run import data_folder, decode, load_one_flip, load_vae, probe_parser, psnr, with_truth

from lcgan.baselines import divergence_test, fit


def features(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) colours -> (N, 9, H, W): r, g, b, r^2, g^2, b^2, rg, rb, gb."""
    r, g, b = x.split(1, dim=1)
    return torch.cat([r, g, b, r * r, g * g, b * b, r * g, r * b, g * b], 1)


def main() -> None:
    ap = probe_parser(__doc__, "split_tone,null,sepia,grade")
    ap.add_argument("--test", default="test", choices=("test", "afhq"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = data_folder(args.out, args.image_size)
    vae = load_vae(args.shared)
    a, groups_a = load_one_flip(data / "a")
    xa = decode(vae, a)
    fa = features(xa)
    test0 = torch.load(data / f"{args.test}.pt", weights_only=True)
    print(f"PSNR dB on {len(test0['x'])} {args.test} crops; gate: colour KL (p over 64 re-splits)")
    print("| transform | identity | pixel Gaussian OT (RGB) | pixel Gaussian OT (degree-2 features) | gate on RGB | gate on the features |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for transform in args.transforms.split(","):
        t0 = time.time()
        b, groups_b = load_one_flip(data / transform / "b")
        xb = decode(vae, b)
        fb = features(xb)
        test = with_truth(vae, test0, transform)
        y, xt = test["y"], decode(vae, test["z_x"])
        linear = fit("gaussian_ot", xa, xb, groups_a, groups_b)(xt).clamp(-1, 1)
        poly = fit("gaussian_ot", fa, fb, groups_a, groups_b)(features(xt))[:, :3].clamp(-1, 1)
        gates = [divergence_test(s, t, groups_a, groups_b) for s, t in ((xa, xb), (fa, fb))]
        scores = " | ".join(f"{psnr(x, y).mean().item():.2f}" for x in (xt, linear, poly))
        print(f"| {transform} | {scores} | "
              + " | ".join(f"{kl:.3g} ({p:.3f})" for kl, p in gates) + f" |  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
