"""How far apart two photo sets are by chance, next to how far each transform moves them, for two statistics a
loss or a discriminator could match without pairs (raw pixels, no VAE, CPU, about a minute):

- the covariance of 7x7 RGB pixel patches (relative squared Frobenius distance), what a sliced Wasserstein
  loss or a Gaussian map in pixel space sees;
- the mean log power spectrum of 8x8 DCT patches per colour (RMS distance), ``lcgan.spectrum``.

For each transform T, with the suite's split (A-train and B-train photos, 2 crops of 128 px each):
``A vs T(B)`` (what an untrained map faces), ``T(A) vs T(B)`` (what a perfect map leaves: chance alone) and two
batches of 16 crops of T(A) (what one training batch sees by chance).

    python experiments/known_transform/noise_floor.py --shared ../shared
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from run import TRANSFORMS, photo_crops, split_photos

from lcgan.spectrum import log_spectrum


def patch_cov(x: torch.Tensor, k: int = 7) -> torch.Tensor:
    p = F.unfold(x, k, stride=2).transpose(1, 2).reshape(-1, x.shape[1] * k * k)
    p = p - p.mean(0)
    return p.T @ p / len(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    split = split_photos(args.shared, None, args.seed)
    a, _ = photo_crops(split["a"], 2, 128, args.seed)
    b, _ = photo_crops(split["b"], 2, 128, args.seed + 1)
    print(f"{len(a)} A crops, {len(b)} B crops of 128 px (seed {args.seed})")
    print("| transform | cov: A vs T(B) | cov: T(A) vs T(B) | cov: batch vs batch "
          "| spectrum: A vs T(B) | spectrum: T(A) vs T(B) | spectrum: batch vs batch |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, t in TRANSFORMS.items():
        ta, tb = t(a), t(b)
        cb = patch_cov(tb)
        cov = lambda x, ref=cb: ((patch_cov(x) - ref).pow(2).sum() / ref.pow(2).sum()).item()  # noqa: E731
        sb = log_spectrum(tb)
        spec = lambda x, ref=sb: (log_spectrum(x) - ref).pow(2).mean().sqrt().item()  # noqa: E731
        cov_batch = ((patch_cov(ta[:16]) - patch_cov(ta[16:32])).pow(2).sum() / cb.pow(2).sum()).item()
        spec_batch = spec(ta[:16], log_spectrum(ta[16:32]))
        print(f"| {name} | {cov(a):.4f} | {cov(ta):.4f} | {cov_batch:.4f} | {spec(a):.2f} | {spec(ta):.2f} | {spec_batch:.2f} |")


if __name__ == "__main__":
    main()
