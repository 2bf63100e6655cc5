"""Closed-form latent baselines every learned translation must beat, and the scores that compare them.

All are linear maps of latents, fitted on the training domains only (no pairs), applied as
``z -> conv(z, weight) + bias`` (:class:`LinearMap`):

- ``mean_shift``: ``z - mean_A + mean_B`` per latent channel;
- ``moment_match``: ``(z - mean_A) / std_A * std_B + mean_B`` per channel;
- ``gaussian_ot``: the optimal-transport (Monge-Kantorovich) map between Gaussians fitted to the two
  domains' latent *vectors* (full C x C covariance): mixes channels, so it can express a desaturation
  or a hue rotation that per-channel maps cannot;
- ``patch_ot``: the same on ``PATCH_OT_KERNEL`` x ``PATCH_OT_KERNEL`` latent patches, keeping the map's
  row for the centre cell: a linear spatial filter (blur, sharpening) fitted without pairs;
- ``gaussian_ot_shrunk``, ``patch_ot_shrunk``: those maps pulled toward the identity by how much of their
  move two random halves of the *same* photos would also produce (a permutation null over source images,
  :func:`shrink_factor`). Two photo sets always differ in content; a map fitted between them learns that
  difference too, and on two domains that differ in nothing (the "do no harm" case) it only hurts.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BASELINES = ("mean_shift", "moment_match", "gaussian_ot", "patch_ot", "gaussian_ot_shrunk", "patch_ot_shrunk")
PATCH_OT_KERNEL = 3  # 3x3 latent cells = 24x24 pixels of an SD-family VAE
NULL_PERMUTATIONS = 16  # random re-splits of the pooled source images that estimate a map's chance move
MAX_GROUPS = 512  # source images beyond this are pooled into as many random buckets (bounded memory)
# the validation metric, lower is better, first found of: the error against the true mapping on
# synthetic data (score_synthetic); the held-out SWD score with data.val_fraction > 0 (score_heldout);
# else the cycle loss. What sweeps optimise, best.pt keeps and lcgan.report ranks by.
VALIDATION_KEYS = ("err", "val_swd", "loss_cyc")
# where each validation metric's baselines are logged: base_<name><suffix> (loss_cyc has none)
BASELINE_SUFFIX = {"err": "_G", "val_swd": "_val_swd"}


def validation_key(keys: Iterable[str]) -> str | None:
    """Which of a log line's (or a sweep's) keys is the validation metric; None if none is."""
    keys = set(keys)
    return next((k for k in VALIDATION_KEYS if k in keys), None)


def validation_metric(metrics: dict) -> float:
    """The validation metric of one epoch's metrics (see ``VALIDATION_KEYS``); NaN if it has none."""
    key = validation_key(metrics)
    return float(metrics[key]) if key else math.nan


def channel_stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over (N, h, w): two ``(C,)`` tensors."""
    z = z.float()
    return z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))


def apply_linear(z: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``conv(z, weight) + bias`` with reflect padding: a baseline map on plain tensors (what a compiled generator
    calls: torch 2.11's compiler fails on a frozen dataclass built inside ``forward``)."""
    pad = weight.shape[-1] // 2
    x = F.pad(z, (pad,) * 4, mode="reflect") if pad else z
    return F.conv2d(x, weight.to(z), bias.to(z))


