"""Distillation with unlabelled text: the pool prepare_data logs, the soft-label loss, the layer cut, layer-wise
learning-rate decay, and the distill entry point through the real CLI (registered, compared, gated)."""
from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from agnews.data.sampling import SPLITS
from agnews.data.task import AG_NEWS
from agnews.training import distill
from agnews.training.models import load_tokenizer_and_model, resolve_model
from tests.helpers import (
    build_tiny_bert,
    by_step,
    latest,
    project_store,
    run_step,
    step_args,
)

MODEL = "agnews-classifier"
def test_soft_label_loss_matches_a_hand_computation():
    student = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.1, 0.2, 0.3, 0.4], [1.0, 1.0, 0.0, -2.0]])
    teacher = torch.tensor([[3.0, 1.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
    labels = torch.tensor([0, distill.IGNORE, 1])
    t, alpha = 2.0, 0.3
    p = np.exp(teacher.numpy() / t) / np.exp(teacher.numpy() / t).sum(1, keepdims=True)
    log_q = student.numpy() / t - np.log(np.exp(student.numpy() / t).sum(1, keepdims=True))
    kl = (p * (np.log(p) - log_q)).sum(1).mean() * t * t  # mean over all 3 rows
    log_s = student.numpy() - np.log(np.exp(student.numpy()).sum(1, keepdims=True))
    ce = -(log_s[0, 0] + log_s[2, 1]) / 3  # per row (0 on the unlabelled one), mean over all 3 rows
    expected = alpha * ce + (1 - alpha) * kl
    got = distill.soft_label_loss(student, teacher, labels, t, alpha).item()
    assert got == pytest.approx(expected, rel=1e-5)
    only_soft = distill.soft_label_loss(student, teacher, torch.full((3,), distill.IGNORE), t, alpha).item()
    assert only_soft == pytest.approx((1 - alpha) * kl, rel=1e-5)
    assert distill.soft_label_loss(student, student, labels, t, 0.0).item() == pytest.approx(0.0, abs=1e-6)


def test_layer_cut_saves_and_loads_with_n_layers(tmp_path):
    folder = build_tiny_bert(tmp_path / "deep", layers=4)
    tokenizer, model = load_tokenizer_and_model(resolve_model(str(folder)), AG_NEWS)
    first = [p.clone() for p in model.bert.encoder.layer[0].parameters()]
    distill.cut_layers(model, 2)
    model.save_pretrained(tmp_path / "cut")
    tokenizer.save_pretrained(tmp_path / "cut")
    _, loaded = load_tokenizer_and_model(resolve_model(str(tmp_path / "cut")), AG_NEWS)
    assert loaded.config.num_hidden_layers == 2 and len(loaded.bert.encoder.layer) == 2
    assert all(torch.equal(a, b) for a, b in zip(first, loaded.bert.encoder.layer[0].parameters()))
    out = loaded(**tokenizer(["game team score"], return_tensors="pt")).logits
    assert out.shape == (1, 4)
    with pytest.raises(distill.PipelineError, match="student_layers=5"):
        distill.cut_layers(loaded, 5)


def test_layer_decay_lowers_the_rate_layer_by_layer(tmp_path):
    _, model = load_tokenizer_and_model(resolve_model(str(build_tiny_bert(tmp_path / "m", layers=3))), AG_NEWS)
    groups = distill.layer_decay_groups(model, 1e-3, 0.5, 0.01)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    layers = model.bert.encoder.layer
    assert rate[id(model.classifier.weight)] == pytest.approx(1e-3)
    assert [rate[id(layers[k].attention.self.query.weight)] for k in range(3)] == pytest.approx(
        [1e-3 * 0.5 ** 3, 1e-3 * 0.5 ** 2, 1e-3 * 0.5])
    assert rate[id(model.bert.embeddings.word_embeddings.weight)] == pytest.approx(1e-3 * 0.5 ** 4)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, fixture_csv, tiny_model):
    """A prepared split and a trained tiny teacher holding `champion`, in a project copy's own store."""
    with project_store(tmp_path_factory.mktemp("distill") / "project", fixture_csv) as (project, client, data):
        assert run_step("train", *step_args(model=tiny_model, data_run_id=data.info.run_id, learning_rate="0.01",
                                            batch_size=8, epochs=3, run_name="teacher")) is None
        train = latest(client, "train")
        client.set_registered_model_alias(MODEL, "champion", train.data.tags["agnews.registered_version"])
        yield project, client, data, train


def test_pool_is_unlabelled_and_disjoint_from_every_split(teacher):
    _, _, data, _ = teacher
    folder = Path(mlflow.artifacts.download_artifacts(run_id=data.info.run_id, artifact_path="data"))
    pool = pd.read_parquet(folder / "unlabeled.parquet")
    assert list(pool.columns) == ["row_id", "text"] and len(pool) == 240 - 200  # fixture rows minus the splits
    for split in SPLITS:
        assert not set(pool["text"]) & set(pd.read_parquet(folder / f"{split}.parquet")["text"])
    assert data.data.metrics["unlabeled_rows"] == len(pool)


def test_distill_step_is_registered_tagged_and_compared(teacher):
    project, client, data, train = teacher
    message = run_step("distill", *step_args(data_run_id=data.info.run_id, student_layers=1, epochs=2,
                                             learning_rate=0.01, batch_size=8, temperature=2, alpha=0.5))
    assert message is None, message
    run = by_step(client.search_runs([data.info.experiment_id]), "distill")[0]
    teacher_version = train.data.tags["agnews.registered_version"]
    assert run.info.run_name == "distill tiny-bert-L1-kd" and run.data.tags["agnews.teacher_version"] == teacher_version
    assert run.data.params["unlabeled_used"] == "40" and run.data.metrics["best_epoch"] >= 1
    version = client.get_model_version(MODEL, run.data.tags["agnews.registered_version"])
    assert version.tags["teacher_version"] == teacher_version and version.tags["student_layers"] == "1"
    model = mlflow.transformers.load_model(run.data.tags["agnews.model_uri"], return_type="components")["model"]
    assert model.config.num_hidden_layers == 1
    assert run_step("evaluate", *step_args(train_run_id=run.info.run_id, int8="false")) is None
    assert run_step("compare", *step_args(run_ids=f"{train.info.run_id},{run.info.run_id}")) is None
    compare = by_step(client.search_runs([data.info.experiment_id], order_by=["attributes.start_time DESC"]),
                      "compare")[0]
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=compare.info.run_id,
                                                            artifact_path="comparison/comparison.csv"))
    assert set(table["model"]) == {"tiny-bert", "tiny-bert-L1-kd"}
    assert compare.data.tags["agnews.promotion_decision"] in ("already_champion", "promoted", "kept_incumbent")


