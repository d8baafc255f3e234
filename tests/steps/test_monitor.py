"""Monitoring: the statistics on synthetic references (fast), the reference evaluate records, the health of predict
runs (ok, drift on label mix, drift on unknown tokens/confidence, degraded, too small) and `-e monitor` over them.

One tiny model (4 layers, 128 wide: it learns the fixture task) is trained and evaluated once in-process, set
champion, and the predict batches are run once; every test reads them."""
from __future__ import annotations

import json
import random
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from agnews.monitoring import alarms, checks, plots
from tests.helpers import build_tiny_bert, latest, project_store, run_step, step_args, write_agnews_csv

MODEL = "agnews-classifier"
CHAMPION = f"models:/{MODEL}@champion"
BATCH_PER_CLASS = 20  # 80-row batches: well above min_batch, small enough to stay fast


# --- statistics on synthetic references -------------------------------------------------------------------------

def _synthetic(rows: int, rng: np.random.Generator, shift: float = 0.0, classes: int = 4,
               only: int | None = None) -> checks.Profile:
    """A profile drawn from one fixed distribution (optionally shifted): confident 4-class predictions."""
    logits = rng.normal(0, 1, (rows, classes))
    labels = np.full(rows, only) if only is not None else rng.integers(0, classes, rows)
    logits[np.arange(rows), labels] += 4 - shift * 3
    return checks.Profile(probabilities=np.exp(logits) / np.exp(logits).sum(1, keepdims=True),
                           length=rng.poisson(50 + 30 * shift, rows), unknown=rng.beta(1, 60 - 50 * shift, rows),
                           split=rng.beta(1, 30, rows), embeddings=rng.normal(shift, 1, (rows, 16)))


@pytest.fixture(scope="module")
def synthetic_reference() -> checks.Reference:
    seen = _synthetic(1000, np.random.default_rng(0))
    return checks.build_reference(seen, ("a", "b", "c", "d"), np.zeros(200, int), np.zeros(200, int))


def test_batches_like_the_reference_stay_ok(synthetic_reference):
    rng = np.random.default_rng(1)
    verdicts = [checks.check(synthetic_reference, _synthetic(80, rng)).status for _ in range(100)]
    assert verdicts.count("drift") <= 4, verdicts  # alpha 0.01 family-wise: ~1 in 100 (binomial 99.6%: <= 4)
    assert not alarms.alarms(verdicts).any()  # the window rule: 2 in a row, <= 99 * 0.01**2 ~ 1% per 100 batches


def test_one_class_only_drifts_on_label_mix(synthetic_reference):
    health = checks.check(synthetic_reference, _synthetic(80, np.random.default_rng(2), only=1))
    assert health.status == "drift" and health.reasons[0].startswith("label_mix")
    drifted = {c.statistic for c in health.checks if c.drifted}
    assert "label_mix" in drifted and "length" not in drifted


def test_shifted_batch_drifts_on_every_shifted_statistic(synthetic_reference):
    health = checks.check(synthetic_reference, _synthetic(80, np.random.default_rng(3), shift=1.0))
    drifted = {c.statistic for c in health.checks if c.drifted}
    assert {"confidence", "low_confidence", "length", "unknown_tokens", "embedding"} <= drifted
    assert health.metrics()["monitor_embedding"] > 0.5  # RMS shift of one std per dimension


def test_too_small_batch_says_so(synthetic_reference):
    health = checks.check(synthetic_reference, _synthetic(10, np.random.default_rng(4), only=0), min_batch=30)
    assert health.status == "too_small" and "10 rows < min_batch=30" in health.reasons[0]
    assert not any(c.drifted for c in health.checks) and "monitor_label_mix_p" not in health.metrics()
    assert "monitor_label_mix" in health.metrics()  # values still logged


def test_degraded_needs_the_upper_bound_below_the_test_interval():
    rng = np.random.default_rng(5)
    seen = _synthetic(400, rng)
    reference = checks.build_reference(seen, tuple("abcd"), seen.predicted[-200:], seen.predicted[-200:])
    batch = _synthetic(60, rng)
    right = checks.check(reference, batch, batch.predicted)
    wrong = checks.check(reference, batch, (batch.predicted + 1) % 4)
    assert right.status == "ok" and right.accuracy == 1.0
    assert wrong.status == "degraded" and "below the model's test interval" in wrong.reasons[0]
    few_wrong = batch.predicted.copy()
    few_wrong[:3] = (few_wrong[:3] + 1) % 4  # 95% right: within noise of a 100% test accuracy at 60 rows
    assert checks.check(reference, batch, few_wrong).status == "ok"


