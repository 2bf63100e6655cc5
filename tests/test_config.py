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


@pytest.mark.parametrize("entry, config_name, overrides, key", [
    ("lcgan.train:train", "train", ["train.epochs=0"], "train.epochs=0"),
    ("lcgan.bench:bench", "bench", ["bench.steps=0"], "bench.steps=0"),
    ("lcgan.encode:encode", "encode", ["input_dir=in", "output_dir=out", "batch_size=-2"], "batch_size=-2"),
    ("lcgan.evaluate:evaluate", "eval", ["eval.testA_dir=a", "eval.testB_dir=b", "eval.batch_size=0"], "eval.batch_size=0"),
    ("lcgan.translate:translate", "translate", ["metrics=true", "image=x.jpg", "eval.num_workers=-1"], "eval.num_workers=-1"),
    ("lcgan.translate:translate", "translate", ["input=photos", "direction=C2D"], "direction='C2D'"),
    ("lcgan.translate:translate", "translate", ["input=photos", "size=0"], "size=0"),
])
def test_every_hydra_entry_point_checks_its_config_first(tmp_path, monkeypatch, entry, config_name, overrides, key):
    # before any work: the error comes from the config check, here run in an empty folder where any work would fail otherwise
    import importlib

    module, function = entry.split(":")
    monkeypatch.chdir(tmp_path)
    out = [f"out_dir={tmp_path / 'run'}"] if config_name in ("train", "bench") else []  # their run folder
    cfg = compose_cfg(config_name, ["device=cpu", *overrides, *out])
    with pytest.raises(ConfigError, match=key):
        getattr(importlib.import_module(module), function)(cfg)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("entry, argv, option", [
    ("lcgan.fid_stats", ["DIR", "--batch-size", "-2"], "--batch-size: must be an integer >= 1, got '-2'"),
    ("lcgan.fid_stats", ["DIR", "--device", "gpu"], "--device: must be auto, cpu, cuda or cuda:N"),
    ("lcgan.latent_stats", ["DIR", "--divisors", "10", "0"], "--divisors: must be a number > 0, got '0'"),
])
def test_argparse_entry_points_name_the_option(capsys, entry, argv, option):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(entry).main(argv)
    assert exit_info.value.code == 2 and option in capsys.readouterr().err
