"""Which rows a model has seen: the training run behind a registered version, and the row ids it trained,
validated or distilled on (its teacher's too), so the gate scores a candidate only on rows neither model saw."""
from __future__ import annotations

import contextlib
import logging

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from agnews import vocab
from agnews.data import handoff
from agnews.data.sampling import with_row_ids
from agnews.runs import lifecycle

log = logging.getLogger(__name__)


# --- which rows ---------------------------------------------------------------------------------------------

def training_run(version: ModelVersion) -> mlflow.entities.Run | None:
    """The train/distill run behind a registered version (an int8 version's run is its evaluate run), or None
    when it cannot be known (registered by hand from a path, or the run was deleted)."""
    run_id = version.run_id or version.tags.get("train_run_id", "")
    for _ in range(2):  # version -> (evaluate run ->) training run
        if not run_id:
            return None
        try:
            run = mlflow.get_run(run_id)
        except MlflowException:
            return None
        if run.data.tags.get(lifecycle.STEP_TAG) in vocab.TRAINING_STEPS:
            return run
        run_id = run.data.tags.get(vocab.TRAIN_RUN_ID, "")
    return None


def seen_rows(run: mlflow.entities.Run, depth: int = 0, partial: bool = False) -> set[str] | None:
    """Row ids a training run learned from or chose on: its data run's train and validation splits, and for a
    distilled model the unlabelled pool and whatever its teacher saw. None when its data is unknown (`partial`:
    the rows that are known instead)."""
    data_run = run.data.tags.get(vocab.DATA_RUN_ID, "")
    if not data_run:
        return None
    splits = handoff.load_splits(data_run, ("train", "validation"))
    seen = {r for frame in splits.values() for r in with_row_ids(frame)["row_id"]}
    if run.data.tags.get(lifecycle.STEP_TAG) == vocab.DISTILL:
        seen |= set(with_row_ids(handoff.load_unlabeled(data_run))["row_id"])
        teacher = _teacher_run(run)
        teacher_seen = seen_rows(teacher, depth + 1, partial) if teacher is not None and depth < 3 else None
        if teacher_seen is None and not partial:
            return None  # a student carries what its teacher learned: unknown teacher rows, unknown student rows
        seen |= teacher_seen or set()
    return seen


def _teacher_run(run: mlflow.entities.Run) -> mlflow.entities.Run | None:
    tags = run.data.tags
    uri = tags.get(vocab.TEACHER_URI, "")
    if uri.startswith("runs:/"):
        with contextlib.suppress(MlflowException):
            return mlflow.get_run(uri[len("runs:/"):].split("/")[0])
    name, version = tags.get(vocab.TEACHER_REGISTERED_MODEL, ""), tags.get(vocab.TEACHER_VERSION, "")
    if name and version:
        with contextlib.suppress(MlflowException):
            return training_run(mlflow.MlflowClient().get_model_version(name, version))
    return None


def unseen(gate: pd.DataFrame, *seen: set[str]) -> tuple[pd.DataFrame, int]:
    """The gate rows none of the `seen` sets holds; (rows, how many were excluded)."""
    excluded = set().union(*seen)
    keep = ~gate["row_id"].isin(excluded)
    return gate[keep].reset_index(drop=True), int((~keep).sum())