def test_band_holds_the_reference_mean(synthetic_reference):
    low, high = checks.band(synthetic_reference, "confidence", 80)
    assert low < np.mean(synthetic_reference.confidence) < high
    assert checks.band(synthetic_reference, "label_mix", 80)[0] == 0.0
    assert checks.band(synthetic_reference, "embedding", 80)[1] > 0


def test_any_label_set(synthetic_reference):
    rng = np.random.default_rng(6)
    seen = _synthetic(300, rng, classes=2)
    reference = checks.build_reference(seen, ("neg", "pos"))
    assert checks.check(reference, _synthetic(60, rng, classes=2)).status == "ok"
    assert checks.check(reference, _synthetic(60, rng, classes=2, only=1)).status == "drift"


# --- on runs: one tiny model, trained and evaluated once ----------------------------------------------------------

@pytest.fixture(scope="module")
def champion(tmp_path_factory, fixture_csv):
    root = tmp_path_factory.mktemp("monitor")
    model = build_tiny_bert(root / "tiny", hidden=128, layers=4)
    with project_store(root / "project", fixture_csv) as (project, client, data_run):
        assert run_step("train", *step_args(model=model, data_run_id=data_run.info.run_id, epochs=3,
                                            learning_rate="1e-3", batch_size=8, seed=1)) is None
        train = latest(client, "train")
        assert run_step("evaluate", *step_args(train_run_id=train.info.run_id, int8="false")) is None
        version = train.data.tags["agnews.registered_version"]
        client.set_registered_model_alias(MODEL, "champion", version)
        yield project, client, version, latest(client, "evaluate"), root


def _labelled_csv(path: Path, seed: int, classes=(1, 2, 3, 4), flip: bool = False,
                  per_class: int = BATCH_PER_CLASS) -> str:
    """Held-out rows of the fixture's generator (another seed) as text,label; labels shifted by one when `flip`."""
    raw = path.with_suffix(".raw.csv")
    write_agnews_csv(raw, rows_per_class=per_class, seed=seed)
    frame = pd.read_csv(raw, header=None, names=["cls", "title", "description"])
    frame = frame[frame["cls"].isin(classes)]
    label = (frame["cls"] - 1 + (1 if flip else 0)) % 4
    pd.DataFrame({"title": frame["title"], "description": frame["description"], "label": label}).to_csv(path,
                                                                                                       index=False)
    return str(path)


def _other_domain(path: Path, rows: int = 80) -> str:
    """Code snippets and out-of-vocabulary words: nothing of the news vocabulary."""
    rng = random.Random(9)
    words = "def return lambda import numpy self yield async await kwargs print elif tuple".split()
    texts = [f"{' '.join(rng.sample(words, 5))}(x, y) {{ return x + {k}; }}" for k in range(rows)]
    pd.DataFrame({"text": texts}).to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def batches(champion):
    """The predict runs every test reads: name -> run."""
    project, client, version, _, root = champion
    inputs = {"held_out": _labelled_csv(root / "held_out.csv", seed=7),
              "sports_only": _labelled_csv(root / "sports.csv", seed=8, classes=(2,), per_class=60),
              "other_domain": _other_domain(root / "code.csv"),
              "flipped": _labelled_csv(root / "flipped.csv", seed=10, flip=True),
              "too_small": _labelled_csv(root / "small.csv", seed=11, classes=(3,))}
    pd.read_csv(inputs["too_small"]).head(5).to_csv(inputs["too_small"], index=False)
    runs = {}
    for name, path in inputs.items():
        message = run_step("predict", *step_args(input=path, model_uri=CHAMPION))
        assert message is None, message
        runs[name] = latest(client, "predict")
    return runs


def test_evaluate_records_the_reference(champion):
    _, client, _, evaluate, _ = champion
    folder = Path(mlflow.artifacts.download_artifacts(run_id=evaluate.info.run_id, artifact_path="monitoring"))
    reference = json.loads((folder / "reference.json").read_text())
    assert sum(reference["predicted_counts"]) == len(reference["confidence"]) == 80  # validation + test rows
    assert len(reference["length"]) == len(reference["unknown"]) == 80 and reference["split"] is not None
    assert len(reference["embedding_mean"]) == len(reference["embedding_std"]) == 128
    assert reference["labels"] == ["World", "Sports", "Business", "Sci/Tech"]
    low, high = reference["test_accuracy_ci"]
    assert low <= reference["test_accuracy"] <= high and evaluate.data.metrics["test_accuracy_ci_low"] == low
    assert (folder / "reference.json").stat().st_size < 100_000


