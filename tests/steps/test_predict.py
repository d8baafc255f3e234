"""predict: batch predictions with a registered model, real outcomes with a tiny BERT.

One tiny model is trained once (in-process) into a project copy's store and given the `champion` alias; the
predict runs are in-process (run_step) except one through the real `mlflow run . -e predict` CLI."""
from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from agnews.data.ag_news import LABELS
from agnews.data.reading import clean_texts
from agnews.serving.predict import PROB_COLUMNS
from tests.helpers import latest, project_store, run_step, step_args, write_agnews_csv

MODEL = "agnews-classifier"
CHAMPION = f"models:/{MODEL}@champion"
@pytest.fixture(scope="module")
def champion(tmp_path_factory, fixture_csv, tiny_model):
    """A project copy whose store holds one trained tiny model, registered and aliased `champion`."""
    with project_store(tmp_path_factory.mktemp("predict") / "project", fixture_csv) as (project, client, data_run):
        message = run_step("train", *step_args(model=tiny_model, data_run_id=data_run.info.run_id, epochs=3,
                                               learning_rate=0.01, batch_size=8, seed=1))
        assert message is None, message
        version = latest(client, "train").data.tags["agnews.registered_version"]
        client.set_registered_model_alias(MODEL, "champion", version)  # what compare's gate would do
        yield project, client, version


def _predict(client, *args: str):
    """(error line or None, the predict run it made)."""
    message = run_step("predict", *args)
    return message, latest(client, "predict")


def _artifact_table(client, run) -> pd.DataFrame:
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="predictions/predictions.csv",
                                                tracking_uri=client.tracking_uri)
    return pd.read_csv(local, keep_default_na=False)


def _agnews_rows(path, rows_per_class: int = 5, seed: int = 3) -> pd.DataFrame:
    """The fixture's headerless file, and its rows as class, title, description, expected text."""
    write_agnews_csv(path, rows_per_class=rows_per_class, seed=seed)
    raw = pd.read_csv(path, header=None, names=["cls", "title", "description"], dtype=str, keep_default_na=False)
    return raw.assign(text=clean_texts(raw["title"] + " " + raw["description"], "ag_news"),
                      label=raw["cls"].astype(int) - 1)


def _write(rows: pd.DataFrame, fmt: str, folder) -> tuple[str, bool]:
    """The same rows in one of the input formats; (path, whether it carries labels)."""
    if fmt == "agnews":
        return str(folder / "agnews.csv"), True
    path = folder / ("input.parquet" if fmt == "parquet" else "input.csv")
    if fmt == "text":  # labels as class names, an extra column that is ignored
        rows.assign(label=[LABELS[i] for i in rows["label"]], id=range(len(rows)))[["id", "text", "label"]] \
            .to_csv(path, index=False)
    elif fmt == "title_description":  # labels 0-3
        rows[["title", "description", "label"]].to_csv(path, index=False)
    else:  # parquet, texts only
        rows[["text"]].to_parquet(path, index=False)
    return str(path), fmt != "parquet"


@pytest.mark.parametrize("fmt", ["text", "title_description", "agnews", "parquet"])
def test_every_input_format(champion, tmp_path, fmt):
    project, client, version = champion
    rows = _agnews_rows(tmp_path / "agnews.csv")
    path, labelled = _write(rows, fmt, tmp_path)
    output = tmp_path / ("out.parquet" if fmt == "parquet" else "out.csv")
    message, run = _predict(client, *step_args(input=path, model_uri=CHAMPION, output=str(output)))
    assert message is None, message
    table = pd.read_parquet(output) if fmt == "parquet" else pd.read_csv(output, keep_default_na=False)

    assert table["text"].tolist() == rows["text"].tolist()  # cleaned, in input order
    expected = ["text", "label", "label_name", *(["true_label", "true_label_name"] if labelled else []), *PROB_COLUMNS]
    assert list(table.columns) == expected
    probs = table[PROB_COLUMNS].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4) and (table["label"] == probs.argmax(axis=1)).all()
    assert table["label_name"].tolist() == [LABELS[i] for i in table["label"]]
    pd.testing.assert_frame_equal(_artifact_table(client, run), pd.read_csv(output, keep_default_na=False)
                                  if fmt != "parquet" else table, check_dtype=False)

    assert run.info.status == "FINISHED" and run.data.metrics["rows"] == len(rows)
    assert run.data.tags["agnews.model_uri"] == CHAMPION and run.data.tags["agnews.model_version"] == version
    assert run.data.tags["agnews.registered_model"] == MODEL
    assert run.data.tags["mlflow.runName"] == f"predict {MODEL} v{version}"
    if labelled:
        assert table["true_label"].tolist() == rows["label"].tolist()
        assert table["true_label_name"].tolist() == [LABELS[i] for i in rows["label"]]
        assert run.data.metrics["accuracy"] == pytest.approx(accuracy_score(table["true_label"], table["label"]))
        assert run.data.metrics["f1_macro"] == pytest.approx(f1_score(table["true_label"], table["label"],
                                                                       average="macro"))
        assert run.data.metrics["accuracy"] > 0.5  # the trained model, not chance (0.25)
    else:
        assert "accuracy" not in run.data.metrics and "f1_macro" not in run.data.metrics


