"""Per-channel statistics of a folder of latents, and the ``latent_divisor`` that suits it.

    python -m lcgan.latent_stats DIR [DIR ...] [--divisors 1 2 3 5 10 15 20] [--json stats.json]

With ``data.latent_norm=divisor`` the model sees ``file / latent_divisor`` (see :mod:`lcgan.latents`),
which should keep nearly all values inside [-1, 1] (the reference generators end in tanh; the residual
default does not saturate, but the same range suits its InstanceNorm'd layers and Adam's step size). For each candidate divisor ``d`` this reports the fraction of
values with ``|z| > d``; the suggestion is the smallest candidate with at most 1% beyond, which
leaves the tanh's linear range for the bulk and saturates only the tails (a larger divisor costs
precision: the generator must produce tiny values). When no candidate qualifies it suggests
``ceil(p99 of |z|)``, which does by construction.

Plain argparse rather than Hydra: a read-only inspection tool with a positional folder.
``lcgan.encode`` records the same per-channel mean/std in its ``manifest.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch

from lcgan.config import at_least
from lcgan.data import find_latent_files, load_latent_file

DIVISORS = (1.0, 2.0, 3.0, 5.0, 10.0, 15.0, 20.0)
MAX_BEYOND = 0.01  # fraction of values a divisor may push past +-1
SAMPLE_VALUES = 2_000_000  # |z| values kept for quantiles; counts and moments use every value


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


def format_table(s: dict) -> str:
    lines = [f"{s['dir']}: {s['files']} files, {s['channels']} channels, |z| max {s['abs_max']:.3g}, "
             f"p99 {s['abs_p99']:.3g}, p99.9 {s['abs_p99.9']:.3g}", "channel      mean       std"]  # fmt: skip
    lines += [f"{c:7d} {m:9.4f} {sd:9.4f}" for c, (m, sd) in enumerate(zip(s["mean"], s["std"]))]
    lines += ["divisor  beyond +-1"] + [f"{d:>7} {frac:10.4%}" for d, frac in s["fraction_beyond_1"].items()]
    lines.append(f"suggested latent_divisor: {s['suggested_divisor']:g} (smallest with <= {MAX_BEYOND:.0%} beyond +-1)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", help="folders of .pt latents (searched recursively)")
    parser.add_argument("--divisors", type=at_least(0, float, strict=True), nargs="+", default=list(DIVISORS), help="candidate latent_divisor values")
    parser.add_argument("--json", help="also write the statistics of all folders to this JSON file")
    args = parser.parse_args(argv)
    results = [folder_stats(d, tuple(args.divisors)) for d in args.dirs]
    print("\n\n".join(format_table(r) for r in results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
