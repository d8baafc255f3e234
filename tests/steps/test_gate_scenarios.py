"""Where a decision could rest on the wrong numbers, end to end in-process on tiny models: compare reads the newest
evaluate run, evaluate refuses test rows the model saw, the gate does not decide on too few or possibly-seen rows
(and does with `-P gate_data_run_id`), decisions on one gate sample are counted, a failing compare leaves no tag."""
from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from agnews.data import handoff
from agnews.decide import gate
from agnews.errors import PipelineError
from agnews.runs import lifecycle
from tests.helpers import SMALL_SIZES, latest, project_store, run_step, step_args, write_agnews_csv

MODEL = "agnews-classifier"


@pytest.fixture(scope="module")
def other_csv(tmp_path_factory):
    return write_agnews_csv(tmp_path_factory.mktemp("other") / "other.csv", rows_per_class=40, seed=11)


@pytest.fixture(scope="module")
def world(tmp_path_factory, fixture_csv, tiny_model, other_csv):
    """Data A (seed 42, small splits), data B (seed 7: 180 of the file's 240 rows for train and validation), data C
    (another file, a 100-row gate); train runs: `weak` and `strong` on A, `b` on B."""
    root = tmp_path_factory.mktemp("scenarios")
    with project_store(root / "project") as (project, client, _):
        data = {}
        for key, csv, sizes in (("A", fixture_csv, SMALL_SIZES),
                                ("B", fixture_csv, dict(train_size="160", val_size="20", test_size="20",
                                                        gate_size="20")),
                                ("C", other_csv, dict(train_size="20", val_size="20", test_size="20",
                                                      gate_size="100"))):
            assert run_step("prepare_data", *step_args(data=csv, seed="7" if key == "B" else "42", **sizes)) is None
            data[key] = latest(client, "prepare_data").info.run_id
        runs = {}
        for name, split, lr, epochs in (("weak", "A", "1e-6", "1"), ("strong", "A", "0.01", "3"),
                                        ("b", "B", "0.01", "3")):
            message = run_step("train", *step_args(model=tiny_model, data_run_id=data[split], seed="1",
                                                   learning_rate=lr, epochs=epochs, batch_size="8", run_name=name))
            assert message is None, message
            runs[name] = latest(client, "train")
        yield client, data, runs


def _version(run) -> str:
    return run.data.tags["agnews.registered_version"]