def test_distill_without_a_champion_fails_in_one_line(teacher):
    project, client, data, _ = teacher
    message = run_step("distill", *step_args(data_run_id=data.info.run_id, teacher="models:/no-such-model@champion"))
    assert message and message.startswith("error: model URI 'models:/no-such-model@champion' does not resolve")
    failed = client.search_runs([data.info.experiment_id], "attributes.status = 'FAILED'")
    assert failed and not client.search_model_versions("name = 'no-such-model'")


# main -P distill=true end to end: tests/steps/test_task.py's CLI test (a three-class task, int8 on) runs it.


# --- the soft-label loss is defined per row: a batch's loss is the mean of its rows' losses ---

def _row_loss_by_hand(student: list[float], teacher: list[float], label: int, t: float, alpha: float) -> float:
    """One row's loss written out with math: alpha * -log softmax(student)[label] (0 unlabelled)
    + (1 - alpha) * T^2 * sum_i p_i (log p_i - log q_i), p = softmax(teacher / T), q = softmax(student / T)."""
    import math

    def softmax(xs):
        exps = [math.exp(x) for x in xs]
        return [e / sum(exps) for e in exps]

    p, q = softmax([x / t for x in teacher]), softmax([x / t for x in student])
    kl = sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    ce = 0.0 if label == distill.IGNORE else -math.log(softmax(student)[label])
    return alpha * ce + (1 - alpha) * t * t * kl


