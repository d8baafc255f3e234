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

from agnews import cli, gate, monitor, serving, tracking, vocab
from agnews.data import SPLITS
from agnews.errors import PipelineError

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT = "monitoring/reference.json"
HEALTH_ARTIFACT = "monitoring/health.json"
REFERENCE_RUN_TAG = vocab.REFERENCE_RUN_ID  # on a predict run: where the reference it was tested against lives
REFERENCE_MATCH_TAG = vocab.REFERENCE_MATCH  # on a predict run: exact, computed or fallback
REFERENCE_NOTE_TAG = vocab.REFERENCE_NOTE  # on a predict run: which reference, and why when not an exact one
COMPUTED_FOR_TAG = vocab.REFERENCE_FOR  # on a predict run that computed the reference of a training run
# on a run holding a reference: the rows it profiled, and as what (evaluate's older runs: its own tags and params)
DATA_TAG, VARIANT_TAG, PRECISION_TAG = (vocab.REFERENCE_DATA_RUN_ID, vocab.REFERENCE_VARIANT,
                                        vocab.REFERENCE_PRECISION)
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


SEARCH_PAGE = 1000  # runs per search request (MLflow's cap for one page); every page is read


def _pages(fetch) -> list:
    """Every item of a paged MLflow search: `fetch(token)` returns a PagedList; read until it has no next token."""
    items, token = [], None
    while True:
        page = fetch(token)
        items.extend(page)
        token = getattr(page, "token", None)
        if not token:
            return items


def _experiments() -> list[str]:
    client = mlflow.MlflowClient()
    return [e.experiment_id for e in _pages(lambda token: client.search_experiments(max_results=SEARCH_PAGE,
                                                                                    page_token=token))]


def _search(filter_string: str, newest_first: bool = True) -> list[mlflow.entities.Run]:
    """All runs matching the filter, every page of them (a store with more than one page of predict runs must not
    look as if its newest batch were the last one of the first page)."""
    client, experiments = mlflow.MlflowClient(), _experiments()
    order = "DESC" if newest_first else "ASC"
    return _pages(lambda token: client.search_runs(experiments, filter_string,
                                                   order_by=[f"attributes.start_time {order}"],
                                                   max_results=SEARCH_PAGE, page_token=token))


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


def record_reference(model: serving.Classifier, splits: dict[str, pd.DataFrame], source: str,
                     data_run_id: str = "") -> monitor.Reference:
    """The reference of a model on held-out rows (validation + test), logged on the active run, which is tagged
    with what saw the rows (variant, precision) and, when given, the data run they come from."""
    rows = pd.concat([splits["validation"], splits["test"]], ignore_index=True)
    seen = monitor.profile(model, rows["text"].tolist())
    test_rows = len(splits["test"])
    reference = monitor.build_reference(seen, model.labels, splits["test"]["label"].to_numpy(),
                                        seen.predicted[-test_rows:], source=source, variant=model.variant,
                                        precision=_precision(model))
    log_reference(reference)
    mlflow.set_tags({VARIANT_TAG: reference.variant, PRECISION_TAG: reference.precision,
                     **({DATA_TAG: data_run_id} if data_run_id else {})})
    log.info("monitoring reference recorded on %d rows (%s; %s)", reference.rows, source, _as(reference.variant,
                                                                                             reference.precision))
    return reference


def _precision(model: serving.Classifier) -> str:
    """fp32 or bf16 for the transformers pipeline; "" for the int8 variant (its precision is its variant)."""
    return "" if model.variant == "int8" else str(getattr(model, "precision", ""))


def _as(variant: str, precision: str) -> str:
    """How a reference or a served model saw its rows, in words: "int8 ONNX", "pipeline in bf16"."""
    if variant == "int8":
        return "int8 ONNX"
    return f"pipeline in {precision}" if precision else "pipeline (precision not recorded)"


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
        if run.data.tags.get(tracking.STEP_TAG) == vocab.EVALUATE:
            run = mlflow.get_run(run.data.tags[vocab.TRAIN_RUN_ID])
        return run
    except (MlflowException, PipelineError, KeyError):
        return None


@dataclass(frozen=True)
class Holder:
    """A run holding a reference, and what it profiled: which data run's rows, seen as which variant/precision."""

    run_id: str
    data_run_id: str
    variant: str
    precision: str

    def describe(self) -> str:
        return f"reference of run {self.run_id} (data run {self.data_run_id}, {_as(self.variant, self.precision)})"


