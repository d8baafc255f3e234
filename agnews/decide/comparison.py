"""The model comparison: which runs, their scores with bootstrap intervals, seeds pooled per model, the ranking
(validation decides, test only reports), paired tests against the leader, and the gate rows for promotion."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from agnews import metrics, stats, values, vocab
from agnews.data import handoff
from agnews.data.task import Task, check_same
from agnews.errors import PipelineError
from agnews.runs import lifecycle

log = logging.getLogger(__name__)
VAL_COLUMNS = ["val_accuracy", "val_f1_macro", "val_precision_macro", "val_recall_macro"]
TEST_COLUMNS = ["test_accuracy", "test_f1_macro", "test_precision_macro", "test_recall_macro"]
CI_COLUMNS = ["val_accuracy", "val_f1_macro", "test_accuracy", "test_f1_macro"]
TRAINING_STEPS = vocab.TRAINING_STEPS  # steps that leave a registered candidate


def find_runs(run_ids: str) -> tuple[list, list]:
    """Train and evaluate runs: the named ones (plus the evaluate runs of named train runs), or the siblings."""
    client = mlflow.MlflowClient()
    if run_ids:
        named = [lifecycle.get_run(i.strip(), *TRAINING_STEPS, vocab.EVALUATE) for i in run_ids.split(",") if i.strip()]
        trains = {r.info.run_id: r for r in named if r.data.tags[lifecycle.STEP_TAG] in TRAINING_STEPS}
        for r in named:
            if r.data.tags[lifecycle.STEP_TAG] == vocab.EVALUATE:
                train_id = r.data.tags[vocab.TRAIN_RUN_ID]
                trains.setdefault(train_id, lifecycle.get_run(train_id, *TRAINING_STEPS))
        evals = [run for train_id, train in trains.items() for run in client.search_runs(
            [train.info.experiment_id], f"tags.`{vocab.TRAIN_RUN_ID}` = '{train_id}' and "
            f"tags.`{lifecycle.STEP_TAG}` = '{vocab.EVALUATE}' and attributes.status = 'FINISHED'")]
        return list(trains.values()), evals
    own = mlflow.active_run()
    parent = own.data.tags.get("mlflow.parentRunId")
    if not parent:
        raise PipelineError("compare has no parent run to read siblings from; pass -P run_ids=<train run ids>")
    siblings = client.search_runs([own.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}' "
                                                            "and attributes.status = 'FINISHED'")
    by_step = lambda step: [r for r in siblings if r.data.tags.get(lifecycle.STEP_TAG) == step]  # noqa: E731
    return by_step(vocab.TRAIN) + by_step(vocab.DISTILL), by_step(vocab.EVALUATE)


def _artifact_csv(run_id: str, path: str) -> pd.DataFrame | None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)
        except Exception:  # absent (older run) or unreadable: the caller decides whether that is fatal
            return None
        return pd.read_csv(Path(local))


def validation_predictions(run) -> pd.DataFrame:
    frame = _artifact_csv(run.info.run_id, "predictions/validation.csv")
    if frame is None:
        raise PipelineError(f"train run {run.info.run_id} ({run.data.tags.get(lifecycle.MODEL_TAG)}) has no "
                            "predictions/validation.csv (trained by an older version); re-train it")
    return frame.sort_values("row_id").reset_index(drop=True)


def test_predictions(run) -> pd.DataFrame | None:
    frame = _artifact_csv(run.info.run_id, "evaluation/predictions.csv")
    if frame is None or "predicted" not in frame:
        return None  # an evaluate run from before row ids: its metrics still report, without intervals
    return frame.sort_values("row_id").reset_index(drop=True)


def task_of(run) -> Task:
    """The task of a train/distill run: what its data run wrote (AG News for runs from before labels.json)."""
    return handoff.load_task(run.data.tags.get(vocab.DATA_RUN_ID, ""))


def shared_task(trains: list) -> Task:
    """The one label set every run was trained on: runs of different label sets have no common metric."""
    first = task_of(trains[0])
    for run in trains[1:]:
        check_same(first, task_of(run), f"train run {run.info.run_id} ({run.data.tags.get(lifecycle.MODEL_TAG)})",
                   f"compare only runs trained on one task (run {trains[0].info.run_id} has the first); "
                   "pass -P run_ids=<runs of one prepare_data run>")
    return first


def classes(frame: pd.DataFrame) -> int:
    """The class count a predictions table was written with: one prob_<name> column per class."""
    return sum(str(c).startswith("prob_") for c in frame.columns) or stats.N_CLASSES


def check_same_rows(trains: list, predictions: dict[str, pd.DataFrame]) -> None:
    """Runs ranked together must have been validated on the same rows."""
    groups: dict[frozenset, list[str]] = {}
    for run in trains:
        key = frozenset(predictions[run.info.run_id]["row_id"])
        groups.setdefault(key, []).append(f"{run.info.run_id} ({run.data.tags.get(lifecycle.MODEL_TAG)}, data "
                                          f"{run.data.tags.get(vocab.DATA_RUN_ID, '?')})")
    if len(groups) > 1:
        listed = " vs ".join(", ".join(names) for names in groups.values())
        raise PipelineError(f"runs were validated on different rows: {listed}; compare only runs trained on one "
                            "prepare_data run (-P run_ids=...), their scores are not comparable")


def _interval_columns(prefix: str, frame: pd.DataFrame | None, seed: int) -> dict[str, float]:
    out = {}
    for metric in stats.METRICS:
        low = high = float("nan")
        if frame is not None and len(frame):
            low, high = stats.bootstrap_ci(frame["label"], frame["predicted"], metric, seed=seed,
                                           classes=classes(frame))
        out[f"{prefix}_{metric}_ci_low"], out[f"{prefix}_{metric}_ci_high"] = low, high
    return out


def own_parent() -> tuple[str, set[str]]:
    """The active run's parent (a `main`) and the evaluate runs that parent reused instead of launching."""
    parent = mlflow.active_run().data.tags.get("mlflow.parentRunId", "")
    if not parent:
        return "", set()
    reused = mlflow.get_run(parent).data.tags.get(vocab.reused(vocab.EVALUATE), "")
    return parent, {i for i in reused.split(",") if i}


