"""Zero-parameter latent baselines every learned translation must beat, and synthetic-task scores.

- mean shift: ``z - mean_A + mean_B`` per latent channel;
- moment matching: ``(z - mean_A) / std_A * std_B + mean_B`` per channel.
Both are fitted on the training domains only.
"""
from __future__ import annotations

from collections.abc import Callable

import torch


def channel_stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over (N, h, w): two ``(C,)`` tensors."""
    z = z.float()
    return z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3))


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(1, -1, 1, 1).to(like)


def affine(kind: str, src_stats: tuple[torch.Tensor, torch.Tensor], tgt_stats: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, shift)`` of a baseline map ``z * scale + shift`` from (mean, std) of both domains."""
    (m_s, s_s), (m_t, s_t) = src_stats, tgt_stats
    scale = s_t / s_s if kind == "moment_match" else torch.ones_like(m_s)
    return scale, m_t - m_s * scale


def _map(kind: str, src: torch.Tensor, tgt: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    scale, shift = affine(kind, channel_stats(src), channel_stats(tgt))
    return lambda z: z * _view(scale, z) + _view(shift, z)


def mean_shift(src: torch.Tensor, tgt: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return _map("mean_shift", src, tgt)


def moment_match(src: torch.Tensor, tgt: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return _map("moment_match", src, tgt)


def rmse(x: torch.Tensor, y: torch.Tensor) -> float:
    return (x.float() - y.float()).pow(2).mean().sqrt().item()


@torch.no_grad()
def score_synthetic(g_ab: torch.nn.Module, g_ba: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, truth, batch_size: int = 256) -> dict[str, float]:
    """Errors against the known mapping on held-out latents, relative to the identity map's.

    ``err_G = RMSE(G(a), T(a)) / RMSE(a, T(a))``: 1 is no better than doing nothing, 0 is perfect.
    The mean-shift and moment-matching baselines are scored the same way, and ``gap_mean`` /
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
    for name, make in (("mean_shift", mean_shift), ("moment_match", moment_match)):
        out[f"base_{name}_G"] = rel(make(a, b)(ea), true_b, id_g)
        out[f"base_{name}_F"] = rel(make(b, a)(eb), true_a, id_f)
    (m_g, s_g), (m_b, s_b) = channel_stats(fake_b), channel_stats(b)
    out["gap_mean"] = ((m_g.cpu() - m_b.cpu()).abs() / s_b.cpu()).mean().item()
    out["gap_std"] = ((s_g.cpu() - s_b.cpu()).abs() / s_b.cpu()).mean().item()
    out["err"] = (out["err_G"] + out["err_F"]) / 2
    out["beats_baselines"] = out["err"] < min(
        (out[f"base_{n}_G"] + out[f"base_{n}_F"]) / 2 for n in ("mean_shift", "moment_match")
    )
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
                  train_a: torch.Tensor, train_b: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Validation without ground truth, on latents held out from training.

    ``val_swd = SWD(G(a_val), b_val) / SWD(a_val, b_val)`` averaged with the F direction: how far the
    translated held-out latents are from the other domain's held-out latents, relative to not
    translating at all (1: no better than identity, 0: indistinguishable in patch statistics).
    The baselines, fitted on the training domains, are scored the same way.
    """
    dev = next(g_ab.parameters()).device
    va, vb = val_a.to(dev), val_b.to(dev)
    run = lambda net, z: torch.cat([net(x).float() for x in z.split(batch_size)])  # noqa: E731
    base_a, base_b = sliced_wasserstein(va, vb), sliced_wasserstein(vb, va)
    score = lambda fa, fb: 0.5 * (sliced_wasserstein(fa, vb) / base_a + sliced_wasserstein(fb, va) / base_b)  # noqa: E731
    out = {"val_swd": score(run(g_ab, va), run(g_ba, vb))}
    for name, make in (("mean_shift", mean_shift), ("moment_match", moment_match)):
        out[f"base_{name}_val_swd"] = score(make(train_a, train_b)(va), make(train_b, train_a)(vb))
    out["beats_baselines"] = out["val_swd"] < min(out["base_mean_shift_val_swd"], out["base_moment_match_val_swd"])
    return out
