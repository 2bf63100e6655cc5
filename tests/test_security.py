"""A checkpoint is data, never code (issue 13).

Every config branch that ``lcgan.translator`` reads from a checkpoint gets a nested ``_target_`` that
would truncate a sentinel file if anything handed it to Hydra's ``instantiate`` (as the translator
once did: a crafted ``last.pt`` ran a shell command under ``lcgan.evaluate``). Each must fail with an
error naming the checkpoint and the key, and leave the sentinel untouched.
"""
from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from lcgan import checkpoint
from lcgan.models import ResnetGenerator
from lcgan.translator import LegacyResnetGenerator, build_vae, load_translator
from lcgan.vae import ApproxVAE
from tests.conftest import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
GEN = {"_target_": "lcgan.models.ResnetGenerator", "ngf": 8, "n_blocks": 1, "n_downsampling": 1, "output": "residual", "anchor": "identity"}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 cores in CI
    yield
    torch.set_num_threads(before)


@pytest.fixture
def sentinel(tmp_path) -> Path:
    path = tmp_path / "sentinel.txt"
    path.write_text("keep")
    return path


def evil(sentinel: Path) -> dict:
    """What Hydra would call: ``open(sentinel, "w")``, which truncates it."""
    return {"_target_": "builtins.open", "file": str(sentinel), "mode": "w"}


def lcgan_checkpoint() -> dict:
    """A small, well-formed lcgan checkpoint as ``lcgan.train`` saves it (config as plain dicts)."""
    g = ResnetGenerator(4, **{k: v for k, v in GEN.items() if k != "_target_"})
    return {"G": g.state_dict(), "F": g.state_dict(), "epoch": 1,
            "cfg": {"model": {"generator": dict(GEN)}, "data": {"latents_scaled": False, "latent_divisor": 10.0},
                    "vae": {"_target_": "lcgan.vae.ApproxVAE", "upscale": 8}},
            "convention": {"latents_scaled": False, "latent_divisor": 10.0},
            "domain_stats": {k: [0.0, 0.0, 0.0, 0.0] for k in ("a_mean", "b_mean")} | {k: [1.0] * 4 for k in ("a_std", "b_std")}}


def legacy_checkpoint() -> dict:
    """The original single-script tool's layout (``.block.`` keys, config under ``model``/``visualization``)."""
    g = LegacyResnetGenerator({"net.1.weight": torch.zeros(8, 4, 5, 5), "net.4.block.0.weight": torch.zeros(1)})
    return {"G": g.state_dict(), "F": g.state_dict(), "epoch": 3,
            "cfg": {"model": {"out_activation": "none"}, "data": {"latent_divisor": 1.0},
                    "visualization": {"vae_model_name_or_path": "runwayml/stable-diffusion-v1-5", "vae_subfolder": "vae"}}}


def put(ck: dict, key: str, value) -> dict:
    *parents, last = key.split(".")
    node = ck
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return ck


def load_all(path: Path):
    """What evaluate/translate do with a checkpoint and no ``vae=`` on the command line."""
    t = load_translator(path, CPU)
    return t, build_vae(None, t, CPU)


