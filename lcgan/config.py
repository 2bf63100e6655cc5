"""The one check of a composed config, run by every entry point before any work, naming the keys; and --help.

Hydra and the schema (:mod:`lcgan.schema`) refuse unknown keys and wrong types while composing. This
reports, in one error, the required keys (``???``) left unset and the keys added with ``+key=`` that
are no setting; then, in one error, every value outside its rule, with the key and what it must be.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import takewhile
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from lcgan import CONF_DIR
from lcgan.latents import Convention
from lcgan.schema import DEVICE


class ConfigError(ValueError):
    pass


@contextmanager
def user_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """An entry point's body: a bad setting (:class:`ConfigError`), a missing file or weights (``FileNotFoundError``,
    whose messages name the setting) or another of ``kinds`` (a refused run folder) ends the command with its own
    message on stderr and exit status 2, not under a traceback whose frames say nothing to a user. Everything else
    keeps its traceback: that is a bug to report. A job of a sweep (``-m``)
    raises as before, so that Hydra records it as failed, reports it and goes on with the other jobs."""
    try:
        yield
    except (ConfigError, FileNotFoundError, *kinds) as e:
        if _in_sweep():
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def problems(cfg: DictConfig, prefix: str = "") -> dict[str, list[str]]:
    """What is wrong with ``cfg``, walked without resolving what needs no rule (``${hydra:...}`` needs a running job):
    ``missing`` keys still ``???``, ``unknown`` keys its schema lacks (Hydra's ``+key=`` adds even to a schema's
    node), ``invalid`` values that break their field's rule (:func:`lcgan.schema.setting`)."""
    found: dict[str, list[str]] = {"missing": [], "unknown": [], "invalid": []}
    schema = OmegaConf.get_type(cfg)
    rules = {f.name: f.metadata.get("rule") for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
    for key in cfg:
        node, path = cfg._get_node(key), f"{prefix}{key}"
        if OmegaConf.is_missing(cfg, key):
            found["missing"].append(path)
        elif rules and key not in rules:
            close = difflib.get_close_matches(str(key), list(rules), n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"it has {', '.join(rules)}"
            found["unknown"].append(f"{path}: not a setting of {prefix.rstrip('.') or 'this command'} ({hint})")
        elif isinstance(node, DictConfig) and not node._is_none() and not node._is_interpolation():
            for kind, items in problems(node, f"{path}.").items():
                found[kind] += items
        elif rules.get(key) is not None and cfg[key] is not None:  # None: an Optional field's null
            value = OmegaConf.to_container(cfg[key]) if isinstance(cfg[key], ListConfig) else cfg[key]
            if not rules[key].ok(value):
                found["invalid"].append(f"{path}={value!r}: must be {rules[key].want}")
    return found


def at_least(low: float, kind: type = int, strict: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` for the plain-argparse commands (fid_stats, latent_stats): a number >= ``low``
    (> with ``strict``); argparse names the option in the error (``argument --batch-size: must be an integer >= 1, got '-2'``)."""
    want = f"{'an integer' if kind is int else 'a number'} {'>' if strict else '>='} {low}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {want}, got {text!r}")
        return value

    return parse


def device_name(text: str) -> str:
    """An argparse ``type``: the devices ``device=`` takes."""
    if not DEVICE.ok(text):
        raise argparse.ArgumentTypeError(f"must be {DEVICE.want}, got {text!r}")
    return text


def check(cfg: DictConfig) -> None:
    """Raise one :class:`ConfigError`: first the required keys left unset and the keys that are no setting, all
    together; else every value that breaks its rule, all at once."""
    found = problems(cfg)
    missing, unknown = found["missing"], found["unknown"]
    if missing or unknown:
        lines = [f"required, not given: {key} (give it on the command line: {key}=...)" for key in missing] + unknown
        raise ConfigError("incomplete config:\n  " + "\n  ".join(lines))
    invalid = found["invalid"]
    # a setting that cannot apply is an error: per-channel statistics replace the divisor (a sweep over it was a no-op)
    divisor = OmegaConf.select(cfg, "data.latent_divisor", default=Convention.latent_divisor)
    if OmegaConf.select(cfg, "data.latent_norm", default=None) == "channel" and divisor != Convention.latent_divisor:
        invalid.append(f"data.latent_divisor={divisor!r} has no effect under data.latent_norm=channel (per-channel statistics "
                       f"replace it): leave data.latent_divisor at {Convention.latent_divisor}, or use data.latent_norm=divisor")
    if invalid:
        raise ConfigError("invalid config (fix on the command line, e.g. key=value):\n  " + "\n  ".join(invalid))


# ---------------------------------------------------------------------------- --help

PRESETS = {"train": "experiment"}  # groups added with +group=option (@package _global_ presets), not in the defaults list


def _without_block(text: str, key: str) -> str:
    """``text`` without its top-level ``key:`` block (the defaults list, the hydra settings)."""
    out, skipping = [], False
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            skipping = True
        elif skipping and line.strip() and not line.startswith((" ", "#")):
            skipping = False
        if not skipping:
            out.append(line)
    return "\n".join(out).strip("\n")


def _included_configs(text: str) -> list[str]:
    """The plain configs a defaults list includes (bench.yaml: ``- train``), not groups, schemas or ``_self_``."""
    entries = [line.split("#")[0].strip() for line in _defaults_block(text)]
    return [e[2:] for e in entries if e.startswith("- ") and ":" not in e and "/" not in e and e != "- _self_"]


def _defaults_block(text: str) -> list[str]:
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("defaults:")), len(lines))
    return list(takewhile(lambda s: s.startswith((" ", "#")), lines[start + 1 :]))


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def help_text(*, _root_: DictConfig) -> str:
    """``--help`` of an entry point (conf/hydra/help/lcgan.yaml): the opening comment of its YAML (what it does,
    examples), the config groups it composes with their options, and every file it composed, comments included:
    the YAML files stay the one place that documents and sets each default."""
    conf, name = Path(CONF_DIR), _root_.hydra.job.config_name
    choices = {g: o for g, o in sorted(_root_.hydra.runtime.choices.items()) if not g.startswith("hydra/")}
    primary = (conf / f"{name}.yaml").read_text()
    intro = [line.removeprefix("#").removeprefix(" ") for line in takewhile(lambda s: s.startswith("#"), primary.splitlines())]
    groups = [f"  {g}: {' | '.join(o + ('*' if o == choices[g] else '') for o in _options(g))}"
              + ("   (null*: none)" if choices[g] is None else "") for g in choices]
    groups += [f"  +{g}=NAME presets: {', '.join(_options(g))} (conf/{g}/)" for n, g in PRESETS.items() if n == name]
    # the primary file, the configs it includes (bench: train), then each chosen group option
    files = []
    for n in [name, *_included_configs(primary)]:
        body = _without_block(_without_block((conf / f"{n}.yaml").read_text(), "defaults"), "hydra")
        body = "\n".join(body.splitlines()[len(intro):] if n == name else body.splitlines())  # the intro is shown above
        files.append(f"# conf/{n}.yaml\n{body.strip()}")
    for group, option in choices.items():
        if option is not None:
            body = _without_block((conf / group / f"{option}.yaml").read_text(), "defaults")
            files.append(f"{group.replace('/', '.')}:  # {group}={option}: conf/{group}/{option}.yaml\n"
                         + "\n".join(f"  {line}" if line else "" for line in body.splitlines()))
    text = "\n".join([
        f"python -m lcgan.{_root_.hydra.job.name}", *intro, "",
        "== Config groups (group=option; * = in use) ==", *groups, "",
        "== Settings (key=value; each file as it sets the defaults, with what each key means) ==", "", "\n\n".join(files), "",
        "== More ==",
        "A key that is not a setting (a typo, or one added with +key=) is an error, as is a value outside its range.",
        "See the composed config without running: --cfg job. Hydra's own options: --hydra-help.",
    ])
    return text.replace("$", "$$")  # the help template is a string.Template: $ is its escape


OmegaConf.register_new_resolver("lcgan_help", help_text)
