"""Step reuse: `main` reuses a FINISHED run of an entry point when its parameters, the project's code and its
inputs are the same. Every step run carries its code digest; prepare_data, train and evaluate also an input key:
a local file's or folder's content (sha256, with a per-user cache of file hashes), a hub id's cached commit, and
for evaluate the machine its cost metrics were measured on."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from agnews import hardware, values, vocab
from agnews.values import HUB_PREFIX

log = logging.getLogger(__name__)
CODE_TAG, INPUT_TAG = vocab.CODE_DIGEST, vocab.INPUT_DIGEST
PROJECT_DIR = Path(__file__).resolve().parents[2]  # in a git-URL run: MLflow's checkout of the commit
_SOURCES = ("MLproject", "agnews/**/*.py", "steps/**/*.py")  # every module, subpackages too (backends/ was missed)
CACHE_DIR_ENV = "AGNEWS_CACHE_DIR"  # where the file-hash cache lives; default $XDG_CACHE_HOME/agnews, ~/.cache/agnews
HASHES_FILE = "file-hashes.json"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
DIGEST_FILE = "CODE_DIGEST"  # the code digest of the source it sits beside, written by launch.kubernetes_project
_DIGEST = re.compile(r"^[0-9a-f]{16}$")


def code_digest(project: Path = PROJECT_DIR) -> str:
    """sha256 of the project's source (MLproject, every .py under agnews/ and steps/, recursively): a commit is not
    enough, the tree may be dirty.
    A copy that carries its digest in DIGEST_FILE reads it: a Kubernetes pod's image holds agnews/ and steps/ with
    deploy/kubernetes' MLproject, so hashing it there would never match the runs `main` looks for."""
    baked = project / DIGEST_FILE
    if baked.is_file() and _DIGEST.match(baked.read_text().strip()):
        return baked.read_text().strip()
    digest = hashlib.sha256()
    for path in sorted(p for pattern in _SOURCES for p in project.glob(pattern)):
        digest.update(path.relative_to(project).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


# --- file content ----------------------------------------------------------------------------------------------

def cache_folder() -> Path:
    """The per-user cache folder: $AGNEWS_CACHE_DIR, else $XDG_CACHE_HOME/agnews, else ~/.cache/agnews."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "agnews"


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks (model weights are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stat_key(stat: os.stat_result) -> list[int]:
    # ctime too: cp -p / shutil.copy2 over an existing file keeps its inode and copies size and mtime, but the
    # kernel sets ctime on every write and no one can set it back.
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


class FileHashes:
    """sha256 of files, remembered per absolute path with its (size, mtime_ns, ctime_ns, inode): a second run on a
    multi-hundred-MB model folder stats it instead of reading it. The cache is a JSON file in cache_folder(),
    replaced atomically; a corrupt, missing or unwritable cache only costs hashing again."""

    def __init__(self, folder: Path | None = None):
        self.path = (folder or cache_folder()) / HASHES_FILE
        self.entries = self._load()
        self.new: dict[str, dict] = {}

    def _load(self) -> dict[str, dict]:
        try:
            entries = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.debug("ignoring the file-hash cache %s: %s", self.path, exc)
            return {}
        if not isinstance(entries, dict):
            log.debug("ignoring the file-hash cache %s: not a JSON object", self.path)
            return {}
        return {k: v for k, v in entries.items() if isinstance(v, dict) and isinstance(v.get("sha256"), str)}

    def sha256(self, file: Path) -> str:
        real = file.resolve()  # a symlinked file (an HF snapshot's blob) is cached once, under its target
        before = _stat_key(real.stat())
        entry = self.entries.get(str(real))
        if entry is not None and entry.get("stat") == before:
            return entry["sha256"]
        sha = file_sha256(real)
        if _stat_key(real.stat()) == before:  # not written to while it was read
            self.entries[str(real)] = self.new[str(real)] = {"stat": before, "sha256": sha}
        return sha

    def save(self) -> None:
        """Merge this run's hashes into the file (another process may have written it meanwhile), drop files that
        are gone, and replace it atomically."""
        if not self.new:
            return
        merged = {**self._load(), **self.new}
        merged = {path: entry for path, entry in merged.items() if os.path.exists(path)}
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=f".{HASHES_FILE}.", suffix=".tmp",
                                             delete=False) as handle:
                tmp = handle.name
                json.dump(merged, handle)
            os.replace(tmp, self.path)
            tmp = None
        except OSError as exc:
            log.debug("cannot write the file-hash cache %s: %s", self.path, exc)
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        self.new = {}


def content_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's relative file paths and their sha256s (symlinked sub-folders are
    not followed, symlinked files are read through)."""
    hashes = FileHashes()
    try:
        if path.is_file():
            return hashes.sha256(path)
        digest = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{item.relative_to(path).as_posix()}\0{hashes.sha256(item)}\0".encode())
        return digest.hexdigest()
    finally:
        hashes.save()


# --- hub ids ---------------------------------------------------------------------------------------------------

def hub_cache() -> Path:
    """huggingface_hub's cache folder (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), where
    transformers and datasets download hub files to."""
    from huggingface_hub import constants  # installed with transformers and datasets

    return Path(constants.HF_HUB_CACHE).expanduser()


def hub_commit(repo_id: str, repo_type: str = "model", revision: str = "main") -> str | None:
    """The commit a hub id's revision resolves to in the local HF cache (refs/<revision>), offline; None when the
    cache does not have it. A 40-hex revision is a commit already."""
    if _COMMIT.match(revision):
        return revision
    refs = hub_cache() / f"{repo_type}s--{repo_id.replace('/', '--')}" / "refs" / revision
    try:
        commit = refs.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return commit if _COMMIT.match(commit) else None


def input_digest(source: str) -> str:
    """What a step reads besides runs: a local file's or folder's content (sha256 of every file, cached per
    (path, size, mtime, ctime, inode)); a hub id (`hf:<dataset>` or a model id) by the commit its `main` resolves
    to in the local HF cache, or by its name alone when the cache does not have it yet (the run that downloads it
    then tags the commit, so the next run re-runs once and is reused from then on)."""
    path = Path(source).expanduser()
    if not source.startswith(HUB_PREFIX) and path.exists():
        return content_digest(path)[:16]
    repo_id, repo_type = (source[len(HUB_PREFIX):], "dataset") if source.startswith(HUB_PREFIX) else (source, "model")
    commit = hub_commit(repo_id, repo_type) if repo_id else None
    return hashlib.sha256(source.encode() if commit is None else f"{source}@{commit}".encode()).hexdigest()[:16]


# --- the machine -----------------------------------------------------------------------------------------------

def machine_description(precision: str) -> str:
    """What evaluate's cost metrics (latency, throughput, memory) depend on: the CPU, the GPU, the cores this
    process may use and the precision `precision` resolves to here (serving resolves `auto` the same way)."""
    cores = os.environ.get("OMP_NUM_THREADS") or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                   else os.cpu_count())
    return (f"cpu {hardware.cpu_description()}; gpu {hardware.gpu_description()}; threads {cores}; "
            f"precision {hardware.resolve_precision(precision)}")


