"""The linear probe (`probe:<model>`): the C choice, pooling and the linear layer (unit, fast); then one probe on a
tiny encoder through train -> evaluate (int8 on, the default) -> compare -> predict -> monitor in-process, and a
fine-tune on the same data run gated against it."""
from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from agnews.decide import gate
from agnews.errors import PipelineError
from agnews.monitoring import references
from agnews.serving import classifiers
from agnews.training import models, probe
from agnews.training.models import ModelSpec
from tests.helpers import latest, project_store, run_step, step_args, write_agnews_csv

MODEL = "agnews-classifier"


# --- unit ---------------------------------------------------------------------------------------------------

def test_choose_c_takes_the_best_validation_f1_and_the_smaller_c_on_a_tie():
    assert probe.choose_c({0.1: 0.70, 1.0: 0.82, 10.0: 0.80}) == 1.0
    assert probe.choose_c({100.0: 0.9, 1.0: 0.9, 10.0: 0.9}) == 1.0
    assert probe.choose_c({0.1: 0.5}) == 0.1


def _blobs(rows_per_class: list[int], seed: int, dims: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(len(rows_per_class), dims) * 3
    y = np.repeat(np.arange(len(rows_per_class)), rows_per_class)
    x = centres[y] + rng.normal(0, 1, (len(y), dims))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def test_fit_scores_every_c_on_the_validation_rows_and_keeps_the_best():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    x, y = _blobs([50, 10, 10], seed=0)  # imbalanced: a tiny C leaves the intercepts, i.e. the majority class
    vx, vy = _blobs([20, 20, 20], seed=1)
    fitted = probe.fit(x, y, vx, vy, classes=3, grid=(1e-4, 10.0))
    for c, score in fitted.val_f1_by_c.items():  # each C scored on the validation rows, as sklearn would
        alone = LogisticRegression(C=c, max_iter=probe.MAX_ITER).fit(x, y).predict(vx)
        assert score == pytest.approx(f1_score(vy, alone, average="macro"), abs=1e-9)
    assert fitted.val_f1_by_c[1e-4] < 0.4 < fitted.val_f1_by_c[10.0] and fitted.c == 10.0
    assert fitted.weight.shape == (3, 8) and fitted.bias.shape == (3,)


@pytest.mark.parametrize("classes", [2, 3])
def test_the_linear_layer_gives_the_regression_s_probabilities(classes):
    from sklearn.linear_model import LogisticRegression

    x, y = _blobs([20] * classes, seed=2)
    model = LogisticRegression(C=5.0, max_iter=2000).fit(x, y)
    weight, bias = probe.linear_layer(model, classes + 1)  # one more class than the rows have: never predicted
    logits = x @ weight.T + bias
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose(probs[:, :classes], model.predict_proba(x), atol=1e-5)
    assert (logits.argmax(1) < classes).all()


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert probe.mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]
    assert probe.mean_pool(hidden, torch.tensor([[0, 0, 0]])).tolist() == [[0.0, 0.0]]  # no division by zero


def test_embeddings_are_unit_length_and_do_not_depend_on_the_batch(tiny_model):
    from transformers import AutoModel, AutoTokenizer

    encoder, tokenizer = AutoModel.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    short, long = "stocks market", "the game team season coach score league match championship in a new week"
    alone = probe.embed(encoder, tokenizer, [short], max_length=32)
    together = probe.embed(encoder, tokenizer, [long, short], max_length=32, batch_size=2)  # short one padded
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together[1], alone[0], atol=1e-5)


def test_probe_models_resolve_and_name(tiny_model):
    spec = models.resolve_model(f"probe:{tiny_model}")
    assert spec.probe and spec.name == "probe-tiny-bert" and spec.checkpoint == str(tiny_model.resolve())
    assert models.short_name("probe:minilm") == "probe-minilm" and not models.resolve_model("minilm").probe
    twins = models.distinct_names([spec, ModelSpec("probe-tiny-bert", "", "/elsewhere", probe=True)])
    assert [s.name for s in twins] == ["probe-tiny-bert", "probe-tiny-bert-2"] and all(s.probe for s in twins)
    for bad in ("probe:", "probe: ", "probe:probe:minilm"):
        with pytest.raises(PipelineError, match=r"names no encoder to probe; pass probe:<model>"):
            models.resolve_model(bad)
    with pytest.raises(PipelineError, match="unknown model 'nonsense'"):
        models.resolve_model("probe:nonsense")