# (checkpoint kind, where the payload goes, how it goes there, the key the error must name)
CASES = [
    ("lcgan", "cfg.model.generator", "replace", r"cfg.model.generator._target_='builtins.open' is not one of lcgan's own classes"),
    ("lcgan", "cfg.model.generator.ngf", "nest", r"cfg.model.generator.ngf=\{'_target_': 'builtins.open'"),
    ("lcgan", "cfg.model.generator.ngf", "chain", r"cfg.model.generator.ngf=\{'_target_': 'builtins.len'"),
    ("lcgan", "cfg.model.generator._args_", "list", r"cfg.model.generator._args_ is not a setting of ResnetGenerator"),
    ("lcgan", "cfg.model.generator._target_", "name", r"cfg.model.generator._target_='os.system' is not one of"),
    ("lcgan", "cfg.vae", "replace", r"cfg.vae._target_='builtins.open' is not one of lcgan's own classes.*vae=sd15"),
    ("lcgan", "cfg.vae.upscale", "nest", r"cfg.vae.upscale=\{'_target_'.*vae=sd15"),
    ("lcgan", "cfg.vae.model_name_or_path", "diffusers", r"cfg.vae.model_name_or_path=\{'_target_'.*is not a plain value"),
    ("lcgan", "convention.latent_divisor", "nest", r"convention.latent_divisor=\{'_target_'"),
    ("lcgan", "domain_stats.a_mean", "nest", r"domain_stats must hold a_mean"),
    ("lcgan", "domain_stats.maps", "nest", r"domain_stats must hold a_mean"),
    ("legacy", "cfg.visualization.vae_model_name_or_path", "nest", r"cfg.vae.model_name_or_path=\{'_target_'.*vae=sd15"),
    ("legacy", "cfg.model.out_activation", "nest", r"out_activation=\{'_target_'.*must be a plain str"),
    ("inferred", "cfg.model.output", "nest", r"output=\{'_target_'.*must be a plain str"),
]