def test_order_and_duplicates_kept(champion, tmp_path):
    project, client, version = champion
    texts = ["stocks market profit", "game team season", "stocks market profit", "software internet chip",
             "game team season", "stocks market profit"]
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "dups.csv", index=False)
    message, run = _predict(client, *step_args(input=str(tmp_path / "dups.csv"),
                                               model_uri=f"models:/{MODEL}/{version}"))
    assert message is None, message
    table = _artifact_table(client, run)
    assert table["text"].tolist() == texts and run.data.metrics["rows"] == len(texts)
    same = table[table["text"] == "stocks market profit"][PROB_COLUMNS].to_numpy()
    assert np.allclose(same, same[0], atol=1e-4)  # the same text gets the same answer wherever it sits
    assert run.data.tags["agnews.model_version"] == version


def test_a_logged_model_uri_is_not_a_registry_version(champion, tmp_path):
    project, client, version = champion
    logged = latest(client, "train").data.tags["agnews.model_uri"]  # models:/m-<id>: a logged model, no version
    pd.DataFrame({"text": ["game team season"]}).to_csv(tmp_path / "one.csv", index=False)
    message, run = _predict(client, *step_args(input=str(tmp_path / "one.csv"), model_uri=logged))
    assert message is None, message
    assert run.data.tags["agnews.model_uri"] == logged and run.data.tags["mlflow.runName"] == f"predict {logged}"
    assert "agnews.registered_model" not in run.data.tags and "agnews.model_version" not in run.data.tags


def test_text_of_100000_characters_is_truncated_not_a_crash(champion, tmp_path):
    project, client, version = champion
    long = ("game team " * 10_000).strip() + "s"
    assert len(long) == 100_000
    pd.DataFrame({"text": [long, "stocks market profit"]}).to_csv(tmp_path / "long.csv", index=False)
    message, run = _predict(client, *step_args(input=str(tmp_path / "long.csv"), model_uri=CHAMPION, batch_size="1"))
    assert message is None, message
    table = _artifact_table(client, run)
    assert len(table) == 2 and len(table.loc[0, "text"]) == 100_000
    assert np.isfinite(table[PROB_COLUMNS].to_numpy()).all()


def test_predict_step_scores_with_the_champion_by_default(champion, tmp_path):
    project, client, version = champion
    _agnews_rows(tmp_path / "agnews.csv", rows_per_class=3)
    output = tmp_path / "predictions.parquet"
    message = run_step("predict", *step_args(input=tmp_path / "agnews.csv", output=output))  # the champion: default
    assert message is None, message
    run = latest(client, "predict")
    assert run.info.status == "FINISHED" and run.data.params["model_uri"] == CHAMPION
    assert run.data.tags["agnews.model_version"] == version and run.data.metrics["rows"] == 12
    assert {"accuracy", "f1_macro"} <= set(run.data.metrics)
    assert len(pd.read_parquet(output)) == 12


