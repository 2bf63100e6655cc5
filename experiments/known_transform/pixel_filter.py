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

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from run import REPO, decode, encode, load_folder, load_vae, psnr, score_latents, with_truth

from lcgan.baselines import BASELINES, fit
from lcgan.spectrum import domain_spectrum, spectrum_loss

K = 9


def apply(raw: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The filter of parameters ``raw`` (3, K, K) on images ``x``: symmetric, normalised to sum 1 per colour."""
    k = (raw + raw.flip(-1, -2)) / 2
    k = k / k.sum(dim=(-1, -2), keepdim=True)
    return F.conv2d(F.pad(x, (K // 2,) * 4, mode="reflect"), k.unsqueeze(1), groups=3)


def fit_filter(xa: torch.Tensor, target: torch.Tensor, steps: int, batch: int, lr: float, seed: int) -> torch.Tensor:
    raw = torch.zeros(3, K, K)
    raw[:, K // 2, K // 2] = 1.0
    raw.requires_grad_(True)
    opt = torch.optim.Adam([raw], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = xa[torch.randint(0, len(xa), (batch,), generator=gen)]
        loss = spectrum_loss(apply(raw, x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return raw.detach()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transforms", default="soft_focus,sharpen,null")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "known_transform")
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = args.out / f"data_{args.image_size}px_4crops"
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
        raw = fit_filter(xa, target, args.steps, args.batch, args.lr, args.seed)
        with torch.no_grad():
            filtered = apply(raw, decode(vae, test["z_x"]))
        score = lambda z, test=test: score_latents(vae, test, z)[0]  # noqa: E731
        closed = max((score(fit(k, a, b, groups_a, groups_b)(test["z_x"])), k) for k in BASELINES)
        print(f"| {transform} | {score(test['z_x']):.2f} | {closed[0]:.2f} ({closed[1]}) | {score(encode(vae, filtered)):.2f} "
              f"| {psnr(filtered, test['y']).mean().item():.2f} | {score(test['z_y']):.2f} |  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
