"""Hydra callbacks. ``SweepReport`` keeps ``<sweep dir>/report.{md,csv,png}`` current during a multirun.

Hydra's basic sweeper raises the first failed job's error after the batch, so ``on_multirun_end``
never runs for a sweep with a failure; the report is therefore rebuilt after every job
(``on_job_end``, a few file reads) and once more at the end. Wired in ``conf/train.yaml``::

    hydra:
      callbacks:
        sweep_report:
          _target_: lcgan.callbacks.SweepReport
"""
from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig


class SweepReport(Callback):
    def __init__(self, top: int = 5) -> None:
        self.top = top

    def _write(self, config: DictConfig, quiet: bool) -> None:
        from lcgan.report import write_report

        try:
            write_report(config.hydra.sweep.dir, top=self.top, quiet=quiet)
        except Exception as e:  # a report problem must never fail or hide a training job
            print(f"lcgan.callbacks.SweepReport: no report for {config.hydra.sweep.dir}: {type(e).__name__}: {e}")

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            self._write(config, quiet=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write(config, quiet=False)