# --- the pipeline, in-process on a tiny encoder ------------------------------------------------------------------

@pytest.fixture(scope="module")
def probed(tmp_path_factory, fixture_csv, tiny_model):
    """A probe trained and evaluated (int8 on), made first champion; a fine-tune on the same data run gated
    against it."""
    root = tmp_path_factory.mktemp("probe")
    with project_store(root / "project", fixture_csv) as (project, client, data):
        data_run = data.info.run_id
        assert run_step("train", *step_args(model=f"probe:{tiny_model}", data_run_id=data_run)) is None
        probe_run = latest(client, "train")
        assert run_step("evaluate", *step_args(train_run_id=probe_run.info.run_id)) is None  # int8=true
        evaluated = latest(client, "evaluate")
        assert run_step("compare", *step_args(run_ids=probe_run.info.run_id)) is None
        first = latest(client, "compare")
        assert run_step("train", *step_args(model=tiny_model, data_run_id=data_run, epochs=1, learning_rate=0.01,
                                            batch_size=8)) is None
        tuned = latest(client, "train")
        assert run_step("compare", *step_args(run_ids=tuned.info.run_id)) is None
        yield client, root, probe_run, evaluated, first, tuned


def test_the_probe_run_looks_like_a_train_run(probed):
    client, _, run, _, _, _ = probed
    tags, m, params = run.data.tags, run.data.metrics, run.data.params
    assert tags["agnews.model"] == "probe-tiny-bert" and tags["agnews.probe"] == "true"
    assert tags["agnews.data_run_id"] and tags["agnews.model_uri"].startswith("models:/")
    version = client.get_model_version(MODEL, tags["agnews.registered_version"])
    assert version.run_id == run.info.run_id and version.tags["variant"] == "probe"
    assert m["best_epoch"] == 1 and m["epochs_run"] == 1 and m["num_parameters"] > 0
    assert [p.step for p in client.get_metric_history(run.info.run_id, "val_f1_macro")] == [1]
    assert float(params["probe_c"]) in probe.C_GRID and m["best_val_f1_macro"] > 0.9  # the fixture's words separate
    assert {a.path for a in client.list_artifacts(run.info.run_id, "predictions")} == {"predictions/validation.csv"}


def test_the_probe_is_served_as_it_was_scored_on_validation(probed):
    client, _, run, _, _, _ = probed
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                            artifact_path="predictions/validation.csv"))
    from agnews.data import handoff

    validation = handoff.load_splits(run.data.tags["agnews.data_run_id"], ("validation",))["validation"]
    with classifiers.load(run.data.tags["agnews.model_uri"]) as model:
        assert model.variant == "probe" and model.labels == ("World", "Sports", "Business", "Sci/Tech")
        probs = model.probabilities(validation["text"].tolist())
    logged = table.filter(like="prob_").to_numpy()
    np.testing.assert_allclose(probs, logged, atol=2e-3)  # the CSV rounds to 5 places; batches differ
    served = mlflow.pyfunc.load_model(run.data.tags["agnews.model_uri"]).predict(["stocks market profit shares"])
    assert list(served.columns) == ["label", "score"] and served["label"][0] == "Business"


def test_evaluate_scores_the_probe_and_its_int8_variant(probed):
    _, _, _, evaluated, _, _ = probed
    m = evaluated.data.metrics
    assert m["test_f1_macro"] > 0.9 and m["int8_test_f1_macro"] > 0.9 and m["int8_agreement"] > 0.9
    assert evaluated.data.params["serving_precision"] in ("fp32", "bf16")
    assert evaluated.data.tags[references.VARIANT_TAG] == "probe"