BAD = {  # case: (input file content or None for the fixture file, extra args, what the error line says)
    "no text column": ("body,label\nstocks up,2\n", {}, "no 'text' column"),
    "empty file": ("", {}, "is empty"),
    "header only": ("text,label\n", {}, "no data rows"),
    "empty text": ("text\nstocks up\n  \\ \ngame on\n", {}, "row 2 has empty text"),
    "unknown label": ("text,label\nstocks up,Business\ngame on,Politics\n", {}, "row 2 has unknown label 'Politics'"),
    "unknown class": ('"2","game","on"\n"5","stocks","up"\n', {}, "row 2 has unknown label '5'"),
    "no input": (None, {"input": ""}, "-P input is empty"),
    "alias does not resolve": (None, {"model_uri": f"models:/{MODEL}@nobody"}, "does not resolve"),
    "version does not resolve": (None, {"model_uri": f"models:/{MODEL}/99"}, "does not resolve"),
    "unknown registered model": (None, {"model_uri": "models:/no-such-model@champion"}, "does not resolve"),
    "output folder missing": (None, {"output": "{tmp}/missing/out.csv"}, "does not exist"),
    "output extension": (None, {"output": "{tmp}/out.json"}, "end the path in .csv or .parquet"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_fails_in_one_line(champion, tmp_path, case):
    project, client, version = champion
    content, extra, expected = BAD[case]
    path = tmp_path / "input.csv"
    if content is None:
        _agnews_rows(path, rows_per_class=1)
    else:
        path.write_text(content)
    args = {"input": str(path), "model_uri": CHAMPION, "output": str(tmp_path / "out.csv"), **extra}
    args = {k: v.format(tmp=tmp_path) for k, v in args.items()}
    message, run = _predict(client, *step_args(**args))
    assert message is not None and message.startswith("error: ") and "\n" not in message, message
    assert expected in message, message
    assert run.info.status == "FAILED" and run.data.tags["agnews.error"] == message.removeprefix("error: ")
    assert not client.list_artifacts(run.info.run_id)
    assert [p.name for p in tmp_path.iterdir()] == ["input.csv"]  # no output, no folder, no temporary file


def test_text_columns_parameter_overrides_the_models_columns(champion, tmp_path):
    project, client, _ = champion
    path = tmp_path / "headlines.csv"
    pd.DataFrame({"headline": ["stocks market profit shares", "game team season coach"],
                  "text": ["ignored", "ignored"]}).to_csv(path, index=False)
    message, run = _predict(client, "--input", str(path), "--model_uri", CHAMPION, "--text_columns", "headline")
    assert message is None, message
    table = _artifact_table(client, run)
    assert table["text"].tolist() == ["stocks market profit shares", "game team season coach"]
    assert run.data.params["text_columns"] == "headline"
    message, run = _predict(client, "--input", str(path), "--model_uri", CHAMPION, "--text_columns", "body")
    assert message.startswith("error: ") and "['body']" in message and "headline" in message
    assert run.info.status == "FAILED"


IN_DISTRIBUTION_SEED, IN_DISTRIBUTION_PER_CLASS = 3, 10


def in_distribution_csv(path, seed: int = IN_DISTRIBUTION_SEED) -> str:
    """Held-out rows of the fixture's generator (benchmarks/bench_monitor_tests.py draws more seeds the same way)."""
    _agnews_rows(path, rows_per_class=IN_DISTRIBUTION_PER_CLASS, seed=seed)
    return str(path)


def test_the_first_predict_of_a_model_never_evaluated_records_the_reference(champion, tmp_path):
    """No evaluate run here: the first predict run computed the reference on the data run's validation + test rows
    and logged it on itself; every later one is checked against that one. Held-out rows of the fixture's generator
    are `ok`, not "ok or drift": benchmarks/bench_monitor_tests.py (RESULTS.md, "the tests' in-distribution batches")
    trains this module's model and predicts this batch in fp32 (what an AVX2-only machine runs) and in bf16: its
    smallest raw p over the statistics was 0.44 (fp32) and 0.38 (bf16) where drift needs 0.01 / 7 = 0.0014 (Holm over
    7 statistics), and 30 other seeds drawn the same way were all `ok` in both (smallest 0.17): a margin of 100x.
    The batch holds 10 rows per class, the reference's mix (20 per class), so the label mix sits at its expectation."""
    project, client, _ = champion
    message, run = _predict(client, *step_args(input=in_distribution_csv(tmp_path / "agnews.csv"), model_uri=CHAMPION))
    assert message is None, message
    holder = client.get_run(run.data.tags["agnews.reference_run_id"])
    assert holder.data.tags["agnews.step"] == "predict" and holder.info.status == "FINISHED"
    train = latest(client, "train")
    assert holder.data.tags["agnews.reference_for"] == train.info.run_id
    assert holder.data.tags["agnews.reference_data_run_id"] == train.data.tags["agnews.data_run_id"]
    assert (holder.info.run_id == run.info.run_id) == (run.data.tags["agnews.reference_match"] == "computed")
    assert [a.path for a in client.list_artifacts(holder.info.run_id, "monitoring")] == [
        "monitoring/health.json", "monitoring/reference.json"]
    assert run.data.tags["agnews.health"] == "ok", run.data.tags["agnews.health_reasons"]
    assert "monitor_label_mix_p_holm" in run.data.metrics
