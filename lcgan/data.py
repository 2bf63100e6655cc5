"""Latent datasets: folders of ``.pt`` files and the embedded synthetic default.

Both give a :class:`Domains`: all latents of A and of B as two tensors in *model* space
(see :mod:`lcgan.latents`), loaded once. Latents are small (a 256x256 image is 4x32x32 floats),
so the whole dataset lives on the GPU and batches are gathered there with no host round trip.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lcgan.latent_files import check_manifests, find_latent_files, load_latent_dir, read_manifest
from lcgan.latents import Convention


@dataclass
class Domains:
    """Unpaired latents of two domains, model space, ``(N, C, h, w)`` float32 each."""

    a: torch.Tensor
    b: torch.Tensor
    convention: Convention
    flip: bool = False  # random horizontal flips while training
    files_a: list[str] = field(default_factory=list)
    files_b: list[str] = field(default_factory=list)
    # Synthetic data only: the true mapping and held-out pairs to score translations against.
    truth: SyntheticTruth | None = None
    manifests: dict = field(default_factory=dict)
    # latents held out from training (data.val_fraction), for the validation score and best.pt
    val_a: torch.Tensor | None = None
    val_b: torch.Tensor | None = None

    def __post_init__(self) -> None:
        # a constant channel has no statistics to match: the anchors and baselines would divide by 0
        # and the run stop with a NaN blamed on optim.lr
        for name, z in (("A", self.a), ("B", self.b)):
            flat = z.float().transpose(0, 1).flatten(1)  # (C, everything)
            dead = [c for c, s in enumerate(flat.std(1).tolist()) if not s > 0] if flat.shape[1] > 1 else list(range(len(flat)))
            if dead:
                raise ValueError(f"domain {name}'s latents do not vary in channel(s) {dead} (every latent the same there: "
                                 f"{len(z)} copies of one image, or blank images?); check the data")

    @property
    def channels(self) -> int:
        return self.a.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.a.shape[2:])


def latent_folders(
    a_dir: str,
    b_dir: str,
    latents_scaled: bool = False,
    latent_divisor: float = 10.0,
    flip: bool = False,
    num_workers: int = 8,
    max_files: int | None = None,
    val_fraction: float = 0.0,
    latent_norm: str = "divisor",
    val_a_dir: str | None = None,
    val_b_dir: str | None = None,
) -> Domains:
    """Two folders of ``.pt`` latents (``data=latents``), and the held-out latents: ``val_fraction`` of their images,
    or two folders of other images (``val_a_dir``/``val_b_dir``: the training folders stay whole).

    Folders written by ``lcgan.encode`` carry a ``manifest.json``; when both do, they must agree
    with each other (VAE latent space, scaling, image size) and with ``latents_scaled``.
    """
    if (val_a_dir is None) != (val_b_dir is None) or (val_a_dir is not None and val_fraction > 0):
        raise ValueError("held-out latents come from data.val_fraction or from both data.val_a_dir and data.val_b_dir: "
                         f"got val_fraction={val_fraction}, val_a_dir={val_a_dir}, val_b_dir={val_b_dir}")
    convention = Convention(latents_scaled=latents_scaled, latent_divisor=latent_divisor)
    manifests = {"a": read_manifest(a_dir), "b": read_manifest(b_dir)}
    check_manifests(manifests["a"], manifests["b"], latents_scaled)
    a, files_a = load_latent_dir(a_dir, "data.a_dir", num_workers, max_files)
    b, files_b = load_latent_dir(b_dir, "data.b_dir", num_workers, max_files)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"data.a_dir latents are {list(a.shape[1:])} but data.b_dir latents are {list(b.shape[1:])}; "
            "encode both domains with the same VAE and image_size"
        )
    (a, files_a, val_a), (b, files_b, val_b) = (_hold_out(z, f, val_fraction) for z, f in ((a, files_a), (b, files_b)))
    if val_a_dir is not None:
        check_manifests(manifests["a"], read_manifest(val_a_dir), latents_scaled)
        check_manifests(manifests["b"], read_manifest(val_b_dir), latents_scaled)
        val_a = load_latent_dir(val_a_dir, "data.val_a_dir", num_workers, max_files)[0]
        val_b = load_latent_dir(val_b_dir, "data.val_b_dir", num_workers, max_files)[0]
        for z, key in ((val_a, "data.val_a_dir"), (val_b, "data.val_b_dir")):
            if z.shape[1:] != a.shape[1:]:
                raise ValueError(f"{key} latents are {list(z.shape[1:])} but the training latents are {list(a.shape[1:])}; "
                                 "encode the held-out images with the same VAE and image_size")
    convention = _normalise(convention, latent_norm, a, b)
    return Domains(a=convention.file_to_model(a), b=convention.file_to_model(b), convention=convention, flip=flip,
                   files_a=files_a, files_b=files_b, manifests={k: m for k, m in manifests.items() if m},
                   val_a=None if val_a is None else convention.file_to_model(val_a),
                   val_b=None if val_b is None else convention.file_to_model(val_b))


def _normalise(convention: Convention, latent_norm: str, a: torch.Tensor, b: torch.Tensor) -> Convention:
    """``data.latent_norm``: the scalar divisor, or per-channel statistics of the training latents (file space)."""
    return convention.fitted(a, b) if latent_norm == "channel" else convention


def source_key(file: str) -> str:
    """The source image a latent file came from: ``x.pt``, its mirrored copy ``x_flip.pt`` (encode.flip_copies)
    and crops of one photo named ``x_crop<k>.pt`` / ``x_crop<k>_flip.pt`` share one."""
    return re.sub(r"_crop\d+$", "", Path(file).with_suffix("").as_posix().removesuffix("_flip"))


def spread_picks(n_items: int, files: list[str], n: int) -> torch.Tensor:
    """Indices of ``n`` items spread evenly over a domain, at most one per source image (flip copies skipped)."""
    first: dict[str, int] = {}
    for i, f in enumerate(files):
        first.setdefault(source_key(f), i)
    firsts = sorted(first.values()) if files else list(range(n_items))
    return torch.tensor(firsts)[torch.linspace(0, len(firsts) - 1, min(n, len(firsts))).long()]


def held_out(files: list[str], fraction: float) -> tuple[list[int], list[int]]:
    """The indices of the training and the held-out latents: a fixed ``fraction`` of source images (an image and its
    ``_flip`` copy stay together), chosen from the file names alone."""
    if fraction == 0:
        return list(range(len(files))), []
    groups: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        groups.setdefault(source_key(f), []).append(i)
    keys = sorted(groups)
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(0)).tolist()
    n_val = max(1, round(fraction * len(keys)))
    if n_val >= len(keys):
        raise ValueError(f"data.val_fraction={fraction} leaves no training latents among {len(keys)} images")
    return sorted(i for k in order[n_val:] for i in groups[keys[k]]), sorted(i for k in order[:n_val] for i in groups[keys[k]])


def _hold_out(z: torch.Tensor, files: list[str], fraction: float) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """Split off :func:`held_out`'s held-out latents."""
    if fraction == 0:
        return z, files, None
    train, val = held_out(files, fraction)
    return z[train], [files[i] for i in train], z[val]


