"""The hand-off of data between runs: prepare_data's splits, task and unlabelled pool logged as run artifacts (with
MLflow dataset inputs and a sha256 per split) and read back by every later step from `data_run_id`."""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.data.dataset_source import DatasetSource
from mlflow.exceptions import MlflowException

from agnews import vocab
from agnews.data import task
from agnews.data.reading import DataOptions
from agnews.data.sampling import SPLITS, SampleSizes, class_counts, sample_splits
from agnews.errors import PipelineError
from agnews.runs import lifecycle, reuse

log = logging.getLogger(__name__)


class RunArtifactSource(DatasetSource):
    """Where a split lives: a run's artifact URI (file:, mlflow-artifacts:, s3: ...). MLflow's own sources do
    not resolve `mlflow-artifacts:` (what a tracking server hands out), so lineage records the URI as is."""

    def __init__(self, uri: str):
        self.uri = uri

    @staticmethod
    def _get_source_type() -> str:
        return "mlflow_run_artifact"

    def load(self, **kwargs) -> str:
        return mlflow.artifacts.download_artifacts(artifact_uri=self.uri, **kwargs)

    @staticmethod
    def _can_resolve(raw_source) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source):
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"uri": self.uri}

    @classmethod
    def from_dict(cls, source_dict: dict) -> "RunArtifactSource":
        return cls(source_dict["uri"])


# --- data hand-off -------------------------------------------------------------------------------

def prepare_splits(data: str, sizes: SampleSizes, seed: int,
                   options: DataOptions = DataOptions()) -> dict[str, pd.DataFrame]:
    """Sample the splits and log them into the active run: parameters as `-P` names them, the task (label set,
    text columns) as data/labels.json, class counts, duplicate counts, the input digest `main` reuses runs by, the
    Parquet files and dataset inputs."""
    return log_sample(data, sizes, seed, options, sample_splits(data, sizes, seed, options))


def log_sample(data: str, sizes: SampleSizes, seed: int, options: DataOptions, sample) -> dict[str, pd.DataFrame]:
    """Log a drawn sample (agnews.data.sampling.Sample) into the active run; its splits."""
    lifecycle.log_params({"data": data, "train_size": sizes.train, "val_size": sizes.validation,
                "test_size": sizes.test, "gate_size": sizes.gate, "seed": seed, **data_option_params(options)})
    log_task(sample.task)
    lifecycle.log_params({f"{split}_count_{safe}": n for split, frame in sample.splits.items()
                for safe, n in zip(sample.task.metric_names, class_counts(frame, sample.task.labels).values())})
    mlflow.set_tag(reuse.INPUT_TAG, reuse.input_digest(data))
    mlflow.log_metrics({"rows_read": sample.rows_read, "duplicates_removed": sample.duplicates_removed,
                        "conflicting_label_rows_removed": sample.conflicts_removed})
    log_splits(sample.splits)
    log_unlabeled(sample.unlabeled)
    return sample.splits


def data_option_params(options: DataOptions) -> dict[str, str]:
    """The reading options as `-P` spells them (labels: the names given, comma-joined; empty when inferred)."""
    labels = ",".join(options.labels)
    if any("," in name for name in options.labels):  # a comma list cannot hold them: the JSON form can
        labels = json.dumps(list(options.labels), ensure_ascii=False)
    return {"text_columns": ",".join(options.text_columns), "label_column": options.label_column,
            "labels": labels, "data_config": options.data_config,
            "train_split": options.train_split, "test_split": options.test_split}


def log_task(the_task: task.Task) -> None:
    """data/labels.json (what later steps read), plus the label set as params and a tag to search runs by."""
    mlflow.log_params({"num_labels": the_task.num_labels})
    mlflow.set_tag(vocab.LABELS, json.dumps(list(the_task.labels), ensure_ascii=False)[:5000])
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.log_artifact(str(task.write(the_task, Path(tmp))), "data")


