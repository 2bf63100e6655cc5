"""Experiment trackers. The JSONL log in ``logs/`` is always written; these are extra.

Constructed as ``Logger(**yaml_kwargs, run_config=<resolved config dict>, out_dir=<run folder>)``.
Interface (every logger): ``log_scalars(values, step)``, ``log_image(key, image, step)``,
``summary(values)``, ``finish(exit_code)``. ``train()`` calls them; nothing else.
"""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf
from PIL import Image


class NullLogger:
    """``logger=none``: the JSONL log only."""

    def __init__(self, **_: object) -> None:
        pass

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        pass

    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        pass

    def summary(self, values: dict) -> None:
        pass

    def log_eval(self, summary: dict, rows: list[dict], images: list[tuple[Image.Image, ...]] = (), **_: object) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


MODES = ("auto", "online", "offline", "disabled")


def wandb_mode(mode: str) -> str:
    """``auto``: ``$WANDB_MODE`` if set, else online with ``$WANDB_API_KEY``, else offline (never a login prompt)."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def swept_keys() -> list[str]:
    """The keys this Hydra multirun varies: ``hydra.sweeper.params`` and ``a=1,2``-style command-line sweeps.

    Command-line sweeps are read from the sweep's ``multirun.yaml`` (written by the basic sweeper
    before the first job); outside a multirun the list is empty.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return []
    hc = HydraConfig.get()
    keys = list((hc.sweeper.get("params") or {}).keys())
    saved = Path(hc.sweep.dir) / "multirun.yaml"
    if saved.is_file():
        try:
            task = OmegaConf.to_container(OmegaConf.load(saved).hydra.overrides.task, resolve=False)
            parsed = OverridesParser.create().parse_overrides(task)
        except Exception:  # an unreadable multirun.yaml only costs the run its short name
            parsed = []
        keys += [o.key_or_group for o in parsed if o.is_sweep_override() and o.key_or_group not in keys]
    return keys


def hydra_identity() -> tuple[str | None, str | None]:
    """(group, name) of this Hydra job: the sweep folder and the swept ``key=value`` pairs.

    Read from ``HydraConfig`` at run time rather than through ``${hydra:...}`` interpolations,
    which do not exist when ``train()`` is called without Hydra (tests, notebooks).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hc = HydraConfig.get()
    overrides = [o for o in hc.overrides.task if not o.startswith("hydra.")]
    if hc.mode != RunMode.MULTIRUN:
        return None, ",".join(short_overrides(overrides)) or None
    keys = swept_keys()
    chosen = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in keys] or overrides
    return str(hc.sweep.dir), ",".join(short_overrides(chosen)) or f"job{hc.job.num}"


def short_overrides(overrides: list[str]) -> list[str]:
    """``train.lambda_cyc=5`` -> ``lambda_cyc=5``, keeping the full key where two would read the same."""
    pairs = [o.lstrip("+~").split("=", 1) for o in overrides]
    last = [k.rsplit(".", 1)[-1] for k, *_ in pairs]
    return [f"{s if last.count(s) == 1 else k}={v[0] if v else ''}" for (k, *v), s in zip(pairs, last)]


class WandbLogger:
    """``logger=wandb``: one Weights & Biases run per job, grouped by sweep, named from the swept overrides.

    ``finish(exit_code)`` marks the run failed when ``exit_code`` is nonzero. ``log_eval`` is for
    ``lcgan.evaluate``: summary metrics and a ``wandb.Table`` of source/generated images.
    """

    def __init__(self, run_config: dict, out_dir: str, project: str = "lcgan", entity: str | None = None,
                 group: str | None = None, name: str | None = None, tags: list[str] | tuple[str, ...] = (),
                 mode: str = "auto", dir: str | None = None, job_type: str = "train", log_every: int = 1,
                 log_images: bool = True) -> None:
        try:
            import wandb
        except ImportError:
            raise ImportError("logger=wandb needs the wandb package: pip install wandb (or use logger=none)") from None
        self._wandb = wandb
        self.log_every, self.log_images, self._calls = log_every, log_images, 0
        auto_group, auto_name = hydra_identity()
        self.mode = wandb_mode(mode)
        root = Path(dir or out_dir)
        root.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project, entity=entity, group=group or auto_group, name=name or auto_name,
            tags=list(tags), job_type=job_type, config=run_config, dir=str(root), mode=self.mode,
            reinit="create_new",  # the basic launcher runs a sweep's jobs in one process, one run each
            settings=wandb.Settings(save_code=False, disable_git=True, silent=True),
        )
        self.run.define_metric("epoch/*", step_metric="epoch/epoch")  # epoch charts read in epochs
        if self.mode == "offline":
            print(f"wandb: offline run; upload with: wandb sync {Path(self.run.dir).parent}")

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        if all(k.startswith("step/") or k == "gpu_mem_gb" for k in values):  # per-step: maybe thinned
            self._calls += 1
            if (self._calls - 1) % self.log_every:
                return
        self.run.log(dict(values), step=step)

    def log_image(self, key: str, image: Image.Image, step: int) -> None:
        if self.log_images:
            self.run.log({key: self._wandb.Image(image)}, step=step)

    def summary(self, values: dict) -> None:
        self.run.summary.update(dict(values))

    def log_eval(self, summary: dict[str, float], rows: list[dict], images: list[tuple[Image.Image, ...]] = (),
                 columns: tuple[str, ...] = ("source", "generated"), key: str = "eval") -> None:
        """Evaluation results: ``summary`` into the run summary as ``eval/<metric>``; one table ``eval/samples``.

        ``rows[i]`` holds the per-image metrics (and names) of sample i; ``images[i]`` its pictures,
        one per ``columns`` entry (default ``(source, generated)``). ``images`` may be empty.
        """
        if images and len(images) != len(rows):
            raise ValueError(f"log_eval: {len(images)} image tuples for {len(rows)} rows; give one tuple per row")
        metric_cols = list(dict.fromkeys(k for r in rows for k in r))
        table = self._wandb.Table(columns=[*(columns if images else ()), *metric_cols])
        for i, row in enumerate(rows):
            pics = [self._wandb.Image(p) for p in images[i]] if images else []
            table.add_data(*pics, *(row.get(k) for k in metric_cols))
        self.run.summary.update({f"{key}/{k}": v for k, v in summary.items()})
        self.run.log({f"{key}/samples": table})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
