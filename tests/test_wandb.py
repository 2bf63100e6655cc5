"""logger=wandb in offline mode: run real jobs, read the offline run files back. Never touches the network."""
from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path

import pytest
from PIL import Image

from lcgan.loggers import WandbLogger, hydra_identity, short_overrides, wandb_mode
from tests.test_sweeps import multirun

pytest.importorskip("wandb")
OFFLINE = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true",
           "WANDB_API_KEY": "", "WANDB_CONSOLE": "off"}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    for k, v in {**OFFLINE, "WANDB_DIR": str(tmp_path / "wandb_dir")}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("WANDB_API_KEY")
    return {**OFFLINE, "WANDB_DIR": str(tmp_path / "wandb_dir")}


def records(path: Path):
    """The protobuf records of a ``run-*.wandb`` file (a LevelDB-style log: 7-byte file header, 32 KiB blocks,
    each chunk ``crc32 (4) | length (2) | type (1: full, 2: first, 3: middle, 4: last)``)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too short for a header: zero padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def media(row: dict, key: str) -> dict | None:
    """A media value of a history row (W&B stores it as nested keys ``key/_type``, ``key/path``, ...)."""
    found = {k[len(key) + 1:]: v for k, v in row.items() if k.startswith(key + "/")}
    return found or None


def read_run(job: Path, timeout: float = 60.0) -> dict:
    """One job's offline run: run record fields, config, history rows, summary and exit code.

    ``run.finish()`` returns before W&B's service has flushed the ``.wandb`` file (seen: an empty summary or a
    torn last record when read at once), so this reads until the exit record, the last one written, is there.
    """
    [run_dir] = list((job / "wandb").glob("offline-run-*"))
    deadline = time.monotonic() + timeout
    while True:
        out = parse_run(run_dir)
        if out is not None and out["exit"] is not None:
            return out
        assert time.monotonic() < deadline, f"{run_dir}: no exit record after {timeout:.0f} s"
        time.sleep(0.1)


def parse_run(run_dir: Path) -> dict | None:
    """The records of ``run_dir`` as read now; None while the file ends in a partly written record."""
    from google.protobuf.message import DecodeError

    out = {"dir": run_dir, "history": [], "summary": {}, "exit": None}
    key = lambda item: item.key or "/".join(item.nested_key)  # noqa: E731
    try:
        for rec in records(next(run_dir.glob("run-*.wandb"))):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                out.update(id=rec.run.run_id, name=rec.run.display_name, group=rec.run.run_group,
                           tags=list(rec.run.tags), config={key(i): json.loads(i.value_json) for i in rec.run.config.update})
            elif kind == "history":
                out["history"].append({key(i): json.loads(i.value_json) for i in rec.history.item})
            elif kind == "summary":
                out["summary"].update({key(i): json.loads(i.value_json) for i in rec.summary.update})
            elif kind == "exit":
                out["exit"] = rec.exit.exit_code
    except (DecodeError, json.JSONDecodeError, StopIteration):
        return None
    return out


@pytest.mark.slow
def test_offline_runs_per_job_with_config_scalars_images(tmp_path, offline):
    sweep = tmp_path / "sweep"
    # job 1 fails inside train() (8x8 latents are not divisible by 2**5), after its W&B run started
    proc = multirun(sweep, "logger=wandb", "logger.mode=offline", "logger.tags=[tiny]", "train.epochs=2", "train.vis_every=1",
                    "model.generator.n_downsampling=1,5", env=offline)
    assert (sweep / "0" / "logs" / "train_log.jsonl").is_file(), proc.stderr[-3000:]
    assert "are not divisible by 32" in (sweep / "1" / "error.txt").read_text()
    ok, failed = read_run(sweep / "0"), read_run(sweep / "1")
    assert ok["id"] != failed["id"] and ok["dir"].parent != failed["dir"].parent, "one run per job, in its folder"
    assert (ok["name"], failed["name"]) == ("n_downsampling=1", "n_downsampling=5")
    assert ok["group"] == failed["group"] == str(sweep) and ok["tags"] == ["tiny"]
    # config: the resolved config of that job
    assert ok["config"]["model"]["generator"]["n_downsampling"] == 1 and failed["config"]["model"]["generator"]["n_downsampling"] == 5
    assert ok["config"]["train"]["epochs"] == 2 and ok["config"]["out_dir"] == str(sweep / "0")
    # scalars every log_every steps (2 steps per epoch, log_every=1) and per epoch; a picture per epoch
    rows = ok["history"]
    steps = [r["_step"] for r in rows if "step/loss_G" in r]
    assert steps == [1, 2, 3, 4]
    epochs = [r for r in rows if "epoch/err" in r]
    assert [r["epoch/epoch"] for r in epochs] == [1, 2] and [r["_step"] for r in epochs] == [2, 4]
    assert {"epoch/loss_cyc", "epoch/lr", "epoch/pairs_per_sec", "epoch/base_mean_shift_G"} <= epochs[0].keys()
    images = [media(r, "vis") for r in rows if media(r, "vis")]
    assert len(images) == 2 and all((ok["dir"] / "files" / im["path"]).is_file() for im in images)
    assert images[0]["_type"] == "image-file" and images[0]["width"] > 0
    log = [json.loads(line) for line in (sweep / "0" / "logs" / "train_log.jsonl").read_text().splitlines()]
    assert ok["summary"]["val_metric"] == pytest.approx(log[-1]["err"]) and ok["summary"]["epoch"] == 2
    assert (ok["exit"], failed["exit"]) == (0, 1), "finish(exit_code) also on failure"
    assert not [r for r in failed["history"] if "epoch/err" in r]


def test_log_eval_table(tmp_path, offline):
    logger = WandbLogger(run_config={"seed": 0}, out_dir=str(tmp_path), mode="offline", job_type="eval", name="eval-test")
    pic = Image.new("RGB", (16, 16), (200, 30, 30))
    logger.log_eval({"fid": 41.5, "clip_score": 0.27},
                    rows=[{"file": "a.png", "lpips": 0.2}, {"file": "b.png", "lpips": 0.4}], images=[(pic, pic), (pic, pic)])
    with pytest.raises(ValueError, match="one tuple per row"):
        logger.log_eval({}, rows=[{"file": "a.png"}], images=[(pic, pic)] * 2)
    logger.finish(0)
    logger.finish(0)  # idempotent
    run = read_run(tmp_path)
    assert run["summary"]["eval/fid"] == 41.5 and run["summary"]["eval/clip_score"] == 0.27
    [table] = [media(r, "eval/samples") for r in run["history"] if media(r, "eval/samples")]
    assert table["_type"] == "table-file" and table["nrows"] == 2
    content = json.loads((run["dir"] / "files" / table["path"]).read_text())
    assert content["columns"] == ["source", "generated", "file", "lpips"]
    assert [row[2:] for row in content["data"]] == [["a.png", 0.2], ["b.png", 0.4]]


def test_mode_never_waits_for_a_login(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("auto") == "disabled" and wandb_mode("offline") == "offline"


def test_names_from_overrides():
    assert hydra_identity() == (None, None)  # outside Hydra: W&B picks its own name, no group
    assert short_overrides(["train.lambda_cyc=5", "data.latent_divisor=10"]) == ["lambda_cyc=5", "latent_divisor=10"]
    assert short_overrides(["seed=1", "data.seed=2", "+train.x=3"]) == ["seed=1", "data.seed=2", "x=3"]


def test_disabled_mode_writes_nothing(tmp_path, offline):
    logger = WandbLogger(run_config={}, out_dir=str(tmp_path), mode="disabled")
    logger.log_scalars({"step/loss_G": 1.0}, step=1)
    logger.log_image("vis", Image.new("RGB", (8, 8)), step=1)
    logger.summary({"val_metric": 0.5})
    logger.finish(0)
    assert not list(tmp_path.glob("wandb/offline-run-*"))
    assert os.environ["WANDB_MODE"] == "offline"


def test_logger_group_instantiates_as_train_does(tiny_cfg, tmp_path, offline):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from lcgan.loggers import NullLogger

    for option, cls in (("none", NullLogger), ("wandb", WandbLogger)):
        cfg = tiny_cfg(f"logger={option}", *(["logger.mode=disabled"] if option == "wandb" else []))
        logger = instantiate(cfg.logger, _partial_=True)(run_config=OmegaConf.to_container(cfg, resolve=True), out_dir=str(tmp_path))
        assert type(logger) is cls  # the partial kept run_config a plain dict, not a config to instantiate
        logger.log_scalars({"step/loss_G": 1.0}, step=1)
        logger.summary({"val_metric": 1.0})
        if option == "wandb":  # the group's keys reached wandb.init, and the run took the run's config and summary
            assert logger.mode == "disabled" and logger.log_every == cfg.logger.log_every
            assert logger.run.config["train"]["epochs"] == cfg.train.epochs and logger.run.summary["val_metric"] == 1.0
        logger.finish(0)
