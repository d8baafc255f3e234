"""Monitoring on MLflow runs: where a model's reference lives (recorded by evaluate, or by the first predict run that
met the model without one), each predict run's health, and reading a model version's predict runs back over time
for `-e monitor`."""
from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from agnews import cli, gate, monitor, serving, tracking
from agnews.data import SPLITS
from agnews.errors import PipelineError

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT = "monitoring/reference.json"
HEALTH_ARTIFACT = "monitoring/health.json"
REFERENCE_RUN_TAG = "agnews.reference_run_id"  # on a predict run: where the reference it was tested against lives
COMPUTED_FOR_TAG = "agnews.reference_for"  # on a predict run that computed the reference of a training run
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def _experiments() -> list[str]:
    return [e.experiment_id for e in mlflow.MlflowClient().search_experiments()]


def _search(filter_string: str, newest_first: bool = True) -> list[mlflow.entities.Run]:
    order = "DESC" if newest_first else "ASC"
    return mlflow.MlflowClient().search_runs(_experiments(), filter_string, order_by=[f"attributes.start_time {order}"],
                                             max_results=1000)


# --- the reference -------------------------------------------------------------------------------------------------

def log_reference(reference: monitor.Reference) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(REFERENCE_ARTIFACT).name
        path.write_text(json.dumps(reference.to_dict()))
        mlflow.log_artifact(str(path), str(Path(REFERENCE_ARTIFACT).parent))


def load_reference(run_id: str) -> monitor.Reference | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp)
        except (MlflowException, OSError):
            return None
        return monitor.Reference.from_dict(json.loads(Path(path).read_text()))


def record_reference(model: serving.Classifier, splits: dict[str, pd.DataFrame], source: str) -> monitor.Reference:
    """The reference of a model on held-out rows (validation + test), logged on the active run."""
    rows = pd.concat([splits["validation"], splits["test"]], ignore_index=True)
    seen = monitor.profile(model, rows["text"].tolist())
    test_rows = len(splits["test"])
    reference = monitor.build_reference(seen, model.labels, splits["test"]["label"].to_numpy(),
                                        seen.predicted[-test_rows:], source=source, variant=model.variant)
    log_reference(reference)
    log.info("monitoring reference recorded on %d rows (%s)", reference.rows, source)
    return reference


def training_run_of(model_uri: str) -> mlflow.entities.Run | None:
    """The train/distill run behind a registered version, a runs:/ URI or a logged model; None when unknown."""
    client = mlflow.MlflowClient()
    try:
        resolved = serving.registered_version(model_uri)
        if resolved is not None:
            return gate.training_run(client.get_model_version(*resolved))
        if model_uri.startswith("runs:/"):
            run_id = model_uri[len("runs:/"):].split("/")[0]
        elif model_uri.startswith("models:/m-"):
            run_id = mlflow.get_logged_model(model_uri[len("models:/"):].split("/")[0]).source_run_id or ""
        else:
            return None
        run = mlflow.get_run(run_id)
        if run.data.tags.get(tracking.STEP_TAG) == "evaluate":
            run = mlflow.get_run(run.data.tags["agnews.train_run_id"])
        return run
    except (MlflowException, PipelineError, KeyError):
        return None


def find_reference(train_run_id: str) -> tuple[monitor.Reference, str] | None:
    """The newest finished evaluate run of the training run that holds a reference, else the first predict run that
    computed one for it: (reference, run id)."""
    evaluated = _search(f"tags.`agnews.train_run_id` = '{train_run_id}' and tags.`agnews.step` = 'evaluate' "
                        "and attributes.status = 'FINISHED'")
    computed = _search(f"tags.`{COMPUTED_FOR_TAG}` = '{train_run_id}' and attributes.status = 'FINISHED'",
                       newest_first=False)
    for run in [*evaluated, *computed]:
        reference = load_reference(run.info.run_id)
        if reference is not None:
            return reference, run.info.run_id
    return None


def reference_for_predict(model_uri: str, model: serving.Classifier) -> tuple[monitor.Reference | None, str]:
    """(reference, where it lives) for a predict run; computed and logged on this run when the model has none
    yet (its data run's validation + test rows). (None, why) when the model cannot be traced to a data run."""
    train_run = training_run_of(model_uri)
    if train_run is None:
        return None, f"{model_uri} cannot be traced to a train run of this store (registered by hand?): no reference"
    found = find_reference(train_run.info.run_id)
    if found is not None:
        return found
    data_run_id = train_run.data.tags.get("agnews.data_run_id", "")
    try:
        splits = tracking.load_splits(data_run_id, ("validation", "test")) if data_run_id else None
    except PipelineError as exc:
        return None, f"no reference and none can be computed: {exc}"
    if splits is None:
        return None, f"train run {train_run.info.run_id} names no data run: no reference"
    log.info("model of train run %s has no monitoring reference yet: computing it on data run %s",
             train_run.info.run_id, data_run_id)
    record_reference(model, splits, f"validation+test rows of data run {data_run_id} (computed by predict run "
                                    f"{mlflow.active_run().info.run_id})")
    mlflow.set_tag(COMPUTED_FOR_TAG, train_run.info.run_id)
    return load_reference(mlflow.active_run().info.run_id), mlflow.active_run().info.run_id


