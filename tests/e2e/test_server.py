"""The online server (agnews/serving/server.py): MLflow's scoring protocol, dynamic batching, the bounded queue and the
refusals, in-process over httpx's ASGI transport with a fake classifier; one test serves a real tiny model."""
from __future__ import annotations

import asyncio
import json
import threading

import httpx2 as httpx
import numpy as np
import pytest

from agnews.data.task import AG_NEWS
from agnews.serving.server import create_app

LABELS = AG_NEWS.labels


class Fake:
    """Labels and a logits function that records each call's batch; the class is the text's length mod 4."""

    variant, precision = "fp32", "fp32"
    labels = LABELS

    def __init__(self, gate: threading.Event | None = None):
        self.calls: list[list[str]] = []
        self.started = threading.Event()
        self.gate = gate

    def logits(self, texts):
        self.calls.append(list(texts))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        out = np.zeros((len(texts), len(LABELS)))
        out[np.arange(len(texts)), [len(t) % 4 for t in texts]] = 5.0
        return out


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 15))


def _classes(response) -> list[int]:
    return [p["class_id"] for p in response.json()["predictions"]]


@pytest.mark.parametrize("payload", [
    {"inputs": ["ab", "abc"]},
    {"instances": ["ab", "abc"]},
    {"instances": [{"text": "ab"}, {"text": "abc"}]},
    {"dataframe_split": {"columns": ["text"], "data": [["ab"], ["abc"]]}},
    {"dataframe_split": {"columns": ["Title", "description"], "data": [["a", "b"], ["a", "bc"]]}},  # "a b", "a bc"
])
def test_every_input_shape_answers_per_row(payload):
    fake = Fake()

    async def go():
        async with _client(create_app(lambda: fake, max_wait_ms=1)) as client:
            return await client.post("/invocations", json=payload)

    response = _run(go())
    assert response.status_code == 200, response.text
    rows = response.json()["predictions"]
    expected = [len(t) % 4 for t in fake.calls[0]]
    assert len(fake.calls) == 1 and len(fake.calls[0]) == 2  # texts growing in length: call order = request order
    assert [r["class_id"] for r in rows] == expected
    for row in rows:
        assert row["label"] == LABELS[row["class_id"]]
        assert set(row["probabilities"]) == set(LABELS)
        assert row["score"] == pytest.approx(max(row["probabilities"].values()))
        assert sum(row["probabilities"].values()) == pytest.approx(1)


def test_texts_are_cleaned_as_predict_cleans_them():
    fake = Fake()

    async def go():
        async with _client(create_app(lambda: fake, max_wait_ms=1)) as client:
            return await client.post("/invocations", json={"inputs": ["  it #39;s   here "]})

    assert _run(go()).status_code == 200
    assert fake.calls == [["it's here"]]


def test_concurrent_requests_are_scored_in_one_call_sorted_by_length():
    fake = Fake()
    app = create_app(lambda: fake, max_batch=32, max_wait_ms=300)
    first, second = ["a much longer text here", "x"], ["medium text"]

    async def go():
        async with _client(app) as client:
            return await asyncio.gather(client.post("/invocations", json={"inputs": first}),
                                        client.post("/invocations", json={"inputs": second}))

    one, two = _run(go())
    assert len(fake.calls) == 1 and sorted(fake.calls[0]) == sorted(first + second)
    assert fake.calls[0] == sorted(first + second, key=len)  # similar lengths together
    assert _classes(one) == [len(t) % 4 for t in first] and _classes(two) == [len(t) % 4 for t in second]

    async def metrics():
        async with _client(app) as client:
            return (await client.get("/metrics")).text, (await client.get("/health")).json()

    text, health = _run(metrics())
    assert 'agnews_serve_requests_total{code="200"} 2' in text
    assert "agnews_serve_rows_total 3" in text and "agnews_serve_batch_rows_count 1" in text
    assert "agnews_serve_batch_rows_sum 3" in text and "agnews_serve_latency_seconds_count 2" in text
    assert "agnews_serve_queue_depth 0" in text
    assert health["rows_served"] == 3 and health["variant"] == "fp32" and health["labels"] == list(LABELS)


def test_max_batch_closes_a_batch_without_waiting():
    fake = Fake()

    async def go():
        async with _client(create_app(lambda: fake, max_batch=2, max_wait_ms=5000)) as client:
            return await client.post("/invocations", json={"inputs": ["one", "two"]})

    assert _run(go()).status_code == 200  # within the 15 s bound: the 5 s wait was not taken
    assert len(fake.calls) == 1


def test_a_full_queue_answers_503_with_retry_after():
    gate = threading.Event()
    fake = Fake(gate)
    app = create_app(lambda: fake, max_batch=1, max_wait_ms=0, max_queue=1)

    async def go():
        async with _client(app) as client:
            post = lambda text: client.post("/invocations", json={"inputs": [text]})
            scoring = asyncio.create_task(post("first"))
            while not fake.started.is_set():  # the worker holds it, blocked in the classifier
                await asyncio.sleep(0.01)
            queued = asyncio.create_task(post("second"))
            while app.state.batcher.depth() < 1:
                await asyncio.sleep(0.01)
            refused = await post("third")
            gate.set()
            return refused, await scoring, await queued

    refused, scoring, queued = _run(go())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "busy" in refused.json()["message"]
    assert scoring.status_code == queued.status_code == 200
    assert [c for c in fake.calls] == [["first"], ["second"]]


