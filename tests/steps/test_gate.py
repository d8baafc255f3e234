"""The champion/challenger gate in every branch.

Models are trained and compared in-process (fast) in the project's own store; one compare is a real CLI run. The
sequence on one store: no incumbent -> first_champion; the same version again -> already_champion; a clearly
better one -> promoted; a clearly worse one -> kept_incumbent (+ challenger); a near-identical one -> kept; one
trained on another split -> the incumbent is re-scored on gate rows neither model saw."""
from __future__ import annotations

import re

import mlflow
import pandas as pd
import pytest

from tests.helpers import SMALL_SIZES, by_step, latest, project_store, run_step, step_args

MODEL = "agnews-classifier"
@pytest.fixture(scope="module")
def trained(tmp_path_factory, fixture_csv, tiny_model):
    """Two prepared splits (seeds 42 and 7) and four train runs: weak, strong, strong again, strong on split 7."""
    with project_store(tmp_path_factory.mktemp("gate") / "project") as (project, client, _):
        data = {}
        for seed in ("42", "7"):
            assert run_step("prepare_data", *step_args(data=fixture_csv, seed=seed, **SMALL_SIZES)) is None
            data[seed] = latest(client, "prepare_data")
        recipes = {"weak": ("42", "1e-6", "1", "0"), "strong": ("42", "0.01", "3", "1"),
                   "strong_again": ("42", "0.01", "3", "1"), "strong_other_split": ("7", "0.01", "3", "1")}
        runs = {}
        for name, (split, lr, epochs, seed) in recipes.items():
            message = run_step("train", *step_args(model=tiny_model, data_run_id=data[split].info.run_id, seed=seed,
                                                   learning_rate=lr, epochs=epochs, batch_size="8", run_name=name))
            assert message is None, message
            runs[name] = latest(client, "train")
        yield project, client, runs


def _compare(project, run_id: str, **params: str) -> None:
    """compare in-process (the CLI path is test_runs_on_different_splits_are_not_ranked_together's)."""
    message = run_step("compare", *step_args(run_ids=run_id, **params))
    assert message is None, message


def _version(run) -> str:
    return run.data.tags["agnews.registered_version"]


def _alias(client, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(MODEL, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def test_gate_in_every_branch(trained):
    project, client, runs = trained
    weak, strong, again, other = (runs[k] for k in ("weak", "strong", "strong_again", "strong_other_split"))
    assert weak.data.metrics["best_val_f1_macro"] < 0.6 < strong.data.metrics["best_val_f1_macro"]

    _compare(project, weak.info.run_id)  # nobody holds champion yet
    tags = client.get_model_version(MODEL, _version(weak)).tags
    assert tags["promotion_decision"] == "first_champion" and _alias(client, "champion") == _version(weak)

    _compare(project, weak.info.run_id)  # an identical re-run changes nothing
    assert client.get_model_version(MODEL, _version(weak)).tags["promotion_decision"] == "already_champion"
    assert _alias(client, "champion") == _version(weak) and _alias(client, "challenger") is None

    _compare(project, strong.info.run_id)  # clearly better on the gate rows: promoted
    tags = client.get_model_version(MODEL, _version(strong)).tags
    assert tags["promotion_decision"] == "promoted" and _alias(client, "champion") == _version(strong)
    assert tags["incumbent_version"] == _version(weak) and tags["gate_rows"] == "40"
    assert tags["gate_decision_number"] == "1" and tags["gate_confidence"] == "0.9500"
    assert float(tags["gate_delta_ci_low"]) > 0 and float(tags["gate_mcnemar_p"]) < 0.05
    assert client.get_model_version(MODEL, _version(weak)).tags["replaced_by_version"] == _version(strong)

    _compare(project, weak.info.run_id)  # clearly worse: kept, and the candidate is the challenger
    tags = client.get_model_version(MODEL, _version(weak)).tags
    assert tags["promotion_decision"] == "kept_incumbent" and float(tags["gate_delta_f1_macro"]) < 0
    assert _alias(client, "champion") == _version(strong) and _alias(client, "challenger") == _version(weak)
    assert "not above min_improvement" in tags["promotion_reason"]

    _compare(project, again.info.run_id)  # a re-train of the same recipe (near-identical): the incumbent stays
    tags = client.get_model_version(MODEL, _version(again)).tags
    assert tags["promotion_decision"] == "kept_incumbent"
    assert float(tags["gate_delta_ci_low"]) <= 0 <= float(tags["gate_delta_ci_high"])
    assert _alias(client, "champion") == _version(strong) and _alias(client, "challenger") == _version(again)

    # incumbent trained on split 42, candidate on split 7: only the rows neither saw are left, fewer than the
    # 30 a decision needs by default, so the gate does not decide (and says what to pass)
    _compare(project, other.info.run_id)
    tags = client.get_model_version(MODEL, _version(other)).tags
    assert tags["promotion_decision"] == "undecided" and "fewer than the 30" in tags["promotion_reason"]
    assert int(tags["gate_excluded"]) > 0 and int(tags["gate_rows"]) + int(tags["gate_excluded"]) == 40
    assert _alias(client, "champion") == _version(strong)
    _compare(project, other.info.run_id, min_gate_rows="10", min_gate_rows_per_class="2")  # fewer rows accepted
    tags = client.get_model_version(MODEL, _version(other)).tags
    assert tags["promotion_decision"] in ("kept_incumbent", "promoted")
    assert int(tags["gate_excluded"]) > 0 and int(tags["gate_rows"]) + int(tags["gate_excluded"]) == 40
    assert tags["incumbent_version"] == _version(strong) and tags["gate_decision_number"] == "1"


def test_compare_report_and_table_have_intervals(trained):
    project, client, runs = trained
    compares = by_step(client.search_runs([runs["weak"].info.experiment_id]), "compare")
    assert compares, "test_gate_in_every_branch runs first"
    local = mlflow.artifacts.download_artifacts(run_id=compares[0].info.run_id, artifact_path="comparison",
                                                tracking_uri=client.tracking_uri)
    table = pd.read_csv(f"{local}/comparison.csv")
    for metric in ("val_accuracy", "val_f1_macro", "test_accuracy", "test_f1_macro"):
        assert f"{metric}_ci_low" in table and f"{metric}_ci_high" in table
    row = table.iloc[0]
    assert row.val_f1_macro_ci_low <= row.val_f1_macro <= row.val_f1_macro_ci_high
    report = open(f"{local}/report.md").read()
    assert re.search(r"kept_incumbent|promoted", report) and "gate rows" in report


def test_runs_on_different_splits_are_not_ranked_together(trained):
    project, client, runs = trained
    message = run_step("compare", *step_args(
        run_ids=f"{runs['strong'].info.run_id},{runs['strong_other_split'].info.run_id}"))
    assert message is not None and message.startswith("error: ") and "\n" not in message, message
    assert "validated on different rows" in message
    assert runs["strong"].info.run_id in message and runs["strong_other_split"].info.run_id in message
    assert latest(client, "compare").info.status == "FAILED"
