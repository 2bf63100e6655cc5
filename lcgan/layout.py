"""Where things are: the one place that names the files of a training run's folder and of an evaluation.

    run folder (lcgan.train)              evaluation folder (lcgan.evaluate, lcgan.translate metrics=true)
    model/last.pt, best.pt, epoch_N.pt    summary.json (written last), metrics.csv
    logs/train_log.jsonl, curves.png      gen/{A2B,B2A}/*.png, round_trip/{A2B,B2A}/*.png
    logs/resumes.jsonl, compile.log       fid/{A2B,B2A}_gen_stats.npz
    vis/epoch_N.png                       images/{A2B,B2A}_overview.png, images/{A2B,B2A}/*.png
    error.txt, .lock
    .hydra/config.yaml, overrides.yaml
    crossfit_side/ (train.gain_crossfit: the side run, a run folder of its own)
    eval/[<checkpoint stem>/]summary.json (an evaluation kept inside the run, read by lcgan.report)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TRAIN_ROOT = Path("outputs/train")  # default run folders: outputs/train/<date>/<time>/
EVAL_ROOT = Path("outputs/eval")  # default evaluation folders: outputs/eval/<run>_<checkpoint stem>/
EVAL_SINGLE_ROOT = Path("outputs/eval_single")  # lcgan.translate metrics=true
TRANSLATE_ROOT = Path("outputs/translate")  # lcgan.translate, plain mode
SUMMARY = "summary.json"


@dataclass(frozen=True)
class RunFolder:
    """The files of one training run under ``root``."""

    root: Path

    model = property(lambda self: self.root / "model")
    last = property(lambda self: self.root / "model" / "last.pt")
    best = property(lambda self: self.root / "model" / "best.pt")
    logs = property(lambda self: self.root / "logs")
    log = property(lambda self: self.root / "logs" / "train_log.jsonl")
    curves = property(lambda self: self.root / "logs" / "curves.png")
    resumes = property(lambda self: self.root / "logs" / "resumes.jsonl")  # one line per resume (lcgan.rundir.record_resume)
    compile_log = property(lambda self: self.root / "logs" / "compile.log")  # the background compile's child (lcgan.compile_cache)
    gain = property(lambda self: self.root / "logs" / "gain.json")  # train.gain_scales: each scale's held-out distance (lcgan.train)
    crossfit_side = property(lambda self: self.root / "crossfit_side")  # train.gain_crossfit's side run (lcgan.train.crossfit)
    pictures = property(lambda self: self.root / "vis")
    error = property(lambda self: self.root / "error.txt")
    lock = property(lambda self: self.root / ".lock")  # held by the training that owns the folder (lcgan.rundir.RunLock)
    hydra_config = property(lambda self: self.root / ".hydra" / "config.yaml")
    overrides = property(lambda self: self.root / ".hydra" / "overrides.yaml")

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.model / f"epoch_{epoch:04d}.pt"

    def epoch_checkpoints(self) -> list[Path]:
        """The run's ``model/epoch_<digits>.pt``, oldest first (by number: ``epoch_10000.pt`` after ``epoch_9999.pt``)."""
        found = [p for p in self.model.glob("epoch_*.pt") if p.stem[len("epoch_"):].isdigit()]
        return sorted(found, key=lambda p: int(p.stem[len("epoch_"):]))

    def epoch_picture(self, epoch: int) -> Path:
        return self.pictures / f"epoch_{epoch:04d}.png"

    def eval_summaries(self) -> list[Path]:
        """Evaluations kept in the run, preferred first: ``eval/summary.json``, ``eval/last/``, then any other."""
        found = [self.root / "eval" / SUMMARY, self.root / "eval" / "last" / SUMMARY, *sorted(self.root.glob(f"eval/*/{SUMMARY}"))]
        return list(dict.fromkeys(p for p in found if p.is_file()))

    @staticmethod
    def of_hydra_config(path: Path) -> RunFolder:
        """The run whose ``.hydra/config.yaml`` is ``path``."""
        return RunFolder(path.parent.parent)

    @staticmethod
    def of_checkpoint(path: Path) -> RunFolder | None:
        """The run whose ``model/`` holds the checkpoint ``path``; None for a checkpoint kept elsewhere."""
        run = RunFolder(path.parent.parent)
        return run if path.parent == run.model else None


def run_folders(root: Path) -> list[Path]:
    """Run folders under ``root`` (``root`` itself for a single run): those holding ``.hydra/config.yaml``."""
    return [RunFolder.of_hydra_config(p).root for p in root.glob("**/.hydra/config.yaml")]


@dataclass(frozen=True)
class EvalFolder:
    """The files of one evaluation under ``root``."""

    root: Path

    summary = property(lambda self: self.root / SUMMARY)
    metrics_csv = property(lambda self: self.root / "metrics.csv")
    images = property(lambda self: self.root / "images")
    fid = property(lambda self: self.root / "fid")

    def gen(self, direction: str) -> Path:
        return self.root / "gen" / direction

    def round_trip(self, direction: str) -> Path:
        return self.root / "round_trip" / direction

    def gen_stats(self, direction: str) -> Path:
        return self.fid / f"{direction}_gen_stats.npz"

    def overview(self, direction: str) -> Path:
        return self.images / f"{direction}_overview.png"

    def panels(self, direction: str) -> Path:
        return self.images / direction

    def clear(self) -> None:
        """Remove an earlier evaluation's outputs here, so that they never mix with this one's."""
        for folder in (self.root / "gen", self.root / "round_trip", self.images, self.fid):
            for f in [*folder.rglob("*.png"), *folder.glob("*.npz")] if folder.exists() else []:
                f.unlink()
        for f in (self.summary, self.metrics_csv):
            f.unlink(missing_ok=True)
