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
    with pytest.raises(ConfigError, match=r"data.latent_divisor=5.0 has no effect under data.latent_norm=channel"):
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


@pytest.mark.parametrize("overrides, error", [
    # the ranges the constructors checked a second time before (buffer, data, models, translate)
    (["train.fake_buffer_size=-1"], "train.fake_buffer_size=-1: must be an integer >= 0"),
    (["data=latents", "data.a_dir=a", "data.b_dir=b", "data.max_files=0"], r"data.max_files=0: must be null \(all files\) or an integer >= 1"),
    (["data=latents", "data.a_dir=a", "data.b_dir=b", "data.max_files=-1"], "data.max_files=-1: must be null"),  # dropped a file
    (["data=latents", "data.a_dir=a", "data.b_dir=b", "data.val_fraction=1"], r"data.val_fraction=1.0: must be a number in \[0, 1\)"),
    (["data.latent_norm=batch"], "data.latent_norm='batch': must be divisor"),
    (["data.n_eval=0", "data.size=2"], r"(?s)data.n_eval=0: must be an integer >= 1.*data.size=2: must be an integer >= 4"),
    (["model/discriminator=patch", "model.discriminator.n_layers=-1"], "model.discriminator.n_layers=-1: must be an integer >= 0"),
    (["model.discriminator.kernel=2"], r"model.discriminator.kernel=2: must be an odd integer >= 1"),  # was LocalDiscriminator's
    (["train.compile=yes"], "train.compile='yes': must be auto, true or false"),
    (["device=gpu"], "device='gpu': must be auto, cpu, cuda or cuda:N"),
    (["train.epoch_files=all", "train.keep_epochs=-1"],
     r"(?s)train.epoch_files='all': must be one of generators, full, none.*train.keep_epochs=-1: must be an integer >= 0"),
    (["logger=wandb", "logger.mode=dryrun", "logger.log_every=0"],  # were checked by lcgan.loggers
     r"(?s)logger.mode='dryrun': must be one of auto, online, offline, disabled.*logger.log_every=0: must be an integer >= 1"),
])
def test_schema_rules_name_the_key(overrides, error):
    with pytest.raises(ConfigError, match=error):
        config.check(compose_cfg("train", ["out_dir=run", *overrides]))


def test_every_problem_is_listed_at_once_and_required_keys_first():
    with pytest.raises(ConfigError) as e:
        config.check(compose_cfg("train", ["out_dir=run", "train.epochs=0", "optim.lr=inf", "seed=1180591620717411303424"]))
    assert all(k in str(e.value) for k in ("train.epochs=0", "optim.lr=inf", "seed=1180591620717411303424: must be a 64-bit"))
    # a required key left unset is named before any range: and every one of them at once
    with pytest.raises(ConfigError) as e:
        config.check(compose_cfg("train", ["out_dir=run", "data=latents", "train.epochs=0", "+data.a_folder=x"]))
    assert str(e.value) == ("incomplete config:\n"
                            "  required, not given: data.a_dir (give it on the command line: data.a_dir=...)\n"
                            "  required, not given: data.b_dir (give it on the command line: data.b_dir=...)\n"
                            "  data.a_folder: not a setting of data (did you mean data.a_dir?)")
    with pytest.raises(ConfigError, match=r"(?s)^incomplete config:.*eval.testA_dir=\.\.\..*eval.testB_dir=\.\.\."):
        config.check(compose_cfg("eval", []))
    with pytest.raises(ConfigError, match=r"(?s)^incomplete config:.*input_dir=\.\.\..*output_dir=\.\.\."):
        config.check(compose_cfg("encode", []))


@pytest.mark.parametrize("config_name, override, error", [
    ("train", "+train.epoch=2", r"train.epoch: not a setting of train \(did you mean train.epochs\?\)"),  # Hydra's own hint after a typo
    ("train", "+optim.momentum=0.9", r"optim.momentum: not a setting of optim \(it has _target_, _partial_, lr, betas"),
    ("encode", "+image_sise=8", r"image_sise: not a setting of this command \(did you mean image_size\?\)"),
    ("eval", "+eval.batch=2", r"eval.batch: not a setting of eval \(did you mean eval.batch_size\?\)"),
])
def test_an_added_key_is_refused(config_name, override, error):
    # Hydra's + adds a key even to a schema's node; the check refuses it, naming the key (it was accepted and ignored)
    with pytest.raises(ConfigError, match=error):
        config.check(compose_cfg(config_name, ["out_dir=run", override] if config_name == "train" else [override]))


@pytest.mark.parametrize("override, key", [("train.epochs=abc", "train.epochs"), ("optim.lrr=1", "optim.lrr"),
                                           ("train.overwrite=maybe", "train.overwrite"), ("data.mean=[a,b]", "data.mean")])
def test_types_and_unknown_keys_are_refused_while_composing(override, key):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as e:
        compose_cfg("train", ["out_dir=run", override])
    assert f"full_key: {key}" in str(e.value.__cause__)


def test_the_schema_holds_no_default():
    # the YAML files hold the one default of each setting (and its documentation)
    from dataclasses import MISSING, fields, is_dataclass

    from lcgan import schema

    optional_group = {"vae"}  # eval/translate: vae: null in the defaults list (the checkpoint's VAE)
    for cls in vars(schema).values():
        if is_dataclass(cls) and isinstance(cls, type) and cls is not schema.Rule:
            for f in fields(cls):
                if f.name not in optional_group:
                    assert f.default is MISSING and f.default_factory is MISSING, f"{cls.__name__}.{f.name} has a default"


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_preset_passes_the_schema(preset):
    config.check(compose_cfg("train", [f"+experiment={preset}", "out_dir=run"]))
