"""The promotion policy (agnews/decide/gate.py) and compare's choice of evaluate runs, in-process and fast: error-rate
spending, the row floor, unknown training rows, tag rollback, which evaluate run compare reads, int8 acceptance."""
from __future__ import annotations

from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest

from agnews import stats
from agnews.data import lineage
from agnews.decide import comparison, gate, promotion
from agnews.errors import PipelineError
from agnews.runs import lifecycle


def _version(version="1", tags=None, run_id=""):
    return SimpleNamespace(version=version, tags=tags or {}, run_id=run_id)


def _rows(n: int, data_run_id: str = "data") -> gate.GateRows:
    frame = pd.DataFrame({"row_id": [f"r{i}" for i in range(n)], "text": [f"t{i}" for i in range(n)],
                          "label": [i % 4 for i in range(n)]})
    return gate.GateRows(frame, 3, data_run_id)


def _never(texts):
    raise AssertionError("the gate scored a model although it may not decide")


# --- error-rate spending ------------------------------------------------------------------------------------

def test_each_decision_on_one_gate_sample_spends_half_the_remaining_alpha():
    levels = [gate.confidence(k) for k in range(1, 30)]
    assert levels[:3] == pytest.approx([0.95, 0.975, 0.9875])
    one_sided = [(1 - level) / 2 for level in levels]
    assert sum(one_sided) < gate.ALPHA  # the guarantee the README states: all decisions together, at most ALPHA
    with pytest.raises(ValueError):
        gate.confidence(0)


# --- which rows, how many -----------------------------------------------------------------------------------

def test_unseen_excludes_rows_either_model_saw():
    frame = pd.DataFrame({"row_id": ["a", "b", "c", "d"], "text": list("abcd"), "label": [0, 1, 2, 3]})
    rows, excluded = lineage.unseen(frame, {"a"}, {"c", "z"})
    assert rows["row_id"].tolist() == ["b", "d"] and excluded == 2


@pytest.mark.parametrize("n", [0, 1, 29])
def test_too_few_gate_rows_keep_the_incumbent_without_scoring(n):
    decision = gate.decide("2", "cand", _version("1"), _rows(n), _never, _never, 0.0, min_rows=30)
    assert decision.decision == "undecided" and decision.gate_rows == n
    assert f"only {n} gate rows" in decision.reason and "-P gate_data_run_id=" in decision.reason
    assert "gate_size" in decision.reason


def test_unknown_training_rows_keep_the_incumbent_and_say_what_to_pass():
    rows = gate.GateRows(None, 0, "data", "the rows champion version 1 trained on cannot be known ...")
    decision = gate.decide("2", "cand", _version("1"), rows, _never, _never, 0.0)
    assert decision.decision == "undecided" and "cannot be known" in decision.reason
    assert decision.tags()["promotion_decision"] == "undecided"


def test_first_and_already_champion_need_no_rows():
    assert gate.decide("1", "m", None, None, _never, _never, 0.0).decision == "first_champion"
    assert gate.decide("1", "m", _version("1"), None, _never, _never, 0.0).decision == "already_champion"


def test_kth_decision_uses_the_spent_level_and_is_counted(store):
    with mlflow.start_run() as data_run:
        pass
    rows = _rows(200, data_run.info.run_id)
    rows.decisions_before, rows.digest = 2, "d" * 64  # two decisions already made on these rows
    labels = rows.rows["label"].to_numpy()
    better = labels.copy()
    worse = np.where(np.arange(len(labels)) % 5 == 0, (labels + 1) % 4, labels)  # wrong on every fifth row
    decision = gate.decide("2", "cand", _version("1"), rows, lambda t: better, lambda t: worse, 0.0)
    assert decision.gate_decision_number == 3 and decision.gate_confidence == pytest.approx(0.9875)
    assert decision.decision == "promoted" and "98.75% interval: decision 3" in decision.reason
    narrow = gate.decide("2", "cand", _version("1"), gate.GateRows(rows.rows, 0, data_run.info.run_id,
                                                                   decisions_before=2),
                         lambda t: better, lambda t: worse, 0.0)
    assert narrow.gate_delta_ci_low == decision.gate_delta_ci_low  # same k, same rows: same interval
    wide = stats.paired(labels, better, worse, "f1_macro", confidence=0.95)
    assert decision.gate_delta_ci_low <= wide.ci_low  # a later decision needs more evidence
    assert decision.tags()["gate_rows_digest"] == "d" * 64  # apply counts the decision under it


def _gate_frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"text": [f"headline {i} {rng.integers(1e9)}" for i in range(n)], "label": np.arange(n) % 4})


