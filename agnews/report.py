"""The cross-model comparison table and the champion rule (validation decides, test only reports)."""
from __future__ import annotations

import mlflow
import pandas as pd

from agnews import tracking
from agnews.errors import PipelineError

VAL_COLUMNS = ["val_accuracy", "val_f1_macro", "val_precision_macro", "val_recall_macro"]
TEST_COLUMNS = ["test_accuracy", "test_f1_macro", "test_precision_macro", "test_recall_macro"]


def history(run_id: str) -> pd.DataFrame:
    """Per-epoch validation accuracy of a train run, from its metric history."""
    points = mlflow.MlflowClient().get_metric_history(run_id, "val_accuracy")
    return pd.DataFrame({"epoch": [p.step for p in points], "val_accuracy": [p.value for p in points]}) \
        .sort_values("epoch")


def table(train_runs: list, evaluate_runs: list) -> pd.DataFrame:
    """One row per train run: best-epoch validation scores, test scores of its evaluate run, size, time."""
    tests = {run.data.tags.get("agnews.train_run_id"): run.data.metrics for run in evaluate_runs}
    rows = []
    for run in train_runs:
        m, tags, run_id = run.data.metrics, run.data.tags, run.info.run_id
        if run_id not in tests:
            raise PipelineError(f"train run {run_id} ({tags.get(tracking.MODEL_TAG)}) has no evaluate run; "
                                "run the evaluate step for it or leave it out of run_ids")
        rows.append({"model": tags[tracking.MODEL_TAG], "base_model": tags.get("agnews.base_model", ""),
                     "registered_model": tags["agnews.registered_model"],
                     "registered_version": tags["agnews.registered_version"], "train_run_id": run_id,
                     "best_epoch": int(m["best_epoch"]), "num_parameters": int(m["num_parameters"]),
                     "train_seconds": round(m["train_seconds"], 1),
                     **{col: m[f"best_{col}"] for col in VAL_COLUMNS},
                     **{col: tests[run_id][col] for col in TEST_COLUMNS}})
    return pd.DataFrame(rows)


def rank(frame: pd.DataFrame) -> pd.DataFrame:
    """Best validation macro F1 first; ties go to the smaller model. Test columns play no part."""
    order = frame.assign(_version=frame["registered_version"].astype(int))  # last key: reproducible order
    order = order.sort_values(["val_f1_macro", "num_parameters", "_version"], ascending=[False, True, True])
    return order.drop(columns="_version").reset_index(drop=True)


def to_markdown(frame: pd.DataFrame) -> str:
    shown = frame.drop(columns=["train_run_id", "base_model", "registered_model"])
    header = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
    cell = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    return header + "".join("| " + " | ".join(cell(v) for v in row) + " |\n" for row in shown.itertuples(index=False))
