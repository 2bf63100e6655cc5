"""Sweep report: ``python -m lcgan.report PATH_TO_MULTIRUN [--metric err] [--top 5]``.

Writes ``report.csv``, ``report.md`` and ``report.png`` into PATH, one row per job folder, best first
(:mod:`lcgan.sweep_report` says what each holds). A multirun of ``lcgan.train`` gets one after every job
without this command (``lcgan.callbacks.SweepReport``).
"""
from __future__ import annotations

import argparse

from lcgan.sweep_report import write_report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lcgan.report", description=__doc__.splitlines()[0])
    ap.add_argument("path", help="a Hydra multirun folder, e.g. multirun/2025-01-31/12-00-00")
    ap.add_argument("--metric", default=None, help="column to rank by, lower is better "
                                                     "(default: the validation metric train() returns: err, else val_swd, else loss_cyc)")
    ap.add_argument("--top", type=int, default=5, help="rows shown on the console")
    args = ap.parse_args(argv)
    write_report(args.path, args.metric, args.top)


if __name__ == "__main__":
    main()