def training_counts(a_dir: str, b_dir: str, max_files: int | None, val_fraction: float) -> tuple[int, int]:
    """How many latents a ``data=latents`` run trains on in A and B, ``val_fraction`` of the images held out: from the
    file names alone, nothing loaded."""
    return tuple(len(held_out([str(f) for f in find_latent_files(d, key)[:max_files]], val_fraction)[0])
                 for d, key in ((a_dir, "data.a_dir"), (b_dir, "data.b_dir")))


def steps_per_epoch(n_a: int, n_b: int, batch_size: int) -> int:
    """An epoch of :class:`UnpairedSampler`: the larger domain once."""
    return max(n_a, n_b) // batch_size


# ---------------------------------------------------------------------------- synthetic


@dataclass
class SyntheticTruth:
    """The known mapping of the synthetic task, in file space: B = A + shift (per channel)."""

    shift: torch.Tensor  # (C,)
    convention: Convention
    eval_a: torch.Tensor  # held-out A latents, model space
    eval_b: torch.Tensor  # held-out B latents, model space

    def a_to_b(self, z: torch.Tensor) -> torch.Tensor:
        """True G on model-space latents."""
        convention = self.convention
        return convention.file_to_model(convention.model_to_file(z) + self.shift.view(1, -1, 1, 1).to(z))

    def b_to_a(self, z: torch.Tensor) -> torch.Tensor:
        convention = self.convention
        return convention.file_to_model(convention.model_to_file(z) - self.shift.view(1, -1, 1, 1).to(z))


