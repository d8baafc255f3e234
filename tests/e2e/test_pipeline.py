"""The MLproject through the real `mlflow run` CLI against a fresh SQLite store in a copy of the project."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from agnews.data.ag_news import LABELS
from agnews.orchestration import placement
from tests.helpers import (
    EPOCHS,
    SMALL,
    TINY,
    TINYBERT_ID,
    build_tiny_bert,
    by_step,
    client_for,
    entered_store,
    latest,
    mlflow_cli,
    populate_hf_cache,
    project_copy,
    run_step,
    runs_of,
    step_args,
)

PARALLEL = ["-P", "parallel=2"]  # both trains at once: what test_parallel_children_... checks; the rest is unchanged
# No int8 variant: its export is ~6 s of CPU per evaluate; test_serving.py scores, registers and serves it, and
# test_task.py's CLI main runs it through main.
NO_INT8 = ["-P", "int8=false"]
PER_EPOCH = ["train_loss", "val_loss", "val_accuracy", "val_f1_macro", "val_precision_macro", "val_recall_macro"]


@pytest.fixture(scope="module")
def main_run(tmp_path_factory, fixture_csv):
    """`mlflow run . --env-manager local` (entry point main) with two tiny local models of different sizes, both
    in folders named `tiny` (`a/tiny`, `b/tiny`): they must come out named `tiny` and `tiny-2`."""
    root = tmp_path_factory.mktemp("main")
    project = project_copy(root / "project")
    models = [build_tiny_bert(root / folder / "tiny", hidden=hidden, seed=seed)
              for folder, hidden, seed in (("a", 32, 1), ("b", 16, 2))]
    result = mlflow_cli("run", ".", "--env-manager", "local", "-P", f"models={models[0]},{models[1]}",
                        "-P", f"data={fixture_csv}", *SMALL, *TINY, *PARALLEL, *NO_INT8, cwd=project)
    assert result.returncode == 0, result.stderr[-4000:]
    return project, client_for(project)


def test_main_builds_one_parent_with_child_runs(main_run):
    project, client = main_run
    runs = runs_of(client)  # default experiment: agnews-classification, without --experiment-name
    parents = by_step(runs, "main")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    children = [r for r in runs if r.info.run_id != parent]
    assert {r.data.tags.get("mlflow.parentRunId") for r in children} == {parent}
    assert sorted(r.info.run_name for r in children) == sorted([
        "prepare_data", "train tiny", "train tiny-2", "evaluate tiny", "evaluate tiny-2", "compare"])
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.tags["mlflow.project.entryPoint"] == r.data.tags["agnews.step"] for r in runs)


def test_parallel_children_train_at_overlapping_times_with_split_threads(main_run):
    """-P parallel=2 locally: the two train children ran at the same time, each with its share of the cores."""
    project, client = main_run
    runs = runs_of(client)
    first_main = min(by_step(runs, "main"), key=lambda r: r.info.start_time)
    trains = sorted((r for r in by_step(runs, "train") if r.data.tags["mlflow.parentRunId"] == first_main.info.run_id),
                    key=lambda r: r.info.start_time)
    assert len(trains) == 2
    assert trains[1].info.start_time < trains[0].info.end_time, "the two train children did not overlap"
    expected = str(placement.thread_split(2))  # this machine's cores (or the workers' OMP_NUM_THREADS) halved
    assert [(r.data.params["torch_threads"], r.data.tags["agnews.threads"]) for r in trains] == [(expected,) * 2] * 2


def test_prepare_data_logs_splits_inputs_and_class_counts(main_run):
    _, client = main_run
    prep = by_step(runs_of(client), "prepare_data")[0]
    assert {f.path for f in client.list_artifacts(prep.info.run_id, "data")} == {
        "data/train.parquet", "data/validation.parquet", "data/test.parquet", "data/gate.parquet",
        "data/unlabeled.parquet", "data/labels.json"}  # the pool (no labels, not a dataset input) and the label set
    assert prep.data.metrics["unlabeled_rows"] == 240 - 200
    assert prep.data.params["train_count_Sci_Tech"] == "20" and prep.data.params["test_count_World"] == "10"
    assert prep.data.params["gate_count_Business"] == "10" and prep.data.metrics["duplicates_removed"] == 0
    contexts = {i.tags[0].value for i in prep.inputs.dataset_inputs}
    assert contexts == {"train", "validation", "test", "gate"}


def test_train_runs_log_per_epoch_metrics_and_register(main_run):
    _, client = main_run
    for run in by_step(runs_of(client), "train"):
        for key in PER_EPOCH:
            history = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3], key
        metrics = run.data.metrics
        assert 1 <= metrics["best_epoch"] <= EPOCHS and metrics["num_parameters"] > 0 and metrics["train_seconds"] > 0
        assert 0.0 <= metrics["best_val_f1_macro"] <= 1.0
        assert run.data.params["learning_rate"] == "0.01" and "effective_learning_rate" not in run.data.params
        assert {"train", "validation"} <= {i.tags[0].value for i in run.inputs.dataset_inputs}
        plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
        name = run.data.tags["agnews.model"]
        assert plots == {f"plots/{name}_{kind}.png" for kind in ("accuracy_evolution", "f1_evolution", "loss_function")}
        version = client.get_model_version("agnews-classifier", run.data.tags["agnews.registered_version"])
        assert version.run_id == run.info.run_id and version.tags["base_model"] == run.data.tags["agnews.base_model"]
        assert version.tags["base_model"].endswith("/tiny") and version.tags["model"] == name
        assert version.tags["preset"] == "none"


def test_evaluate_runs_score_the_test_split(main_run):
    _, client = main_run
    for run in by_step(runs_of(client), "evaluate"):
        m = run.data.metrics
        for key in ("test_accuracy", "test_f1_macro", "test_precision_macro", "test_recall_macro", "test_f1_Sci_Tech"):
            assert 0.0 <= m[key] <= 1.0
        files = {f.path for f in client.list_artifacts(run.info.run_id, "evaluation")}
        assert files == {"evaluation/confusion_matrix.csv", "evaluation/confusion_matrix_normalized.csv",
                         "evaluation/predictions.csv"}
        assert "int8_test_f1_macro" not in m  # -P int8=false reached evaluate
        local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="evaluation",
                                                    tracking_uri=client._tracking_client.tracking_uri)
        counts = pd.read_csv(Path(local) / "confusion_matrix.csv", index_col=0)
        assert list(counts.columns) == list(LABELS) and counts.to_numpy().sum() == 40
        predictions = pd.read_csv(Path(local) / "predictions.csv")
        assert len(predictions) == 40
        assert (predictions["true_label"] == predictions["predicted_label"]).mean() == pytest.approx(m["test_accuracy"])


def test_compare_promotes_best_validation_f1_as_champion(main_run):
    project, client = main_run
    runs = runs_of(client)
    trains = by_step(runs, "train")
    best = sorted(trains, key=lambda r: (-r.data.metrics["best_val_f1_macro"], r.data.metrics["num_parameters"],
                                         int(r.data.tags["agnews.registered_version"])))[0]
    champion = client.get_model_version_by_alias("agnews-classifier", "champion")
    assert str(champion.version) == best.data.tags["agnews.registered_version"]
    assert champion.tags["promotion_decision"] == "first_champion"  # a new store: nobody to beat
    assert champion.current_stage == "None"  # aliases, not deprecated stages
    compare = by_step(runs, "compare")[0]
    assert {f.path for f in client.list_artifacts(compare.info.run_id, "comparison")} == {
        "comparison/comparison.csv", "comparison/comparison_runs.csv", "comparison/comparison.md",
        "comparison/report.md", "comparison/frontier.csv"}
    assert (project / "graficas" / "report.md").read_text().startswith("# ")
    table = pd.read_csv(client.download_artifacts(compare.info.run_id, "comparison/comparison.csv"))
    assert sorted(table["model"]) == ["tiny", "tiny-2"]  # two checkpoints with one short name: two rows
    assert len({r.data.tags["agnews.base_model"] for r in trains}) == 2


def test_every_plot_is_written_to_graficas_and_logged(main_run):
    project, client = main_run
    expected = {f"{m}_{kind}.png" for m in ("tiny", "tiny-2")  # two checkpoints, one short name: none overwritten
                for kind in ("accuracy_evolution", "f1_evolution", "loss_function", "confusion_matrix")}
    expected |= {f"comparison_{kind}.png" for kind in ("accuracy", "f1", "all_metrics", "accuracy_evolution", "radar",
                                                       "frontier")}
    written = {p.name for p in (project / "graficas").glob("*.png")}
    assert written == expected
    assert all((project / "graficas" / name).stat().st_size > 10_000 for name in written)
    logged = set()
    for run in runs_of(client):
        logged |= {Path(f.path).name for f in client.list_artifacts(run.info.run_id, "plots")}
    assert logged == expected


def test_champion_loads_with_pyfunc(main_run):
    project, _ = main_run
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/agnews-classifier@champion")
    out = model.predict(["game team season coach", "stocks market profit shares"])
    assert list(out.columns) == ["label", "score"] and set(out["label"]) <= set(LABELS)


def _main_again(project, fixture_csv, **changed: str):
    """The main_run fixture's `main` again, with `changed` parameters."""
    models = ",".join(str(project.parent / folder / "tiny") for folder in "ab")
    given = [f"models={models}", f"data={fixture_csv}", *SMALL, *TINY, *PARALLEL, *NO_INT8]
    pairs = dict(p.split("=", 1) for p in given if p != "-P")
    params = [arg for k, v in {**pairs, **changed}.items() for arg in ("-P", f"{k}={v}")]
    start = time.monotonic()
    result = mlflow_cli("run", ".", "--env-manager", "local", *params, cwd=project)
    assert result.returncode == 0, result.stderr[-4000:]
    return time.monotonic() - start


