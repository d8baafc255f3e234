"""The online server around its batcher (issue 26 items 3-6), over a real socket on 127.0.0.1 with two registered
tiny models: it follows the alias under load without a failed request, keeps serving when a new version does not load,
shadows the challenger (agreement and accuracy as computed here from both models), logs health windows that
`-e monitor`'s reader finds, and drops (and counts) a window whose tracking store is down while still answering."""
from __future__ import annotations

import contextlib
import csv
import json
import threading
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest

from agnews.data.reading import clean_texts
from agnews.data.task import AG_NEWS
from agnews.monitoring import batches, checks, serving_windows
from agnews.serving import classifiers, follow, server, shadow, traffic, windows
from tests.helpers import free_port, latest, project_store, run_step, step_args

MODEL = "agnews-classifier"


@pytest.fixture(scope="module")
def store(tmp_path_factory, fixture_csv, tiny_model):
    """Two trained versions (1, 2) and a third that is no model at all (3), in a project copy's store."""
    with project_store(tmp_path_factory.mktemp("follow") / "project", fixture_csv, train_size="40", val_size="20",
                       test_size="20", gate_size="0") as (project, client, data_run):
        versions = []
        for seed in (1, 2):
            message = run_step("train", *step_args(model=tiny_model, data_run_id=data_run.info.run_id, epochs=1,
                                                   learning_rate=0.01, batch_size=8, seed=seed))
            assert message is None, message
            versions.append(latest(client, "train").data.tags["agnews.registered_version"])
        junk = project / "not-a-model"
        junk.mkdir()
        (junk / "README").write_text("no MLmodel here")
        broken = client.create_model_version(MODEL, str(junk)).version
        yield client, versions, str(broken)


def _rows(fixture_csv, count: int) -> pd.DataFrame:
    """`count` labelled rows of the fixture (class names as labels), texts as the server cleans them."""
    with open(fixture_csv, newline="") as handle:
        rows = list(csv.reader(handle))[::4][:count]
    frame = pd.DataFrame({"text": [f"{t} {d}" for _, t, d in rows], "label": [AG_NEWS.labels[int(c) - 1]
                                                                               for c, _, _ in rows]})
    frame["clean"] = clean_texts(frame["text"], AG_NEWS.cleaning).tolist()
    return frame


def _load(uri):
    return classifiers.load(uri, precision="fp32", batch_size=16)


@contextlib.contextmanager
def _serving(app):
    """uvicorn in a thread on 127.0.0.1 (the app's startup and shutdown run as in `-e serve`)."""
    import uvicorn

    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not uv.started:
        assert thread.is_alive() and time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(60)


