"""Per-channel statistics of a folder of latents, and the ``latent_divisor`` that suits it.

    python -m lcgan.latent_stats DIR [DIR ...] [--divisors 1 2 3 5 10 15 20] [--json stats.json]

With ``data.latent_norm=divisor`` the model sees ``file / latent_divisor`` (see :mod:`lcgan.latents`), which
should keep nearly all values inside [-1, 1] (the reference generators end in tanh; the residual default does
not saturate, but the same range suits its InstanceNorm'd layers and Adam's step size). For each candidate
divisor ``d`` this reports the fraction of values with ``|z| > d``; the suggestion is the smallest candidate
with at most 1% beyond, which leaves the tanh's linear range for the bulk and saturates only the tails (a
larger divisor costs precision: the generator must produce tiny values). When no candidate qualifies it
suggests ``ceil(p99 of |z|)``, which does by construction.

Plain argparse rather than Hydra: a read-only inspection tool with a positional folder.
``lcgan.encode`` records the same per-channel mean/std in its ``manifest.json``.
"""
from __future__ import annotations

import argparse
import json

from lcgan.checkpoint import atomic_write_bytes
from lcgan.config import at_least
from lcgan.latent_files import DIVISORS, MAX_BEYOND, folder_stats


def format_table(s: dict) -> str:
    lines = [f"{s['dir']}: {s['files']} files, {s['channels']} channels, |z| max {s['abs_max']:.3g}, "
             f"p99 {s['abs_p99']:.3g}, p99.9 {s['abs_p99.9']:.3g}", "channel      mean       std"]
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
        atomic_write_bytes(args.json, json.dumps(results, indent=2).encode())
    return results


if __name__ == "__main__":
    main()