def _champion(client) -> str | None:
    try:
        return str(client.get_model_version_by_alias(MODEL, gate.CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        return None


def _set_champion(client, version: str) -> None:
    client.set_registered_model_alias(MODEL, gate.CHAMPION, version)


def _made(data_run_id: str) -> int:
    """Decisions made on that data run's gate rows (counted under their digest, whichever run logged them)."""
    rows = handoff.load_splits(data_run_id, ("gate",))["gate"]
    return gate.decisions_made(MODEL, gate.rows_digest(rows), data_run_id)


def _compare(*run_ids: str, **params: str) -> str | None:
    return run_step("compare", *step_args(run_ids=",".join(run_ids), **params))


def test_compare_reads_the_newest_evaluate_run(world):
    client, _, runs = world
    strong = runs["strong"].info.run_id
    for _ in range(2):
        assert run_step("evaluate", *step_args(train_run_id=strong, int8="false")) is None
    evaluations = [r for r in client.search_runs([runs["strong"].info.experiment_id],
                                                 f"tags.`agnews.train_run_id` = '{strong}'",
                                                 order_by=["attributes.start_time ASC"])]
    older, newer = evaluations[-2], evaluations[-1]
    client.log_metric(older.info.run_id, "test_f1_macro", 0.0123)  # a stale number that must not be read
    _set_champion(client, _version(runs["strong"]))
    assert _compare(strong) is None
    local = mlflow.artifacts.download_artifacts(run_id=latest(client, "compare").info.run_id,
                                                artifact_path="comparison/comparison_runs.csv")
    row = pd.read_csv(local).iloc[0]
    assert row.evaluate_run_id == newer.info.run_id and row.test_f1_macro != pytest.approx(0.0123)


@pytest.mark.faults
def test_evaluate_refuses_test_rows_the_model_trained_on(world):
    client, data, runs = world
    message = run_step("evaluate", *step_args(train_run_id=runs["b"].info.run_id, data_run_id=data["A"],
                                              int8="false"))
    assert message.startswith("error: ") and "test rows of data run" in message and "trained" in message
    assert "-P data_run_id" in message and "\n" not in message
    failed = latest(client, "evaluate")
    assert failed.info.status == "FAILED" and "test_f1_macro" not in failed.data.metrics
    assert not client.list_artifacts(failed.info.run_id)


@pytest.mark.faults
def test_too_few_unseen_gate_rows_keep_the_incumbent(world):
    client, data, runs = world
    _set_champion(client, _version(runs["b"]))  # trained and validated on 180 of the file's 240 rows
    assert _compare(runs["strong"].info.run_id) is None  # no traceback, no FAILED run
    tags = client.get_model_version(MODEL, _version(runs["strong"])).tags
    assert tags["promotion_decision"] == "undecided" and int(tags["gate_rows"]) < 30
    assert "fewer than the 30 a decision needs" in tags["promotion_reason"]
    assert _champion(client) == _version(runs["b"])
    assert _made(data["A"]) == 0  # nothing was looked at

    # rows neither model saw, named by the user: decided, and counted on those rows
    assert _compare(runs["strong"].info.run_id, gate_data_run_id=data["C"]) is None
    tags = client.get_model_version(MODEL, _version(runs["strong"])).tags
    assert tags["promotion_decision"] in ("promoted", "kept_incumbent") and int(tags["gate_rows"]) >= 30
    assert tags["gate_data_run_id"] == data["C"] and tags["gate_decision_number"] == "1"
    assert _made(data["C"]) == 1 and gate.DECISIONS_TAG not in client.get_run(data["C"]).data.tags


def test_each_decision_on_one_gate_sample_is_counted_and_spends_alpha(world, other_csv):
    client, data, runs = world
    _set_champion(client, _version(runs["weak"]))
    before = _made(data["C"])
    for k in (1, 2):
        assert _compare(runs["strong"].info.run_id, gate_data_run_id=data["C"]) is None
        tags = client.get_model_version(MODEL, _version(runs["strong"])).tags
        assert tags["gate_decision_number"] == str(before + k)
        assert float(tags["gate_confidence"]) == pytest.approx(gate.confidence(before + k), abs=1e-4)
        _set_champion(client, _version(runs["weak"]))
    report = open(mlflow.artifacts.download_artifacts(run_id=latest(client, "compare").info.run_id,
                                                      artifact_path="comparison/report.md")).read()
    assert f"decision {before + 2} made on these gate rows, so a {gate.confidence(before + 2):.2%} interval" in report

    # the same rows prepared again (as after a commit: prepare_data is reused only under the same code digest): the
    # count goes on; it lived on the data run until 2026-12 and restarted at 1 here
    assert run_step("prepare_data", *step_args(data=other_csv, seed="42", train_size="20", val_size="20",
                                               test_size="20", gate_size="100")) is None
    again = latest(client, "prepare_data").info.run_id
    assert again != data["C"]
    assert _compare(runs["strong"].info.run_id, gate_data_run_id=again) is None
    assert client.get_model_version(MODEL, _version(runs["strong"])).tags["gate_decision_number"] == str(before + 3)
    _set_champion(client, _version(runs["weak"]))


@pytest.mark.faults
def test_an_incumbent_registered_by_hand_is_not_judged_on_rows_it_may_have_seen(world, tmp_path):
    client, data, runs = world
    folder = mlflow.artifacts.download_artifacts(artifact_uri=runs["b"].data.tags["agnews.model_uri"],
                                                 dst_path=str(tmp_path))
    by_hand = str(client.create_model_version(MODEL, source=folder).version)  # a folder: no run, no data run
    assert not client.get_model_version(MODEL, by_hand).run_id
    _set_champion(client, by_hand)
    assert _compare(runs["strong"].info.run_id) is None
    tags = client.get_model_version(MODEL, _version(runs["strong"])).tags
    assert tags["promotion_decision"] == "undecided" and "cannot be known" in tags["promotion_reason"]
    assert _champion(client) == by_hand
    assert _compare(runs["strong"].info.run_id, gate_data_run_id=data["C"]) is None
    assert client.get_model_version(MODEL, _version(runs["strong"])).tags["promotion_decision"] in (
        "promoted", "kept_incumbent")


@pytest.mark.faults
def test_a_compare_that_fails_after_tagging_leaves_no_tag(world, monkeypatch):
    client, data, runs = world
    _set_champion(client, _version(runs["weak"]))
    versions = [_version(runs[k]) for k in ("weak", "strong")]
    before = {v: dict(client.get_model_version(MODEL, v).tags) for v in versions}
    count = _made(data["C"])

    def fail():
        raise PipelineError("plots folder vanished")

    monkeypatch.setattr(lifecycle, "_publish", fail)  # the step's very last act, after the alias moved
    message = _compare(runs["strong"].info.run_id, gate_data_run_id=data["C"])
    assert message == "error: plots folder vanished"
    assert {v: dict(client.get_model_version(MODEL, v).tags) for v in versions} == before
    assert _champion(client) == _version(runs["weak"]) and _made(data["C"]) == count
