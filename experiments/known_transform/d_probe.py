"""Does a discriminator of decoded pixels see the transform, or the photos? A probe, no generator, CPU.

Each discriminator (the project's own classes, on RGB pixels) is trained with the LSGAN loss to tell B-train's
decodes (real) from the decodes of A-train moved by the start map (fake: the shrunk Gaussian-OT map, where G
starts), on random 64 px crops, one of each crop's two flips. Then each image gets the mean of D's output, and
the AUC of real over fake is reported on the photos D trained on (``train``) and on the held-out test photos
(``test``: decode(start(x)) against the truth's round trip decode(encode(T(x)))). On ``null`` (B untransformed)
anything above 0.5 on ``train`` is memorised content and ``test`` must be ~0.5; on a transform, ``test`` above
0.5 is the signal that would reach G. Results: ``results/d_probe.md``.

    python experiments/known_transform/run.py --transform dark_edges --no-train --image-size 256 --lpips off --out OUT
    python experiments/known_transform/d_probe.py --transforms dark_edges,null --out OUT   # the same OUT
"""
from __future__ import annotations

import time

import torch
from run import _blur, data_folder, decode, load_folder, load_vae, probe_parser, with_truth

from lcgan.baselines import fit
from lcgan.models import LocalDiscriminator, PatchDiscriminator


class HighPassView(torch.nn.Module):
    """A discriminator given two views of each image: its pixels and their high-pass residue ``x - blur(x)`` (Gaussian,
    sigma 2 px), where edges, halos, blur and sharpening stand out from the photo's colours and layout."""

    def __init__(self, disc: torch.nn.Module, sigma: float = 2.0) -> None:
        super().__init__()
        self.disc, self.sigma = disc, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.disc(torch.cat([x, x - _blur(x, self.sigma)], dim=1))  # the suite's own blur (soft_focus's)


PROBES = {"local 9 px": lambda aug: LocalDiscriminator(3, 64, 9, aug), "local 25 px": lambda aug: LocalDiscriminator(3, 64, 25, aug),
          "PatchGAN 2 layers (34 px)": lambda aug: PatchDiscriminator(3, 64, 2, aug),
          "local 9 px + high-pass view": lambda aug: HighPassView(LocalDiscriminator(6, 64, 9, aug))}


def auc(pos: list[float], neg: list[float]) -> float:
    """P(a real image scores above a fake one), ties counted half."""
    p, n = torch.tensor(pos)[:, None], torch.tensor(neg)[None, :]
    return ((p > n).float().mean() + 0.5 * (p == n).float().mean()).item()


def probe(make, real: torch.Tensor, fake: torch.Tensor, steps: int, seed: int, crop: int = 64, batch: int = 16,
          augment: str = "", device: str = "cpu"):
    torch.manual_seed(seed)
    d = make(augment).to(device)
    opt = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))  # the training's D optimiser
    gen = torch.Generator().manual_seed(seed)

    def crops(x):
        i = torch.randint(0, len(x), (batch,), generator=gen)
        r, c = torch.randint(0, x.shape[-1] - crop + 1, (2,), generator=gen).tolist()
        return x[i, :, r:r + crop, c:c + crop]

    for _ in range(steps):
        loss = (d(crops(real)) - 1).pow(2).mean() + d(crops(fake)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    d.eval()  # scoring sees the images themselves (DiffAugment acts in training mode only)

    @torch.no_grad()
    def score(x: torch.Tensor) -> list[float]:
        return torch.cat([d(c.to(device)).mean(dim=(1, 2, 3)).cpu() for c in x.split(16)]).tolist()

    return score


def main() -> None:
    ap = probe_parser(__doc__, "dark_edges,null")
    ap.add_argument("--anchor", default="gaussian_ot_shrunk", help="the start map that makes the fakes")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crop", type=int, default=64, help="training crop size in pixels")
    ap.add_argument("--augment", default="", help="DiffAugment policy of the discriminators (model.discriminator.augment)")
    ap.add_argument("--probes", default=",".join(PROBES), help="which discriminators, by name")
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = data_folder(args.out, args.image_size)
    vae = load_vae(args.shared)
    a, groups_a = load_folder(data / "a")
    probes = {name: PROBES[name] for name in args.probes.split(",")}
    print(f"start map {args.anchor}, {args.steps} D steps of 16 crops of {args.crop} px, augment {args.augment!r}, "
          f"seed {args.seed}; AUC of real over fake, training photos / held-out test photos")
    print("| transform | " + " | ".join(probes) + " |")
    print("| --- |" + " --- |" * len(probes))
    for transform in args.transforms.split(","):
        t0 = time.time()
        b, groups_b = load_folder(data / transform / "b")
        start = fit(args.anchor, a, b, groups_a, groups_b)
        fake, real = decode(vae, start(a[::2])), decode(vae, b[::2])  # files sort as crop, crop_flip: one of each
        test = with_truth(vae, torch.load(data / "test.pt", weights_only=True), transform)
        test_fake, n = decode(vae, start(test["z_x"])), len(test["z_x"])
        cells = []
        for make in probes.values():
            score = probe(make, real, fake, args.steps, args.seed, args.crop, augment=args.augment)
            cells.append(f"{auc(score(real[:n]), score(fake[:n])):.3f} / {auc(score(test['y_rec']), score(test_fake)):.3f}")
        print(f"| {transform} | " + " | ".join(cells) + f" |  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
