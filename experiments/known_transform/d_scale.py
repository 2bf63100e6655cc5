"""Does a discriminator see a transform better when it trains on more photos? A probe in clean pixels, CPU.

The suite trains on 44 photos a domain, and its discriminators see dark_edges barely above chance once they cannot
tell the photos apart (``d_probe.py`` on the content-matched control: 0.52-0.57 held out). This asks whether that is
the number of photos. The pool is every photo the project has (the suite's 110 and the 41 AFHQ ones), scaled as the
suite scales them (shorter side 512 px), split by photo with a seed into 31 test photos and two disjoint training
halves; N photos a domain (A-train as they are, B-train transformed), 8 random 256 px crops of each. A 9 px local
discriminator (``d_probe.probe``: LSGAN, the training's D optimiser, random 64 px crops) learns B from A; its AUC is
read on 88 crops of the photos it trained on (memorising) and on 4 crops of each test photo, ``T(crop)`` against
``m(crop)`` (seeing the transform). ``m``, the fakes' map as the start map is the generators': per-channel moment matching
of A-train's pixels onto B-train's (``--start moment_match``; ``identity`` leaves the global tone change to see too).
No VAE: what it sees here bounds what a discriminator of decoded latents can.

``--view`` puts the vaelight VAE between the photos and the discriminator, to tell what it hides from what the photo
pool does (``--pool suite``: only the suite's 110 photos). ``round_trip``: every image the discriminator or the score
sees is ``decode(encode(.))`` of its clean-pixel self (the same maps; the VAE's effect alone). ``latent``: as the
suite's discriminators see it, reals ``decode(encode(T(x)))`` and fakes ``decode(m(encode(x)))`` with ``m`` the
moment matching of A-train's latents onto B-train's.

    python experiments/known_transform/d_scale.py --transform dark_edges --photos 15,30,60 --seeds 0,1,2
    python experiments/known_transform/d_scale.py --photos 39 --view clean,round_trip,latent --pool suite --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from d_probe import PROBES, auc, probe
from run import OUTSIDE_SETS, PHOTO_SETS, REPO, TRANSFORMS, decode, encode, load_vae, random_crops, read_photo

from lcgan.baselines import fit
from lcgan.images import list_images

TEST_PHOTOS = 31


def crops(photos: list[torch.Tensor], n: int, size: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([c for x in photos for c in random_crops(x, n, size, gen)])


def _start(kind: str, x: torch.Tensor, y: torch.Tensor):
    return fit("moment_match", x, y) if kind == "moment_match" else (lambda v: v)  # per-channel, on pixels or latents


def clean(vae, start, a, b, x_test, y_test):
    """Pixels as they are: B-train and the test truth against A's moved by the pixel map."""
    m = _start(start, a, b)
    return b, m(a).clamp(-1, 1), y_test, m(x_test).clamp(-1, 1)


def round_trip(vae, start, a, b, x_test, y_test):
    """The clean view's images, each through the VAE once."""
    rt = lambda x: decode(vae, encode(vae, x)).clamp(-1, 1)  # noqa: E731
    return tuple(rt(x) for x in clean(vae, start, a, b, x_test, y_test))


def latent(vae, start, a, b, x_test, y_test):
    """As the suite's discriminators see it: reals round-tripped, fakes decoded from the latent start map."""
    za, zb = encode(vae, a), encode(vae, b)
    m = _start(start, za, zb)
    dec = lambda z: decode(vae, z).clamp(-1, 1)  # noqa: E731
    return dec(zb), dec(m(za)), dec(encode(vae, y_test)), dec(m(encode(vae, x_test)))


VIEWS = {"clean": clean, "round_trip": round_trip, "latent": latent}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transform", default="dark_edges", choices=sorted(TRANSFORMS))
    ap.add_argument("--photos", default="15,30,60", help="training photos a domain")
    ap.add_argument("--seeds", default="0,1,2", help="each a split of the photos and a discriminator")
    ap.add_argument("--steps", default="400,1600", help="discriminator steps")
    ap.add_argument("--probe", default="local 9 px", choices=sorted(PROBES))
    ap.add_argument("--start", default="moment_match", choices=("moment_match", "identity"), help="the map that makes the fakes")
    ap.add_argument("--view", default="clean", help="comma list of clean, round_trip, latent (module docstring)")
    ap.add_argument("--pool", default="all", choices=("all", "suite"), help="every photo, or the suite's 110 only")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    args = ap.parse_args()
    torch.set_num_threads(2)
    views = args.view.split(",")
    if not set(views) <= set(VIEWS):
        raise ValueError(f"--view {args.view}: choose from {', '.join(VIEWS)}")
    vae = load_vae(args.shared, args.device) if set(views) - {"clean"} else None
    sets = PHOTO_SETS if args.pool == "suite" else (*PHOTO_SETS, *OUTSIDE_SETS)
    paths = [p for s in sets for p in list_images(args.shared / "data" / s)]
    photos = [read_photo(p, 512) for p in paths]
    transform = TRANSFORMS[args.transform]
    sizes = [int(n) for n in args.photos.split(",")]
    if max(sizes) > (len(photos) - TEST_PHOTOS) // 2:
        raise ValueError(f"--photos {args.photos}: at most {(len(photos) - TEST_PHOTOS) // 2} a domain from {len(photos)} photos")
    print(f"{args.transform}, {args.probe}, fakes: {args.start} of A, {len(photos)} photos ({TEST_PHOTOS} for test); "
          "AUC of B over the fakes, training crops / held-out test crops")
    rows: dict[tuple[str, int, int], list[tuple[float, float]]] = {}  # (view, photos, steps)
    for seed in (int(s) for s in args.seeds.split(",")):
        order = torch.randperm(len(photos), generator=torch.Generator().manual_seed(seed)).tolist()
        test, rest = [photos[i] for i in order[:TEST_PHOTOS]], [photos[i] for i in order[TEST_PHOTOS:]]
        half = len(rest) // 2
        x_test = crops(test, 4, 256, seed + 1)
        y_test = transform(x_test)
        for n in sizes:
            a = crops(rest[:n], 8, 256, seed + 2)
            b = transform(crops(rest[half:half + n], 8, 256, seed + 3))
            for view in views:
                real, fake, real_test, fake_test = VIEWS[view](vae, args.start, a, b, x_test, y_test)
                for steps in (int(s) for s in args.steps.split(",")):
                    t0 = time.time()
                    score = probe(PROBES[args.probe], real.to(args.device), fake.to(args.device), steps, seed, device=args.device)
                    k = min(88, len(a))
                    cell = (auc(score(real[:k]), score(fake[:k])), auc(score(real_test), score(fake_test)))
                    rows.setdefault((view, n, steps), []).append(cell)
                    print(f"seed {seed}, {view}, {n} photos a domain, {steps} steps: {cell[0]:.3f} / {cell[1]:.3f} "
                          f"({time.time() - t0:.0f} s)", flush=True)
    print("\n| view | photos a domain | D steps | training crops (median, seeds) | held-out test crops (median, seeds) |")
    print("| --- | ---: | ---: | --- | --- |")
    for (view, n, steps), cells in sorted(rows.items(), key=lambda kv: (views.index(kv[0][0]), *kv[0][1:])):
        train, held = zip(*cells)
        print(f"| {view} | {n} | {steps} | {statistics.median(train):.3f} ({', '.join(f'{v:.3f}' for v in train)}) | "
              f"{statistics.median(held):.3f} ({', '.join(f'{v:.3f}' for v in held)}) |")


if __name__ == "__main__":
    main()
