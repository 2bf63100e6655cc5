"""Compose the real conf/ with overrides that make runs tiny (CPU, a few steps, small latents)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import lcgan  # noqa: F401  stores the config schemas that conf/ names (lcgan/schema.py)

torch.set_num_threads(1)  # CI has 2 cores: torch's default pool thrashes there
# lcgan's caches (FID reference statistics) go to a folder of this session, never the developer's ~/.cache
os.environ["LCGAN_CACHE"] = tempfile.mkdtemp(prefix="lcgan-test-cache-")

CONF = Path(__file__).resolve().parents[1] / "conf"

TINY = [
    "device=cpu",
    "train.epochs=2",
    "train.batch_size=8",
    "train.log_every=2",
    "train.vis_every=1",
    "train.n_vis=2",
    "model.generator.ngf=8",
    "model.generator.n_blocks=1",
    "model.discriminator.ndf=8",
]
TINY_SYNTHETIC = ["data.n_a=32", "data.n_b=24", "data.n_eval=8", "data.size=16"]


def compose_cfg(config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


@pytest.fixture
def tiny_cfg(tmp_path):
    """``tiny_cfg(*overrides)``: the real train config, shrunk, writing under a temp folder."""

    def make(*overrides: str, out: Path | None = None) -> DictConfig:
        data = [] if any(o.startswith("data=") for o in overrides) else TINY_SYNTHETIC
        return compose_cfg("train", [*TINY, *data, f"out_dir={out or tmp_path / 'run'}", *overrides])

    return make
