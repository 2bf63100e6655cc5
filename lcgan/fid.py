"""FID and KID: the arithmetic, the cache of a folder's reference statistics, and the :class:`Fid` component.

FID follows clean-fid 0.1.35's ``clean`` mode exactly (features: :class:`lcgan.metrics.Inception`); the
distance is clean-fid's ``frechet_distance`` on float64 mean/covariance, computed through an n x n
eigenproblem (:func:`fid_from_features`, equal to ~1e-7) instead of its 2048x2048 ``sqrtm``.

Reference statistics of a folder (what ``python -m lcgan.fid_stats DIR`` writes, see there for the
layout) live in lcgan's cache folder, never beside the images: per-image feature vectors keyed by the
file's bytes, the size and the network, and the folder's ``fid_stats.npz``, rewritten only on change.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lcgan.checkpoint import atomic_write_bytes
from lcgan.images import IMAGE_SUFFIXES, list_images, read_batch
from lcgan.metrics import Inception

STATS_FILE = "fid_stats.npz"
VECTORS = "vectors"
FALLBACK_ROOT = "outputs/fid_stats"


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
              "(choose it with eval.fid.stats_root=DIR or --stats-root DIR)")
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
                    fallback_root: str = FALLBACK_ROOT, batch_size: int = 32, workers: int = 4) -> dict:
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
                                       for p in paths if not p.is_file()]
    paths = [p for p in paths if p.is_file()]
    keys = {p: _key(p, image_size, extractor) for p in paths}
    vec = {p: cache / VECTORS / f"{_name(p, folder)}.{image_size}.{keys[p]}.npy" for p in paths} if cache else {}
    todo = [p for p in paths if not cache or not vec[p].is_file()]
    new: dict[Path, np.ndarray] = {}
    for i in range(0, len(todo), batch_size * 4):  # read a few batches at a time: bounded memory
        x, ok, errors = read_batch(todo[i : i + batch_size * 4], image_size, workers, uint8=True)
        skipped += errors
        if x is not None:
            f = features(x, inception, batch_size, desc=f"Inception {folder.name}")
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
            "skipped": skipped, "keys": [keys[p] for p in good], "computed": len(new), "stats_dir": cache}


def _stale_vectors(folder: Path, image_size: int, live: set[str]) -> list[Path]:
    """Our vectors of this size that no image uses any more. Never a file we did not write: only names
    of our exact form, and nothing at all when the folder holds anything else (then it is not ours alone)."""
    ours = re.compile(rf"[\w.-]+\.{image_size}\.[0-9a-f]{{16}}\.npy")
    files = [f for f in folder.iterdir() if f.name != ".write_test"]
    if not all(re.fullmatch(r"[\w.-]+\.\d+\.[0-9a-f]{16}\.npy", f.name) and f.is_file() for f in files):
        return []
    return [f for f in files if ours.fullmatch(f.name) and f.name not in live]


def reference_stats(folder: str | Path, inception, image_size: int, stats_root: str | None = None,
                    fallback_root: str = FALLBACK_ROOT, batch_size: int = 32, workers: int = 4) -> dict:
    """``mu``, ``sigma``, ``count``, ``dim``, ``features`` of ``folder``; ``fid_stats.npz`` rewritten only on change."""
    ff = folder_features(folder, inception, image_size, stats_root, fallback_root, batch_size, workers)
    if len(ff["features"]) == 0:
        raise ValueError(f"no readable images in {str(folder)!r} for FID reference statistics: {ff['skipped'][:3]}")
    fingerprint = hashlib.sha1("\n".join(sorted(ff["keys"])).encode()).hexdigest()
    out = {**ff, "count": len(ff["features"]), "dim": ff["features"].shape[1], "fingerprint": fingerprint, "rewritten": False}
    stored = load_stats(ff["stats_dir"]) if ff["stats_dir"] else None
    if stored is not None and stored["fingerprint"] == fingerprint and stored["image_size"] == image_size:
        return {**out, "mu": stored["mu"], "sigma": stored["sigma"]}
    mu, sigma = gaussian(ff["features"])
    if ff["stats_dir"]:
        buf = io.BytesIO()
        np.savez(buf, mu=mu, sigma=sigma, count=out["count"], dim=out["dim"], image_size=image_size,
                 fingerprint=fingerprint, extractor=inception.identity())
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
                "image_size": int(z["image_size"]), "fingerprint": str(z["fingerprint"]), "extractor": str(z["extractor"])}


def find_stats(folder: str | Path, image_size: int, inception, stats_root: str | None = None,
               fallback_root: str = FALLBACK_ROOT) -> dict | None:
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


# ----------------------------------------------------------------------------------------- FID, KID


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance in float64, as clean-fid computes them; one image gives a zero covariance."""
    f = np.asarray(features, dtype=np.float64)
    sigma = np.cov(f, rowvar=False) if len(f) > 1 else np.zeros((f.shape[1], f.shape[1]))
    return f.mean(axis=0), sigma


