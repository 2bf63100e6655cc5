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


def mean_shift(src: torch.Tensor, tgt: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    (m_s, _), (m_t, _) = channel_stats(src), channel_stats(tgt)
    return lambda z: z - _view(m_s, z) + _view(m_t, z)


def moment_match(src: torch.Tensor, tgt: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    (m_s, s_s), (m_t, s_t) = channel_stats(src), channel_stats(tgt)
    return lambda z: (z - _view(m_s, z)) / _view(s_s, z) * _view(s_t, z) + _view(m_t, z)


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
    id_g, id_f = rmse(ea, true_b), rmse(eb, true_a)
    out = {"err_G": rmse(fake_b, true_b) / id_g, "err_F": rmse(fake_a, true_a) / id_f}
    for name, make in (("mean_shift", mean_shift), ("moment_match", moment_match)):
        out[f"base_{name}_G"] = rmse(make(a, b)(ea), true_b) / id_g
        out[f"base_{name}_F"] = rmse(make(b, a)(eb), true_a) / id_f
    (m_g, s_g), (m_b, s_b) = channel_stats(fake_b), channel_stats(b)
    out["gap_mean"] = ((m_g.cpu() - m_b.cpu()).abs() / s_b.cpu()).mean().item()
    out["gap_std"] = ((s_g.cpu() - s_b.cpu()).abs() / s_b.cpu()).mean().item()
    out["err"] = (out["err_G"] + out["err_F"]) / 2
    out["beats_baselines"] = out["err"] < min(
        (out[f"base_{n}_G"] + out[f"base_{n}_F"]) / 2 for n in ("mean_shift", "moment_match")
    )
    return out