def test_soft_label_loss_per_row_with_closed_form_numbers():
    # row 0, labelled 0: student uniform (CE = ln 2), teacher at T=2 gives p = (3/4, 1/4) against q = (1/2, 1/2)
    # row 1, unlabelled: student and teacher agree, so it adds 0 but still counts in the mean
    student = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    teacher = torch.tensor([[2 * np.log(3.0), 0.0], [1.0, -1.0]])
    labels = torch.tensor([0, distill.IGNORE])
    t, alpha = 2.0, 0.25
    kl = 0.75 * np.log(0.75 / 0.5) + 0.25 * np.log(0.25 / 0.5)
    expected = (alpha * np.log(2.0) + (1 - alpha) * t * t * kl + 0.0) / 2
    assert distill.soft_label_loss(student, teacher, labels, t, alpha).item() == pytest.approx(expected, rel=1e-6)
    # alone in its batch the labelled row's loss is the whole per-row loss, not halved
    alone = distill.soft_label_loss(student[:1], teacher[:1], labels[:1], t, alpha).item()
    assert alone == pytest.approx(alpha * np.log(2.0) + (1 - alpha) * t * t * kl, rel=1e-6)


def test_soft_label_loss_three_classes_by_hand():
    student = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-0.3, 0.2, 0.9]]
    teacher = [[2.0, 0.0, 0.0], [0.0, 1.0, -1.0], [0.1, 0.1, 0.4]]
    labels = [2, distill.IGNORE, 1]
    t, alpha = 3.0, 0.6
    expected = sum(_row_loss_by_hand(s, te, y, t, alpha) for s, te, y in zip(student, teacher, labels)) / 3
    got = distill.soft_label_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels), t, alpha)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_soft_label_loss_does_not_depend_on_batch_composition():
    """A labelled row among 15 pool rows weighs what it weighs among 15 labelled rows and what it weighs alone."""
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(31, 3, generator=generator), torch.randn(31, 3, generator=generator)
    labels = torch.randint(0, 3, (31,), generator=generator)
    labels[1:16] = distill.IGNORE  # row 0 labelled, rows 1-15 pool, rows 16-30 labelled
    t, alpha = 2.0, 0.5

    def loss(rows: list[int]) -> float:
        return distill.soft_label_loss(student[rows], teacher[rows], labels[rows], t, alpha).item()

    with_pool, with_labelled = [0, *range(1, 16)], [0, *range(16, 31)]
    one_at_a_time = [loss([k]) for k in with_pool]
    assert loss(with_pool) == pytest.approx(np.mean(one_at_a_time), rel=1e-5)
    assert one_at_a_time[0] == pytest.approx(_row_loss_by_hand(student[0].tolist(), teacher[0].tolist(),
                                                               int(labels[0]), t, alpha), rel=1e-5)
    # row 0's contribution to the summed loss: 16 * loss(batch) - 15 * loss(batch without row 0)
    among_pool = 16 * loss(with_pool) - 15 * loss(with_pool[1:])
    among_labelled = 16 * loss(with_labelled) - 15 * loss(with_labelled[1:])
    assert among_pool == pytest.approx(among_labelled, rel=1e-4) and among_pool == pytest.approx(loss([0]), rel=1e-4)



def test_distill_with_a_three_class_teacher(tmp_path, tiny_model):
    """A teacher of another task: its student gets the same three classes, and a teacher of AG News is refused."""
    from tests.helpers import topic_rows, write_jsonl

    data = write_jsonl(tmp_path / "topics.jsonl", topic_rows(rows_per_class=30))
    with project_store(tmp_path / "project") as (_, client, _):
        assert run_step("prepare_data", *step_args(data=data, train_size=30, val_size=12, test_size=12, gate_size=0,
                                                   text_columns="headline,body", label_column="topic")) is None
        data_run = latest(client, "prepare_data").info.run_id
        assert run_step("train", *step_args(model=tiny_model, data_run_id=data_run, epochs=1, learning_rate="0.01",
                                            batch_size=8, registered_model="topics")) is None
        client.set_registered_model_alias("topics", "champion", latest(client, "train").data.tags[
            "agnews.registered_version"])
        assert run_step("distill", *step_args(teacher="models:/topics@champion", data_run_id=data_run, epochs=1,
                                              batch_size=8, learning_rate="0.01", registered_model="topics")) is None
        student = latest(client, "distill")
        assert student.info.status == "FINISHED" and student.data.params["unlabeled_used"] == "36"
        model = mlflow.pyfunc.load_model(f"models:/topics/{student.data.tags['agnews.registered_version']}")
        assert set(model.predict(["game team season"])["label"]) <= {"deportes", "economía y empresas", "política"}
