"""The one way tests find files in ../shared/ (real weights and photographs).

CI has ../shared beside the checkout, so these tests run there; elsewhere they skip and say why.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("LCGAN_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


def shared_path(relative: str) -> Path:
    """Path of ``../shared/<relative>``, or skip the test naming the missing file."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"needs {path} (the project's ../shared folder; set LCGAN_SHARED to move it)")
    return path


def shared_images(relative: str, limit: int | None = None) -> list[Path]:
    """Sorted image files of a ../shared/data folder."""
    folder = shared_path(relative)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"})
    return files[:limit] if limit else files