def _smooth_fields(n: int, channels: int, size: int, mean: torch.Tensor, std: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Spatially correlated fields like real latents: coarse structure plus fine detail."""
    def draw(n: int, g: torch.Generator) -> torch.Tensor:
        coarse = torch.randn(n, channels, max(1, size // 4), max(1, size // 4), generator=g)
        coarse = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        return 0.9 * coarse + 0.45 * torch.randn(n, channels, size, size, generator=g)

    # normalise by a fixed reference draw, not by the set itself: each set keeps its own sampling
    # noise in mean and std, as real datasets do
    scale = draw(64, torch.Generator().manual_seed(12345)).std()
    return draw(n, gen) / scale * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)


def synthetic(
    n_a: int = 256,
    n_b: int = 256,
    n_eval: int = 64,
    size: int = 16,
    channels: int = 4,
    mean: tuple[float, ...] = (2.0, 0.5, 1.0, -1.0),
    std: tuple[float, ...] = (4.5, 4.0, 3.5, 3.0),
    shift: tuple[float, ...] = (3.0, -3.0, 2.5, -2.5),
    latent_divisor: float = 10.0,
    flip: bool = False,
    seed: int = 0,
    latent_norm: str = "divisor",
) -> Domains:
    """Embedded default data (``data=synthetic``): no files, no downloads.

    A: smooth random fields at the scale of raw SD1.5 latents (per-channel std 3-5). B: other,
    independent A-like fields shifted per channel, like a colour cast. The shift is what a
    CycleGAN can recover from unpaired data (a channel-mixing rotation is not: matching
    distributions does not identify it), and knowing it lets training report its true error.
    """
    for name, vals in (("mean", mean), ("std", std), ("shift", shift)):
        if len(vals) != channels:
            raise ValueError(f"data.{name} has {len(vals)} values but data.channels={channels}")
    convention = Convention(latents_scaled=False, latent_divisor=latent_divisor)
    gen = torch.Generator().manual_seed(seed)
    mean_t, std_t, shift_t = (torch.tensor(v, dtype=torch.float32) for v in (mean, std, shift))
    a, b_src, eval_a, eval_b_src = (
        _smooth_fields(n, channels, size, mean_t, std_t, gen) for n in (n_a, n_b, n_eval, n_eval)
    )
    b, eval_b = (z + shift_t.view(1, -1, 1, 1) for z in (b_src, eval_b_src))
    convention = _normalise(convention, latent_norm, a, b)
    truth = SyntheticTruth(shift=shift_t, convention=convention, eval_a=convention.file_to_model(eval_a), eval_b=convention.file_to_model(eval_b))
    return Domains(a=convention.file_to_model(a), b=convention.file_to_model(b), convention=convention, flip=flip, truth=truth)


# ---------------------------------------------------------------------------- sampling


class UnpairedSampler:
    """One batch of A and one of B per step, each domain shuffled independently.

    An epoch is ``max(N_a, N_b) // batch_size`` steps; the smaller domain is reshuffled as often
    as needed. Permutations are drawn on the data's device from torch's global RNG, so they are
    covered by the RNG state a checkpoint saves, and indexing never leaves the device.

    ``targets`` (``train.d_targets=unfiltered``): one tensor per domain, latent for latent, that the discriminators take
    as real instead; drawn with the same indices and flips, so they are stacked on the domains' channels and
    :meth:`batch` returns ``(a, b, target_a, target_b)``.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, batch_size: int, flip: bool = False,
                 targets: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        smaller = min(len(a), len(b))
        if batch_size > smaller:
            raise ValueError(
                f"train.batch_size={batch_size} is larger than the smaller domain ({smaller} latents); "
                "lower train.batch_size or add data"
            )
        self.channels = a.shape[1] if targets else None  # where a stacked target's channels start
        if targets:
            a, b = torch.cat([a, targets[0].to(a)], 1), torch.cat([b, targets[1].to(b)], 1)
        self.a, self.b, self.batch_size, self.flip = a, b, batch_size, flip
        self.steps_per_epoch = steps_per_epoch(len(a), len(b), batch_size)

    def _perm(self, n: int, device: torch.device) -> torch.Tensor:
        need = self.steps_per_epoch * self.batch_size
        reps = -(-need // n)
        return torch.cat([torch.randperm(n, device=device) for _ in range(reps)])[:need]

    def epoch(self) -> dict[str, torch.Tensor]:
        """The order of one epoch; saved in mid-epoch checkpoints to resume exactly."""
        return {"perm_a": self._perm(len(self.a), self.a.device), "perm_b": self._perm(len(self.b), self.b.device)}

    def _take(self, data: torch.Tensor, perm: torch.Tensor, step: int, device: torch.device) -> torch.Tensor:
        idx = perm[step * self.batch_size:(step + 1) * self.batch_size]
        z = data.index_select(0, idx).to(device, non_blocking=True)
        if self.flip:
            mask = torch.rand(len(z), 1, 1, 1, device=device) < 0.5
            z = torch.where(mask, z.flip(-1), z)
        return z

    def batch(self, order: dict[str, torch.Tensor], step: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        a, b = self._take(self.a, order["perm_a"], step, device), self._take(self.b, order["perm_b"], step, device)
        if self.channels is None:
            return a, b
        # dense halves in the batch's own layout: the compiled step's graphs and CUDA graphs see the strides of (a, b)
        fmt = torch.channels_last if a.dim() == 4 and a.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        c = self.channels
        return tuple(x.contiguous(memory_format=fmt) for x in (a[:, :c], b[:, :c], a[:, c:], b[:, c:]))


def place(z: torch.Tensor, device: torch.device, max_fraction: float = 0.5) -> torch.Tensor:
    """Put a whole domain on the GPU when it fits in ``max_fraction`` of free memory, else pin it."""
    if device.type != "cuda":
        return z.to(device)
    free, _ = torch.cuda.mem_get_info(device)
    if z.numel() * z.element_size() < max_fraction * free:
        return z.to(device)
    return z.pin_memory()