def test_the_decision_count_is_keyed_by_the_gate_rows_not_the_run_that_logged_them(store):
    """After a commit prepare_data logs the same gate rows under a new data run: the count must go on, not restart
    (it lived on the data run until 2026-12). Same rows in another order: same digest; one label changed: another."""
    frame = _gate_frame()
    digest = gate.rows_digest(frame)
    assert gate.rows_digest(frame.sample(frac=1, random_state=3)) == digest
    relabelled = frame.assign(label=frame["label"].where(frame.index != 5, (frame["label"] + 1) % 4))
    assert gate.rows_digest(relabelled) != digest and gate.rows_digest(frame.iloc[1:]) != digest
    client = mlflow.MlflowClient()
    v1, v2 = _registered(client, "m", 2)
    client.set_registered_model_alias("m", gate.CHAMPION, v1)
    with mlflow.start_run() as first_data_run:
        pass
    decision = gate.Decision("kept_incumbent", "cand", v2, v1, gate_rows=40, gate_data_run_id=first_data_run.info.
                             run_id, gate_rows_digest=digest, gate_decision_number=1, gate_confidence=0.95)
    with lifecycle.step_run("compare", "compare"):
        promotion.apply(promotion.Journal("m"), decision, "run")
    with mlflow.start_run() as again:  # the same rows, prepared again under a new code digest
        pass
    assert gate.decisions_made("m", digest, again.info.run_id) == 1  # the next decision is number 2
    assert gate.decisions_made("m", gate.rows_digest(relabelled), again.info.run_id) == 0
    with mlflow.start_run() as legacy:
        mlflow.set_tag(gate.DECISIONS_TAG, "3")  # counted on the data run by the code before this change
    assert gate.decisions_made("m", digest, legacy.info.run_id) == 3  # a floor: never counts down


def test_a_class_with_too_few_unseen_gate_rows_leaves_the_decision_undone():
    """200 rows but none of class 3: macro F1 over 4 classes cannot be judged (30 rows for 20 classes was enough
    before: the floor did not grow with the classes)."""
    frame = pd.DataFrame({"row_id": [f"r{i}" for i in range(200)], "text": [f"t{i}" for i in range(200)],
                          "label": [i % 3 for i in range(200)]})
    decision = gate.decide("2", "cand", _version("1"), gate.GateRows(frame, 0, "data"), _never, _never, 0.0)
    assert decision.decision == "undecided" and "ids 3" in decision.reason
    assert "-P min_gate_rows_per_class" in decision.reason and "-P gate_size" in decision.reason
    twenty = pd.DataFrame({"row_id": [f"r{i}" for i in range(30)], "text": [f"t{i}" for i in range(30)],
                           "label": [i % 20 for i in range(30)]})  # 1-2 rows per class
    assert gate.decide("2", "c", _version("1"), gate.GateRows(twenty, 0, "d", classes=20), _never, _never,
                       0.0).decision == "undecided"
    assert gate.class_floor(twenty, 20, 1) == [] and gate.class_floor(twenty, 20, 2) == list(range(10, 20))


# --- tags written by compare are put back when it fails ------------------------------------------------------

def _registered(client, name: str, n: int) -> list[str]:
    client.create_registered_model(name)
    return [str(client.create_model_version(name, source=f"file:///tmp/model{i}").version) for i in range(n)]


def test_a_failing_compare_restores_tags_count_and_aliases(store):
    client = mlflow.MlflowClient()
    v1, v2, v3 = _registered(client, "m", 3)
    client.set_model_version_tag("m", v2, "promotion_decision", "kept_incumbent")  # an earlier decision's record
    client.set_model_version_tag("m", v2, "gate_rows", "40")
    client.set_registered_model_alias("m", gate.CHAMPION, v1)
    with mlflow.start_run() as data_run:
        pass
    decision = gate.Decision("promoted", "cand", v2, v1, "inc", gate_rows=100, gate_delta_ci_low=0.01,
                             gate_data_run_id=data_run.info.run_id, gate_rows_digest="d" * 64,
                             gate_decision_number=1, gate_confidence=0.95, reason="because")
    before = {v: dict(client.get_model_version("m", v).tags) for v in (v1, v2, v3)}
    with pytest.raises(SystemExit, match="error: boom"):
        with lifecycle.step_run("compare", "compare"):
            journal = promotion.Journal("m")
            promotion.mark_over_budget(journal, v3, "p50 over budget")
            promotion.apply(journal, decision, "run")
            assert client.get_model_version("m", v1).tags["replaced_by_version"] == v2
            assert str(client.get_model_version_by_alias("m", gate.CHAMPION).version) == v2
            raise PipelineError("boom")  # e.g. the report could not be published
    assert {v: dict(client.get_model_version("m", v).tags) for v in (v1, v2, v3)} == before
    assert str(client.get_model_version_by_alias("m", gate.CHAMPION).version) == v1
    assert gate.decisions_made("m", "d" * 64) == 0 and not client.get_registered_model("m").tags