def log_health(health: monitor.Health, reference_run_id: str) -> None:
    mlflow.log_metrics(health.metrics())
    mlflow.set_tags({**health.tags(), REFERENCE_RUN_TAG: reference_run_id})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(HEALTH_ARTIFACT).name
        path.write_text(json.dumps(health.to_dict(), default=float))
        mlflow.log_artifact(str(path), str(Path(HEALTH_ARTIFACT).parent))


# --- over time -----------------------------------------------------------------------------------------------------

def registered(model_uri: str) -> tuple[str, str]:
    """(name, version) the monitor reads; only registered versions carry the predict runs' tags."""
    resolved = serving.registered_version(model_uri)
    if resolved is None:
        raise PipelineError(f"-P model_uri={model_uri} is not a registered version; monitor reads the predict runs "
                            "of one: pass models:/<name>@<alias> or models:/<name>/<version>")
    try:
        mlflow.MlflowClient().get_model_version(*resolved)
    except MlflowException as exc:
        raise serving._unresolved(model_uri, exc) from exc
    return resolved


def since_ms(value: str, name: str, version: str) -> tuple[int, str]:
    """(start time in ms, how to say it) from `-P since`: empty (all), a date/ISO time (UTC unless it says), or the
    id of a predict run of this model version (its batch and all later ones)."""
    value = value.strip()
    if not value:
        return 0, "all time"
    if _RUN_ID.match(value):
        try:
            run = mlflow.get_run(value)
        except MlflowException:
            raise PipelineError(f"-P since={value}: no run with that id in {mlflow.get_tracking_uri()}; pass a "
                                "predict run id of this model or a date like 2026-11-30") from None
        tags = run.data.tags
        if tags.get(tracking.STEP_TAG) != "predict" or (tags.get("agnews.registered_model"),
                                                        tags.get("agnews.model_version")) != (name, version):
            step = tags.get(tracking.STEP_TAG, "non-agnews")
            what = (f"a predict run of {tags.get('agnews.registered_model')} v{tags.get('agnews.model_version')}"
                    if step == "predict" else f"a {step} run")
            raise PipelineError(f"-P since={value} is {what}, not a predict run of {name} v{version}; pass one of its "
                                "predict runs or a date like 2026-11-30")
        return run.info.start_time, f"predict run {value}"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise PipelineError(f"-P since={value} is neither a date (2026-11-30, 2026-11-30T18:00) nor a run id (32 hex "
                            "characters); pass one of those, or leave it empty for all predict runs") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000), f"since {moment.isoformat()}"


def predict_runs(name: str, version: str, start_ms: int) -> list[mlflow.entities.Run]:
    """Finished predict runs of this version from `start_ms`, oldest first. Runs of other models or versions are
    not read (they are another model's health)."""
    runs = _search(f"tags.`agnews.step` = 'predict' and tags.`agnews.registered_model` = '{name}' and "
                   f"tags.`agnews.model_version` = '{version}' and attributes.status = 'FINISHED'", newest_first=False)
    return [r for r in runs if r.info.start_time >= start_ms and "agnews.health" in r.data.tags]


def batch_table(runs: list[mlflow.entities.Run]) -> pd.DataFrame:
    """One row per predict run: when, rows, health and reasons, accuracy, and each statistic's value and flag."""
    rows = []
    for run in runs:
        m, tags = run.data.metrics, run.data.tags
        row = {"run_id": run.info.run_id, "time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
               "input": run.data.params.get("input", ""), "rows": int(m.get("rows", m.get("monitor_rows", 0))),
               "health": tags["agnews.health"], "reasons": tags.get("agnews.health_reasons", ""),
               "accuracy": m.get("accuracy", np.nan), "reference_run_id": tags.get(REFERENCE_RUN_TAG, "")}
        for statistic in monitor.STATISTICS:
            row[statistic] = m.get(f"monitor_{statistic}", np.nan)
            row[f"{statistic}_drifted"] = bool(m.get(f"monitor_{statistic}_drifted", 0.0))
        rows.append(row)
    return pd.DataFrame(rows)