@dataclass(frozen=True)
class Chosen:
    """The reference a predict run is tested against: where it lives, exact/computed/fallback, and the note."""

    reference: monitor.Reference | None
    run_id: str
    match: str
    note: str


def _holder(run: mlflow.entities.Run, train_run: mlflow.entities.Run) -> Holder:
    """What a run's reference profiled. Runs from before the tags existed: evaluate's own data run tag and
    serving_precision param (it always profiles the fp32 pipeline); a predict run's model variant and its train
    run's data run (that is where it computed it)."""
    tags, evaluate = run.data.tags, run.data.tags.get(tracking.STEP_TAG) == vocab.EVALUATE
    data = tags.get(DATA_TAG) or (tags.get(vocab.DATA_RUN_ID, "") if evaluate
                                  else train_run.data.tags.get(vocab.DATA_RUN_ID, ""))
    variant = tags.get(VARIANT_TAG) or ("fp32" if evaluate else tags.get(vocab.MODEL_VARIANT, ""))
    precision = tags.get(PRECISION_TAG) or (run.data.params.get("serving_precision", "") if evaluate else "")
    return Holder(run.info.run_id, data, variant, precision)


def reference_holders(train_run: mlflow.entities.Run) -> list[Holder]:
    """Finished runs holding a reference of the training run's model, in order of preference within a kind: its
    evaluate runs newest first, then the predict runs that computed one, oldest first (later ones share it)."""
    train_run_id = train_run.info.run_id
    evaluated = _search(f"tags.`{vocab.TRAIN_RUN_ID}` = '{train_run_id}' and tags.`{vocab.STEP}` = '{vocab.EVALUATE}' "
                        "and attributes.status = 'FINISHED'")
    computed = _search(f"tags.`{COMPUTED_FOR_TAG}` = '{train_run_id}' and attributes.status = 'FINISHED'",
                       newest_first=False)
    return [_holder(run, train_run) for run in [*evaluated, *computed]]


def find_reference(holders: list[Holder], served: Holder, exact: bool) -> Chosen | None:
    """The first holder on the served model's own data run whose reference loads: with `exact`, only one in the
    served variant and precision; else the nearest other (the same variant first, then any)."""
    own = [h for h in holders if served.data_run_id and h.data_run_id == served.data_run_id]
    if exact:
        ranked = [h for h in own if (h.variant, h.precision) == (served.variant, served.precision)]
    else:
        ranked = sorted((h for h in own if (h.variant, h.precision) != (served.variant, served.precision)),
                        key=lambda h: h.variant != served.variant)
    for holder in ranked:
        reference = load_reference(holder.run_id)
        if reference is not None:
            note = f"{holder.describe()}" if exact else (
                f"fallback: no reference of the {_as(served.variant, served.precision)} on data run "
                f"{served.data_run_id} and none could be computed; tested against the {holder.describe()}")
            return Chosen(reference, holder.run_id, "exact" if exact else "fallback", note)
    return None


def reference_for_predict(model_uri: str, model: serving.Classifier) -> Chosen:
    """The reference a predict run tests its batch against: the one recorded on the model's own data run (the
    train run's `agnews.data_run_id`) in the variant and precision being served. None recorded yet: computed on
    that data run's validation + test rows and logged on this run (later predict runs use it). Cannot be computed:
    the nearest recorded one on that data run, said so in the note. References on other rows (an evaluate with
    -P data_run_id=<other rows>) are never used: they describe other data. No reference: (None, why)."""
    train_run = training_run_of(model_uri)
    if train_run is None:
        return Chosen(None, "", "none", f"{model_uri} cannot be traced to a train run of this store (registered by "
                                        "hand?): no reference")
    data_run_id = train_run.data.tags.get(vocab.DATA_RUN_ID, "")
    served = Holder("", data_run_id, model.variant, _precision(model))
    holders = reference_holders(train_run)
    found = find_reference(holders, served, exact=True)
    if found is not None:
        return found
    why = _compute_reference(model, train_run, data_run_id)
    if not why:
        run_id, seen_as = mlflow.active_run().info.run_id, _as(served.variant, served.precision)
        return Chosen(load_reference(run_id), run_id, "computed",
                      f"reference computed by this run on data run {data_run_id} ({seen_as}; none was recorded for it)")
    found = find_reference(holders, served, exact=False)
    if found is not None:
        return Chosen(found.reference, found.run_id, found.match, f"{found.note} ({why})")
    others = sorted({h.data_run_id for h in holders} - {data_run_id})
    return Chosen(None, "", "none", f"no reference and none can be computed: {why}"
                  + (f"; references on other rows (data runs {', '.join(others)}) are not the model's"
                     if others else ""))