def test_health_of_each_batch(champion, batches):
    _, _, _, evaluate, _ = champion
    tags = {name: run.data.tags for name, run in batches.items()}
    assert tags["held_out"]["agnews.health"] == "ok", tags["held_out"]["agnews.health_reasons"]
    assert tags["sports_only"]["agnews.health"] == "drift"
    assert "label_mix" in tags["sports_only"]["agnews.health_reasons"]
    assert tags["other_domain"]["agnews.health"] == "drift"
    assert {"confidence", "unknown_tokens"} & {r.split(":")[0] for r in
                                               tags["other_domain"]["agnews.health_reasons"].split("; ")}
    assert tags["flipped"]["agnews.health"] == "degraded"
    assert "below the model's test interval" in tags["flipped"]["agnews.health_reasons"]
    assert tags["too_small"]["agnews.health"] == "too_small" and "5 rows < min_batch=30" in \
        tags["too_small"]["agnews.health_reasons"]
    for run in batches.values():
        assert run.data.tags["agnews.reference_run_id"] == evaluate.info.run_id
        assert run.data.tags["agnews.reference_match"] == "exact"  # evaluate's rows, variant and precision
        assert "chi-square" in run.data.tags["agnews.monitor_test.label_mix"]
    held_out = batches["held_out"].data.metrics
    assert {"monitor_label_mix_p_holm", "monitor_confidence_p", "monitor_embedding_statistic"} <= set(held_out)


@pytest.fixture(scope="module")
def monitored(champion, batches):
    project, client, version, _, _ = champion
    assert run_step("monitor") is None
    run = latest(client, "monitor")
    folder = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=""))
    return run, folder


def test_monitor_draws_the_batches_over_time(champion, batches, monitored):
    project, client, version, _, _ = champion
    run, folder = monitored
    assert run.info.status == "FINISHED" and run.data.metrics["batches"] == len(batches)
    for statistic in ("label_mix", "confidence", "unknown_tokens", "embedding"):
        assert (folder / "plots" / f"monitor_{statistic}.png").stat().st_size > 10_000
        assert (project / "graficas" / f"monitor_{statistic}.png").is_file()
    report = (folder / "monitoring" / "monitor.md").read_text()
    for run_ in batches.values():
        assert run_.info.run_id in report
    assert report.count("| **drift** |") == 2 and "| **degraded** |" in report and "| **too_small** |" in report
    # sports, code, flipped: 3 flagged in a row (too_small after them is untested): one alarm, at the 2nd of them
    assert report.count("| **alarm** |") == 1 and report.count("| in alarm |") == 2
    assert run.data.metrics["alarms"] == 1
    assert "mlflow run . --env-manager local -e main -P data=retrain_rows.csv" in report
    assert "-P val_size=40 -P test_size=40 -P gate_size=40" in report  # the model's data run's sizes
    assert "mlflow models serve" in report and "not instrumented" in report
    retrain = pd.read_csv(folder / "monitoring" / "retrain_rows.csv", keep_default_na=False)
    to_label = pd.read_csv(folder / "monitoring" / "to_label.csv", keep_default_na=False)
    assert len(to_label) == 80 and set(to_label["label"]) == {""}  # the code snippets: no labels
    assert set(retrain["label"]) == {"World", "Sports", "Business", "Sci/Tech"}
    assert len(retrain) > 200 and retrain["text"].is_unique  # data run rows + new labelled rows, deduplicated
    tags = client.get_model_version(MODEL, version).tags
    assert tags["agnews.health"] == "too_small" and tags["agnews.health_run_id"] == batches["too_small"].info.run_id
    assert tags["agnews.health_alarm"] == "alarm: degraded/drift over batches #2-#4 (3 flagged in a row)"


@pytest.mark.parametrize("since, expected", [("2000-01-01", 5), ("sports_only", 4)])
def test_since_a_date_or_a_predict_run(champion, batches, monitored, since, expected):
    _, client, _, _, _ = champion
    value = batches[since].info.run_id if since in batches else since
    assert run_step("monitor", "--since", value) is None
    run = latest(client, "monitor")
    assert run.data.metrics["batches"] == expected and run.data.params["since"] == value


