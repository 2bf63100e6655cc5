"""Can held-out photos choose how far to shrink the patch-OT map, where the permutation rule cannot? Closed-form, CPU.
``lcgan.baselines.shrink_factor`` keeps ``1 - chance / move`` of the map (dark_edges: 0.75, 0.6 dB under the unshrunk
map; sharpen 0.64, 0.1 dB under identity). This fits the map on half the photos of each domain, applies it shrunk by
each ``lam`` to the other half of A and scores the result against the other half of B with unpaired distances (two
folds, each way round), beside the PSNR of the map fitted on every latent, on the test photos (needs the truth: what
the unpaired scores should track). Distances: the symmetric Gaussian KL of 3x3 latent patches, and of the decoded
images' colours and 4x4 patches of their 2x-downsampled pixels.
    python experiments/known_transform/run.py --transform dark_edges --no-train --image-size 256 --lpips off --out OUT
    python experiments/known_transform/cv_shrink.py --transforms dark_edges,null,sharpen --out OUT
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from run import data_folder, decode, load_folder, load_vae, probe_parser, psnr, with_truth

from lcgan.baselines import _gaussian_kl, _gaussian_ot, _patch_moments, shrink_factor, shrunk

LAMS = (0.0, 0.5, 0.75, 0.9, 1.0)


def halves(groups: list[str], seed: int) -> torch.Tensor:
    """A bool mask of the latents whose photo falls in a random half of the photos."""
    names = sorted(set(groups))
    pick = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed))[: len(names) // 2]
    first = {names[i] for i in pick.tolist()}
    return torch.tensor([g in first for g in groups])


def subset(z: torch.Tensor, groups: list[str], mask: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    return z[mask], [g for g, keep in zip(groups, mask.tolist()) if keep]


def kl(x: torch.Tensor, y: torch.Tensor, k: int) -> float:
    return _gaussian_kl(_patch_moments(x, k).moments(), _patch_moments(y, k).moments())


def pixel_scores(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Colour KL and the KL of 4x4 patches of the 2x-downsampled images (48 dims)."""
    small = lambda t: F.avg_pool2d(t, 2)  # noqa: E731
    return kl(x, y, 1), kl(small(x), small(y), 4)


def main() -> None:
    ap = probe_parser(__doc__, "dark_edges,null,sharpen,soft_focus,split_tone,sepia,grade")
    ap.add_argument("--kernel", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = data_folder(args.out, args.image_size)
    vae = load_vae(args.shared)
    a, groups_a = load_folder(data / "a")
    test = torch.load(data / "test.pt", weights_only=True)
    k, c = args.kernel, a.shape[1]
    for transform in args.transforms.split(","):
        t0 = time.time()
        b, groups_b = load_folder(data / transform / "b")
        src, tgt = _patch_moments(a, k, groups_a), _patch_moments(b, k, groups_b)
        full, js = _gaussian_ot(src.moments(), tgt.moments(), c, k), shrink_factor(src, tgt, c, k)
        truth = with_truth(vae, test, transform)
        lams = sorted(set(LAMS) | {round(js, 2)})
        rows = {lam: [psnr(decode(vae, shrunk(full, lam)(truth["z_x"])), truth["y"]).mean().item(), 0.0, 0.0, 0.0] for lam in lams}
        ha, hb = halves(groups_a, 1), halves(groups_b, 2)
        for fit_a, fit_b in ((ha, hb), (~ha, ~hb)):
            (za, ga), (zb, gb) = subset(a, groups_a, fit_a), subset(b, groups_b, fit_b)
            m = _gaussian_ot(_patch_moments(za, k, ga).moments(), _patch_moments(zb, k, gb).moments(), c, k)
            held_a, held_b = a[~fit_a], b[~fit_b]
            img_b = decode(vae, held_b)
            for lam in lams:
                moved = shrunk(m, lam)(held_a)
                colour, patches = pixel_scores(decode(vae, moved), img_b)
                for i, s in enumerate((kl(moved, held_b, k), colour, patches)):
                    rows[lam][1 + i] += s / 2
        print(f"\n{transform}: the permutation rule keeps {js:.2f}\n\n| kept | test PSNR | held-out latent KL | colour KL | pixel patch KL |"
              "\n| ---: | ---: | ---: | ---: | ---: |")
        for lam, r in rows.items():
            print(f"| {lam:.2f} | {r[0]:.2f} | {r[1]:.3f} | {r[2]:.4f} | {r[3]:.3f} |")
        best = [max(rows, key=lambda lam: rows[lam][0])] + [min(rows, key=lambda lam, i=i: rows[lam][i]) for i in (1, 2, 3)]
        print(f"\nbest kept by: PSNR {best[0]:.2f}, latent KL {best[1]:.2f}, colour KL {best[2]:.2f}, pixel patch KL {best[3]:.2f} "
              f"({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