def _newest_main(client):
    return sorted(by_step(runs_of(client), "main"), key=lambda r: r.info.start_time)[-1]


def test_main_again_reuses_finished_steps(main_run, fixture_csv):
    """Same parameters, code and data: prepare_data, train and evaluate are reused, compare runs again."""
    project, client = main_run
    first = _newest_main(client)
    versions = len(client.search_model_versions("name = 'agnews-classifier'"))
    seconds = _main_again(project, fixture_csv)
    parent = _newest_main(client)
    first_seconds = (first.info.end_time - first.info.start_time) / 1000
    logging.getLogger(__name__).warning("main: %.0f s fresh, %.0f s reusing", first_seconds, seconds)
    children = [r for r in runs_of(client) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert [r.data.tags["agnews.step"] for r in children] == ["compare"]
    earlier = {step: {r.info.run_id for r in by_step(runs_of(client), step)} for step in ("train", "evaluate")}
    assert parent.data.tags["agnews.reused.prepare_data"] == by_step(runs_of(client), "prepare_data")[0].info.run_id
    assert set(parent.data.tags["agnews.reused.train"].split(",")) == earlier["train"]
    assert set(parent.data.tags["agnews.reused.evaluate"].split(",")) == earlier["evaluate"]
    assert len(client.search_model_versions("name = 'agnews-classifier'")) == versions  # nothing registered twice
    assert children[0].data.tags["agnews.promotion_decision"] == "already_champion"


def test_train_alone_from_a_hub_id_in_the_offline_cache_then_evaluate_and_compare(tmp_path, fixture_csv, tiny_model):
    """`mlflow run . -e train -P model=tinybert` on its own: huawei-noah/TinyBERT_General_4L_312D resolves from a
    populated HF cache offline, the data is prepared inside the run; then evaluate and compare on that run."""
    project = project_copy(tmp_path / "project")
    populate_hf_cache(tmp_path / "hf", TINYBERT_ID, tiny_model)
    train = mlflow_cli("run", ".", "-e", "train", "--env-manager", "local", "-P", "model=tinybert",
                       "-P", f"data={fixture_csv}", *SMALL, "-P", "epochs=1", "--experiment-name", "alone",
                       cwd=project, env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert train.returncode == 0, train.stderr[-3000:]
    client = client_for(project)
    [run] = runs_of(client, "alone")
    assert run.info.run_name == "train tinybert" and "mlflow.parentRunId" not in run.data.tags
    assert run.data.params["base_model"] == TINYBERT_ID
    assert run.data.params["effective_learning_rate"] == "0.0001"  # the preset's documented default
    assert {f.path for f in client.list_artifacts(run.info.run_id, "data")} >= {"data/test.parquet"}  # prepared here
    [version] = client.search_model_versions("name = 'agnews-classifier'")
    assert version.run_id == run.info.run_id and version.tags["model"] == "tinybert"
    assert (version.tags["preset"], version.tags["base_model"]) == ("tinybert", TINYBERT_ID)
    assert (project / "graficas" / "tinybert_loss_function.png").is_file()
    with entered_store(project):  # the two other entry points of a step-by-step session: the CLI adds nothing here
        assert run_step("evaluate", *step_args(train_run_id=run.info.run_id, int8="false")) is None
        assert run_step("compare", *step_args(run_ids=run.info.run_id)) is None
    champion = client.get_model_version_by_alias("agnews-classifier", "champion")
    assert champion.run_id == run.info.run_id
    ev = latest(client, "evaluate")
    assert ev.info.run_name == "evaluate tinybert" and 0 <= ev.data.metrics["test_accuracy"] <= 1


def test_a_weaker_model_on_other_rows_does_not_take_champion(main_run, tmp_path, fixture_csv):
    """Issue 6's acceptance: after the first main, a second main with a weak model and another seed (so other
    rows) leaves `champion` where it was, and the weak version gets `challenger` and a reasoned kept_incumbent."""
    project, client = main_run
    champion = client.get_model_version_by_alias("agnews-classifier", "champion")
    weak = build_tiny_bert(tmp_path / "tiny-weak", hidden=16, seed=3)
    with entered_store(project):  # main in-process, its children through MLflow's local backend
        message = run_step("main", *step_args(
            models=weak, data=fixture_csv, train_size=80, val_size=40, test_size=40, gate_size=40, seed=7, epochs=1,
            learning_rate=1e-6, int8="false", min_gate_rows=10,
            min_gate_rows_per_class=2))  # 40-row gates: ~20 rows neither model saw
    assert message is None, message
    assert client.get_model_version_by_alias("agnews-classifier", "champion").version == champion.version
    challenger = client.get_model_version_by_alias("agnews-classifier", "challenger")
    assert challenger.tags["model"] == "tiny-weak" and challenger.tags["promotion_decision"] == "kept_incumbent"
    assert challenger.tags["incumbent_version"] == str(champion.version)
    assert int(challenger.tags["gate_excluded"]) > 0  # the incumbent's own training/validation rows were left out
    assert float(challenger.tags["gate_delta_f1_macro"]) < 0 and "not above" in challenger.tags["promotion_reason"]