def test_the_probe_is_gated_and_a_fine_tune_must_beat_it_on_the_gate_rows(probed):
    client, _, run, _, first, tuned = probed
    probe_version = run.data.tags["agnews.registered_version"]
    assert first.data.tags["agnews.promotion_decision"] == "first_champion"
    tags = client.get_model_version(MODEL, tuned.data.tags["agnews.registered_version"]).tags
    assert tags["promotion_decision"] in ("promoted", "kept_incumbent")  # decided on the gate rows, either way
    assert tags["incumbent_version"] == probe_version and int(tags["gate_rows"]) >= gate.MIN_GATE_ROWS
    champion = str(client.get_model_version_by_alias(MODEL, gate.CHAMPION).version)
    assert champion == (tuned.data.tags["agnews.registered_version"] if tags["promotion_decision"] == "promoted"
                        else probe_version)


def test_predict_and_monitor_with_the_probe(probed):
    client, root, run, _, _, _ = probed
    uri = f"models:/{MODEL}/{run.data.tags['agnews.registered_version']}"
    batch = write_agnews_csv(root / "batch.csv", rows_per_class=10, seed=5)
    output = root / "predictions.csv"
    assert run_step("predict", *step_args(input=batch, model_uri=uri, output=output)) is None
    predicted = latest(client, "predict")
    assert predicted.data.tags["agnews.model_variant"] == "probe"
    assert predicted.data.tags[references.REFERENCE_MATCH_TAG] == "exact"  # evaluate's reference, as served
    assert predicted.data.metrics["accuracy"] > 0.9 and len(pd.read_csv(output)) == 40
    assert run_step("monitor", *step_args(model_uri=uri)) is None
    assert latest(client, "monitor").data.metrics["batches"] == 1


class _Done:
    """A child that has already finished (its run exists, FINISHED): main's routing without running anything."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def get_status(self):
        return "FINISHED"

    def wait(self):
        return True

    def cancel(self):
        pass


def test_main_gates_the_probe_before_the_fine_tunes(store, tiny_model, monkeypatch):
    from agnews.orchestration.launch import Launcher
    from steps import main

    launched = []

    def submit(self, item):
        client = mlflow.MlflowClient()
        run = client.create_run(mlflow.active_run().info.experiment_id, run_name=item.run_name)
        client.set_terminated(run.info.run_id, "FINISHED")
        launched.append((item.entry_point, item.run_name, dict(item.parameters), run.info.run_id))
        return _Done(run.info.run_id)

    monkeypatch.setattr(Launcher, "submit", submit)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the launcher sets it for its children: restored after the test
    with mlflow.start_run():
        main.run_pipeline(main.parse_args(["--models", f"probe:{tiny_model},{tiny_model}", "--reuse", "false"]))
    trains = {name: run_id for step, name, _, run_id in launched if step == "train"}
    assert launched[1][2]["model"] == f"probe:{tiny_model}" and launched[1][2]["name"] == "probe-tiny-bert"
    compares = [(name, params["run_ids"]) for step, name, params, _ in launched if step == "compare"]
    assert compares == [("compare the probe baseline", trains["train probe-tiny-bert"]),
                        ("compare", f"{trains['train probe-tiny-bert']},{trains['train tiny-bert']}")]


def test_a_probe_is_neither_swept_nor_distilled_into(probed, fixture_csv, tiny_model):
    """Train's knobs do not reach a probe (every trial would fit the same regression), and a probe cannot learn from
    soft labels: both refused in one line before anything runs."""
    client, _, probe_run, _, _, _ = probed
    message = run_step("sweep", *step_args(model=f"probe:{tiny_model}", data=fixture_csv, n_trials=1))
    assert message.startswith(f"error: -P model=probe:{tiny_model} is a linear probe") and "\n" not in message
    message = run_step("distill", *step_args(data_run_id=probe_run.data.tags["agnews.data_run_id"],
                                             teacher=f"runs:/{probe_run.info.run_id}/model",
                                             model=f"probe:{tiny_model}"))
    assert message.startswith(f"error: student 'probe:{tiny_model}' is a linear probe") and "\n" not in message