@pytest.mark.parametrize("kind, key, how, error", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_crafted_checkpoint_config_is_refused_and_runs_nothing(tmp_path, sentinel, kind, key, how, error):
    ck = legacy_checkpoint() if kind == "legacy" else lcgan_checkpoint()
    if kind == "inferred":  # no generator config: rebuilt from the state dict's shapes
        ck["cfg"]["model"] = {"generator": None}
    payload = {"replace": evil(sentinel), "nest": evil(sentinel), "list": [evil(sentinel)], "name": "os.system",
               "chain": {"_target_": "builtins.len", "obj": evil(sentinel)}}.get(how)
    if how == "diffusers":  # an allowed class with a payload in one of its arguments
        ck["cfg"]["vae"] = {"_target_": "lcgan.vae.DiffusersVAE", "model_name_or_path": evil(sentinel)}
    else:
        put(ck, key, payload)
    path = tmp_path / "crafted" / "last.pt"
    checkpoint.save(ck, path)  # plain dicts and strings: it passes weights_only=True
    assert isinstance(checkpoint.load(path), dict)
    with pytest.raises(ValueError, match=f"checkpoint {re.escape(str(path))}: (?s:.*){error}"):
        load_all(path)
    assert sentinel.read_text() == "keep"


def test_well_formed_checkpoints_still_load(tmp_path):
    path = tmp_path / "good.pt"
    checkpoint.save(lcgan_checkpoint(), path)
    t, (vae, source) = load_all(path)
    assert isinstance(t.g_ab, ResnetGenerator) and t.factor == 2 and isinstance(vae, ApproxVAE) and source == "checkpoint cfg.vae"
    legacy = tmp_path / "legacy.pt"
    checkpoint.save(legacy_checkpoint(), legacy)
    t = load_translator(legacy, CPU)
    assert t.info["format"] == "original tool" and t.vae_cfg["_target_"] == "lcgan.vae.DiffusersVAE"
    inferred = lcgan_checkpoint()
    inferred["cfg"]["model"] = {"generator": None, "output": "residual"}
    checkpoint.save(inferred, tmp_path / "inferred.pt")
    t = load_translator(tmp_path / "inferred.pt", CPU)
    assert t.info["format"].startswith("lcgan layout") and t.factor == 2


def test_domain_stats_keep_extra_numeric_entries(tmp_path):
    ck = lcgan_checkpoint()
    ck["domain_stats"]["a_cov"] = [[1.0, 0.0, 0.0, 0.0]] * 4  # e.g. what an OT anchor records
    checkpoint.save(ck, tmp_path / "cov.pt")
    assert load_translator(tmp_path / "cov.pt", CPU).domain_stats["a_cov"] == [[1.0, 0.0, 0.0, 0.0]] * 4


def test_generator_settings_follow_the_constructor_signature(tmp_path):
    """Keys are ResnetGenerator's own parameters (so a new one needs no change here); a wrong type is refused."""
    ck = lcgan_checkpoint()
    ck["cfg"]["model"]["generator"]["n_blocks"] = "1"  # a string where an int belongs
    checkpoint.save(ck, tmp_path / "typed.pt")
    with pytest.raises(ValueError, match=r"cfg.model.generator.n_blocks='1' is not a plain value of type <class 'int'>"):
        load_translator(tmp_path / "typed.pt", CPU)
    ck["cfg"]["model"]["generator"]["n_blocks"] = 1
    ck["cfg"]["model"]["generator"]["output"] = "sigmoid"  # the class's own check, with the checkpoint named
    checkpoint.save(ck, tmp_path / "value.pt")
    with pytest.raises(ValueError, match=r"value.pt: its generator \(lcgan\) cannot be rebuilt: output='sigmoid'"):
        load_translator(tmp_path / "value.pt", CPU)


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["evaluate", "translate"])
def test_entry_points_refuse_a_crafted_checkpoint(tmp_path, sentinel, entry):
    ck = lcgan_checkpoint()
    ck["cfg"]["vae"] = {"_target_": "lcgan.vae.ApproxVAE", "upscale": {"_target_": "builtins.len", "obj": evil(sentinel)}}
    path = tmp_path / "last.pt"
    checkpoint.save(ck, path)
    (tmp_path / "A").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "A" / "x.png")
    args = {"evaluate": [f"eval.testA_dir={tmp_path / 'A'}", f"eval.testB_dir={tmp_path / 'A'}"],
            "translate": [f"input={tmp_path / 'A' / 'x.png'}"]}[entry]
    proc = subprocess.run([sys.executable, "-m", f"lcgan.{entry}", f"checkpoint={path}", "device=cpu", "eval=smoke",
                           f"eval.out_dir={tmp_path / 'out'}", *args, f"hydra.run.dir={tmp_path / 'hydra'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)})
    assert proc.returncode != 0
    assert f"checkpoint {path}: cfg.vae.upscale=" in proc.stderr and "vae=sd15" in proc.stderr, proc.stderr[-2000:]
    assert sentinel.read_text() == "keep" and not (tmp_path / "out").exists()


def test_command_line_vae_overrides_a_crafted_checkpoint_vae(tmp_path, sentinel):
    """The fix the error suggests works: a checkpoint with a bad cfg.vae evaluates with vae=... given."""
    ck = put(lcgan_checkpoint(), "cfg.vae", evil(sentinel))
    checkpoint.save(ck, tmp_path / "last.pt")
    t = load_translator(tmp_path / "last.pt", CPU)
    vae, source = build_vae(compose_cfg("eval", ["vae=approx"]).vae, t, CPU)
    assert isinstance(vae, ApproxVAE) and source == "command line (vae=...)" and sentinel.read_text() == "keep"
    assert copy.deepcopy(t.vae_cfg) == evil(sentinel)  # kept as data, for the summary


@pytest.mark.parametrize("kernel, anchor", [(1, "gaussian_ot"), (3, "patch_ot")])
def test_inferred_config_reads_either_anchor_layout(kernel, anchor):
    """Without a generator config the anchor is read off the buffers: the per-channel ``anchor_scale``
    of older checkpoints, or the (C, C, k, k) ``anchor_weight`` of the OT anchors (k > 1: a patch map)."""
    from lcgan.translator import _lcgan_resnet_config

    state = ResnetGenerator(4, ngf=8, n_blocks=1, n_downsampling=1, output="residual", anchor="identity").state_dict()
    legacy = {**state, "anchor_scale": torch.ones(1, 4, 1, 1), "anchor_shift": torch.zeros(1, 4, 1, 1)}
    assert _lcgan_resnet_config(legacy, "tanh") == {"ngf": 8, "n_blocks": 1, "n_downsampling": 1, "output": "residual",
                                                    "anchor": "moment_match"}
    ot = {**state, "anchor_weight": torch.zeros(4, 4, kernel, kernel), "anchor_bias": torch.zeros(4)}
    rc = _lcgan_resnet_config(ot, "tanh")
    assert rc["anchor"] == anchor and rc["output"] == "residual"
    assert rc.get("anchor_kernel", kernel) == kernel  # passed when ResnetGenerator takes it
