"""A private folder per process for files a run writes before logging them (figures): two runs at once never
write the same path, and nothing is left behind when the run ends or is killed."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

_folder: Path | None = None


def folder() -> Path:
    global _folder
    if _folder is None or not _folder.is_dir():
        _folder = Path(tempfile.mkdtemp(prefix="agnews-staging-"))
    return _folder


def cleanup() -> None:
    global _folder
    if _folder is not None:
        shutil.rmtree(_folder, ignore_errors=True)
        _folder = None
