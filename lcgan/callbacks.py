"""Hydra callbacks. ``RunFolderGuard`` refuses another run's folder before Hydra writes into it;
``SweepReport`` keeps ``<sweep dir>/report.{md,csv,png}`` current during a multirun.

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
        from lcgan.sweep_report import write_report

        try:
            write_report(config.hydra.sweep.dir, top=self.top, quiet=quiet)
        except Exception as e:  # a report problem must never fail or hide a training job
            print(f"lcgan.callbacks.SweepReport: no report for {config.hydra.sweep.dir}: {type(e).__name__}: {e}")

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            self._write(config, quiet=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write(config, quiet=False)


class RunFolderGuard(Callback):
    """Hydra saves ``.hydra/`` (config and overrides) in the run folder *before* ``train()`` can take the
    folder's lock, so a run that ``train()`` then refuses would still overwrite the earlier run's recorded
    config, and a resume would replace the run's record with its own short command line.
    ``on_run_start`` comes first; Hydra swallows a callback's exceptions, so on the refusals of
    :func:`lcgan.rundir.claim`, and for a resume of a recorded run (which reads that record,
    :func:`lcgan.rundir.resume_config`, and notes itself in ``logs/resumes.jsonl``), it only switches
    off that save; ``train()`` raises any error itself."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pathlib import Path

        from omegaconf import read_write

        from lcgan import rundir
        from lcgan.layout import RunFolder

        out = Path(config.hydra.run.dir)
        keep_record = bool(config.train.resume) and RunFolder(out).overrides.is_file()
        try:
            rundir.refuse_busy(out)
            rundir.refuse_earlier_run(out, bool(config.train.resume), bool(config.train.overwrite))
        except rundir.REFUSALS:
            keep_record = True
        if keep_record:
            with read_write(config.hydra):
                config.hydra.output_subdir = None
