"""Monitoring, fast: which reference a predict run is tested against (runs made by hand in a fresh store, no model),
reading every page of a version's predict runs, and the window rule that turns flagged batches into an alarm.

Each test here fails on the code before e998d71 (checked by running them against those files): the newest evaluate
run on any rows became the reference; only the oldest 1000 predict runs were read; any one flagged batch advised a
retrain."""
from __future__ import annotations

import json
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.store.entities.paged_list import PagedList

from agnews.monitoring import alarms, batches, checks, references, report
from tests.helpers import entered_store, latest, run_step

LABELS = ("World", "Sports", "Business", "Sci/Tech")


# --- the reference a predict run uses --------------------------------------------------------------------------------

class FakeModel:
    """What reference_for_predict reads of a served model: variant, precision and labels."""

    def __init__(self, variant: str = "fp32", precision: str = "bf16"):
        self.variant, self.precision, self.labels = variant, precision, LABELS


def _reference(precision: str, seed: int, variant: str = "fp32") -> checks.Reference:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (50, 4))
    seen = checks.Profile(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), rng.poisson(50, 50),
                           np.zeros(50), None, None)
    return checks.build_reference(seen, LABELS, source=f"seed {seed}", variant=variant, precision=precision)


def _run(client, experiment: str, start: int, tags: dict, params: dict | None = None,
         reference: checks.Reference | None = None, tmp_path=None) -> str:
    """A finished run made by hand (explicit start time: the order is the test's, not the clock's)."""
    run = client.create_run(experiment, start_time=start, tags=tags)
    for key, value in (params or {}).items():
        client.log_param(run.info.run_id, key, value)
    if reference is not None:
        path = tmp_path / run.info.run_id / "reference.json"
        path.parent.mkdir()
        path.write_text(json.dumps(reference.to_dict()))
        client.log_artifact(run.info.run_id, str(path), "monitoring")
    client.set_terminated(run.info.run_id, "FINISHED", end_time=start + 1)
    return run.info.run_id


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    """One SQLite store for the module (creating one costs 1-2 s); each test makes its own experiment in it."""
    folder = tmp_path_factory.mktemp("monitor-window")
    with entered_store(folder) as client:
        yield client
        mlflow.end_run()


@pytest.fixture()
def lineage(shared_store, tmp_path, request):
    """A train run on data run `own`, an evaluate on its own rows in bf16, then a newer evaluate on other rows
    (`evaluate -P data_run_id=<other>`), also bf16: (client, experiment, train run id, ids by name)."""
    client = shared_store
    experiment = client.create_experiment(request.node.name)
    own = _run(client, experiment, 1_000, {"agnews.step": "prepare_data"})
    other = _run(client, experiment, 2_000, {"agnews.step": "prepare_data"})
    train = _run(client, experiment, 3_000, {"agnews.step": "train", "agnews.data_run_id": own})
    evaluate = {"agnews.step": "evaluate", "agnews.train_run_id": train}
    ids = {"own": own, "other": other, "train": train,
           "own_eval": _run(client, experiment, 4_000, {**evaluate, "agnews.data_run_id": own},
                            {"serving_precision": "bf16"}, _reference("bf16", 1), tmp_path),
           "other_eval": _run(client, experiment, 5_000, {**evaluate, "agnews.data_run_id": other},
                              {"serving_precision": "bf16"}, _reference("bf16", 2), tmp_path)}
    return client, experiment, train, ids


def _chosen(experiment: str, train: str, model: FakeModel) -> references.Chosen:
    with mlflow.start_run(experiment_id=experiment):
        return references.reference_for_predict(f"runs:/{train}/model", model)


def test_an_evaluate_on_other_rows_does_not_become_the_reference(lineage):
    _, experiment, train, ids = lineage
    chosen = _chosen(experiment, train, FakeModel(precision="bf16"))
    assert (chosen.run_id, chosen.match) == (ids["own_eval"], "exact")
    assert chosen.reference.source == "seed 1" and ids["own"] in chosen.note and "pipeline in bf16" in chosen.note


def test_another_precision_is_computed_on_the_own_rows(lineage, monkeypatch):
    """Served in fp32 where only a bf16 reference exists: this predict run computes the fp32 one on the model's data
    run (splits and profile stubbed: no model here) and a later fp32 predict run finds it."""
    _, experiment, train, ids = lineage
    frame = pd.DataFrame({"text": ["a b c"] * 30, "label": [0, 1, 2] * 10})
    monkeypatch.setattr(references.handoff, "load_splits", lambda run_id, names: {n: frame for n in names})
    rng = np.random.default_rng(3)
    monkeypatch.setattr(references.checks, "profile", lambda model, texts: checks.Profile(
        np.full((len(texts), 4), 0.25) + rng.normal(0, 0.01, (len(texts), 4)), np.full(len(texts), 3),
        np.zeros(len(texts)), None, None))
    first = _chosen(experiment, train, FakeModel(precision="fp32"))
    assert first.match == "computed" and first.reference.precision == "fp32" and ids["own"] in first.note
    holder = mlflow.get_run(first.run_id).data.tags
    assert (holder["agnews.reference_for"], holder["agnews.reference_data_run_id"]) == (train, ids["own"])
    assert (holder["agnews.reference_variant"], holder["agnews.reference_precision"]) == ("fp32", "fp32")
    again = _chosen(experiment, train, FakeModel(precision="fp32"))
    assert (again.run_id, again.match) == (first.run_id, "exact")


