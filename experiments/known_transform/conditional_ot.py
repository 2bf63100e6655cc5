"""Can a map that depends on local content be found without pairs? Texture-conditioned OT, and whether its gain is detectable.

dark_edges darkens pixels near edges: a change that depends on local content, which no linear latent map (the
closed-form rows) can express and no discriminator of the suite learns (``d_probe.py``: held-out AUC 0.58-0.60).
Here a closed-form map that can: latent cells are ranked by their local texture (log high-pass energy of the 3x3
neighbourhood, ranked within their own domain, so a transform that lowers texture everywhere keeps the order), cut
into ``--bins`` quantile bins, and each bin gets its own map from A's cells of that rank to B's. Two kinds: each
bin's own ``k x k`` patch Gaussian-OT map (``conditional OT``), and the pooled patch-OT map with each bin's mean
moved onto B's (``conditional shift``). A test latent's cells use the maps of their rank in A's texture, linearly
interpolated between neighbouring bins (no seams).

Without pairs one cannot score a map, only ask whether what it adds over the pooled map exceeds chance: the
*conditional move* (the mean squared latent difference between the bin maps and the pooled map, over A's cells) is
compared with the same move between random re-splits of the pooled photos (16, as ``lcgan.baselines`` shrinks its
maps), giving a permutation p-value, and a James-Stein factor ``1 - chance / move`` that pulls the bin maps toward the
shrunk pooled map (``shrunk``). PSNR on the held-out test crops (``--test afhq``: another collection), as every row of the suite.

    python experiments/known_transform/run.py --transform dark_edges --no-train --image-size 256 --lpips off --out OUT
    python experiments/known_transform/conditional_ot.py --transforms dark_edges,null --out OUT   # the same OUT
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from run import data_folder, load_folder, load_vae, probe_parser, score_latents, with_truth

from lcgan.baselines import NULL_PERMUTATIONS, PATCH_OT_KERNEL, GroupMoments, LinearMap, _gaussian_ot, group_ids, resplits, shrink_factor, shrunk

K = PATCH_OT_KERNEL


def texture(z: torch.Tensor) -> torch.Tensor:
    """Local texture of each latent cell ``(N, h, w)``: log(1 + energy of z minus its 3x3 mean), averaged over 3x3."""
    pad = lambda x: F.pad(x, (1, 1, 1, 1), mode="replicate")  # noqa: E731
    energy = (z - F.avg_pool2d(pad(z), 3, 1)).pow(2).sum(1, keepdim=True)
    return F.avg_pool2d(pad(energy), 3, 1)[:, 0].log1p()


def rank(values: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Each value's quantile in ``reference`` (sorted, 1-D), in [0, 1]."""
    return torch.searchsorted(reference, values.contiguous()).double() / len(reference)