@dataclass(frozen=True)
class LinearMap:
    """``z -> conv(z, weight) + bias`` with reflect padding; ``weight`` (C, C, k, k), ``bias`` (C,)."""

    weight: torch.Tensor
    bias: torch.Tensor

    @property
    def kernel(self) -> int:
        return self.weight.shape[-1]

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return apply_linear(z, self.weight, self.bias)

    def as_dict(self) -> dict:
        """Plain lists (saved in checkpoints as data)."""
        return {"weight": self.weight.tolist(), "bias": self.bias.tolist()}

    @classmethod
    def from_dict(cls, d: dict, channels: int, where: str) -> LinearMap:
        """Rebuild from :meth:`as_dict`, checking shapes: ``where`` names the file and key in errors."""
        try:
            weight, bias = torch.tensor(d["weight"], dtype=torch.float32), torch.tensor(d["bias"], dtype=torch.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: not a baseline map ({e})") from None
        k = weight.shape[-1] if weight.dim() == 4 else 0
        if weight.shape != (channels, channels, k, k) or k % 2 != 1 or bias.shape != (channels,) or not weight.isfinite().all():
            raise ValueError(f"{where}: baseline map of shape {tuple(weight.shape)}/{tuple(bias.shape)}, expected "
                             f"({channels}, {channels}, k, k) with k odd and ({channels},)")
        return cls(weight, bias)


def _diagonal(scale: torch.Tensor, shift: torch.Tensor) -> LinearMap:
    return LinearMap(torch.diag(scale).view(len(scale), len(scale), 1, 1), shift)


def _eigh_floored(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues and vectors of a symmetric positive semi-definite matrix, the values floored at 1e-10 of the
    largest: a singular covariance (a collapsed channel, e.g. greyscale images) stays invertible."""
    vals, vecs = torch.linalg.eigh(m)
    return vals.clamp_min(1e-10 * vals.max().clamp_min(1e-30)), vecs


def _sqrtm(m: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Square root (or its inverse) of a symmetric positive semi-definite matrix, float64."""
    vals, vecs = _eigh_floored(m)
    return vecs @ torch.diag(vals.rsqrt() if inverse else vals.sqrt()) @ vecs.T


MAX_PATCHES = 1 << 20  # enough for a 36-dim covariance; larger folders are subsampled (evenly) to bound the time


@dataclass(frozen=True)
class GroupMoments:
    """Sums of the k x k patch vectors of each group of latents (one group per source image): the moments
    of any union of groups are sums of these, so a permutation null costs no pass over the data."""

    count: torch.Tensor  # (G,) patches per group
    total: torch.Tensor  # (G, d)
    outer: torch.Tensor  # (G, d, d)

    def moments(self, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(d,)`` and covariance ``(d, d)`` of the groups ``keep`` (a bool mask; all by default)."""
        n, total, outer = (x if keep is None else x[keep] for x in (self.count, self.total, self.outer))
        n, mean = n.sum(), total.sum(0) / n.sum()
        return mean, (outer.sum(0) - n * torch.outer(mean, mean)) / (n - 1).clamp_min(1)

    def join(self, other: GroupMoments) -> GroupMoments:
        """Both sets of groups, ``self``'s first: the pool that :func:`resplits` re-splits."""
        return GroupMoments(*(torch.cat([x, y]) for x, y in zip((self.count, self.total, self.outer), (other.count, other.total, other.outer))))


def resplits(n_pooled: int, n_first: int, permutations: int = NULL_PERMUTATIONS) -> Iterable[torch.Tensor]:
    """Random re-splits of ``n_pooled`` pooled groups into ``n_first`` and the rest, as bool masks of the first
    (seeded: the same splits every call): the permutation null behind the shrunk maps."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(permutations):
        keep = torch.zeros(n_pooled, dtype=torch.bool)
        keep[torch.randperm(n_pooled, generator=gen)[:n_first]] = True
        yield keep


def group_ids(groups: list[str] | None, n: int) -> torch.Tensor:
    """Group index per latent, at most ``MAX_GROUPS`` (random buckets of whole groups beyond); each latent alone if None."""
    keys = list(range(n)) if groups is None else groups
    index: dict = {}
    ids = torch.tensor([index.setdefault(k, len(index)) for k in keys])
    if len(index) > MAX_GROUPS:
        ids = torch.randperm(len(index), generator=torch.Generator().manual_seed(0))[ids] % MAX_GROUPS
    return ids


def _patch_moments(z: torch.Tensor, k: int, groups: list[str] | None = None, chunk: int = 256) -> GroupMoments:
    """Per-group sums of the k x k patches of ``z (N, C, h, w)`` as vectors of ``d = C k k`` (channel-major),
    float64, accumulated over chunks: bounded memory and time."""
    d = z.shape[1] * k * k
    ids = group_ids(groups, len(z))
    per_latent = (z.shape[2] - k + 1) * (z.shape[3] - k + 1)
    step = max(1, -(-len(z) * per_latent // MAX_PATCHES))
    z, ids = z[::step], ids[::step]
    g = int(ids.max()) + 1
    count, total, outer = torch.zeros(g, dtype=torch.float64), torch.zeros(g, d, dtype=torch.float64), torch.zeros(g, d, d, dtype=torch.float64)
    for part, part_ids in zip(z.split(chunk), ids.split(chunk)):
        p = F.unfold(part.detach().double().cpu(), k).transpose(1, 2)  # (n, cells, d)
        count.index_add_(0, part_ids, torch.full((len(p),), float(p.shape[1]), dtype=torch.float64))
        total.index_add_(0, part_ids, p.sum(1))
        outer.index_add_(0, part_ids, p.transpose(1, 2) @ p)
    return GroupMoments(count, total, outer)


def _gaussian_ot(src: tuple[torch.Tensor, torch.Tensor], tgt: tuple[torch.Tensor, torch.Tensor], channels: int, k: int) -> LinearMap:
    """Monge map between Gaussians of k x k patches, from their moments: ``T(x) = m_t + A (x - m_s)``,
    ``A = S^-1/2 (S^1/2 T S^1/2)^1/2 S^-1/2``; the centre cell's rows become a conv kernel."""
    (m_s, cov_s), (m_t, cov_t) = src, tgt  # (mean, covariance) of each side
    root, inv_root = _sqrtm(cov_s), _sqrtm(cov_s, inverse=True)
    a = inv_root @ _sqrtm(root @ cov_t @ root) @ inv_root  # (d, d), d = C k k
    centre = torch.arange(channels) * k * k + (k * k) // 2  # rows of the centre cell, one per channel
    rows = a[centre]  # (C, C k k)
    bias = m_t[centre] - rows @ m_s
    return LinearMap(rows.reshape(channels, channels, k, k).float(), bias.float())


def _identity(channels: int, k: int) -> torch.Tensor:
    weight = torch.zeros(channels, channels, k, k)
    weight[:, :, k // 2, k // 2] = torch.eye(channels)
    return weight


def _move(m: LinearMap, mean: torch.Tensor, cov: torch.Tensor) -> float:
    """``E ||m(z) - z||^2`` per cell for patches ``z`` of mean ``mean`` and covariance ``cov``: how far the map moves a domain."""
    c, k = m.weight.shape[0], m.kernel
    rows = (m.weight - _identity(c, k)).reshape(c, -1).double()
    shift = rows @ mean + m.bias.double()
    return float(shift @ shift + (rows @ cov @ rows.T).trace())


def shrink_factor(src: GroupMoments, tgt: GroupMoments, channels: int, k: int, permutations: int = NULL_PERMUTATIONS) -> float:
    """How much of the Gaussian-OT map from ``src`` to ``tgt`` to keep, in [0, 1]: ``1 - chance / move``
    (positive-part James-Stein), with ``move`` the map's displacement of the source domain and ``chance``
    the mean displacement of maps between random re-splits of the pooled groups (same sizes): what two
    samples of one distribution produce. 0 on two domains that differ only by sampling, ~1 on a strong shift."""
    move = _move(_gaussian_ot(src.moments(), tgt.moments(), channels, k), *src.moments())
    if len(src.count) < 2 or len(tgt.count) < 2:
        return 1.0  # one group a side: no way to tell chance from change
    pooled, chance = src.join(tgt), []
    for keep in resplits(len(pooled.count), len(src.count), permutations):
        m_src, m_tgt = pooled.moments(keep), pooled.moments(~keep)
        chance.append(_move(_gaussian_ot(m_src, m_tgt, channels, k), *m_src))
    return min(1.0, max(0.0, 1.0 - sum(chance) / len(chance) / max(move, 1e-30)))


def _gaussian_kl(src: tuple[torch.Tensor, torch.Tensor], tgt: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Symmetric Kullback-Leibler divergence between two Gaussians given as (mean, covariance), the covariances'
    spectra floored (:func:`_eigh_floored`): a collapsed channel gives a large divergence, not a singular matrix."""
    def kl(m0, v0, m1, v1):  # (mean, (eigenvalues, eigenvectors)) each
        (l0, e0), (l1, e1) = v0, v1
        inv, dm = e1 @ torch.diag(1 / l1) @ e1.T, m1 - m0
        return 0.5 * (torch.trace(inv @ (e0 @ torch.diag(l0) @ e0.T)) + dm @ inv @ dm - len(m0) + l1.log().sum() - l0.log().sum())
    (m_s, c_s), (m_t, c_t) = src, tgt
    v_s, v_t = _eigh_floored(c_s.double()), _eigh_floored(c_t.double())
    return float(kl(m_s.double(), v_s, m_t.double(), v_t) + kl(m_t.double(), v_t, m_s.double(), v_s))


def divergence_test(src: torch.Tensor, tgt: torch.Tensor, groups_src: list[str] | None = None, groups_tgt: list[str] | None = None,
                    permutations: int = 64) -> tuple[float, float]:
    """Do two domains ``(N, C, h, w)`` (latents or images) differ beyond chance? The symmetric KL divergence of their
    per-vector Gaussian fits, and its permutation p-value over random re-splits of the pooled groups (source images).
    Unlike the maps' displacement (:func:`shrink_factor`), the divergence is invariant to an affine change of the
    space: a collapse of chroma (sepia) counts as much as a change of brightness, though it moves pixels far less."""
    a, b = _patch_moments(src, 1, groups_src), _patch_moments(tgt, 1, groups_tgt)
    observed = _gaussian_kl(a.moments(), b.moments())
    pooled = a.join(b)
    beyond = sum(_gaussian_kl(pooled.moments(keep), pooled.moments(~keep)) >= observed
                 for keep in resplits(len(pooled.count), len(a.count), permutations))
    return observed, (beyond + 1) / (permutations + 1)


def shrunk(m: LinearMap, factor: float) -> LinearMap:
    """``z + factor (m(z) - z)``: the map pulled toward the identity."""
    ident = _identity(m.weight.shape[0], m.kernel)
    return LinearMap(ident + factor * (m.weight - ident), factor * m.bias)


def channel_map(kind: str, src_stats: tuple[torch.Tensor, torch.Tensor], tgt_stats: tuple[torch.Tensor, torch.Tensor]) -> LinearMap:
    """``mean_shift`` or ``moment_match`` from per-channel (mean, std) of both domains."""
    (m_s, s_s), (m_t, s_t) = src_stats, tgt_stats
    scale = s_t / s_s.clamp_min(1e-12) if kind == "moment_match" else torch.ones_like(m_s)
    return _diagonal(scale, m_t - m_s * scale)


def kernel(kind: str) -> int:
    """The conv kernel of a baseline's map: 3 for the patch maps, else 1."""
    return PATCH_OT_KERNEL if kind.startswith("patch_ot") else 1


def _ot_map(kind: str, src: GroupMoments, tgt: GroupMoments, channels: int) -> LinearMap:
    k = kernel(kind)
    m = _gaussian_ot(src.moments(), tgt.moments(), channels, k)
    return shrunk(m, shrink_factor(src, tgt, channels, k)) if kind.endswith("_shrunk") else m


def fit(kind: str, src: torch.Tensor, tgt: torch.Tensor, groups_src: list[str] | None = None, groups_tgt: list[str] | None = None) -> LinearMap:
    """The baseline map ``kind`` from latents ``src (N, C, h, w)`` to ``tgt``, both training domains.
    ``groups_*``: the source image of each latent (crops and flips of one photo are not independent);
    only the shrunk maps use them, each latent its own group if None."""
    if kind in ("mean_shift", "moment_match"):
        return channel_map(kind, channel_stats(src), channel_stats(tgt))
    if kind in BASELINES:
        k = kernel(kind)
        return _ot_map(kind, _patch_moments(src, k, groups_src), _patch_moments(tgt, k, groups_tgt), src.shape[1])
    raise ValueError(f"unknown baseline {kind!r}: choose one of {', '.join(BASELINES)}")


def fit_all(a: torch.Tensor, b: torch.Tensor, groups_a: list[str] | None = None,
            groups_b: list[str] | None = None) -> dict[str, dict[str, LinearMap]]:
    """Every baseline in both directions: ``{"A2B": {name: map}, "B2A": {...}}``; each domain's moments computed once."""
    stats = {"a": channel_stats(a), "b": channel_stats(b)}
    moments = {(x, k): _patch_moments(z, k, g) for x, z, g in (("a", a, groups_a), ("b", b, groups_b)) for k in {1, PATCH_OT_KERNEL}}
    out = {}
    for direction, src, tgt in (("A2B", "a", "b"), ("B2A", "b", "a")):
        out[direction] = {kind: channel_map(kind, stats[src], stats[tgt]) if kind in ("mean_shift", "moment_match")
                          else _ot_map(kind, moments[src, kernel(kind)], moments[tgt, kernel(kind)], a.shape[1])
                          for kind in BASELINES}
    return out


def rmse(x: torch.Tensor, y: torch.Tensor) -> float:
    return (x.float() - y.float()).pow(2).mean().sqrt().item()


@torch.no_grad()
def score_synthetic(g_ab: torch.nn.Module, g_ba: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, truth, batch_size: int = 256,
                    maps: dict[str, dict[str, LinearMap]] | None = None) -> dict[str, float]:
    """Errors against the known mapping on held-out latents, relative to the identity map's.

    ``err_G = RMSE(G(a), T(a)) / RMSE(a, T(a))``: 1 is no better than doing nothing, 0 is perfect.
    Every baseline (``maps``, from :func:`fit_all` on ``a``, ``b``) is scored the same way, and ``gap_mean`` /
    ``gap_std`` compare G(A)'s per-channel statistics with B's (in units of B's std).
    """
    dev = next(g_ab.parameters()).device
    ea, eb = truth.eval_a.to(dev), truth.eval_b.to(dev)
    fake_b = torch.cat([g_ab(x).float() for x in ea.split(batch_size)])
    fake_a = torch.cat([g_ba(x).float() for x in eb.split(batch_size)])
    true_b, true_a = truth.a_to_b(ea), truth.b_to_a(eb)
    # errors in file space: the same number whatever data.latent_norm makes of the model space
    f = truth.convention.model_to_file
    rel = lambda x, y, ident: rmse(f(x), f(y)) / ident  # noqa: E731
    id_g, id_f = rmse(f(ea), f(true_b)), rmse(f(eb), f(true_a))
    out = {"err_G": rel(fake_b, true_b, id_g), "err_F": rel(fake_a, true_a, id_f)}
    maps = maps or fit_all(a, b)
    for name in BASELINES:
        out[f"base_{name}_G"] = rel(maps["A2B"][name](ea), true_b, id_g)
        out[f"base_{name}_F"] = rel(maps["B2A"][name](eb), true_a, id_f)
    (m_g, s_g), (m_b, s_b) = channel_stats(fake_b), channel_stats(b)
    out["gap_mean"] = ((m_g.cpu() - m_b.cpu()).abs() / s_b.cpu()).mean().item()
    out["gap_std"] = ((s_g.cpu() - s_b.cpu()).abs() / s_b.cpu()).mean().item()
    out["err"] = (out["err_G"] + out["err_F"]) / 2
    out["beats_baselines"] = out["err"] < min((out[f"base_{n}_G"] + out[f"base_{n}_F"]) / 2 for n in BASELINES)
    return out


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_proj: int = 64, patch: int = 3, max_points: int = 20000, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between the distributions of ``patch x patch`` latent patches
    of two sets ``(N, C, h, w)``: random unit projections, sorted, compared by quantiles."""
    g = torch.Generator(device="cpu").manual_seed(seed)

    def patches(z: torch.Tensor) -> torch.Tensor:
        p = torch.nn.functional.unfold(z.float(), patch).transpose(1, 2).reshape(-1, z.shape[1] * patch * patch)
        idx = torch.randperm(len(p), generator=g)[:max_points].to(p.device)
        return p.index_select(0, idx)

    px, py = patches(x), patches(y)
    return projected_w1(px, py, torch.randn(px.shape[1], n_proj, generator=g).to(px.device))


def projected_w1(a: torch.Tensor, b: torch.Tensor, proj: torch.Tensor) -> float:
    """The sliced Wasserstein-1 distance of two point sets (rows) along the columns of ``proj`` (normalised here):
    each projection's 256 quantiles compared, averaged (in ``a``'s dtype)."""
    return (projected_quantiles(a, proj) - projected_quantiles(b, proj)).abs().mean().item()


def projected_quantiles(a: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """The 256 quantiles ``(256, n_proj)`` of point set ``a`` along each column of ``proj`` (normalised here): one side
    of :func:`projected_w1`, kept by a caller that compares many sets with the same one."""
    proj = proj / proj.norm(dim=0, keepdim=True)
    # torch.quantile(a @ proj, q, dim=0), exactly: its linear interpolation between the order statistics, but with each
    # projection sorted as one contiguous row (torch.quantile sorts the strided columns: ~1.7x slower on a CPU)
    ordered = (a @ proj).T.contiguous().sort(dim=1).values
    rank = torch.linspace(0, 1, 256, dtype=a.dtype, device=a.device) * (len(a) - 1)
    below = rank.floor().long()
    return torch.lerp(ordered[:, below], ordered[:, rank.ceil().long()], rank - below).T


@torch.no_grad()
def score_heldout(g_ab: torch.nn.Module, g_ba: torch.nn.Module, val_a: torch.Tensor, val_b: torch.Tensor,
                  train_a: torch.Tensor, train_b: torch.Tensor, batch_size: int = 256,
                  maps: dict[str, dict[str, LinearMap]] | None = None) -> dict[str, float]:
    """Validation without ground truth, on latents held out from training.

    ``val_swd = SWD(G(a_val), b_val) / SWD(a_val, b_val)`` averaged with the F direction: how far the
    translated held-out latents are from the other domain's held-out latents, relative to not
    translating at all (1: no better than identity, 0: indistinguishable in patch statistics).
    The baselines (``maps``, fitted on the training domains by :func:`fit_all`) are scored the same way.
    """
    dev = next(g_ab.parameters()).device
    va, vb = val_a.to(dev), val_b.to(dev)
    run = lambda net, z: torch.cat([net(x).float() for x in z.split(batch_size)])  # noqa: E731
    base_a, base_b = sliced_wasserstein(va, vb), sliced_wasserstein(vb, va)
    score = lambda fa, fb: 0.5 * (sliced_wasserstein(fa, vb) / base_a + sliced_wasserstein(fb, va) / base_b)  # noqa: E731
    out = {"val_swd": score(run(g_ab, va), run(g_ba, vb))}
    maps = maps or fit_all(train_a, train_b)
    for name in BASELINES:
        out[f"base_{name}_val_swd"] = score(maps["A2B"][name](va), maps["B2A"][name](vb))
    out["beats_baselines"] = out["val_swd"] < min(out[f"base_{n}_val_swd"] for n in BASELINES)
    return out
