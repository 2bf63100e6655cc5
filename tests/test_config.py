"""One default per setting, and settings that cannot apply are errors naming the keys."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from lcgan import config
from lcgan.config import ConfigError
from lcgan.cyclegan import LossWeights
from lcgan.models import ResnetGenerator
from tests.conftest import CONF, compose_cfg


def test_latent_divisor_under_channel_norm_is_an_error():
    # per-channel statistics replace the divisor: a sweep over data.latent_divisor with latent_norm=channel was a no-op
    cfg = compose_cfg("train", ["data.latent_norm=channel", "data.latent_divisor=5"])
    with pytest.raises(ConfigError, match=r"data.latent_divisor=5 has no effect under data.latent_norm=channel"):
        config.check(cfg)
    config.check(compose_cfg("train", ["data.latent_norm=channel"]))  # the default divisor: fine
    config.check(compose_cfg("train", ["data=latents", "data.a_dir=a", "data.b_dir=b", "data.latent_divisor=5"]))


def test_loss_weights_defaults_are_the_yaml_defaults():
    train = compose_cfg("train", []).train
    for field in dataclasses.fields(LossWeights):
        assert field.default == train[field.name], f"LossWeights.{field.name}={field.default!r} but conf/train.yaml has {train[field.name]!r}"


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_generator_defaults_are_the_yaml_defaults(model):
    generator = compose_cfg("train", [f"model={model}"]).model.generator
    params = inspect.signature(ResnetGenerator).parameters
    for key in ("output", "anchor"):
        assert params[key].default == generator[key], f"ResnetGenerator({key}={params[key].default!r}) but model={model} has {generator[key]!r}"
