"""A model version's predict runs read back over time for `-e monitor`: which version a `models:/` URI names, the
runs since a point in time (every page), their table, the new rows an alarm advises retraining on, the health
check of one batch against its reference, and the tags `-e monitor` leaves on the version."""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from agnews import values, vocab
from agnews.data import lineage
from agnews.data.sampling import SPLITS
from agnews.errors import PipelineError
from agnews.monitoring import checks, references
from agnews.runs import lifecycle
from agnews.serving import classifiers

log = logging.getLogger(__name__)


# --- over time -----------------------------------------------------------------------------------------------------

def registered(model_uri: str) -> tuple[str, str]:
    """(name, version) the monitor reads; only registered versions carry the predict runs' tags."""
    resolved = classifiers.registered_version(model_uri)
    if resolved is None:
        raise PipelineError(f"-P model_uri={model_uri} is not a registered version; monitor reads the predict runs "
                            "of one: pass models:/<name>@<alias> or models:/<name>/<version>")
    try:
        mlflow.MlflowClient().get_model_version(*resolved)
    except MlflowException as exc:
        raise classifiers._unresolved(model_uri, exc) from exc
    return resolved


def since_ms(value: str, name: str, version: str) -> tuple[int, str]:
    """(start time in ms, how to say it) from `-P since`: empty (all), a date/ISO time (UTC unless it says), or the
    id of a predict run of this model version (its batch and all later ones)."""
    value = value.strip()
    if not value:
        return 0, "all time"
    if references._RUN_ID.match(value):
        try:
            run = mlflow.get_run(value)
        except MlflowException:
            raise PipelineError(f"-P since={value}: no run with that id in {mlflow.get_tracking_uri()}; pass a "
                                "predict run id of this model or a date like 2026-11-30") from None
        tags = run.data.tags
        if tags.get(lifecycle.STEP_TAG) != vocab.PREDICT or (tags.get(vocab.REGISTERED_MODEL),
                                                        tags.get(vocab.MODEL_VERSION)) != (name, version):
            step = tags.get(lifecycle.STEP_TAG, "non-agnews")
            what = (f"a predict run of {tags.get(vocab.REGISTERED_MODEL)} v{tags.get(vocab.MODEL_VERSION)}"
                    if step == vocab.PREDICT else f"a {step} run")
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
    runs = references._search(f"tags.`{vocab.STEP}` = '{vocab.PREDICT}' and "
                   f"tags.`{vocab.REGISTERED_MODEL}` = '{name}' and "
                   f"tags.`{vocab.MODEL_VERSION}` = '{version}' and attributes.status = 'FINISHED'", newest_first=False)
    return [r for r in runs if r.info.start_time >= start_ms and vocab.HEALTH in r.data.tags]


def batch_table(runs: list[mlflow.entities.Run]) -> pd.DataFrame:
    """One row per predict run: when, rows, health and reasons, accuracy, and each statistic's value and flag."""
    rows = []
    for run in runs:
        m, tags = run.data.metrics, run.data.tags
        row = {"run_id": run.info.run_id, "time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
               "input": run.data.params.get("input", ""), "rows": int(m.get("rows", m.get("monitor_rows", 0))),
               "health": tags[vocab.HEALTH], "reasons": tags.get(vocab.HEALTH_REASONS, ""),
               "accuracy": m.get("accuracy", np.nan), "reference_run_id": tags.get(references.REFERENCE_RUN_TAG, ""),
               "reference_match": tags.get(references.REFERENCE_MATCH_TAG, ""),
               "reference_note": tags.get(references.REFERENCE_NOTE_TAG, "")}
        for statistic in checks.STATISTICS:
            row[statistic] = m.get(f"monitor_{statistic}", np.nan)
            row[f"{statistic}_drifted"] = bool(m.get(f"monitor_{statistic}_drifted", 0.0))
        rows.append(row)
    return pd.DataFrame(rows)


def new_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The texts of the batches of an alarm (column `in_alarm`: a run of flagged batches that persisted, see
    agnews.monitoring.alarms' window rule), with their true label where the batch had one (empty: label it before
    training on it): what a retrain adds. An isolated flagged batch adds nothing (at alpha, one in 1/alpha healthy
    batches is flagged). Rows without their text (a serve window logged with log_inputs=false) cannot be retrained
    on: left out, with a warning that says how many."""
    frames = []
    for run_id in table.loc[table["in_alarm"], "run_id"]:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="predictions/predictions.csv",
                                                       dst_path=tmp)
            predictions = pd.read_csv(path, keep_default_na=False)
        label = predictions["true_label_name"] if "true_label_name" in predictions else ""
        rows = pd.DataFrame({"text": predictions["text"].astype(str), "label": label, "predict_run_id": run_id})
        kept = rows[rows["text"].str.strip() != ""]
        if len(kept) < len(rows):
            log.warning("run %s: %d of its rows were logged without their text (a serve window, log_inputs=false); "
                        "they are not in the retrain rows", run_id, len(rows) - len(kept))
        frames.append(kept)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["text", "label", "predict_run_id"])


def check_batch(model_uri: str, model: classifiers.Classifier, seen: checks.Profile, true_labels: np.ndarray | None,
                alpha: float, min_batch: int, low_confidence: float) -> checks.Health:
    """The predict run's health check, logged on it (metrics, tags, monitoring/health.json). A model without a
    traceable reference gets `unknown` with the reason: the predictions still stand."""
    chosen = references.reference_for_predict(model_uri, model)
    reference = chosen.reference
    if reference is not None and tuple(reference.labels) != tuple(model.labels):
        chosen = references.Chosen(None, "", "none",
                                          f"the reference in run {chosen.run_id} is for labels {reference.labels}, "
                                          "not the model's")
    if chosen.reference is None:
        health = checks.Health("unknown", [chosen.note], len(seen.probabilities), alpha=alpha, min_batch=min_batch,
                                reference=chosen.note)
        log.warning("batch not checked: %s", chosen.note)
        references.log_health(health, chosen)
        return health
    health = checks.check(chosen.reference, seen, true_labels, alpha, min_batch, low_confidence)
    health.reference = chosen.note
    (log.warning if chosen.match == "fallback" else log.info)("reference: %s", chosen.note)
    references.log_health(health, chosen)
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
        train = lineage.training_run(mlflow.MlflowClient().get_model_version(name, version))
    except MlflowException:
        pass
    data_run_id = train.data.tags.get(vocab.DATA_RUN_ID, "") if train is not None else ""
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
               + "".join(f" -P {k}={values.whole(v, k)}" for k, v in sizes.items()))
    return Retrain(rows, new.loc[~labelled].reset_index(drop=True), command)


def tag_version(name: str, version: str, latest: pd.Series, alarm: str) -> None:
    """The version's latest health, the predict run that showed it, and the window's alarm (see monitor_report)."""
    client = mlflow.MlflowClient()
    for key, value in {vocab.HEALTH: latest["health"], vocab.HEALTH_RUN_ID: latest["run_id"],
                       vocab.HEALTH_REASONS: str(latest["reasons"])[:5000], vocab.HEALTH_ALARM: alarm[:5000],
                       vocab.HEALTH_CHECKED: pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")}.items():
        client.set_model_version_tag(name, version, key, value)