def test_a_finished_compare_counts_the_decision_on_its_gate_rows(store):
    client = mlflow.MlflowClient()
    v1, v2 = _registered(client, "m", 2)
    client.set_registered_model_alias("m", gate.CHAMPION, v1)
    with mlflow.start_run() as data_run:
        pass
    decision = gate.Decision("kept_incumbent", "cand", v2, v1, gate_rows=100, gate_data_run_id=data_run.info.run_id,
                             gate_rows_digest="d" * 64, gate_decision_number=1, gate_confidence=0.95)
    with lifecycle.step_run("compare", "compare"):
        promotion.apply(promotion.Journal("m"), decision, "run")
    assert gate.decisions_made("m", "d" * 64) == 1
    assert str(client.get_model_version_by_alias("m", gate.CHALLENGER).version) == v2
    undecided = gate.Decision("undecided", "cand", v2, v1, gate_data_run_id=data_run.info.run_id, reason="few rows")
    with lifecycle.step_run("compare", "compare"):
        promotion.apply(promotion.Journal("m"), undecided, "run")
    assert gate.decisions_made("m", "d" * 64) == 1  # no rows were looked at: nothing spent
    assert client.get_model_version("m", v2).tags["promotion_decision"] == "undecided"


# --- which evaluate run compare reads ------------------------------------------------------------------------

def _run(run_id: str, start: int, tags: dict, status: str = "FINISHED"):
    return SimpleNamespace(info=SimpleNamespace(run_id=run_id, start_time=start, status=status),
                           data=SimpleNamespace(tags=tags))


def test_compare_reads_its_siblings_evaluate_run_else_the_newest():
    train = _run("t", 0, {})
    old = _run("old", 1, {"agnews.train_run_id": "t", "mlflow.parentRunId": "main1"})
    new = _run("new", 2, {"agnews.train_run_id": "t"})
    failed = _run("failed", 3, {"agnews.train_run_id": "t"}, "FAILED")
    other = _run("other", 4, {"agnews.train_run_id": "x"})
    evals = [new, old, failed, other]  # newest first, as search_runs returns them
    assert comparison.chosen_evaluations([train], evals)["t"].info.run_id == "new"
    assert comparison.chosen_evaluations([train], list(reversed(evals)))["t"].info.run_id == "new"
    assert comparison.chosen_evaluations([train], evals, "main1")["t"].info.run_id == "old"  # the sibling
    assert comparison.chosen_evaluations([train], evals, "main2", {"old"})["t"].info.run_id == "old"  # reused
    assert comparison.chosen_evaluations([train], [failed]) == {}


# --- int8 acceptance and the budget pick ----------------------------------------------------------------------

def test_int8_that_disagrees_with_fp32_is_never_the_budget_pick():
    assert comparison.int8_accepted(-0.005) and not comparison.int8_accepted(-0.02)
    assert not comparison.int8_accepted(float("nan")) and comparison.int8_accepted(-0.015, tolerance=-0.02)
    ranked = pd.DataFrame([{"model": "m", "train_run_id": "t", "num_parameters": 1, "registered_version": "1",
                            "val_f1_macro": 0.8, "test_f1_macro": 0.8, "test_f1_macro_ci_low": 0.7,
                            "test_f1_macro_ci_high": 0.9}])
    metrics = {"latency_p50_ms": 10.0, "int8_latency_p50_ms": 2.0, "int8_test_f1_macro": 0.79,
               "int8_test_f1_macro_ci_low": 0.7, "int8_test_f1_macro_ci_high": 0.88, "int8_val_f1_macro": 0.81,
               "int8_delta_ci_low": -0.03}
    run = SimpleNamespace(info=SimpleNamespace(run_id="e"), data=SimpleNamespace(
        metrics=metrics, params={"serving_precision": "fp32"}, tags={}))
    table = comparison.frontier(ranked, {"t": run}, budget_ms=5.0)
    assert table.set_index("variant").loc["int8", "accepted"] == False  # noqa: E712 (numpy bool)
    assert comparison.budget_pick(table, 5.0) is None  # the only row within 5 ms is a rejected int8 variant
    assert comparison.budget_pick(comparison.frontier(ranked, {"t": run}, 5.0, int8_tolerance=-0.05), 5.0)[
        "variant"] == "int8"


def test_candidate_is_the_best_ranked_within_budget():
    ranked = pd.DataFrame({"train_run_id": ["a", "b", "c"], "model": ["A", "B", "C"]})
    latency = pd.Series({"a": 20.0, "b": 5.0, "c": 1.0})
    chosen, over = gate.candidate(ranked, latency, 10.0)
    assert chosen.model == "B" and [r.model for r in over] == ["A"]
    assert gate.candidate(ranked, latency, 0.5)[0] is None
    assert gate.candidate(ranked, latency, 0)[0].model == "A"