def frechet(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """clean-fid's ``frechet_distance`` itself (scipy ``sqrtm`` of a 2048x2048 product: seconds to minutes on a CPU).
    SciPy 1.18 removed the ``sqrtm(..., disp=False)`` that clean-fid 0.1.35 calls; there :func:`frechet_sqrtm`, its
    formula on the new signature, stands in."""
    import inspect

    from scipy import linalg

    if "disp" not in inspect.signature(linalg.sqrtm).parameters:
        return frechet_sqrtm(mu1, sigma1, mu2, sigma2)
    from cleanfid.fid import frechet_distance

    return float(frechet_distance(mu1, sigma1, mu2, sigma2))


def frechet_sqrtm(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """clean-fid 0.1.35's ``frechet_distance``, step for step (a singular product retried with ``eps`` on the diagonal,
    a negligible imaginary part dropped), with ``scipy.linalg.sqrtm`` called as every SciPy version accepts it."""
    from scipy import linalg

    mu1, mu2, sigma1, sigma2 = np.atleast_1d(mu1), np.atleast_1d(mu2), np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"Frechet distance of Gaussians of different sizes: means {mu1.shape} / {mu2.shape}, "
                         f"covariances {sigma1.shape} / {sigma2.shape}")
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Frechet distance: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(feats: np.ndarray, mu_ref: np.ndarray, sigma_ref: np.ndarray) -> float:
    """The same Frechet distance as :func:`frechet` (to ~1e-7 relative), without a 2048x2048 ``sqrtm``.

    ``Tr sqrt(S_g S_r)`` is the sum of the square roots of the eigenvalues of ``S_g S_r``, which for
    ``S_g = X^T X / (n-1)`` (X: centred features, n rows) are those of the symmetric n x n matrix
    ``X S_r X^T / (n-1)``. With more images than dimensions, ``S_r^1/2 S_g S_r^1/2`` (d x d) is used.
    One image (n = 1) counts as a point mass: ``S_g = 0``.
    """
    f = np.asarray(feats, dtype=np.float64)
    mu, x = f.mean(axis=0), f - f.mean(axis=0)
    n = len(f)
    if n < 2:
        tr_g, tr_sqrt = 0.0, 0.0
    elif n <= f.shape[1]:
        k = x @ sigma_ref @ x.T / (n - 1)
        tr_g = float((x * x).sum() / (n - 1))
        tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((k + k.T) / 2), 0, None)).sum())
    else:
        w, v = np.linalg.eigh(sigma_ref)
        root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        sigma_g = x.T @ x / (n - 1)
        m = root @ sigma_g @ root
        tr_g = float(np.trace(sigma_g))
        tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    d = mu - mu_ref
    return float(d @ d + tr_g + np.trace(sigma_ref) - 2 * tr_sqrt)


def kid(feats1: np.ndarray, feats2: np.ndarray, num_subsets: int = 100, max_subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float] | None:
    """KID mean and std over subsets: clean-fid's ``kernel_distance`` (same draws for the same seed), plus the std.

    None when a set has fewer than 2 images (the unbiased estimator needs m >= 2).
    """
    n = feats1.shape[1]
    m = min(len(feats1), len(feats2), max_subset_size)
    if m < 2:
        return None
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(num_subsets):
        x = feats2[rng.choice(len(feats2), m, replace=False)].astype(np.float64)
        y = feats1[rng.choice(len(feats1), m, replace=False)].astype(np.float64)
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        values.append(((a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m) / m)
    return float(np.mean(values)), float(np.std(values))




# --------------------------------------------------------------------------------- the component


class Fid:
    """FID and KID of image sets against a folder's reference statistics (the ``eval.fid`` block).

    Holds the Inception (``inception_path``, or a random one with ``random``; ``resize``: where its 299 px resize
    runs, :data:`lcgan.metrics.RESIZES`), where reference statistics are
    cached (``stats_root``, else lcgan's cache folder; ``fallback_root`` when that is unwritable) and KID's
    subsets. :attr:`inception` computes features; :meth:`reference` and :meth:`find_reference` give a folder's
    statistics; :meth:`scores` compares a set's features with them.
    """

    def __init__(self, inception_path: str | None = None, random: bool = False, stats_root: str | None = None,
                 fallback_root: str = FALLBACK_ROOT, kid_subsets: int = 100, kid_subset_size: int = 1000,
                 device: str | torch.device = "cpu", seed: int = 0, workers: int = 4, resize: str = "torch") -> None:
        self.inception = Inception(path=inception_path, random=random, device=device, seed=seed, workers=workers, resize=resize)
        self.random, self.source, self.not_meaningful = random, self.inception.source, self.inception.not_meaningful
        self.stats_root, self.fallback_root = stats_root, fallback_root or FALLBACK_ROOT
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size

    def reference(self, folder: str | Path, image_size: int, batch_size: int, workers: int) -> dict:
        """:func:`reference_stats` of ``folder``, computed where the cache lacks them."""
        return reference_stats(folder, self.inception, image_size, self.stats_root, self.fallback_root, batch_size, workers)

    def find_reference(self, folder: str | Path, image_size: int) -> dict | None:
        """:func:`find_stats` of ``folder``: statistics written earlier, or None; nothing is computed."""
        return find_stats(folder, image_size, self.inception, self.stats_root, self.fallback_root)

    def scores(self, feats: np.ndarray, ref: dict | None, seed: int) -> dict:
        """FID (and KID when reference features are at hand) of a set of features against ``ref``; None without one."""
        if ref is None:
            return {"fid": None, "kid_mean": None, "kid_std": None}
        k = kid(feats, ref["features"], self.kid_subsets, self.kid_subset_size, seed=seed) if ref.get("features") is not None else None
        out = {"fid": fid_from_features(feats, ref["mu"], ref["sigma"]), "kid_mean": k and k[0], "kid_std": k and k[1]}
        if len(feats) < 2:
            out["fid_kind"] = "one image: Frechet distance of a point mass at its features to the reference Gaussian"
        return out