def chosen_evaluations(trains: list, evals: list, parent_run_id: str = "", reused: set[str] = frozenset()) -> dict:
    """Per train run id, the evaluate run whose numbers compare reads: the one this compare's own `main` launched
    (a sibling) or reused, else the newest FINISHED one. Never an older run shadowing a newer one."""
    out = {}
    for train in trains:
        mine = [r for r in evals if r.data.tags.get(vocab.TRAIN_RUN_ID) == train.info.run_id
                and r.info.status == "FINISHED"]
        ours = [r for r in mine if parent_run_id and (r.data.tags.get("mlflow.parentRunId") == parent_run_id
                                                      or r.info.run_id in reused)]
        if mine:
            out[train.info.run_id] = max(ours or mine, key=lambda r: (r.info.start_time or 0, r.info.run_id))
    return out


def run_table(trains: list, evaluations: dict, predictions: dict[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """One row per train run: best-epoch validation scores, test scores of its chosen evaluate run (named in
    `evaluate_run_id`; see `chosen_evaluations`), intervals."""
    rows = []
    for run in trains:
        m, tags, run_id = run.data.metrics, run.data.tags, run.info.run_id
        test_run = evaluations.get(run_id)
        if test_run is None:
            log.warning("train run %s has no evaluate run: its test columns stay empty", run_id)
        test_m = test_run.data.metrics if test_run else {}
        rows.append({
            "model": tags[lifecycle.MODEL_TAG], "base_model": tags.get(vocab.BASE_MODEL, ""),
            "registered_model": tags.get(vocab.REGISTERED_MODEL, ""),
            "registered_version": tags.get(vocab.REGISTERED_VERSION, ""), "train_run_id": run_id,
            "evaluate_run_id": test_run.info.run_id if test_run else "",
            "data_run_id": tags.get(vocab.DATA_RUN_ID, ""), "seed": values.whole(run.data.params.get("seed", 0)),
            "best_epoch": int(m["best_epoch"]), "num_parameters": int(m["num_parameters"]),
            "train_seconds": round(m["train_seconds"], 1),
            **{col: m[f"best_{col}"] for col in VAL_COLUMNS},
            **{col: test_m.get(col, float("nan")) for col in TEST_COLUMNS},
            **_interval_columns("val", predictions[run_id], seed),
            **_interval_columns("test", test_predictions(test_run) if test_run else None, seed)})
    return pd.DataFrame(rows)


def model_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per model: its best seed's run (by validation macro F1) plus mean/std across seeds; ranked by the
    mean validation macro F1, ties to the smaller model, then the older version."""
    runs = runs.assign(_version=pd.to_numeric(runs["registered_version"], errors="coerce"))
    rows = []
    for _, group in runs.groupby("model", sort=False):  # names are distinct per checkpoint (models.distinct_names)
        best = group.sort_values(["val_f1_macro", "_version"], ascending=[False, True]).iloc[0].to_dict()
        best["n_seeds"] = len(group)
        for col in CI_COLUMNS:
            best[f"{col}_mean"] = group[col].mean()
            best[f"{col}_std"] = group[col].std(ddof=1) if len(group) > 1 else float("nan")
        rows.append(best)
    ranked = pd.DataFrame(rows).sort_values(["val_f1_macro_mean", "num_parameters", "_version"],
                                            ascending=[False, True, True])
    return ranked.drop(columns="_version").reset_index(drop=True)


def add_paired_columns(ranked: pd.DataFrame, predictions: dict[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Leader vs each other model on the same validation rows: Δ macro F1 with its paired-bootstrap interval,
    exact McNemar p on accuracy, Holm-adjusted across the comparisons. Empty on the leader's row."""
    ranked = ranked.copy()
    leader = predictions[ranked.loc[0, "train_run_id"]]
    results = [None] + [stats.paired(leader["label"], leader["predicted"],
                                     _aligned(leader, predictions[run_id])["predicted"], "f1_macro", seed=seed,
                                     classes=classes(leader))
                        for run_id in ranked["train_run_id"].iloc[1:]]
    nan = float("nan")
    ranked["delta_f1_macro"] = [r.delta if r else nan for r in results]
    ranked["delta_ci_low"] = [r.ci_low if r else nan for r in results]
    ranked["delta_ci_high"] = [r.ci_high if r else nan for r in results]
    ranked["mcnemar_p"] = [r.mcnemar_p if r else nan for r in results]
    ranked["mcnemar_p_holm"] = stats.holm(ranked["mcnemar_p"].tolist())
    return ranked


def _aligned(reference: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    return other.set_index("row_id").loc[reference["row_id"]].reset_index()


def confusion(predictions: pd.DataFrame, task: Task) -> pd.DataFrame:
    return metrics.confusion(predictions["label"], predictions["predicted"], task)


def histories(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per model: every seed's validation accuracy by epoch (columns seed, epoch, val_accuracy)."""
    client = mlflow.MlflowClient()
    out: dict[str, list] = {}
    for row in runs.itertuples():
        points = client.get_metric_history(row.train_run_id, "val_accuracy")
        out.setdefault(row.model, []).append(pd.DataFrame(
            {"seed": row.seed, "epoch": [p.step for p in points], "val_accuracy": [p.value for p in points]}))
    return {model: pd.concat(parts).sort_values(["seed", "epoch"]).reset_index(drop=True)
            for model, parts in out.items()}


# --- serving cost: the frontier and the pick within a latency budget ----------------------------------------

COST_COLUMNS = ["latency_p50_ms", "latency_p95_ms", "throughput_per_s", "peak_memory_mb", "model_size_mb"]
INT8_VS_FP32 = ["delta_f1_macro", "delta_ci_low", "delta_ci_high", "mcnemar_p", "agreement"]  # paired, test rows


INT8_TOLERANCE = -0.01  # an int8 variant is accepted when its paired Δ macro F1's lower end is above this


def int8_accepted(delta_ci_low: float, tolerance: float = INT8_TOLERANCE) -> bool:
    """int8 agrees with its fp32 model: the lower end of the paired interval of (int8 - fp32) macro F1 on the test
    rows is above `tolerance` (NaN, i.e. not measured, is not acceptance)."""
    return bool(delta_ci_low > tolerance)


def frontier(ranked: pd.DataFrame, evaluations: dict, budget_ms: float = 0.0,
             int8_tolerance: float = INT8_TOLERANCE) -> pd.DataFrame:
    """One row per model and variant (its fp32 model as its chosen evaluate run ran it, and its int8 variant):
    test macro F1 with its interval against the measured cost; `pareto` marks the rows no other row beats on both
    F1 and latency; `accepted` is False for an int8 variant that does not agree with fp32 (never the budget pick)."""
    by_train = evaluations
    rows = []
    for model in ranked.to_dict("records"):
        run = by_train.get(model["train_run_id"])
        m = run.data.metrics if run else {}
        base = {"model": model["model"], "train_run_id": model["train_run_id"],
                "num_parameters": model["num_parameters"]}
        rows.append({**base, "variant": "fp32", "compute": run.data.params.get("serving_precision", "") if run else "",
                     "registered_version": model["registered_version"], "val_f1_macro": model["val_f1_macro"],
                     "evaluate_run_id": run.info.run_id if run else "", "accepted": True,
                "latency_measured_by": _conditions(run),
                     "test_f1_macro": model["test_f1_macro"], "test_f1_macro_ci_low": model["test_f1_macro_ci_low"],
                     "test_f1_macro_ci_high": model["test_f1_macro_ci_high"],
                     **{c: m.get(c, float("nan")) for c in COST_COLUMNS}})
        if "int8_test_f1_macro" in m:
            rows.append({**base, "variant": "int8", "compute": "int8", "registered_version": run.data.tags.get(
                vocab.INT8_REGISTERED_VERSION, ""), "val_f1_macro": m["int8_val_f1_macro"],
                "evaluate_run_id": run.info.run_id, "latency_measured_by": _conditions(run),
                "accepted": int8_accepted(m.get("int8_delta_ci_low", float("nan")), int8_tolerance),
                **{c: m[f"int8_{c}"] for c in ("test_f1_macro", "test_f1_macro_ci_low", "test_f1_macro_ci_high")},
                **{c: m.get(f"int8_{c}", float("nan")) for c in COST_COLUMNS + INT8_VS_FP32}})
    return _marked(pd.DataFrame(rows), budget_ms)


def _marked(table: pd.DataFrame, budget_ms: float) -> pd.DataFrame:
    table["pareto"] = _pareto(table)
    if budget_ms:
        table["within_budget"] = table["latency_p50_ms"] <= budget_ms
        table["budget_pick"] = table.index == _budget_pick_index(table, budget_ms)
    return table


def _conditions(run) -> str:
    """Where and how an evaluate run timed its model: the CPU and threads (siblings may have run beside it)."""
    if run is None:
        return ""
    return (f"evaluate run {run.info.run_id} on {run.data.tags.get(vocab.CPU, 'an unrecorded CPU')}, "
            f"{run.data.params.get('torch_threads', '?')} thread(s)")


TIMED = ["latency_p50_ms", "latency_p95_ms", "throughput_per_s"]


def retimed(table: pd.DataFrame, timer, conditions: str, budget_ms: float) -> pd.DataFrame:
    """The frontier with every registered model and variant timed again by `timer(version) -> cost dict` (one at a
    time, on one machine: `conditions` says which), so a latency budget compares like with like. evaluate's numbers
    are not: each child timed its model at cores/N threads while sibling trainings ran, or on another node. A
    variant with no registered version (int8 not registered) cannot be loaded here: not timed, never the pick."""
    out = table.copy()
    for index, row in out.iterrows():
        version = str(row.get("registered_version") or "")
        if not version or version == "nan":
            out.loc[index, TIMED] = np.nan
            out.loc[index, "latency_measured_by"] = "not timed by compare: not registered"
            continue
        cost = timer(version)
        for column in TIMED:
            out.loc[index, column] = cost[column]
        if row["variant"] == "fp32":
            out.loc[index, "compute"] = cost.get("compute", row.get("compute", ""))
        out.loc[index, "latency_measured_by"] = conditions
    return _marked(out, budget_ms)


def _pareto(table: pd.DataFrame) -> list[bool]:
    """Not dominated: no other row is at least as fast and as good, and strictly better in one."""
    lat, f1 = table["latency_p50_ms"].to_numpy(float), table["test_f1_macro"].to_numpy(float)
    out = []
    for i in range(len(table)):
        if not (np.isfinite(lat[i]) and np.isfinite(f1[i])):
            out.append(False)
            continue
        dominated = (lat <= lat[i]) & (f1 >= f1[i]) & ((lat < lat[i]) | (f1 > f1[i]))
        out.append(not bool(dominated.any()))
    return out


def _budget_pick_index(table: pd.DataFrame, budget_ms: float):
    accepted = table["accepted"].astype(bool) if "accepted" in table else True  # int8 that agrees with fp32
    fits = table[(table["latency_p50_ms"] <= budget_ms) & accepted]
    if fits.empty:
        return None
    return fits.sort_values(["val_f1_macro", "latency_p50_ms"], ascending=[False, True]).index[0]


def budget_pick(table: pd.DataFrame, budget_ms: float) -> dict | None:
    """The best accepted row within the budget by validation macro F1 (ties: the faster); None when nothing fits."""
    index = _budget_pick_index(table, budget_ms)
    return None if index is None else table.loc[index].to_dict()


def fp32_latency(table: pd.DataFrame) -> pd.Series:
    """p50 latency of each trained model as evaluate measured it (not its int8 variant), by train run id."""
    return table[table["variant"] == "fp32"].set_index("train_run_id")["latency_p50_ms"]


def check_measured(table: pd.DataFrame) -> None:
    """A budget needs every ranked model's latency: refuse rather than treat 'not measured' as 'fits'."""
    missing = table[(table["variant"] == "fp32") & table["latency_p50_ms"].isna()]
    if len(missing):
        names = ", ".join(f"{r.model} (train run {r.train_run_id})" for r in missing.itertuples())
        raise PipelineError(f"no latency measured for {names}; run evaluate on it first (this version's evaluate "
                            "logs latency_p50_ms) or drop -P latency_budget_ms")


# --- how each model trained: the per-epoch metrics of the run that represents it ----------------------------

EPOCH_METRICS = ("val_accuracy", "val_f1_macro", "val_loss", "train_loss")  # logged by train/distill, step = epoch


def _metric_by_epoch(client, run_id: str, name: str) -> dict[int, float]:
    points = sorted(client.get_metric_history(run_id, name), key=lambda p: p.timestamp)
    return {int(p.step): float(p.value) for p in points}  # a step logged twice keeps its latest value


def training_histories(ranked: pd.DataFrame, predictions: dict[str, pd.DataFrame], task: Task) -> dict:
    """Per model (ranked order), a report.ModelHistory of the run that represents it (its best seed's): every
    epoch's val_accuracy, val_f1_macro, val_loss and train_loss, its best epoch, its validation macro F1 interval
    and the confusion matrix of its validation predictions. Plain data: report.md's per-model section is written
    from it without MLflow."""
    from agnews.decide.training_notes import (
        ModelHistory,  # the shape the report reads; the report imports nothing from here
    )

    client = mlflow.MlflowClient()
    out = {}
    for row in ranked.to_dict("records"):
        run_id = row["train_run_id"]
        series = {name: _metric_by_epoch(client, run_id, name) for name in EPOCH_METRICS}
        epochs = sorted(set().union(*series.values()))
        frame = predictions.get(run_id)
        out[row["model"]] = ModelHistory(
            epochs=epochs, **{name: [values.get(e, float("nan")) for e in epochs] for name, values in series.items()},
            best_epoch=int(row["best_epoch"]) if pd.notna(row.get("best_epoch")) else None,
            seed=int(row["seed"]) if pd.notna(row.get("seed")) else None,
            version=str(row.get("registered_version", "")),
            val_f1_ci=(row.get("val_f1_macro_ci_low", float("nan")), row.get("val_f1_macro_ci_high", float("nan"))),
            confusion=confusion(frame, task) if frame is not None else None)
    return out
