"""Step reuse: `main` reuses a FINISHED run of an entry point when its parameters, the project's code and its
inputs are the same. Every step run carries its code digest; prepare_data and train also an input digest."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import mlflow

from agnews import cli
from agnews.data import HUB_PREFIX

log = logging.getLogger(__name__)
CODE_TAG, INPUT_TAG = "agnews.code_digest", "agnews.input_digest"
PROJECT_DIR = Path(__file__).resolve().parents[1]  # in a git-URL run: MLflow's checkout of the commit
_SOURCES = ("MLproject", "agnews/*.py", "steps/*.py")


def code_digest(project: Path = PROJECT_DIR) -> str:
    """sha256 of the project's source (MLproject, agnews/, steps/): a commit is not enough, the tree may be dirty."""
    digest = hashlib.sha256()
    for path in sorted(p for pattern in _SOURCES for p in project.glob(pattern)):
        digest.update(path.relative_to(project).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def input_digest(source: str) -> str:
    """What a step reads besides runs: a local file's bytes, a local folder's file names, sizes and times
    (model weights are large), or the hub id itself (a revision in the cache does not change)."""
    path = Path(source).expanduser()
    if source.startswith(HUB_PREFIX) or not path.exists():
        return hashlib.sha256(source.encode()).hexdigest()[:16]
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
    else:
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = item.stat()
            digest.update(f"{item.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def find(experiment_id: str, step: str, parameters: dict, inputs: str = "") -> str | None:
    """The newest FINISHED run of `step` with these parameters, this code and these inputs, or None."""
    query = (f"tags.`agnews.step` = '{step}' and tags.`{CODE_TAG}` = '{code_digest()}' "
             "and attributes.status = 'FINISHED'")
    for run in mlflow.MlflowClient().search_runs([experiment_id], query, order_by=["attributes.start_time DESC"]):
        if inputs and run.data.tags.get(INPUT_TAG) != inputs:
            continue
        if step == "train" and not run.data.tags.get("agnews.registered_version"):
            continue
        if all(cli.same_value(run.data.params.get(key), value) for key, value in parameters.items()):
            return run.info.run_id
    return None
