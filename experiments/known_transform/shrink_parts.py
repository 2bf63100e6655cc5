"""Does shrinking the patch-OT map part by part keep dark_edges where the whole-map shrinkage loses it? Closed-form, CPU.
The shrunk maps (``lcgan.baselines.shrink_factor``) pull the whole Gaussian-OT map toward the identity by one factor,
``1 - chance / move``. On dark_edges that costs 0.6 dB against the unshrunk map, on ``null`` it saves as much. The map
``T(x) = x + d + R (x - m)`` has two parts: the mean shift ``d`` and the linear part ``R``. This scores each part
shrunk by its own chance (the same 16 re-splits of the pooled photos), and the mean shift shrunk per direction (the
eigenvectors of its chance covariance), against the whole map unshrunk and shrunk. Uses every latent, as lcgan.train.
    python experiments/known_transform/run.py --transform dark_edges --no-train --image-size 256 --lpips off --out OUT
    python experiments/known_transform/shrink_parts.py --transforms dark_edges,null,sepia --out OUT
"""
from __future__ import annotations

import time

import torch
from run import data_folder, decode, load_folder, load_vae, probe_parser, psnr, with_truth

from lcgan.baselines import LinearMap, _gaussian_ot, _identity, _patch_moments, resplits


def parts(src: tuple, tgt: tuple, channels: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Gaussian-OT map's linear part ``R`` (C, C k k), mean shift ``d`` (C,), and the source's patch mean and covariance."""
    (m_s, cov_s), (m_t, _) = src, tgt
    m = _gaussian_ot(src, tgt, channels, k)
    centre = torch.arange(channels) * k * k + (k * k) // 2
    r = m.weight.reshape(channels, -1).double() - _identity(channels, k).reshape(channels, -1).double()
    return r, (m_t[centre] - m_s[centre]).double(), m_s.double(), cov_s.double()


def as_map(r: torch.Tensor, m_s: torch.Tensor, keep_linear: float, shift: torch.Tensor, channels: int, k: int) -> LinearMap:
    """``x + shift + keep_linear * R (x - m_s)`` as a conv map."""
    weight = _identity(channels, k).reshape(channels, -1).double() + keep_linear * r
    return LinearMap(weight.reshape(channels, channels, k, k).float(), (shift - keep_linear * (r @ m_s)).float())


def variants(a: torch.Tensor, b: torch.Tensor, groups_a: list[str], groups_b: list[str], k: int) -> tuple[dict[str, LinearMap], str]:
    channels = a.shape[1]
    src, tgt = _patch_moments(a, k, groups_a), _patch_moments(b, k, groups_b)
    r, d, m_s, cov_s = parts(src.moments(), tgt.moments(), channels, k)
    pooled, shifts, linear = src.join(tgt), [], []
    for keep in resplits(len(pooled.count), len(src.count)):
        r_c, d_c, _, cov_c = parts(pooled.moments(keep), pooled.moments(~keep), channels, k)
        shifts.append(d_c)
        linear.append(float((r_c @ cov_c @ r_c.T).trace()))
    shifts = torch.stack(shifts)
    keep = lambda move, chance: max(0.0, 1.0 - chance / max(move, 1e-30))  # noqa: E731
    s_shift = keep(float(d @ d), float(shifts.pow(2).sum(1).mean()))
    s_linear = keep(float((r @ cov_s @ r.T).trace()), sum(linear) / len(linear))
    s_whole = keep(float(d @ d) + float((r @ cov_s @ r.T).trace()), float(shifts.pow(2).sum(1).mean()) + sum(linear) / len(linear))
    lam, u = torch.linalg.eigh(shifts.T @ shifts / len(shifts))  # the mean shift's chance covariance
    c = u.T @ d
    per_dir = (1 - lam / c.pow(2).clamp_min(1e-30)).clamp(0, 1)
    maps = {"unshrunk": as_map(r, m_s, 1, d, channels, k),
            "whole map shrunk (as lcgan.baselines)": as_map(r, m_s, s_whole, s_whole * d, channels, k),
            "each part by its own chance": as_map(r, m_s, s_linear, s_shift * d, channels, k),
            "shift unshrunk, linear part shrunk": as_map(r, m_s, s_linear, d, channels, k),
            "shift shrunk, linear part unshrunk": as_map(r, m_s, 1, s_shift * d, channels, k),
            "shift per direction, linear part shrunk": as_map(r, m_s, s_linear, u @ (per_dir * c), channels, k)}
    note = (f"kept: whole {s_whole:.2f}, shift {s_shift:.2f}, linear {s_linear:.2f}, "
            f"shift per direction {', '.join(f'{x:.2f}' for x in per_dir.tolist())}")
    return maps, note


def main() -> None:
    ap = probe_parser(__doc__, "dark_edges,null,sepia")
    ap.add_argument("--kernel", type=int, default=3, help="patch side of the map (3: patch OT, 1: Gaussian OT)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = data_folder(args.out, args.image_size)
    vae = load_vae(args.shared)
    a, groups_a = load_folder(data / "a")
    tests = {name: torch.load(data / f"{name}.pt", weights_only=True) for name in ("test", "afhq")}
    for transform in args.transforms.split(","):
        t0 = time.time()
        b, groups_b = load_folder(data / transform / "b")
        maps, note = variants(a, b, groups_a, groups_b, args.kernel)
        print(f"\n{transform}, {args.kernel}x{args.kernel} patches; {note}\n\n| map | test | afhq |\n| --- | ---: | ---: |")
        scores = {name: with_truth(vae, test, transform) for name, test in tests.items()}
        for label, m in maps.items():
            row = " | ".join(f"{psnr(decode(vae, m(t['z_x'])), t['y']).mean().item():.2f}" for t in scores.values())
            print(f"| {label} | {row} |")
        print(f"({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
