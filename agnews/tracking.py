"""MLflow plumbing: the store, step runs that fail cleanly, data hand-off between runs, model registry."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import mlflow
import pandas as pd
from mlflow.data.dataset_source import DatasetSource
from mlflow.exceptions import MlflowException

from agnews.data import SPLITS
from agnews.errors import PipelineError
from agnews.experiment import EXPERIMENT, experiment_id

log = logging.getLogger(__name__)

STEP_TAG, MODEL_TAG = "agnews.step", "agnews.model"
CHAMPION = "champion"


def setup(level: int = logging.INFO) -> str:
    """Logging, quiet telemetry, and one absolute tracking URI that every child process inherits."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Expected here: labels are ints, with no missing values to encode.
    warnings.filterwarnings("ignore", message=".*Inferred schema contains integer column.*")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()  # default: <cwd>/mlflow.db, absolute
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
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
def step_run(step: str, run_name: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """The step's run (the one `mlflow run` created, or a new one); a PipelineError ends it FAILED in one line."""
    experiment = None
    if "MLFLOW_RUN_ID" not in os.environ:  # python -m steps.x / torchrun: no run was created for us
        experiment = os.environ.get("MLFLOW_EXPERIMENT_ID") or experiment_id(
            os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
    run = mlflow.start_run(run_name=run_name, experiment_id=experiment)
    mlflow.set_tag(STEP_TAG, step)
    if run_name:
        mlflow.set_tag("mlflow.runName", run_name)
    try:
        yield run
    except PipelineError as exc:
        log.error("%s failed: %s", step, exc)
        mlflow.set_tag("agnews.error", str(exc)[:5000])
        mlflow.end_run("FAILED")
        raise SystemExit(f"error: {exc}") from None
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run()


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
        elif not _same(logged[key], value):
            fresh[f"effective_{key}"] = value
    mlflow.log_params(fresh)


def _same(logged: str, value) -> bool:
    try:
        return float(logged) == float(value)
    except (TypeError, ValueError):
        return logged == str(value)


# --- data hand-off -------------------------------------------------------------------------------

def log_splits(splits: dict[str, pd.DataFrame]) -> None:
    """Each split as a Parquet artifact under data/ plus a dataset input (name, digest, context)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, frame in splits.items():
            path = Path(tmp) / f"{name}.parquet"
            frame.to_parquet(path, index=False)
            mlflow.log_artifact(str(path), "data")
    log_lineage(splits, mlflow.get_artifact_uri("data"))


def log_lineage(splits: dict[str, pd.DataFrame], data_uri: str) -> None:
    """Record the splits a run used; the source is the Parquet file the prepare run logged."""
    for name, frame in splits.items():
        source = RunArtifactSource(f"{data_uri}/{name}.parquet")
        dataset = mlflow.data.from_pandas(frame, source=source, targets="label", name=f"ag_news-{name}")
        mlflow.log_input(dataset, context=name)


def data_uri(run: mlflow.entities.Run) -> str:
    return f"{run.info.artifact_uri}/data"


def load_splits(data_run_id: str, names=SPLITS) -> dict[str, pd.DataFrame]:
    """Download the Parquet splits a prepare_data (or self-preparing train) run logged."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = mlflow.artifacts.download_artifacts(run_id=data_run_id, artifact_path="data", dst_path=tmp)
            return {name: pd.read_parquet(Path(folder) / f"{name}.parquet") for name in names}
        except (MlflowException, OSError) as exc:
            raise PipelineError(f"run {data_run_id} has no data/ splits ({type(exc).__name__}); pass the id "
                                "of a finished prepare_data run") from exc


def log_plot(path: Path) -> None:
    mlflow.log_artifact(str(path), "plots")


# --- registry ------------------------------------------------------------------------------------

def set_champion(registered_model: str, version: str, reason: dict[str, str]) -> None:
    """Point the `champion` alias at `version` (stages are deprecated) and record why on the version."""
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(registered_model, CHAMPION, version)
    for key, value in reason.items():
        client.set_model_version_tag(registered_model, version, key, value)


def log_and_register(pipeline, registered_model: str, tags: dict[str, str], max_length: int):
    """Log a text-classification pipeline servable by `mlflow models serve`; register it as a new version."""
    import importlib.metadata as md

    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(inputs=Schema([ColSpec("string")]),
                               outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]))
    # Explicit requirements: MLflow's inferred ones pull torchvision, which does not import beside this torch.
    requirements = [f"{pkg}=={md.version(pkg).split('+')[0]}"
                    for pkg in ("mlflow", "torch", "transformers", "tokenizers", "safetensors")]
    info = mlflow.transformers.log_model(
        transformers_model=pipeline, name="model", task="text-classification", signature=signature,
        input_example=["Stocks rallied after the central bank held interest rates steady."],
        pip_requirements=requirements, registered_model_name=registered_model,
        model_config={"truncation": True, "max_length": max_length},
    )
    client = mlflow.MlflowClient()
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(registered_model, version, key, value)
    return info.model_uri, version