def _compute_reference(model: serving.Classifier, train_run: mlflow.entities.Run, data_run_id: str) -> str:
    """Record the reference on the active (predict) run from the data run's validation + test rows; "" when
    done, else why it could not be."""
    if not data_run_id:
        return f"train run {train_run.info.run_id} names no data run"
    try:
        splits = tracking.load_splits(data_run_id, ("validation", "test"))
    except PipelineError as exc:
        return str(exc)
    log.info("model of train run %s has no monitoring reference of the %s yet: computing it on data run %s",
             train_run.info.run_id, _as(model.variant, _precision(model)), data_run_id)
    record_reference(model, splits, f"validation+test rows of data run {data_run_id} (computed by predict run "
                                    f"{mlflow.active_run().info.run_id})", data_run_id)
    mlflow.set_tag(COMPUTED_FOR_TAG, train_run.info.run_id)
    return ""


def log_health(health: monitor.Health, chosen: Chosen) -> None:
    mlflow.log_metrics(health.metrics())
    mlflow.set_tags({**health.tags(), REFERENCE_RUN_TAG: chosen.run_id, REFERENCE_MATCH_TAG: chosen.match,
                     REFERENCE_NOTE_TAG: chosen.note[:5000]})
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
        if tags.get(tracking.STEP_TAG) != vocab.PREDICT or (tags.get(vocab.REGISTERED_MODEL),
                                                        tags.get(vocab.MODEL_VERSION)) != (name, version):
            step = tags.get(tracking.STEP_TAG, "non-agnews")
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
    runs = _search(f"tags.`{vocab.STEP}` = '{vocab.PREDICT}' and tags.`{vocab.REGISTERED_MODEL}` = '{name}' and "
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
               "accuracy": m.get("accuracy", np.nan), "reference_run_id": tags.get(REFERENCE_RUN_TAG, ""),
               "reference_match": tags.get(REFERENCE_MATCH_TAG, ""), "reference_note": tags.get(REFERENCE_NOTE_TAG, "")}
        for statistic in monitor.STATISTICS:
            row[statistic] = m.get(f"monitor_{statistic}", np.nan)
            row[f"{statistic}_drifted"] = bool(m.get(f"monitor_{statistic}_drifted", 0.0))
        rows.append(row)
    return pd.DataFrame(rows)


def new_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The texts of the batches of an alarm (column `in_alarm`: a run of flagged batches that persisted, see
    agnews.monitor's window rule), with their true label where the batch had one (empty: label it before training
    on it): what a retrain adds. An isolated flagged batch adds nothing (at alpha, one in 1/alpha healthy batches
    is flagged)."""
    frames = []
    for run_id in table.loc[table["in_alarm"], "run_id"]:
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
    chosen = reference_for_predict(model_uri, model)
    reference = chosen.reference
    if reference is not None and tuple(reference.labels) != tuple(model.labels):
        chosen = Chosen(None, "", "none", f"the reference in run {chosen.run_id} is for labels {reference.labels}, "
                                          "not the model's")
    if chosen.reference is None:
        health = monitor.Health("unknown", [chosen.note], len(seen.probabilities), alpha=alpha, min_batch=min_batch,
                                reference=chosen.note)
        log.warning("batch not checked: %s", chosen.note)
        log_health(health, chosen)
        return health
    health = monitor.check(chosen.reference, seen, true_labels, alpha, min_batch, low_confidence)
    health.reference = chosen.note
    (log.warning if chosen.match == "fallback" else log.info)("reference: %s", chosen.note)
    log_health(health, chosen)
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
               + "".join(f" -P {k}={cli.whole(v, k)}" for k, v in sizes.items()))
    return Retrain(rows, new.loc[~labelled].reset_index(drop=True), command)


def tag_version(name: str, version: str, latest: pd.Series, alarm: str) -> None:
    """The version's latest health, the predict run that showed it, and the window's alarm (see monitor_report)."""
    client = mlflow.MlflowClient()
    for key, value in {vocab.HEALTH: latest["health"], vocab.HEALTH_RUN_ID: latest["run_id"],
                       vocab.HEALTH_REASONS: str(latest["reasons"])[:5000], vocab.HEALTH_ALARM: alarm[:5000],
                       vocab.HEALTH_CHECKED: pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")}.items():
        client.set_model_version_tag(name, version, key, value)
