"""What the held-out photos alone make of the gain's distance, with no model (results/gain.md, session 46).

The true transform's effect scaled by k, ``T_k(p) = p + k (T(p) - p)``, is applied to one set of held-out photos and
compared with another set's transformed photos by the distance ``lcgan.gain`` chooses with (``patch_swd`` of 4x4
pixel patches), both as a user holds them: through the VAE. At k = 1 the map is right; the k where the distance is
lowest is where the photos' content puts it. Lowest at k > 1 on a split: that split rewards overshooting the
transform, whatever a model learns, and a gain chosen on it overshoots with it.

Splits (the suite's photos, ``run.py``'s 4 crops a photo and their flips):
- ``side``: the cross-fit's held-out photos, ``lcgan.data.held_out``'s 20% of A-train against 20% of B-train (9 and 9
  photos: the side run's ``val_a``/``val_b``);
- ``test``: the test photos' halves, each against the other, averaged (11 and 11: ``scale_select.py``'s protocol);
- ``train``: all of A-train against all of B-train (44 and 44).

    python experiments/known_transform/split_bias.py --transforms sepia,dark_edges,split_tone --out OUT   # 2-core CPU, ~25 min
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import run  # the suite's photos, crops, transforms and VAE (this script's folder is on the path)
import torch

from lcgan.data import held_out
from lcgan.gain import patch_swd

STRENGTHS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


def crops_with_flips(photos: list[Path], seed: int, size: int = 256) -> tuple[torch.Tensor, list[str]]:
    """``run.py``'s crops of ``photos`` (as its data folders hold them) and their mirrored copies, with file names."""
    x, names = run.photo_crops(photos, 4, size, seed)
    return torch.cat([x, x.flip(-1)]), names + [f"{n}_flip" for n in names]


def round_trip(vae, x: torch.Tensor) -> torch.Tensor:
    return run.decode(vae, run.encode(vae, x)).clamp(-1, 1)


def curve(vae, transform, a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """The distance of ``T_k(A)`` to ``T(B)``, both through the VAE, at every strength k."""
    ref = round_trip(vae, transform(b))
    t = transform(a)
    return {f"{k:g}": patch_swd(round_trip(vae, (a + k * (t - a)).clamp(-1, 1)), ref) for k in STRENGTHS}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--transforms", default="sepia,dark_edges,split_tone")
    ap.add_argument("--splits", default="side,test,train")
    ap.add_argument("--fraction", type=float, default=0.2, help="the side split's held-out share (train.gain_crossfit)")
    ap.add_argument("--shared", type=Path, default=run.REPO.parent / "shared")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    for option, given, known in (("--transforms", args.transforms, run.TRANSFORMS), ("--splits", args.splits, ("side", "test", "train"))):
        if unknown := set(given.split(",")) - set(known):
            ap.error(f"{option}: unknown {', '.join(sorted(unknown))}; choose from {', '.join(known)}")
    vae = run.load_vae(args.shared.resolve())
    photos = run.split_photos(args.shared.resolve(), None, 0)
    (a, a_names), (b, b_names) = crops_with_flips(photos["a"], 1), crops_with_flips(photos["b"], 2)
    test, _ = run.photo_crops(photos["test"], 4, 256, 3)  # in photo order: the halves share no photo
    sets = {"side": [(a[held_out(a_names, args.fraction)[1]], b[held_out(b_names, args.fraction)[1]])],
            "test": [(test[: len(test) // 2], test[len(test) // 2:]), (test[len(test) // 2:], test[: len(test) // 2])],
            "train": [(a, b)]}
    result = {}
    for name in args.transforms.split(","):
        for split in args.splits.split(","):
            curves = [curve(vae, run.TRANSFORMS[name], x, y) for x, y in sets[split]]
            dist = {k: sum(c[k] for c in curves) / len(curves) for k in curves[0]}
            photos = len(sets[split][0][0]) // (4 if split == "test" else 8)  # 4 crops a photo, and their flips but in test
            result[f"{name}/{split}"] = {"photos": photos, "dist": {k: round(v, 6) for k, v in dist.items()},
                                         "nearest": min(dist, key=dist.get)}
            print(name, split, "nearest k", result[f"{name}/{split}"]["nearest"], " ".join(f"{k}:{v:.4f}" for k, v in dist.items()), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "split_bias.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