def new_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The texts of the batches that drifted or degraded, with their true label where the batch had one (empty:
    label it before training on it): what a retrain adds."""
    frames = []
    for run_id in table.loc[table["health"].isin(["drift", "degraded"]), "run_id"]:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="predictions/predictions.csv",
                                                       dst_path=tmp)
            predictions = pd.read_csv(path, keep_default_na=False)
        label = predictions["true_label_name"] if "true_label_name" in predictions else ""
        frames.append(pd.DataFrame({"text": predictions["text"], "label": label, "predict_run_id": run_id}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["text", "label", "predict_run_id"])


def check_batch(model_uri: str, model: serving.Classifier, seen: monitor.Profile, true_labels: np.ndarray | None,
                alpha: float, min_batch: int, low_confidence: float) -> monitor.Health:
    """The predict run's health check, logged on it (metrics, tags, monitoring/health.json). A model without a
    traceable reference gets `unknown` with the reason: the predictions still stand."""
    reference, where = reference_for_predict(model_uri, model)
    if reference is not None and tuple(reference.labels) != tuple(model.labels):
        reference, where = None, f"the reference in run {where} is for labels {reference.labels}, not the model's"
    if reference is None:
        health = monitor.Health("unknown", [where], len(seen.probabilities), alpha=alpha, min_batch=min_batch)
        log.warning("batch not checked: %s", where)
        log_health(health, "")
        return health
    health = monitor.check(reference, seen, true_labels, alpha, min_batch, low_confidence)
    log_health(health, where)
    log.info("health %s%s", health.status, f": {'; '.join(health.reasons)}" if health.reasons else "")
    return health


@dataclass
class Retrain:
    """What a retrain needs: the model's labelled rows plus the new labelled ones, the new rows still to label, and
    the command that retrains on them."""

    rows: pd.DataFrame  # text, label (class name): the model's data run splits + the labelled new rows
    to_label: pd.DataFrame  # text, label (empty), predict_run_id: unlabelled rows of drifted batches
    command: str


def retrain(name: str, version: str, new: pd.DataFrame, monitor_run_id: str, labels: list[str]) -> Retrain | None:
    """None without new rows. The rows keep the model's own labelled data (its data run's splits) so the retrained
    model keeps what it knew; `main` splits them again (the same validation/test/gate sizes, the rest trains) and its
    gate promotes the result only if it beats the champion on gate rows neither saw."""
    if new.empty:
        return None
    train = None
    try:
        train = gate.training_run(mlflow.MlflowClient().get_model_version(name, version))
    except MlflowException:
        pass
    data_run_id = train.data.tags.get("agnews.data_run_id", "") if train is not None else ""
    old, sizes = pd.DataFrame(columns=["text", "label"]), {}
    if data_run_id:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(mlflow.artifacts.download_artifacts(run_id=data_run_id, artifact_path="data", dst_path=tmp))
            splits = [pd.read_parquet(folder / f"{s}.parquet") for s in SPLITS if (folder / f"{s}.parquet").is_file()]
        old = pd.concat(splits, ignore_index=True)[["text", "label"]]
        old["label"] = [labels[int(i)] for i in old["label"]]
        params = mlflow.get_run(data_run_id).data.params
        sizes = {k: params[k] for k in ("val_size", "test_size", "gate_size") if k in params}
    labelled = new["label"].astype(str) != ""
    rows = pd.concat([old, new.loc[labelled, ["text", "label"]]], ignore_index=True).drop_duplicates("text")
    model = train.data.params.get("model", "tinybert") if train is not None else "tinybert"
    label_list = json.dumps(labels) if any("," in label for label in labels) else ",".join(labels)
    command = (f"mlflow artifacts download --run-id {monitor_run_id} --artifact-path monitoring/retrain_rows.csv "
               f"--dst-path . && mlflow run . --env-manager local -e main -P data=retrain_rows.csv -P models={model} "
               f"-P registered_model={name} -P labels='{label_list}' -P train_size=0"
               + "".join(f" -P {k}={cli.whole(v, k)}" for k, v in sizes.items()))
    return Retrain(rows, new.loc[~labelled].reset_index(drop=True), command)


def tag_version(name: str, version: str, latest: pd.Series) -> None:
    """The version's latest health, and the predict run that showed it."""
    client = mlflow.MlflowClient()
    for key, value in {"agnews.health": latest["health"], "agnews.health_run_id": latest["run_id"],
                       "agnews.health_reasons": str(latest["reasons"])[:5000],
                       "agnews.health_checked": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")}.items():
        client.set_model_version_tag(name, version, key, value)