def load_task(data_run_id: str) -> task.Task:
    """The task a data run (prepare_data, or a self-preparing train) wrote; AG News for runs from before."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=data_run_id, artifact_path=f"data/{task.TASK_FILE}",
                                                       dst_path=tmp)
        except (MlflowException, OSError):
            return task.AG_NEWS  # prepared before labels.json existed: always AG News then
        return task.read(Path(path).parent)


def log_unlabeled(pool: pd.DataFrame | None) -> None:
    """The unlabelled pool (texts no split drew, labels dropped) as data/unlabeled.parquet, for distill."""
    if pool is None:
        return
    mlflow.log_metric("unlabeled_rows", len(pool))
    with tempfile.TemporaryDirectory() as tmp:
        pool.to_parquet(Path(tmp) / "unlabeled.parquet", index=False)
        mlflow.log_artifact(str(Path(tmp) / "unlabeled.parquet"), "data")


def load_unlabeled(data_run_id: str) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=data_run_id, artifact_path="data/unlabeled.parquet",
                                                       dst_path=tmp)
        except (MlflowException, OSError) as exc:
            raise PipelineError(f"run {data_run_id} has no unlabelled pool data/unlabeled.parquet (prepared before "
                                "it existed); run prepare_data again and pass its run id") from exc
        return pd.read_parquet(path)


def log_splits(splits: dict[str, pd.DataFrame]) -> None:
    """Each split as a Parquet artifact under data/ plus a dataset input (name, digest, context), and a sha256 of
    every split's rows as the tag ROWS_TAG (MLflow's dataset digest reads the first 10,000 rows only)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, frame in splits.items():
            path = Path(tmp) / f"{name}.parquet"
            frame.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), "data")
    mlflow.set_tag(ROWS_TAG, json.dumps({name: rows_digest(frame) for name, frame in splits.items()}, sort_keys=True))
    log_lineage(splits, mlflow.get_artifact_uri("data"))


ROWS_TAG = vocab.ROWS_SHA256  # {split: rows_digest}; runs prepared before it: computed from data/<split>.parquet


def rows_digest(frame: pd.DataFrame) -> str:
    """sha256 over the column names and every row's values, in order; the same for a split in memory and read back
    from its Parquet file (missing values all read as one)."""
    digest = hashlib.sha256(json.dumps([str(c) for c in frame.columns], ensure_ascii=False).encode("utf-8"))
    for row in frame.itertuples(index=False, name=None):
        cells = [None if pd.isna(value) else str(value) for value in row]
        digest.update(b"\n" + json.dumps(cells, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def log_lineage(splits: dict[str, pd.DataFrame], data_uri: str) -> None:
    """Record the splits a run used; the source is the Parquet file the prepare run logged."""
    for name, frame in splits.items():
        if frame.empty:  # gate_size=0: nothing to record, and MLflow's digest fails on an empty string column
            continue
        source = RunArtifactSource(f"{data_uri}/{name}.parquet")
        dataset = mlflow.data.from_pandas(frame, source=source, targets="label", name=name)  # the split: train, ...
        mlflow.log_input(dataset, context=name)


def split_digests(run_id: str) -> dict[str, str]:
    """MLflow's digest of each split a run logged as a dataset input (log_lineage): equal digests, equal rows.
    Empty when the run cannot be read or logged none."""
    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        return {}
    return {entry.dataset.name: entry.dataset.digest for entry in run.inputs.dataset_inputs}


def data_uri(run: mlflow.entities.Run) -> str:
    return f"{run.info.artifact_uri}/data"


def load_splits(data_run_id: str, names=SPLITS) -> dict[str, pd.DataFrame]:
    """Download the Parquet splits a prepare_data (or self-preparing train) run logged."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = Path(mlflow.artifacts.download_artifacts(run_id=data_run_id, artifact_path="data", dst_path=tmp))
        except (MlflowException, OSError) as exc:
            raise PipelineError(f"run {data_run_id} has no data/ splits ({type(exc).__name__}); pass the id "
                                "of a finished prepare_data run") from exc
        missing = [name for name in names if not (folder / f"{name}.parquet").is_file()]
        if missing:
            raise PipelineError(f"run {data_run_id} has no {', '.join(missing)} split (prepared before it existed); "
                                "prepare the data again (-P gate_size=500 for the gate) and train on it")
        return {name: pd.read_parquet(folder / f"{name}.parquet") for name in names}