def bin_moments(z: torch.Tensor, groups: list[str], bins: int) -> list[GroupMoments]:
    """Per texture bin (quantiles of this domain's own texture), the per-photo moments of the k x k patches centred in it."""
    c, hw = z.shape[1], z.shape[2] * z.shape[3]
    feature = texture(z).reshape(-1)
    which = (rank(feature, feature.sort().values) * bins).long().clamp(max=bins - 1)
    patches = F.unfold(F.pad(z, (K // 2,) * 4, mode="replicate"), K).transpose(1, 2).reshape(-1, c * K * K).double()
    cell_group = group_ids(groups, len(z)).repeat_interleave(hw)
    n_groups, d = int(cell_group.max()) + 1, c * K * K
    out = []
    for b in range(bins):
        p, g = patches[which == b], cell_group[which == b]
        count = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, g, torch.ones(len(g), dtype=torch.float64))
        total = torch.zeros(n_groups, d, dtype=torch.float64).index_add_(0, g, p)
        outer = torch.stack([p[g == i].T @ p[g == i] for i in range(n_groups)])
        out.append(GroupMoments(count, total, outer))
    return out


def pooled(parts: list[GroupMoments]) -> GroupMoments:
    return GroupMoments(*(sum(x) for x in zip(*((m.count, m.total, m.outer) for m in parts))))


def _difference(m: LinearMap, base: LinearMap, mean: torch.Tensor, cov: torch.Tensor) -> float:
    """``E ||m(z) - base(z)||^2`` per cell for patches of this mean and covariance."""
    rows = (m.weight - base.weight).reshape(m.weight.shape[0], -1).double()
    shift = rows @ mean + (m.bias - base.bias).double()
    return float(shift @ shift + (rows @ cov @ rows.T).trace())


def bin_maps(src: list[GroupMoments], tgt: list[GroupMoments], kind: str, channels: int,
             keep: torch.Tensor | None = None) -> tuple[LinearMap, list[LinearMap], float]:
    """The pooled patch-OT map, one map per bin, and the conditional move; ``keep`` re-splits pooled groups (the null)."""
    side = lambda m, source: m.moments(None if keep is None else (keep if source else ~keep))  # noqa: E731
    base = _gaussian_ot(side(pooled(src), True), side(pooled(tgt), False), channels, K)
    centre = torch.arange(channels) * K * K + (K * K) // 2
    maps, move, cells = [], 0.0, 0.0
    for s, t in zip(src, tgt):
        (m_s, cov_s), (m_t, cov_t) = side(s, True), side(t, False)
        if kind == "ot":
            m = _gaussian_ot((m_s, cov_s), (m_t, cov_t), channels, K)
        else:  # the pooled map, its output mean moved onto this bin's target mean
            moved = m_t[centre] - (base.weight.reshape(channels, -1).double() @ m_s + base.bias.double())
            m = LinearMap(base.weight, base.bias + moved.float())
        n = float(s.count.sum() if keep is None else s.count[keep].sum())
        maps.append(m)
        move, cells = move + n * _difference(m, base, m_s, cov_s), cells + n
    return base, maps, move / cells


def permutation_null(src: list[GroupMoments], tgt: list[GroupMoments], kind: str, channels: int) -> list[float]:
    """The conditional move between random re-splits of the pooled photos (each cell keeps its own domain's bin)."""
    both = [s.join(t) for s, t in zip(src, tgt)]
    return [bin_maps(both, both, kind, channels, keep)[2] for keep in resplits(len(both[0].count), len(src[0].count))]


def apply(maps: list[LinearMap], reference: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Each cell through the maps of its texture rank in A (``reference``: A's sorted texture), between bin centres."""
    pos = (rank(texture(z), reference) * len(maps) - 0.5).clamp(0, len(maps) - 1)
    lo = pos.floor().long()
    hi, w = (lo + 1).clamp(max=len(maps) - 1), (pos - lo).float().unsqueeze(1)
    out = torch.stack([m(z) for m in maps])  # (bins, N, C, h, w)
    pick = lambda i: out.gather(0, i[None, :, None].expand(1, -1, z.shape[1], -1, -1))[0]  # noqa: E731
    return (1 - w) * pick(lo) + w * pick(hi)


def main() -> None:
    ap = probe_parser(__doc__, "dark_edges,null")
    ap.add_argument("--bins", type=int, default=4)
    ap.add_argument("--test", choices=("test", "afhq"), default="test", help="the held-out crops of the training collection, or of another")
    args = ap.parse_args()
    data = data_folder(args.out, args.image_size)
    vae = load_vae(args.shared)
    a, groups_a = load_folder(data / "a")
    reference, src = texture(a).reshape(-1).sort().values, bin_moments(a, groups_a, args.bins)
    print(f"{args.bins} texture bins, {K}x{K} latent patches; PSNR dB on the {args.test} crops; move: conditional move "
          f"(chance: median of {NULL_PERMUTATIONS} re-splits), p: share of re-splits moving as far")
    print("| transform | patch OT (pooled) | conditional OT | its move (chance), p | + shrunk | conditional shift "
          "| its move (chance), p | + shrunk |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for transform in args.transforms.split(","):
        t0 = time.time()
        b, groups_b = load_folder(data / transform / "b")
        test = with_truth(vae, torch.load(data / f"{args.test}.pt", weights_only=True), transform)
        tgt = bin_moments(b, groups_b, args.bins)
        score = lambda z, test=test: score_latents(vae, test, z)[0]  # noqa: E731
        factor = shrink_factor(pooled(src), pooled(tgt), a.shape[1], K)
        cells = []
        for kind in ("ot", "shift"):
            base, maps, move = bin_maps(src, tgt, kind, a.shape[1])
            chance = permutation_null(src, tgt, kind, a.shape[1])
            keep = max(0.0, 1 - sum(chance) / len(chance) / max(move, 1e-30))
            start = shrunk(base, factor)
            pulled = [LinearMap(start.weight + keep * (m.weight - base.weight), start.bias + keep * (m.bias - base.bias)) for m in maps]
            p = sum(c >= move for c in chance) / len(chance)
            cells += [f"{score(apply(maps, reference, test['z_x'])):.2f}",
                      f"{move:.3f} ({sorted(chance)[len(chance) // 2]:.3f}), {p:.2f}",
                      f"{score(apply(pulled, reference, test['z_x'])):.2f} (keeps {keep:.2f})"]
        print(f"| {transform} | {score(base(test['z_x'])):.2f} | {' | '.join(cells)} |  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