@pytest.mark.parametrize("body, status, words", [
    (b'{"inputs": ["a"', 400, "malformed JSON"),
    (b'["a"]', 400, "exactly one of inputs, instances, dataframe_split"),
    (b'{"inputs": ["a"], "instances": ["b"]}', 400, "exactly one of"),
    (b'{"inputs": ["ok", 3]}', 400, "row 2 is not a string"),
    (b'{"inputs": []}', 400, "non-empty list"),
    (b'{"inputs": ["ok", "   "]}', 400, "row 2 has empty text"),
    (b'{"dataframe_split": {"columns": ["body"], "data": [["a"]]}}', 400, "model's text columns are text"),
    (b'{"dataframe_split": {"columns": ["text"], "data": [["a"], ["b", "c"]]}}', 400, "row 2 does not have 1"),
    (b'{"dataframe_split": {"columns": ["text"], "data": [[{"a": 1}]]}}', 400, "text"),
    (json.dumps({"inputs": ["x" * 3000]}).encode(), 413, "limit"),
])
def test_faults_answer_one_line(body, status, words):
    fake = Fake()

    async def go():
        async with _client(create_app(lambda: fake, max_body_bytes=2000)) as client:
            return await client.post("/invocations", content=body, headers={"Content-Type": "application/json"})

    response = _run(go())
    assert response.status_code == status, response.text
    message = response.json()["message"]
    assert words in message and "\n" not in message
    assert fake.calls == []


def test_ping_health_and_metrics_answer_before_any_request():
    async def go():
        async with _client(create_app(Fake, info={"model_uri": "models:/m@champion", "version": "3"})) as client:
            return [await client.get(p) for p in ("/ping", "/health", "/metrics")]

    ping, health, metrics = _run(go())
    assert ping.status_code == 200
    assert health.json()["version"] == "3" and health.json()["rows_served"] == 0
    assert metrics.headers["content-type"].startswith("text/plain") and "agnews_serve_queue_depth 0" in metrics.text


def test_the_serve_step_serves_a_real_tiny_model_as_predict_scores_it(tmp_path_factory, fixture_csv, tiny_model,
                                                                     monkeypatch):
    """steps/serve.py end to end but the socket: the alias resolved, the task read, the model loaded once with
    serving.load; the app it would run answers a dataframe_split of the model's columns with predict's numbers."""
    import pandas as pd

    from agnews.data.reading import clean_texts
    from agnews.serving import classifiers, server
    from agnews.serving.predict import model_task
    from steps import serve
    from tests.helpers import latest, project_store, run_step, step_args

    rows = [["Stocks rally", "it #39;s a market day"], ["Team wins", "the final match"]]
    seen: dict = {}

    def fake_run(app, host, port):  # instead of uvicorn: a request through the app, and the model to compare with
        async def go():
            async with _client(app) as http:
                return (await http.post("/invocations", json={"dataframe_split": {
                    "columns": ["title", "description"], "data": rows}}), (await http.get("/health")).json())

        seen.update(zip(("response", "health"), _run(go())), host=host, port=port)
        model = app.state.batcher._classifier()
        texts = clean_texts(pd.Series([f"{t} {d}" for t, d in rows]), seen["task"].cleaning).tolist()
        seen.update(expected=model.probabilities(texts), labels=model.labels)

    sizes = {"train_size": "40", "val_size": "20", "test_size": "20", "gate_size": "0"}
    with project_store(tmp_path_factory.mktemp("serve") / "project", fixture_csv, **sizes) as (_, client, data_run):
        message = run_step("train", *step_args(model=tiny_model, data_run_id=data_run.info.run_id, epochs=1,
                                               learning_rate=0.01, batch_size=8, seed=1))
        assert message is None, message
        version = latest(client, "train").data.tags["agnews.registered_version"]
        client.set_registered_model_alias("agnews-classifier", "champion", version)
        seen["task"] = model_task(f"models:/agnews-classifier/{version}")
        monkeypatch.setattr(server, "run", fake_run)
        loads = []
        monkeypatch.setattr(classifiers, "load",
                            lambda *a, _load=classifiers.load, **k: loads.append(a) or _load(*a, **k))
        serve.main(["--port", "8123", "--precision", "fp32", "--max_wait_ms", "1"])
    assert loads == [(f"models:/agnews-classifier/{version}",)]  # the alias resolved once, the version loaded once
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123
    response = seen["response"]
    assert response.status_code == 200, response.text
    got = np.array([[p["probabilities"][name] for name in seen["labels"]] for p in response.json()["predictions"]])
    np.testing.assert_allclose(got, seen["expected"], atol=1e-5)
    assert [p["class_id"] for p in response.json()["predictions"]] == seen["expected"].argmax(1).tolist()
    assert seen["health"]["version"] == version and seen["health"]["model_uri"] == "models:/agnews-classifier@champion"
    assert seen["health"]["rows_served"] == 2 and seen["health"]["precision"] == "fp32"

SLOW_SERVER = """
import sys, time
import numpy as np
from agnews.serving import server

class Slow:
    labels = ("a", "b")
    def logits(self, texts):
        print("scoring", flush=True)
        time.sleep(1.5)
        return np.zeros((len(texts), 2))

server.run(server.create_app(Slow), port=int(sys.argv[1]), log_level="warning")
"""


def test_sigterm_drains_the_request_in_flight_then_exits_0(tmp_path):
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-c", SLOW_SERVER, str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert process.poll() is None and time.time() < deadline, process.stderr.read()[-2000:]
                time.sleep(0.2)
        answer: dict = {}

        def post():
            request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", method="POST",
                                             data=b'{"inputs": ["in flight"]}',
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=20) as response:
                answer.update(status=response.status, body=json.loads(response.read()))

        client = threading.Thread(target=post)
        client.start()
        assert process.stdout.readline().strip() == "scoring"  # the request is in the classifier now
        process.send_signal(signal.SIGTERM)
        client.join(20)
        assert process.wait(20) == 0, process.stderr.read()[-2000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert answer["status"] == 200 and answer["body"]["predictions"][0]["label"] == "a"
