"""Checkpoints and append-only logs that survive crashes, full disks and untrusted senders.

- Writes are atomic: a temporary file in the same folder, fsync, then ``os.replace``; a crash at
  any moment leaves the previous file whole.
- Checkpoints hold only tensors and plain containers (config as a plain dict, RNG states as
  tensors), so they load with ``torch.load(weights_only=True)``, which never runs code.
"""
from __future__ import annotations

import errno
import io
import json
import os
import random
import secrets
import shutil
import zipfile
from pathlib import Path

import torch


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    # not mkstemp: its files are 0600, and checkpoints are shared; os.open applies the umask as open() does
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:  # errno is kept (ENOSPC, EROFS, ...) so callers can tell a full disk from a missing folder
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}; check that the folder exists, is writable and has free space") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}; the previous file (if any) is intact. "
                          "Free disk space or choose another output folder (hydra.run.dir=...)") from e
        raise


def remove_stale_tmp(folder: str | Path) -> list[Path]:
    """Delete the temporary files of writes that a SIGKILL cut short (each as large as a checkpoint).
    Call it when a run starts, before it writes: another process writing into the same folder would lose its file."""
    stale = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def check_writable(folder: str | Path, need_bytes: int = 0) -> None:
    """Fail before a long epoch, not after it: create ``folder``, write, fsync and rename a probe
    file there, and check that ``need_bytes`` (e.g. two checkpoints) are free."""
    folder = Path(folder)
    probe = folder / ".write_probe"
    atomic_write_bytes(probe, b"ok")
    probe.unlink()
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise OSError(errno.ENOSPC, f"cannot write {folder}: {free / 2**20:.0f} MiB free but the checkpoints need "
                      f"{need_bytes / 2**20:.0f} MiB; free disk space or choose another output folder (hydra.run.dir=...)")


def save(obj: dict, *paths: str | Path) -> None:
    """Serialise once, in memory, so a failing write never leaves a half file behind; then write
    the same bytes to every path (e.g. ``best.pt`` and ``last.pt``)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    for path in paths:
        atomic_write_bytes(path, buf.getvalue())


def keep_newest(files: list[Path], keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` of ``files`` (oldest first: a run's
    :meth:`lcgan.layout.RunFolder.epoch_checkpoints`; ``keep=0``: none); returns the deleted."""
    old = files[:-keep] if keep > 0 else []
    for p in old:
        p.unlink(missing_ok=True)
    return old


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; anything that would run code is refused, and so
    is storage that its tensors do not show (:func:`check_storage`)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {path} is a folder; give the .pt file, e.g. {path / 'model' / 'last.pt'}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (or is not a regular file)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(
            f"checkpoint {path} could not be loaded as plain tensors ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
            "it is truncated, not an lcgan checkpoint, or holds Python objects that lcgan refuses to unpickle"
        ) from None
    check_storage(obj, f"checkpoint {path}")
    return obj


def stored_bytes(path: str | Path) -> int:
    """What ``torch.load`` would allocate for the tensors of a zip-format file, read from its
    directory without loading: the file size says nothing when entries are deflate-compressed.
    0 for other formats (``torch.load`` then reads them as they are)."""
    try:
        with zipfile.ZipFile(path) as z:
            return sum(i.file_size for i in z.infolist() if "/data/" in i.filename)
    except (zipfile.BadZipFile, OSError):
        return 0


def check_storage(obj, what: str) -> None:
    """Refuse a loaded file whose tensors sit on far more storage than they show: a small tensor
    saved as a view of a 256 MiB storage (which deflate squeezes into a 256 KB file) takes the
    whole storage into memory. Saved views share storages, so distinct storages are counted once."""
    storages: dict[int, int] = {}
    shown = 0

    def walk(o) -> None:
        nonlocal shown
        if isinstance(o, torch.Tensor):
            st = o.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
            shown += o.numel() * o.element_size()
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)

    walk(obj)
    held = sum(storages.values())
    if held > 2 * shown + 2**20:
        raise ValueError(f"{what} holds {held / 2**20:.1f} MiB of tensor storage behind tensors of {shown / 2**20:.3f} MiB "
                         "(views of a larger storage, or a crafted file); refused. Save clones of the tensors instead")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    # torch wants CPU byte tensors, but a checkpoint loaded with map_location="cuda" holds them on the GPU
    torch.set_rng_state(state["torch"].cpu())
    version, _, gauss = random.getstate()
    random.setstate((version, tuple(state["python"]), gauss))
    if "cuda" in state and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):  # a machine with fewer GPUs sets those it has
            torch.cuda.set_rng_state(s.cpu(), i)


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one JSON line and fsync it; earlier lines are never rewritten."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OSError(e.errno, f"cannot append to {path}: {e.strerror or e}") from e


class JsonlLog:
    """``logs/train_log.jsonl``: one line per epoch, appended and fsynced, never rewritten.

    Keyed by ``epoch``: a line for an epoch already in the file is not written again, so a run
    resumed from a checkpoint older than the log does not duplicate epochs.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.epochs = {row.get("epoch") for row in self.read()}
        if self.path.exists() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
            with open(self.path, "a") as f:  # end a line cut by a crash, so the next one starts clean
                f.write("\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash mid-write: ignore it
                continue
        return rows

    def append(self, row: dict) -> None:
        if row.get("epoch") in self.epochs:
            return
        append_jsonl(self.path, row)
        self.epochs.add(row.get("epoch"))