# --- two compares at once: the promotion lock serialises them ---------------------------------------------------

def test_promotion_lock_makes_a_second_compare_wait(tmp_path, monkeypatch):
    """Another process holds the lock of one registered model on one store: this one waits until it lets go
    (the other model's lock is free)."""
    import subprocess
    import sys
    import time

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: uri)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, mlflow; from agnews.decide import promotion\n"
        f"mlflow.get_tracking_uri = lambda: {uri!r}\n"
        "with promotion.promotion_lock('m'):\n"
        "    print('held', flush=True); time.sleep(1.5); print(time.time(), flush=True)\n")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with promotion.promotion_lock("other"):
        pass  # another registered model: not blocked
    with promotion.promotion_lock("m"):
        acquired = time.time()
    released = float(holder.stdout.readline())
    assert holder.wait(timeout=30) == 0 and acquired >= released


# --- a lease in the store: holds across machines (no file shared between them) ------------------------------------

def test_a_lease_in_the_store_is_held_by_one_holder_at_a_time(store):
    """The registry's unique name is the lock: two holders (say, compares on two machines with no file in common)
    never hold it at once; the second waits, then gives up with one line naming the holder."""
    from agnews.runs import store as stores

    first, second = stores.Lease("m.promotion.lease"), stores.Lease("m.promotion.lease", poll_s=0.05)
    first.acquire()
    with pytest.raises(PipelineError, match=f"held by {first.owner}.*delete that registered model"):
        second.acquire(timeout_s=0.2)
    first.verify()  # ours, time left: extended
    first.release()
    second.acquire(timeout_s=1)
    assert second.holder().owner == second.owner
    with pytest.raises(PipelineError, match="was lost"):
        first.verify()
    first.release()  # not ours any more: left alone
    assert second.holder().owner == second.owner
    second.release()
    assert second.holder() is None


def test_an_expired_lease_is_taken_over_and_its_old_holder_may_not_write(store):
    """A holder that died leaves the lease until it expires; a waiter then takes it, and the old holder (had it only
    hung) finds it lost before it moves an alias."""
    from agnews.runs import store as stores

    hung = stores.Lease("m.promotion.lease", ttl_s=0.3)
    hung.acquire()
    waiter = stores.Lease("m.promotion.lease", poll_s=0.05)
    waiter.acquire(timeout_s=5)
    assert waiter.holder().owner == waiter.owner
    client = mlflow.MlflowClient()
    v1, v2 = _registered(client, "m", 2)
    decision = gate.Decision("first_champion", "cand", v1)
    with pytest.raises(SystemExit, match="error: the lease 'm.promotion.lease' was lost"):
        with lifecycle.step_run("compare", "compare"):
            promotion.apply(promotion.Journal("m"), decision, "run", hung)
    assert gate.version_by_alias("m", gate.CHAMPION) is None
    assert "promotion_decision" not in client.get_model_version("m", v1).tags


def test_a_fine_tune_must_beat_the_probe_too_when_the_champion_is_another_version(store):
    """The probe compared beside a fine-tune is a bar: promoted only when the leads over the champion and over the
    probe both clear the rule, each at the decision's level (an intersection-union test: one decision, one count)."""
    rows = _rows(200)
    labels = rows.rows["label"].to_numpy()
    good = labels.copy()
    weak = np.where(np.arange(len(labels)) % 4 == 0, (labels + 1) % 4, labels)  # wrong on every fourth row
    probe_as_good = gate.Bar("3", "probe-minilm", lambda t: good)
    decision = gate.decide("2", "cand", _version("1"), rows, lambda t: good, lambda t: weak, 0.0, bar=probe_as_good)
    assert decision.decision == "kept_incumbent" and decision.gate_decision_number == 1
    assert decision.tags()["gate_probe_version"] == "3" and decision.gate_probe_delta_ci_low <= 0
    assert "over the baseline probe-minilm (version 3)" in decision.reason and "not above" in decision.reason
    probe_weak = gate.Bar("3", "probe-minilm", lambda t: weak)
    assert gate.decide("2", "cand", _version("1"), rows, lambda t: good, lambda t: weak, 0.0,
                       bar=probe_weak).decision == "promoted"
    the_champion = gate.Bar("1", "probe-minilm", _never)  # the probe holds champion: the rule itself, no second test
    plain = gate.decide("2", "cand", _version("1"), rows, lambda t: good, lambda t: weak, 0.0, bar=the_champion)
    assert plain.decision == "promoted" and not plain.gate_probe_version