def _post(base: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{base}/invocations", data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {"message": error.read().decode()}


def _get(base: str, path: str):
    with urllib.request.urlopen(f"{base}{path}", timeout=10) as response:
        body = response.read().decode()
    return json.loads(body) if path == "/health" else body


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_the_alias_moves_under_load_without_a_failed_request_and_a_broken_version_is_not_served(store,
                                                                                                fixture_csv):
    client, (v1, v2), broken = store
    client.set_registered_model_alias(MODEL, "champion", v1)
    source = follow.Follower(f"models:/{MODEL}@champion", _load, poll_s=0.2)
    texts = _rows(fixture_csv, 8)["text"].tolist()
    statuses, stop = [], threading.Event()

    def load_loop(base):
        for i in range(150):  # bounded: a few seconds of steady traffic per thread
            if stop.is_set():
                return
            statuses.append(_post(base, {"inputs": texts[i % 4: i % 4 + 3]})[0])

    with _serving(server.create_app(source=source, max_wait_ms=2)) as base:
        assert _get(base, "/health")["version"] == v1
        senders = [threading.Thread(target=load_loop, args=(base,)) for _ in range(3)]
        for sender in senders:
            sender.start()
        _until(lambda: len(statuses) >= 20, 30, "traffic before the move")
        client.set_registered_model_alias(MODEL, "champion", v2)
        _until(lambda: _get(base, "/health")["version"] == v2, 30, "the switch to v2")
        answered = len(statuses)
        _until(lambda: len(statuses) >= answered + 20, 30, "traffic after the move")

        client.set_registered_model_alias(MODEL, "champion", broken)  # a version that is no model
        _until(lambda: source.load_failures >= 1, 30, "the failed load")
        answered = len(statuses)
        _until(lambda: len(statuses) >= answered + 10, 30, "traffic after the failed load")
        stop.set()
        for sender in senders:
            sender.join(60)
        health, metrics = _get(base, "/health"), _get(base, "/metrics")
    assert len(statuses) >= 50 and set(statuses) == {200}, [s for s in statuses if s != 200][:5]
    assert health["version"] == v2 and health["alias"] == "champion"  # the old one kept serving
    assert health["alias_switches"] == 1 and health["version_load_failures"] >= 1
    assert "agnews_served_alias_switches_total 1" in metrics
    assert "agnews_served_version_load_failures_total" in metrics
    assert source.current() is None  # shutdown closed the version it served


def test_shadow_agreement_and_health_windows_that_monitor_reads(store, fixture_csv):
    client, (v1, v2), _ = store
    client.set_registered_model_alias(MODEL, "champion", v1)
    client.set_registered_model_alias(MODEL, "challenger", v2)
    source = follow.Follower(f"models:/{MODEL}@champion", _load, poll_s=0)
    challenger = follow.Follower(f"models:/{MODEL}@challenger", _load, poll_s=0, required=False, what="shadow")
    scorer = shadow.Shadow(challenger)
    health_windows = windows.Windows(serving_windows.sink(), window_rows=checks.MIN_BATCH + 10, window_s=300,
                                     shadow=scorer)
    rows = _rows(fixture_csv, 50)
    served = []
    with _serving(server.create_app(source=source, observers=(scorer, health_windows), max_wait_ms=1)) as base:
        started = int(time.time() * 1000) - 1000
        for chunk in np.array_split(np.arange(len(rows)), 5):  # 5 requests of 10 labelled rows, one at a time
            part = rows.iloc[chunk]
            status, body = _post(base, {"dataframe_split": {"columns": ["text", "label"],
                                                            "data": part[["text", "label"]].values.tolist()}})
            assert status == 200, body
            served += [p["class_id"] for p in body["predictions"]]
            _until(lambda: scorer.total.rows >= len(served), 30, "the shadow")
        _until(lambda: health_windows.logged >= 1, 60, "the first health window")
        health = _get(base, "/health")
        metrics = _get(base, "/metrics")
    assert scorer.dropped == 0  # one request at a time: the shadow was never busy
    with _load(f"models:/{MODEL}/{v2}") as model:
        challenger_says = model.logits(rows["clean"].tolist()).argmax(axis=1)
    truth = np.array([AG_NEWS.labels.index(name) for name in rows["label"]])
    served = np.array(served)
    got = health["shadow"]
    assert got["version"] == v2 and got["rows"] == len(rows)
    assert got["agreement"] == pytest.approx(np.mean(challenger_says == served))
    assert got["shadow_accuracy"] == pytest.approx(np.mean(challenger_says == truth))
    assert got["served_accuracy"] == pytest.approx(np.mean(served == truth))
    assert f"agnews_shadow_rows_total {len(rows)}" in metrics and "agnews_windows_logged_total" in metrics

    first = checks.MIN_BATCH + 10  # 4 requests of 10 rows closed the first window; shutdown closed the second
    assert health_windows.logged == 2 and health_windows.dropped == 0
    runs = batches.predict_runs(MODEL, v1, started)  # what -e monitor reads
    assert len(runs) == 2
    window = next(r for r in runs if r.data.metrics["rows"] == first)
    assert window.data.tags["agnews.health"] in ("ok", "drift", "degraded")  # 40 rows: tested
    assert window.info.run_name == f"serve window {MODEL} v{v1}"
    assert window.data.metrics["shadow_agreement"] == pytest.approx(np.mean(challenger_says[:first] == served[:first]))
    assert window.data.metrics["accuracy"] == pytest.approx(np.mean(served[:first] == truth[:first]))
    small = next(r for r in runs if r.data.metrics["rows"] == len(rows) - first)
    assert small.data.tags["agnews.health"] == "too_small" and small.data.params["window_closed_by"] == "stop"
    table = batches.batch_table(runs)
    assert list(table["rows"]) == [first, len(rows) - first]
    logged = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=window.info.run_id,
                                                             artifact_path="predictions/predictions.csv"),
                         keep_default_na=False)
    assert len(logged) == first and set(logged["text"]) == {""}  # no log_inputs: no texts
    assert logged["label"].tolist() == served[:first].tolist()


def test_a_window_the_store_cannot_take_is_retried_then_dropped_while_requests_are_answered(store, fixture_csv,
                                                                                            monkeypatch):
    client, (v1, _), _ = store
    with _load(f"models:/{MODEL}/{v1}") as model:
        info = {"model_uri": f"models:/{MODEL}/{v1}", "registered_model": MODEL, "version": v1}
        health_windows = windows.Windows(serving_windows.sink(), window_rows=5, window_s=300, retry_s=0.3,
                                         tick_s=0.1)
        app = server.create_app(source=traffic.Static(lambda: model, info), observers=(health_windows,))
        texts = _rows(fixture_csv, 6)["text"].tolist()
        with _serving(app) as base:
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
            down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
            monkeypatch.setenv("MLFLOW_TRACKING_URI", down)
            mlflow.set_tracking_uri(down)
            try:
                assert _post(base, {"inputs": texts})[0] == 200  # 6 rows: one window closes
                _until(lambda: health_windows.dropped == 1, 30, "the window to be dropped")
                statuses = [_post(base, {"inputs": texts[:2]})[0] for _ in range(2)]  # 4 rows: no window yet
                metrics = _get(base, "/metrics")
            finally:
                monkeypatch.undo()
                mlflow.set_tracking_uri(client.tracking_uri)
    assert statuses == [200] * 2
    assert "agnews_windows_dropped_total 1" in metrics and "agnews_windows_failed_attempts_total 2" in metrics
    assert "agnews_windows_logged_total 0" in metrics and 'agnews_serve_requests_total{code="200"} 3' in metrics
    assert health_windows.logged == 1 and health_windows.dropped == 1  # the store back: shutdown logged the 4 rows
