"""Closed-form latent baselines every learned translation must beat, and the scores that compare them.

All are linear maps of latents, fitted on the training domains only (no pairs), applied as
``z -> conv(z, weight) + bias`` (:class:`LinearMap`):

- ``mean_shift``: ``z - mean_A + mean_B`` per latent channel;
- ``moment_match``: ``(z - mean_A) / std_A * std_B + mean_B`` per channel;
- ``gaussian_ot``: the optimal-transport (Monge-Kantorovich) map between Gaussians fitted to the two
  domains' latent *vectors* (full C x C covariance): mixes channels, so it can express a desaturation
  or a hue rotation that per-channel maps cannot;
- ``patch_ot``: the same on ``PATCH_OT_KERNEL`` x ``PATCH_OT_KERNEL`` latent patches, keeping the map's
  row for the centre cell: a linear spatial filter (blur, sharpening) fitted without pairs.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

BASELINES = ("mean_shift", "moment_match", "gaussian_ot", "patch_ot")
PATCH_OT_KERNEL = 3  # 3x3 latent cells = 24x24 pixels of an SD-family VAE
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


@dataclass(frozen=True)
class LinearMap:
    """``z -> conv(z, weight) + bias`` with reflect padding; ``weight`` (C, C, k, k), ``bias`` (C,)."""

    weight: torch.Tensor
    bias: torch.Tensor

    @property
    def kernel(self) -> int:
        return self.weight.shape[-1]

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        pad = self.kernel // 2
        x = F.pad(z, (pad,) * 4, mode="reflect") if pad else z
        return F.conv2d(x, self.weight.to(z), self.bias.to(z))

    def as_dict(self) -> dict:
        """Plain lists (saved in checkpoints as data)."""
        return {"weight": self.weight.tolist(), "bias": self.bias.tolist()}

    @classmethod
    def from_dict(cls, d: dict, channels: int, where: str) -> "LinearMap":
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


def _sqrtm(m: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Square root (or its inverse) of a symmetric positive semi-definite matrix, float64."""
    vals, vecs = torch.linalg.eigh(m)
    vals = vals.clamp_min(1e-10 * vals.max().clamp_min(1e-30))
    return vecs @ torch.diag(vals.rsqrt() if inverse else vals.sqrt()) @ vecs.T


MAX_PATCHES = 1 << 20  # enough for a 36-dim covariance; larger folders are subsampled (evenly) to bound the time


def _patch_moments(z: torch.Tensor, k: int, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(d,)`` and covariance ``(d, d)`` of the k x k patches of ``z (N, C, h, w)`` as vectors of
    ``d = C k k`` (channel-major), in float64, accumulated over chunks: bounded memory and time."""
    d = z.shape[1] * k * k
    per_latent = (z.shape[2] - k + 1) * (z.shape[3] - k + 1)
    z = z[:: max(1, -(-len(z) * per_latent // MAX_PATCHES))]
    total, outer, n = torch.zeros(d, dtype=torch.float64), torch.zeros(d, d, dtype=torch.float64), 0
    for part in z.split(chunk):
        p = F.unfold(part.detach().double().cpu(), k).transpose(1, 2).reshape(-1, d)
        total += p.sum(0)
        outer += p.T @ p
        n += len(p)
    mean = total / n
    return mean, (outer - n * torch.outer(mean, mean)) / max(n - 1, 1)


def _gaussian_ot(src: tuple[torch.Tensor, torch.Tensor], tgt: tuple[torch.Tensor, torch.Tensor], channels: int, k: int) -> LinearMap:
    """Monge map between Gaussians of k x k patches, from their moments: ``T(x) = m_t + A (x - m_s)``,
    ``A = S^-1/2 (S^1/2 T S^1/2)^1/2 S^-1/2``; the centre cell's rows become a conv kernel."""
    (m_s, cov_s), (m_t, cov_t) = src, tgt
    root, inv_root = _sqrtm(cov_s), _sqrtm(cov_s, inverse=True)
    a = inv_root @ _sqrtm(root @ cov_t @ root) @ inv_root  # (d, d), d = C k k
    centre = torch.arange(channels) * k * k + (k * k) // 2  # rows of the centre cell, one per channel
    rows = a[centre]  # (C, C k k)
    bias = m_t[centre] - rows @ m_s
    return LinearMap(rows.reshape(channels, channels, k, k).float(), bias.float())


def channel_map(kind: str, src_stats: tuple[torch.Tensor, torch.Tensor], tgt_stats: tuple[torch.Tensor, torch.Tensor]) -> LinearMap:
    """``mean_shift`` or ``moment_match`` from per-channel (mean, std) of both domains."""
    (m_s, s_s), (m_t, s_t) = src_stats, tgt_stats
    scale = s_t / s_s.clamp_min(1e-12) if kind == "moment_match" else torch.ones_like(m_s)
    return _diagonal(scale, m_t - m_s * scale)


def _kernel(kind: str) -> int:
    return PATCH_OT_KERNEL if kind == "patch_ot" else 1


def fit(kind: str, src: torch.Tensor, tgt: torch.Tensor) -> LinearMap:
    """The baseline map ``kind`` from latents ``src (N, C, h, w)`` to ``tgt``, both training domains."""
    if kind in ("mean_shift", "moment_match"):
        return channel_map(kind, channel_stats(src), channel_stats(tgt))
    if kind in ("gaussian_ot", "patch_ot"):
        k = _kernel(kind)
        return _gaussian_ot(_patch_moments(src, k), _patch_moments(tgt, k), src.shape[1], k)
    raise ValueError(f"unknown baseline {kind!r}: choose one of {', '.join(BASELINES)}")


def fit_all(a: torch.Tensor, b: torch.Tensor) -> dict[str, dict[str, LinearMap]]:
    """Every baseline in both directions: ``{"A2B": {name: map}, "B2A": {...}}``; each domain's moments computed once."""
    stats = {"a": channel_stats(a), "b": channel_stats(b)}
    moments = {(x, k): _patch_moments(z, k) for x, z in (("a", a), ("b", b)) for k in {1, PATCH_OT_KERNEL}}
    out = {}
    for direction, src, tgt in (("A2B", "a", "b"), ("B2A", "b", "a")):
        out[direction] = {kind: channel_map(kind, stats[src], stats[tgt]) if kind in ("mean_shift", "moment_match")
                          else _gaussian_ot(moments[src, _kernel(kind)], moments[tgt, _kernel(kind)], a.shape[1], _kernel(kind))
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
    proj = torch.randn(px.shape[1], n_proj, generator=g).to(px.device)
    proj = proj / proj.norm(dim=0, keepdim=True)
    qs = torch.linspace(0, 1, 256, device=px.device)
    ax, ay = torch.quantile(px @ proj, qs, dim=0), torch.quantile(py @ proj, qs, dim=0)
    return (ax - ay).abs().mean().item()


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
