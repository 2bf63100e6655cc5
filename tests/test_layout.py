"""The run folder's file names: :class:`lcgan.layout.RunFolder` is their one owner, and these names are a contract
(old runs, scripts and the README read them)."""
from __future__ import annotations

from pathlib import Path

from lcgan.layout import RunFolder


def test_run_folder_names_the_files_as_before(tmp_path):
    run = RunFolder(tmp_path)
    names = {"last": "model/last.pt", "best": "model/best.pt", "log": "logs/train_log.jsonl", "curves": "logs/curves.png",
             "resumes": "logs/resumes.jsonl", "compile_log": "logs/compile.log", "pictures": "vis", "error": "error.txt",
             "lock": ".lock", "hydra_config": ".hydra/config.yaml", "overrides": ".hydra/overrides.yaml"}
    assert {k: getattr(run, k).relative_to(tmp_path).as_posix() for k in names} == names
    assert run.epoch_checkpoint(3) == tmp_path / "model" / "epoch_0003.pt" and run.epoch_picture(12) == tmp_path / "vis" / "epoch_0012.png"
    run.model.mkdir()
    for name in ("epoch_10000.pt", "epoch_9999.pt", "epoch_0001.pt", "epoch_copy.pt", "last.pt"):
        (run.model / name).write_bytes(b"")
    # oldest first by number (what train.keep_epochs deletes from), never another file
    assert [p.name for p in run.epoch_checkpoints()] == ["epoch_0001.pt", "epoch_9999.pt", "epoch_10000.pt"]


def test_the_run_of_a_checkpoint():
    assert RunFolder.of_checkpoint(Path("/runs/a/model/last.pt")) == RunFolder(Path("/runs/a"))
    assert RunFolder.of_checkpoint(Path("/runs/a/last.pt")) is None  # a checkpoint kept outside a run's model/
