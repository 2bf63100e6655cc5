"""Experiment trackers. The JSONL log in ``logs/`` is always written; these are extra.

Constructed as ``Logger(**yaml_kwargs, run_config=<resolved config dict>, out_dir=<run folder>)``.
Interface (every logger): ``log_scalars(values, step)``, ``log_image(key, image, step)``,
``summary(values)``, ``finish(exit_code)``. ``train()`` calls them; nothing else.
"""
from __future__ import annotations

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

    def finish(self, exit_code: int = 0) -> None:
        pass