def machine_key(precision: str) -> str:
    """evaluate's input key: a digest of machine_description."""
    return hashlib.sha256(machine_description(precision).encode()).hexdigest()[:16]


# --- finding a run ---------------------------------------------------------------------------------------------

def _still_registered(client: mlflow.MlflowClient, run) -> bool:
    """The train/distill run's registered version still exists and is this run's (a deleted version, or a number
    reused by another run after a deletion, means its model is no longer in the registry as the run says)."""
    tags = run.data.tags
    name = tags.get(vocab.REGISTERED_MODEL) or run.data.params.get("registered_model")
    version = tags.get(vocab.REGISTERED_VERSION)
    if not name or not version:
        return False
    try:
        registered = client.get_model_version(name, version)
    except MlflowException as exc:
        log.info("not reusing run %s: its version %s of %r is gone (%s)", run.info.run_id, version, name,
                 exc.error_code)
        return False
    if registered.run_id != run.info.run_id:
        log.info("not reusing run %s: version %s of %r belongs to run %s", run.info.run_id, version, name,
                 registered.run_id)
        return False
    return True


def find(experiment_id: str, step: str, parameters: dict, inputs: str = "") -> str | None:
    """The newest FINISHED run of `step` with these parameters, this code and these inputs, or None."""
    query = (f"tags.`{vocab.STEP}` = '{step}' and tags.`{CODE_TAG}` = '{code_digest()}' "
             "and attributes.status = 'FINISHED'")
    client = mlflow.MlflowClient()
    for run in client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"]):
        if inputs and run.data.tags.get(INPUT_TAG) != inputs:
            continue
        if not all(values.same_value(run.data.params.get(key), value) for key, value in parameters.items()):
            continue
        if step in vocab.TRAINING_STEPS and not _still_registered(client, run):
            continue
        return run.info.run_id
    return None
