"""Where a model's monitoring reference lives on MLflow runs (recorded by evaluate, or by the first predict run that
met the model without one, in the variant and precision served) and each predict run's health logged beside it."""
from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from agnews import vocab
from agnews.data import handoff, lineage
from agnews.errors import PipelineError
from agnews.monitoring import checks
from agnews.runs import lifecycle
from agnews.serving import classifiers

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

def log_reference(reference: checks.Reference) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(REFERENCE_ARTIFACT).name
        path.write_text(json.dumps(reference.to_dict()))
        mlflow.log_artifact(str(path), str(Path(REFERENCE_ARTIFACT).parent))


def load_reference(run_id: str) -> checks.Reference | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=REFERENCE_ARTIFACT, dst_path=tmp)
        except (MlflowException, OSError):
            return None
        return checks.Reference.from_dict(json.loads(Path(path).read_text()))


def record_reference(model: classifiers.Classifier, splits: dict[str, pd.DataFrame], source: str,
                     data_run_id: str = "") -> checks.Reference:
    """The reference of a model on held-out rows (validation + test), logged on the active run, which is tagged
    with what saw the rows (variant, precision) and, when given, the data run they come from."""
    rows = pd.concat([splits["validation"], splits["test"]], ignore_index=True)
    seen = checks.profile(model, rows["text"].tolist())
    test_rows = len(splits["test"])
    reference = checks.build_reference(seen, model.labels, splits["test"]["label"].to_numpy(),
                                        seen.predicted[-test_rows:], source=source, variant=model.variant,
                                        precision=_precision(model))
    log_reference(reference)
    mlflow.set_tags({VARIANT_TAG: reference.variant, PRECISION_TAG: reference.precision,
                     **({DATA_TAG: data_run_id} if data_run_id else {})})
    log.info("monitoring reference recorded on %d rows (%s; %s)", reference.rows, source, _as(reference.variant,
                                                                                             reference.precision))
    return reference


def _precision(model: classifiers.Classifier) -> str:
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
        resolved = classifiers.registered_version(model_uri)
        if resolved is not None:
            return lineage.training_run(client.get_model_version(*resolved))
        if model_uri.startswith("runs:/"):
            run_id = model_uri[len("runs:/"):].split("/")[0]
        elif model_uri.startswith("models:/m-"):
            run_id = mlflow.get_logged_model(model_uri[len("models:/"):].split("/")[0]).source_run_id or ""
        else:
            return None
        run = mlflow.get_run(run_id)
        if run.data.tags.get(lifecycle.STEP_TAG) == vocab.EVALUATE:
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

    reference: checks.Reference | None
    run_id: str
    match: str
    note: str


def _holder(run: mlflow.entities.Run, train_run: mlflow.entities.Run) -> Holder:
    """What a run's reference profiled. Runs from before the tags existed: evaluate's own data run tag and
    serving_precision param (it always profiles the fp32 pipeline); a predict run's model variant and its train
    run's data run (that is where it computed it)."""
    tags, evaluate = run.data.tags, run.data.tags.get(lifecycle.STEP_TAG) == vocab.EVALUATE
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


def reference_for_predict(model_uri: str, model: classifiers.Classifier) -> Chosen:
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


def _compute_reference(model: classifiers.Classifier, train_run: mlflow.entities.Run, data_run_id: str) -> str:
    """Record the reference on the active (predict) run from the data run's validation + test rows; "" when
    done, else why it could not be."""
    if not data_run_id:
        return f"train run {train_run.info.run_id} names no data run"
    try:
        splits = handoff.load_splits(data_run_id, ("validation", "test"))
    except PipelineError as exc:
        return str(exc)
    log.info("model of train run %s has no monitoring reference of the %s yet: computing it on data run %s",
             train_run.info.run_id, _as(model.variant, _precision(model)), data_run_id)
    record_reference(model, splits, f"validation+test rows of data run {data_run_id} (computed by predict run "
                                    f"{mlflow.active_run().info.run_id})", data_run_id)
    mlflow.set_tag(COMPUTED_FOR_TAG, train_run.info.run_id)
    return ""


def log_health(health: checks.Health, chosen: Chosen) -> None:
    mlflow.log_metrics(health.metrics())
    mlflow.set_tags({**health.tags(), REFERENCE_RUN_TAG: chosen.run_id, REFERENCE_MATCH_TAG: chosen.match,
                     REFERENCE_NOTE_TAG: chosen.note[:5000]})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(HEALTH_ARTIFACT).name
        path.write_text(json.dumps(health.to_dict(), default=float))
        mlflow.log_artifact(str(path), str(Path(HEALTH_ARTIFACT).parent))
