"""Folders of latent files: reading ``.pt`` latents safely, the folder's ``manifest.json``, and latent statistics.

The library under ``lcgan.data`` (training reads folders), ``lcgan.encode`` (writes them and their
manifest) and ``lcgan.latent_stats`` (inspects them); it imports none of them.
"""
from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lcgan import checkpoint
from lcgan.images import list_images

MAX_LATENT_ELEMENTS = 64 * 512 * 512  # far beyond any real latent (a 4096px SD image is 4x512x512)
MAX_LATENT_BYTES = MAX_LATENT_ELEMENTS * 8 + 2**20  # float64 at that size, plus the zip's overhead: checked before reading

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# what two latent folders (and the training config) must agree on for their latents to mean the same
COMPATIBILITY_KEYS = ("latent_space", "latents_scaled", "image_size")

DIVISORS = (1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 20.0)
MAX_BEYOND = 0.01  # fraction of values a divisor may push past +-1
SAMPLE_VALUES = 2_000_000  # |z| values kept for quantiles; counts and moments use every value


def find_latent_files(folder: str | Path, key: str) -> list[Path]:
    """All ``.pt`` files under ``folder``, recursively, following directory symlinks once."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{key}={str(folder)!r} is not a folder; point it at a folder of .pt latents")
    files, seen, top = [], set(), os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop, or the same folder reached twice
            dirnames[:] = []
            continue
        if top.startswith(real + os.sep):  # a link to an enclosing folder would pull in the sibling domain
            raise ValueError(f"{key}={str(folder)!r}: {dirpath} links to {real}, a folder that contains {key} itself "
                             "(and so any other domain beside it); remove the link")
        seen.add(real)
        dirnames.sort()
        files += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".pt")]
    if not files:
        images = list_images(root)
        if images:  # the user's images: never suggest writing latents into them, and name the VAE to choose
            raise ValueError(
                f"{key}={str(folder)!r} holds {len(images)} images, not .pt latents; encode them into a folder of their own "
                f"and point {key} there: python -m lcgan.encode vae=<the VAE: sd15 | taesd | vaelight ...> "
                f"input_dir={folder} output_dir=latents/{root.name}"
            )
        raise ValueError(
            f"{key}={str(folder)!r} holds no .pt latents; encode images first with: "
            f"python -m lcgan.encode input_dir=IMAGES output_dir={folder}"
        )
    return files


def load_latent_file(path: str | Path) -> torch.Tensor:
    """One latent file -> float32 ``(C, h, w)``. Refuses anything but plain tensors (weights_only)."""
    path = Path(path)
    if not path.is_file():  # a dangling symlink, a FIFO (torch.load would block on it), a folder named .pt
        raise ValueError(f"latent file {path} is not a regular file (a dangling link?); delete it or point it at a latent")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"latent file {path} is empty (0 bytes); re-encode it or delete it")
    if size > MAX_LATENT_BYTES:  # refuse before torch.load reads it all into memory
        raise ValueError(f"latent file {path} is {size / 2**30:.1f} GiB, far larger than any VAE latent; is it a latent?")
    stored = checkpoint.stored_bytes(path)
    if stored > MAX_LATENT_BYTES:  # a compressed file can unpack to ~1000x its size
        raise ValueError(f"latent file {path} unpacks to {stored / 2**20:.0f} MiB of tensors, far larger than any VAE latent; "
                         "refused before loading")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, or a pickle that is not plain tensors
        raise ValueError(
            f"latent file {path} could not be loaded as plain tensors ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "it may be truncated, not a torch file, or hold arbitrary Python objects, which lcgan never unpickles"
        ) from None
    checkpoint.check_storage(obj, f"latent file {path}")
    if isinstance(obj, dict):
        if "latent" not in obj:
            raise ValueError(f"latent file {path} holds a dict without the key 'latent' (keys: {sorted(map(str, obj))[:10]})")
        obj = obj["latent"]
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"latent file {path} holds a {type(obj).__name__}, expected a tensor [C,H,W] or [1,C,H,W]")
    if obj.dim() == 4 and obj.shape[0] == 1:
        obj = obj[0]
    if obj.dim() != 3:
        raise ValueError(f"latent file {path} has shape {list(obj.shape)}, expected [C,H,W] or [1,C,H,W]")
    if not obj.is_floating_point():
        raise ValueError(f"latent file {path} has dtype {obj.dtype}, expected a floating-point tensor")
    if obj.numel() > MAX_LATENT_ELEMENTS:
        raise ValueError(f"latent file {path} has shape {list(obj.shape)}, far larger than any VAE latent; is it a latent?")
    obj = obj.float()
    if not torch.isfinite(obj).all():
        raise ValueError(f"latent file {path} contains NaN or Inf values; re-encode it or delete it")
    return obj


def load_latent_dir(folder: str | Path, key: str, num_workers: int = 8, max_files: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """All latents of a folder stacked to ``(N, C, h, w)``, file space. Mixed sizes are an error."""
    files = find_latent_files(folder, key)[:max_files]
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        tensors = list(tqdm(pool.map(load_latent_file, files), total=len(files), desc=f"load {key}", ncols=100, leave=False))
    shapes: dict[tuple, list[Path]] = {}
    for f, t in zip(files, tensors):
        shapes.setdefault(tuple(t.shape), []).append(f)
    if len(shapes) > 1:
        desc = "; ".join(f"{list(s)}: {len(fs)} files, e.g. {fs[0]}" for s, fs in shapes.items())
        raise ValueError(
            f"{key}={str(folder)!r} mixes latent shapes ({desc}); lcgan trains on one size per run: "
            "re-encode at one image_size or split the folder"
        )
    return torch.stack(tensors), [str(f) for f in files]



# ---------------------------------------------------------------------------- the manifest


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The manifest of a latent folder (with ``dir`` set to where it was found), or None if it has none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError) as e:  # cut short by a crash or a full disk (was a JSON error naming no file)
        raise ValueError(f"{path} is not readable JSON ({e}); re-encode the folder with overwrite=true, or delete the file") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} holds a {type(manifest).__name__}, not an lcgan manifest; delete it or re-encode the folder")
    manifest["dir"] = str(folder)
    return manifest


def check_manifests(manifest_a: dict | None, manifest_b: dict | None, latents_scaled: bool, channels: int | None = None) -> None:
    """Refuse latent folders that disagree with each other or with the training config.

    A None manifest (folder made by other means) cannot be checked and is passed over.
    Raises ValueError naming the folders and the differing fields.
    """
    present = [m for m in (manifest_a, manifest_b) if m is not None]
    problems = []
    if len(present) == 2:
        diff = [k for k in COMPATIBILITY_KEYS if manifest_a.get(k) != manifest_b.get(k)]
        problems += [f"{k}: {manifest_a.get('dir')!r} has {manifest_a.get(k)!r}, {manifest_b.get('dir')!r} has "
                     f"{manifest_b.get(k)!r}" for k in diff]
    for m in present:
        if m.get("latents_scaled") != latents_scaled:
            problems.append(f"{m.get('dir')!r} was encoded with latents_scaled={m.get('latents_scaled')} but the "
                            f"training config has latents_scaled={latents_scaled}")
        got = (m.get("latent_space") or {}).get("channels")
        if channels is not None and got != channels:
            problems.append(f"{m.get('dir')!r} holds {got}-channel latents but the training config expects {channels}")
    if problems:
        raise ValueError(
            "the latent folders do not match: " + "; ".join(problems)
            + ". Re-encode with the same vae=..., image_size and latents_scaled (python -m lcgan.encode ...), "
            "or set the training config's latents_scaled to match"
        )


# ---------------------------------------------------------------------------- statistics


class LatentStats:
    """Running per-channel moments, |z| counts beyond each divisor, and a |z| sample for quantiles."""

    def __init__(self, divisors: tuple[float, ...] = DIVISORS, sample_per_update: int = 4096) -> None:
        self.divisors = tuple(float(d) for d in divisors)
        self.sample_per_update = sample_per_update
        self.count, self.sum, self.sumsq, self.abs_max = 0, None, None, 0.0
        self.beyond = [0] * len(self.divisors)
        self.samples: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(0)  # same folder -> same quantiles

    def update(self, z: torch.Tensor) -> None:
        """Add one latent ``(C, h, w)`` or a batch ``(B, C, h, w)``."""
        z = z.detach().double().cpu()
        z = z.unsqueeze(0) if z.dim() == 3 else z
        if self.sum is not None and z.shape[1] != self.sum.numel():
            raise ValueError(f"a {z.shape[1]}-channel latent among {self.sum.numel()}-channel ones: mixed latent spaces")
        per_channel = z.transpose(0, 1).reshape(z.shape[1], -1)  # (C, B*h*w)
        self.sum = per_channel.sum(1) + (0 if self.sum is None else self.sum)
        self.sumsq = per_channel.square().sum(1) + (0 if self.sumsq is None else self.sumsq)
        self.count += per_channel.shape[1]
        flat = per_channel.abs().flatten()
        self.abs_max = max(self.abs_max, float(flat.max()))
        self.beyond = [b + int((flat > d).sum()) for b, d in zip(self.beyond, self.divisors)]
        k = min(flat.numel(), self.sample_per_update)
        self.samples.append(flat[torch.randint(flat.numel(), (k,), generator=self.generator)].float())

    def result(self) -> dict:
        if self.sum is None:
            return {"count_values": 0}
        mean = self.sum / self.count
        std = (self.sumsq / self.count - mean.square()).clamp_min(0).sqrt()
        sample = torch.cat(self.samples)
        if sample.numel() > SAMPLE_VALUES:
            sample = sample[torch.randperm(sample.numel(), generator=self.generator)[:SAMPLE_VALUES]]
        p99, p999 = (float(torch.quantile(sample, q)) for q in (0.99, 0.999))
        n_values = self.count * mean.numel()
        beyond = {f"{d:g}": b / n_values for d, b in zip(self.divisors, self.beyond)}
        ok = [d for d, frac in zip(self.divisors, beyond.values()) if frac <= MAX_BEYOND]
        return {
            "channels": mean.numel(),
            "count_values": n_values,
            "mean": [round(v, 5) for v in mean.tolist()],
            "std": [round(v, 5) for v in std.tolist()],
            "abs_max": self.abs_max,
            "abs_p99": p99,
            "abs_p99.9": p999,
            "fraction_beyond_1": beyond,  # divisor -> fraction of |z / divisor| > 1
            "suggested_divisor": min(ok) if ok else float(math.ceil(p99)),
        }


def folder_stats(root: str | os.PathLike, divisors: tuple[float, ...] = DIVISORS) -> dict:
    files = find_latent_files(root, "latent folder")  # an empty or missing folder is a clear error
    stats = LatentStats(divisors)
    for f in files:
        stats.update(load_latent_file(f))
    return {"dir": str(root), "files": len(files), **stats.result()}
