"""MLflow plumbing: step runs that end FINISHED, FAILED or KILLED with nothing half-written, data hand-off, plots."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import mlflow
import pandas as pd
from mlflow.data.dataset_source import DatasetSource
from mlflow.exceptions import MlflowException

from agnews import cache, cli, signals, staging, store, task, vocab
from agnews.data import SPLITS, DataOptions, SampleSizes, class_counts, sample_splits
from agnews.errors import PipelineError
from agnews.experiment import EXPERIMENT

log = logging.getLogger(__name__)

STEP_TAG, MODEL_TAG = vocab.STEP, vocab.MODEL


def setup(level: int = logging.INFO) -> str:
    """Logging, quiet telemetry, a checked store, and one absolute tracking URI that every child inherits."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Expected here: labels are ints, with no missing values to encode.
    warnings.filterwarnings("ignore", message=".*Inferred schema contains integer column.*")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()  # default: <cwd>/mlflow.db, absolute
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    store.check(uri)
    return uri


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


@contextlib.contextmanager
def step_run(step: str, run_name: str | None = None, plots: bool = False) -> Iterator[mlflow.ActiveRun]:
    """The step's run (the one `mlflow run` created, or a new one), ended FINISHED only if the body returns.

    PipelineError (bad input, also raised by argument parsing inside the body): FAILED, one `error:` line.
    SIGINT/SIGTERM: KILLED. Any failure first undoes what the step registered (see `on_failure`), so no
    registry entry outlives a run that did not finish. `plots`: the step writes figures; check the folder first.
    """
    signals.install(parent_death="MLFLOW_RUN_ID" in os.environ)  # launched by `mlflow run`: die with it
    try:
        setup()
    except PipelineError as exc:  # the store is unusable: there is no run to mark
        raise SystemExit(f"error: {exc}") from None
    experiment = None
    if "MLFLOW_RUN_ID" not in os.environ:  # python -m steps.x / torchrun: no run was created for us
        experiment = os.environ.get("MLFLOW_EXPERIMENT_ID") or store.experiment_id(
            os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
    run = mlflow.start_run(run_name=run_name, experiment_id=experiment)
    mlflow.set_tags({STEP_TAG: step, cache.CODE_TAG: cache.code_digest()})  # what `main` reuses runs by
    if run_name:
        set_run_name(run_name)
    try:
        if plots:
            plots_folder()  # before any work: a figure that cannot be published fails the step at the end
        yield run
        _publish()
    except PipelineError as exc:
        _abort(step, "FAILED", str(exc))
        raise SystemExit(f"error: {exc}") from None
    except KeyboardInterrupt as exc:
        reason = f"interrupted by {getattr(exc, 'signal_name', 'SIGINT')}"
        _abort(step, "KILLED", reason)
        raise SystemExit(f"error: {step} {reason}; run {run.info.run_id} ended KILLED, nothing registered; "
                         "re-run the step to start clean") from None
    except BaseException as exc:
        _abort(step, "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _to_publish.clear()
        staging.cleanup()
    _rollbacks.clear()
    mlflow.end_run()


def set_run_name(name: str) -> None:
    mlflow.set_tag("mlflow.runName", name)


_rollbacks: list[tuple[str, Callable[[], None]]] = []


def on_failure(what: str, undo: Callable[[], None]) -> None:
    """Register how to undo something the step created (a model version, a logged model) if it then fails."""
    _rollbacks.append((what, undo))


def _abort(step: str, status: str, reason: str) -> None:
    """Undo, tag and end the run; signals are held off so a second Ctrl-C cannot leave it half-done."""
    with signals.deferred():
        log.error("%s %s: %s", step, status, reason)
        while _rollbacks:
            what, undo = _rollbacks.pop()
            try:
                undo()
                log.info("undid %s", what)
            except Exception as exc:  # keep undoing the rest; say what could not be undone
                log.error("could not undo %s: %s", what, exc)
        try:
            _retrying(lambda: mlflow.set_tag(vocab.ERROR, reason[:5000]))
        finally:
            _retrying(lambda: mlflow.end_run(status))


def _retrying(write: Callable[[], None], attempts: int = 5) -> None:
    """A status write while the parent writes its own (both interrupted at once) can meet a locked SQLite file:
    try again shortly rather than leave the run for `mlflow run` to mark FAILED."""
    for attempt in range(attempts):
        try:
            write()
            return
        except Exception as exc:  # sqlite3.OperationalError arrives wrapped by SQLAlchemy and MLflow
            if attempt == attempts - 1:
                raise
            log.warning("run status write failed (%s); retrying", type(exc).__name__)
            time.sleep(0.5 * (attempt + 1))


def get_run(run_id: str, *steps: str) -> mlflow.entities.Run:
    """A finished run of one of `steps`, or a one-line error saying what to pass."""
    wanted = " or ".join(steps)
    try:
        run = mlflow.get_run(run_id)
    except MlflowException as exc:
        raise PipelineError(f"run {run_id!r} not found in {mlflow.get_tracking_uri()}; pass the id of a "
                            f"{wanted} run from this tracking store") from exc
    step = run.data.tags.get(STEP_TAG)
    if step not in steps or run.info.status != "FINISHED":
        raise PipelineError(f"run {run_id} is a {run.info.status} {step or 'non-agnews'} run; pass the id of "
                            f"a finished {wanted} run")
    return run


def log_params(params: dict) -> None:
    """Log params next to the ones `mlflow run` already logged from -P: a resolved value that differs
    (learning_rate 0 -> the preset's 1e-4, precision auto -> fp32) goes in as `effective_<key>`."""
    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    fresh = {}
    for key, value in params.items():
        if key not in logged:
            fresh[key] = value
        elif not cli.same_value(logged[key], value):
            fresh[f"effective_{key}"] = value
    mlflow.log_params(fresh)


# --- data hand-off -------------------------------------------------------------------------------

def prepare_splits(data: str, sizes: SampleSizes, seed: int,
                   options: DataOptions = DataOptions()) -> dict[str, pd.DataFrame]:
    """Sample the splits and log them into the active run: parameters as `-P` names them, the task (label set,
    text columns) as data/labels.json, class counts, duplicate counts, the input digest `main` reuses runs by, the
    Parquet files and dataset inputs."""
    return log_sample(data, sizes, seed, options, sample_splits(data, sizes, seed, options))


def log_sample(data: str, sizes: SampleSizes, seed: int, options: DataOptions, sample) -> dict[str, pd.DataFrame]:
    """Log a drawn sample (agnews.data.Sample) into the active run; its splits."""
    log_params({"data": data, "train_size": sizes.train, "val_size": sizes.validation, "test_size": sizes.test,
                "gate_size": sizes.gate, "seed": seed, **data_option_params(options)})
    log_task(sample.task)
    log_params({f"{split}_count_{safe}": n for split, frame in sample.splits.items()
                for safe, n in zip(sample.task.metric_names, class_counts(frame, sample.task.labels).values())})
    mlflow.set_tag(cache.INPUT_TAG, cache.input_digest(data))
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


def prepare_parameters(args) -> dict:
    """prepare_data's parameters from a parent's arguments (main, sweep): the sample and how the source is read,
    both part of its reuse key."""
    from agnews import cli

    sample = {k: getattr(args, k) for k in ("data", "train_size", "val_size", "test_size", "gate_size", "seed")}
    return {**sample, **data_option_params(cli.data_options(args))}


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


def plots_folder() -> Path:
    """Where finished figures are copied for people to look at (checked writable): $AGNEWS_PLOTS_DIR, else
    graficas/ in the folder `mlflow run` was started from (not MLflow's checkout of a git URL)."""
    default = Path(os.environ.get("AGNEWS_LAUNCH_DIR", ".")) / "graficas"
    folder = Path(os.environ.get("AGNEWS_PLOTS_DIR", default)).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".agnews-write-test-"):
            pass
    except OSError as exc:
        raise PipelineError(f"plots folder {folder} is not writable ({type(exc).__name__}: {exc.strerror or exc}); "
                            "make it writable or set AGNEWS_PLOTS_DIR to a writable folder") from exc
    return folder


_to_publish: list[Path] = []


def log_plot(path: Path) -> None:
    """Log a figure this run drew in its own staging folder; it reaches the plots folder when the step succeeds."""
    mlflow.log_artifact(str(path), "plots")
    publish_on_success(path)


def publish_on_success(path: Path) -> None:
    """Copy a file this run wrote (in its staging folder) into the plots folder once the step has succeeded:
    graficas/ never shows a figure of a run that failed or was killed."""
    _to_publish.append(path)


def _publish() -> None:
    """Atomically (temporary name, then rename): two runs at once never leave half a PNG for anyone."""
    folder = plots_folder()
    while _to_publish:
        path = _to_publish.pop(0)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.stem}-", suffix=path.suffix, delete=False) as tmp:
            tmp.write(path.read_bytes())
        os.replace(tmp.name, folder / path.name)