def test_monitor_figure_marks_drifted_batches():
    table = pd.DataFrame({"time": pd.to_datetime(["2026-11-30 10:00", "2026-11-30 11:00"], utc=True),
                          "rows": [80, 80], "health": ["ok", "drift"], "label_mix": [0.05, 0.7],
                          "label_mix_drifted": [False, True], "alarm": [False, True]})
    figure = plots.statistic_figure(table, "label_mix", [(0.0, 0.2), (0.0, 0.2)], "m v1",
                                            "drawn by -e monitor run abc on some CPU")
    gids = {artist.get_gid() for artist in figure.axes[0].get_children()}
    assert {plots.BAND_GID, plots.POINT_GID, plots.DRIFT_GID, plots.ALARM_GID} <= gids
    assert "drawn by -e monitor run abc on some CPU" in figure.axes[0].get_xlabel()


# --- faults ----------------------------------------------------------------------------------------------------------

def _fails(client, *args: str) -> str:
    message = run_step("monitor", *args)
    run = latest(client, "monitor")
    assert message is not None and message.startswith("error: ") and "\n" not in message, message
    assert run.info.status == "FAILED" and not client.list_artifacts(run.info.run_id)
    return message


@pytest.mark.faults
@pytest.mark.parametrize("since", ["yesterday", "2026-13-45", "0" * 32])
def test_bad_since_fails_in_one_line(champion, batches, since):
    _, client, _, _, _ = champion
    message = _fails(client, "--since", since)
    assert f"-P since={since}" in message


@pytest.fixture(scope="module")
def other_version(champion):
    """A second version of the registered model (the same weights), never the champion."""
    _, client, _, _, _ = champion
    return mlflow.register_model(latest(client, "train").data.tags["agnews.model_uri"], MODEL).version


@pytest.mark.faults
def test_a_model_with_no_predict_runs(champion, batches, other_version):
    _, client, _, _, _ = champion
    message = _fails(client, "--model_uri", f"models:/{MODEL}/{other_version}")
    assert f"no finished predict runs of {MODEL} v{other_version}" in message and "-e predict" in message


@pytest.mark.faults
def test_a_predict_run_of_another_model_is_refused_as_since_and_ignored(champion, batches, other_version):
    """Another version's batches are its own health: monitor of the champion neither reads them nor starts at one."""
    _, client, version, _, root = champion
    assert run_step("predict", *step_args(input=_other_domain(root / "other.csv", rows=40),
                                          model_uri=f"models:/{MODEL}/{other_version}")) is None
    other_run = latest(client, "predict")
    message = _fails(client, "--since", other_run.info.run_id)
    assert f"is a predict run of {MODEL} v{other_version}, not a predict run of {MODEL} v{version}" in message
    assert run_step("monitor") is None
    assert latest(client, "monitor").data.metrics["batches"] == len(batches)


@pytest.mark.parametrize("args, expected", [(("--alpha", "0"), "-P alpha=0"), (("--min_batch", "1"), "min_batch"),
                                            (("--low_confidence", "1.5"), "-P low_confidence=1.5")])
def test_predict_refuses_bad_monitoring_parameters(champion, args, expected):
    _, client, _, _, root = champion
    message = run_step("predict", "--input", _other_domain(root / "bad.csv", rows=40), *args)
    run = latest(client, "predict")
    assert message is not None and message.startswith("error: ") and expected in message, message
    assert run.info.status == "FAILED" and not client.list_artifacts(run.info.run_id)


def test_no_embeddings_skips_that_statistic_and_says_so(synthetic_reference):
    """The int8 ONNX variant has no hidden states: the embedding is not tested, the other statistics are."""
    batch = _synthetic(80, np.random.default_rng(7))
    batch.embeddings = None
    health = checks.check(synthetic_reference, batch)
    embedding = next(c for c in health.checks if c.statistic == "embedding")
    assert health.status == "ok" and not np.isfinite(embedding.p) and "int8 ONNX" in embedding.note
    assert "int8 ONNX" in health.tags()["agnews.monitor_test.embedding"]
    assert "monitor_embedding_p" not in health.metrics() and "monitor_confidence_p" in health.metrics()