def test_no_exact_reference_and_none_computable_falls_back_and_says_so(lineage):
    """The data run holds no splits (made by hand): the int8 variant is tested against the pipeline's reference on
    its own rows, never the newer one on other rows, and the note says which and why."""
    _, experiment, train, ids = lineage
    chosen = _chosen(experiment, train, FakeModel(variant="int8"))
    assert (chosen.run_id, chosen.match) == (ids["own_eval"], "fallback")
    assert chosen.note.startswith("fallback: no reference of the int8 ONNX on data run " + ids["own"])
    assert "pipeline in bf16" in chosen.note and "has no data/ splits" in chosen.note


def test_only_references_on_other_rows_leave_the_batch_unknown(lineage):
    client, experiment, train, ids = lineage
    client.delete_run(ids["own_eval"])  # deleted runs are not FINISHED-and-active: only the other rows remain
    chosen = _chosen(experiment, train, FakeModel())
    assert chosen.reference is None and chosen.match == "none"
    assert f"references on other rows (data runs {ids['other']})" in chosen.note


# --- every page of predict runs ------------------------------------------------------------------------------------

class PagedClient:
    """A tracking client that, like a server, answers at most 1000 runs per request and a token for the next."""

    runs = [SimpleNamespace(info=SimpleNamespace(run_id=f"{k:032x}", start_time=k),
                            data=SimpleNamespace(tags={"agnews.health": "ok"}, metrics={}, params={}))
            for k in range(2500)]

    def __init__(self, *args, **kwargs):
        pass

    def search_experiments(self, max_results=1000, page_token=None, **kwargs):
        return PagedList([SimpleNamespace(experiment_id="0")], None)

    def search_runs(self, experiment_ids, filter_string="", run_view_type=None, max_results=1000, order_by=None,
                    page_token=None):
        ordered = sorted(self.runs, key=lambda r: r.info.start_time, reverse="DESC" in (order_by or [""])[0])
        start, size = int(page_token or 0), min(max_results, 1000)
        more = start + size < len(ordered)
        return PagedList(ordered[start:start + size], str(start + size) if more else None)


def test_predict_runs_reads_every_page(monkeypatch):
    monkeypatch.setattr(references.mlflow, "MlflowClient", PagedClient)
    runs = batches.predict_runs("m", "1", 0)
    assert len(runs) == 2500 and runs[-1].info.start_time == 2499  # the newest batch is the latest, not the 1000th
    assert [r.info.start_time for r in runs] == list(range(2500))


def test_paging_on_a_real_store(shared_store, monkeypatch):
    """MLflow's own page tokens (SQLite store), two runs a page."""
    client = shared_store
    experiment = client.create_experiment("paging")
    tags = {"agnews.step": "predict", "agnews.registered_model": "paged", "agnews.model_version": "1",
            "agnews.health": "ok"}
    ids = [_run(client, experiment, 1_000 * k, tags) for k in range(1, 6)]
    monkeypatch.setattr(references, "SEARCH_PAGE", 2)
    assert [r.info.run_id for r in batches.predict_runs("paged", "1", 0)] == ids


# --- the window rule -------------------------------------------------------------------------------------------------

def test_an_alarm_needs_persist_flagged_batches_in_a_row():
    statuses = ["ok", "drift", "ok", "drift", "too_small", "degraded", "drift", "ok", "drift"]
    assert alarms.flagged_runs(statuses) == [[3, 5, 6]]  # too_small neither counts nor breaks the run
    assert alarms.alarms(statuses).tolist() == [k == 5 for k in range(9)]
    assert alarms.in_alarm(statuses).tolist() == [k in (3, 5, 6) for k in range(9)]
    assert not alarms.alarms(statuses, persist=4).any() and alarms.alarms(statuses, persist=1).sum() == 3
    assert alarms.false_alarm_bound(100) == pytest.approx(99 * 0.01 ** 2)


def _table(statuses: list[str]) -> pd.DataFrame:
    table = pd.DataFrame({"run_id": [f"{k:032x}" for k in range(len(statuses))], "health": statuses,
                          "time": pd.Timestamp("2026-12-01", tz="UTC"), "rows": 100, "accuracy": np.nan,
                          "reasons": "", "reference_match": "exact", "reference_note": ""})
    return table.assign(alarm=alarms.alarms(statuses), in_alarm=alarms.in_alarm(statuses))


def test_an_isolated_drift_is_no_retrain_advice():
    """One drifted batch among healthy ones is what alpha lets through: no rows to retrain on, no command."""
    table = _table(["ok"] * 10 + ["drift"] + ["ok"] * 5)
    assert batches.new_rows(table).empty  # nothing downloaded: the runs do not even exist
    assert report.alarm_summary(table, checks.PERSIST).startswith("none: 1 isolated flagged batch(es) (#11)")
    for statistic in checks.STATISTICS:
        table[statistic], table[f"{statistic}_drifted"] = 0.1, False
    text = report.markdown(table, _reference("bf16", 4), "m v1", "all time", batches.new_rows(table),
                                     None)
    assert "No alarm over the window: no retraining needed." in text and "| isolated |" in text
    assert "not significant over the window" in text


def test_a_bad_persist_is_refused_in_one_line(shared_store):
    message = run_step("monitor", "--persist", "0")
    assert message == "error: -P persist=0 must be at least 1", message
    run = latest(shared_store, "monitor")
    assert run.info.status == "FAILED" and not shared_store.list_artifacts(run.info.run_id)
