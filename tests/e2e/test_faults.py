"""The fault suite: every bad input or fault a user hits ends in one `error:` line naming the problem and the fix,
a FAILED or KILLED run, no registry entry or alias created or changed, and no stray files; the cases that must
succeed (duplicates, `-P max_length=64.0` read back, two runs at once) assert their outcome.

Input validation runs in-process against a temporary SQLite store; signals, concurrency and a server that is
down go through the real `mlflow run` CLI."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from agnews.errors import PipelineError  # noqa: E402
from tests.helpers import (
    FIXTURE_ROWS,
    SMALL,
    TINY,
    UNTIL_CANCELLED,
    by_step,
    client_for,
    free_port,
    mlflow_cli,
    project_copy,
    run_step,
    running_cli,
    runs_of,
    wait_for_epoch,
)

pytestmark = pytest.mark.faults

GOOD = {"train_size": "80", "val_size": "40", "test_size": "40", "gate_size": "40"}
FAST = {"epochs": "1", "learning_rate": "0.01", "batch_size": "8"}


def _params(**overrides: str) -> list[str]:
    return [arg for k, v in overrides.items() for arg in (f"--{k}", v)]


def _assert_refused(message: str | None, pattern: str, store: str, status: str = "FAILED") -> None:
    """One line naming the problem, the run ended `status` with the error tag, nothing logged or registered."""
    assert message is not None, "the step succeeded"
    assert message.startswith("error: ") and "\n" not in message, message
    assert re.search(pattern, message), message
    client = mlflow.MlflowClient(store)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) == 1, [r.info.status for r in runs]
    [run] = runs
    assert run.info.status == status and run.data.tags["agnews.error"]
    assert client.list_artifacts(run.info.run_id) == []
    assert not client.search_logged_models([run.info.experiment_id])
    assert not client.search_registered_models()
    plots = Path(os.environ["AGNEWS_PLOTS_DIR"])
    assert not plots.exists() or not any(plots.iterdir())


# --- data files -----------------------------------------------------------------------------------------------

def _rows(n: int = 12, fmt: str = "ag") -> str:
    if fmt == "ag":
        return "".join(f'"{i % 4 + 1}","title {i}","body of row {i}"\n' for i in range(n))
    return "text,label\n" + "".join(f"text of row {i},{i % 4}\n" for i in range(n))


DATA_CASES = {
    "missing_column": ("text,category\nhello world,1\n", r"lacks column\(s\) \['label'\]"),
    "label_0_in_1_4_format": (_rows() + '"0","t","d"\n', r"row 13 has unknown label '0'.*1-4"),
    "label_5_in_1_4_format": (_rows() + '"5","t","d"\n', r"row 13 has unknown label '5'.*1-4"),
    # 0-4 is not AG News' 0-3: a task of five classes named "0".."4", so 4-row samples are too small
    "label_4_in_0_3_format": (_rows(fmt="tl") + "bad row,4\n", r"train_size=4 must be 0 .* or at least 5"),
    "empty_text": (_rows() + '"2","",""\n', r"row 13 has empty text; fill it or drop the row"),
    "whitespace_text": (_rows() + '"2","  ","\t"\n', r"row 13 has empty text"),
    "nan_text": (_rows(fmt="tl") + ",1\n", r"row 13 has empty text"),
    "semicolon_separated": ("text;label\n" + "".join(f"row {i};{i % 4}\n" for i in range(12)), r"semicolon"),
    "empty_file": ("", r"empty"),
    "non_utf8": (_rows().encode() + b'"1","caf\xe9","au lait"\n', r"UTF-8"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_file_is_refused(case, store, tmp_path):
    content, pattern = DATA_CASES[case]
    path = tmp_path / f"{case}.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    message = run_step("prepare_data", *_params(data=str(path), train_size="4", val_size="4", test_size="4",
                                                gate_size="0"))
    _assert_refused(message, pattern, store)


def test_missing_data_file_is_refused(store, tmp_path):
    _assert_refused(run_step("prepare_data", "--data", str(tmp_path / "nope.csv")), r"data file not found", store)


def test_hub_dataset_that_cannot_load_is_refused(store, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    message = run_step("prepare_data", "--data", "hf:nobody/no-such-dataset")
    _assert_refused(message, r"cannot load hub dataset 'nobody/no-such-dataset' \(\w+.*\).*pass -P data=<local csv>",
                    store)


def test_class_too_small_to_stratify_is_refused(store, tmp_path):
    path = tmp_path / "lopsided.csv"  # Sci/Tech has one row: no stratified split can hold it everywhere
    path.write_text("".join(f'"{1 + i % 3}","title {i}","body {i}"\n' for i in range(60)) + '"4","only","one"\n')
    message = run_step("prepare_data", *_params(data=str(path), train_size="20", val_size="20", test_size="20",
                                                gate_size="0"))
    _assert_refused(message, r"Sci/Tech|class", store)


@pytest.mark.parametrize("size, value, pattern", [
    ("train_size", "100000", r"exceeds the .* rows"),
    ("val_size", "-5", r"-P val_size=-5 must be at least 2"),  # any task has 2 classes or more
    ("test_size", "0", r"-P test_size=0 must be at least 2"),
    ("gate_size", "2.5", r"-P gate_size=2.5 is not a whole number"),
], ids=["too_large", "negative", "zero", "fractional"])
def test_bad_sizes_are_refused(size, value, pattern, store, fixture_csv):
    message = run_step("prepare_data", *_params(data=str(fixture_csv), **{**GOOD, size: value}))
    _assert_refused(message, pattern, store)


def test_duplicates_are_removed_and_counted(store, tmp_path, fixture_csv):
    """Exact duplicates after cleaning (here: `\\` vs a space) are dropped before sampling, never leak across splits."""
    rows = fixture_csv.read_text().splitlines()
    dupes = [rows[0].replace("\\\\", " "), rows[1], rows[2]]
    path = tmp_path / "dupes.csv"
    path.write_text("\n".join(rows + dupes) + "\n")
    assert run_step("prepare_data", *_params(data=str(path), **GOOD)) is None
    client = mlflow.MlflowClient(store)
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.metrics["duplicates_removed"] == 3
    assert run.data.metrics["rows_read"] == FIXTURE_ROWS + 3
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="data")
    every = pd.concat(pd.read_parquet(Path(local) / f"{name}.parquet")["text"]
                      for name in ("train", "validation", "test", "gate"))
    assert every.is_unique and len(every) == 200


def test_cp1252_remnants_decode_to_their_characters(store, tmp_path):
    path = tmp_path / "quotes.csv"
    path.write_text(_rows(40) + '"3","Sony#146;s #147;Walkman#148;","sales #150; up #151; again"\n')
    assert run_step("prepare_data", *_params(data=str(path), train_size="20", val_size="4", test_size="4",
                                             gate_size="4")) is None
    client = mlflow.MlflowClient(store)
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="data")
    texts = pd.concat(pd.read_parquet(p)["text"] for p in Path(local).glob("*.parquet"))
    assert "Sony’s “Walkman” sales – up — again" in set(texts)
    assert not texts.str.contains("[\u0080-\u009f]").any()


def test_extra_unnamed_columns_are_ignored(store, tmp_path):
    path = tmp_path / "trailing_commas.csv"
    path.write_text("text,label,\n" + "".join(f"text of row {i},{i % 4},\n" for i in range(40)))
    assert run_step("prepare_data", *_params(data=str(path), train_size="20", val_size="4", test_size="4",
                                             gate_size="4")) is None


# --- training parameters, models and run ids ----------------------------------------------------------------

@pytest.mark.parametrize("param, value, pattern", [
    ("epochs", "-1", r"-P epochs=-1 must be at least 0"),  # 0: auto
    ("batch_size", "0", r"-P batch_size=0 must be at least 1"),
    ("max_length", "0", r"-P max_length=0 must be at least 3"),
    ("max_length", "4096", r"-P max_length=4096 exceeds the 128 positions of"),
    ("precision", "fp8", r"-P precision='fp8' is unknown; use one of auto, fp32, bf16"),
    ("registered_model", "team/agnews", r"-P registered_model='team/agnews' is not a valid registered model name"),
    ("model", "tinybertt", r"unknown model 'tinybertt': use a preset"),
    ("warmup_ratio", "1", r"-P warmup_ratio=1 is not a number from 0 to below 1"),
    ("layer_decay", "0", r"-P layer_decay=0 is not a number in \(0, 1\]"),
    ("label_smoothing", "-0.1", r"-P label_smoothing=-0.1 is not a number from 0 to below 1"),
    ("weight_decay", "x", r"-P weight_decay=x is not a number >= 0"),
    ("reinit_top_k", "3", r"-P reinit_top_k=3: the model has 2 transformer layers; pass 0 to 2"),
], ids=["epochs_negative", "batch_size_0", "max_length_0", "max_length_above_model", "precision", "registered_model",
        "unknown_model", "warmup_ratio_1", "layer_decay_0", "label_smoothing_negative", "weight_decay_text",
        "reinit_top_k_above_layers"])
def test_bad_training_parameter_is_refused(param, value, pattern, store, fixture_csv, tiny_model):
    args = {"model": str(tiny_model), "data": str(fixture_csv), **GOOD, **FAST, param: value}
    _assert_refused(run_step("train", *_params(**args)), pattern, store)


def _broken_model(tiny_model: Path, folder: Path, case: str) -> Path:
    shutil.copytree(tiny_model, folder)
    if case == "no_tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            (folder / name).unlink(missing_ok=True)
    elif case == "no_weights":
        (folder / "model.safetensors").unlink()
    elif case == "pickled_code":
        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {folder / 'pwned'}",))
        (folder / "model.safetensors").unlink()
        torch.save({"bert.embeddings.word_embeddings.weight": Payload()}, folder / "pytorch_model.bin")
    return folder


@pytest.mark.parametrize("case, pattern", [
    ("no_tokenizer", r"has no tokenizer vocabulary.*save its tokenizer"),
    ("no_weights", r"cannot load model .*no file named model.safetensors.*save_pretrained"),
    ("pickled_code", r"refused to load the weights .*pickle.*safetensors"),
], ids=["no_tokenizer", "no_weights", "pickled_code"])
def test_broken_model_folder_is_refused(case, pattern, store, fixture_csv, tiny_model, tmp_path):
    folder = _broken_model(tiny_model, tmp_path / case, case)
    args = {"model": str(folder), "data": str(fixture_csv), **GOOD, **FAST}
    _assert_refused(run_step("train", *_params(**args)), pattern, store)
    assert not (folder / "pwned").exists()  # the pickle's payload never ran


def test_model_with_another_label_count_gets_a_fresh_four_way_head(tiny_model, tmp_path):
    from agnews.data.task import AG_NEWS
    from agnews.training.models import load_tokenizer_and_model, resolve_model

    folder = shutil.copytree(tiny_model, tmp_path / "two-labels")
    config = json.loads((folder / "config.json").read_text())
    config.update(id2label={"0": "neg", "1": "pos"}, label2id={"neg": 0, "pos": 1})
    (folder / "config.json").write_text(json.dumps(config))
    _, model = load_tokenizer_and_model(resolve_model(str(folder)), AG_NEWS)
    assert model.config.num_labels == 4 and model.config.id2label[3] == "Sci/Tech"
    assert model.classifier.out_features == 4


def test_same_model_twice_in_main_is_refused(store, tiny_model, fixture_csv):
    message = run_step("main", *_params(models=f"{tiny_model},{tiny_model}", data=str(fixture_csv), **GOOD))
    _assert_refused(message, r"-P models lists .*tiny-bert more than once", store)


@pytest.mark.parametrize("backend, pattern", [
    ("kubernetes", r"-P backend=kubernetes runs children where the tracking store sqlite:///\S+ cannot be reached "
                   r"\(a file on this machine\); start a tracking server .*MLFLOW_TRACKING_URI=http://"),
    ("slurm", r"-P backend=slurm runs children where the tracking store sqlite:///\S+ cannot be reached \(a file on "
              r"this machine, and the partition has nodes other than this one\); .*\"shared_filesystem\": true"),
])
def test_store_the_jobs_cannot_reach_is_refused_before_any_child(backend, pattern, store, tiny_model, fixture_csv,
                                                                  monkeypatch):
    """A remote backend with the embedded SQLite store: one line saying to use `mlflow server`, no child started,
    no job submitted (a Slurm partition of other machines is simulated: no cluster needed)."""
    from agnews.orchestration.backends import slurm

    monkeypatch.setattr(slurm, "partition_hosts", lambda partition: ["node01", "node02"])
    message = run_step("main", *_params(models=str(tiny_model), data=str(fixture_csv), backend=backend, **GOOD))
    _assert_refused(message, pattern, store)


@pytest.mark.parametrize("param, value, pattern", [
    ("parallel", "0", r"-P parallel=0 must be at least 1"),
    ("backend", "slurmm", r"-P backend=slurmm is unknown; use one of .*slurm"),
    ("backend_config", "missing.json", r"-P backend_config=missing.json is given but -P backend=local takes no "),
])
def test_bad_launch_parameter_is_refused(param, value, pattern, store, tiny_model, fixture_csv):
    message = run_step("main", *_params(models=str(tiny_model), data=str(fixture_csv), **{param: value}, **GOOD))
    _assert_refused(message, pattern, store)


def test_missing_run_id_is_refused(store):
    message = run_step("evaluate", "--train_run_id", "0123456789abcdef")
    _assert_refused(message, r"run '0123456789abcdef' not found in sqlite:///.*; pass the id of a train or distill "
                             "run", store)


def test_run_id_of_another_step_is_refused(store, fixture_csv):
    assert run_step("prepare_data", *_params(data=str(fixture_csv), **GOOD)) is None
    client = mlflow.MlflowClient(store)
    [prep] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    message = run_step("evaluate", "--train_run_id", prep.info.run_id)
    assert re.fullmatch(rf"error: run {prep.info.run_id} is a FINISHED prepare_data run; pass the id of a finished "
                        r"train or distill run", message), message
    runs = client.search_runs([prep.info.experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    assert not client.search_registered_models()


def test_unwritable_plots_folder_is_refused(store, fixture_csv, tiny_model, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("AGNEWS_PLOTS_DIR", str(blocker / "graficas"))  # root ignores permissions; a file does not
    args = {"model": str(tiny_model), "data": str(fixture_csv), **GOOD, **FAST}
    message = run_step("train", *_params(**args))
    _assert_refused(message, r"^error: plots folder .*a-file/graficas is not writable .*set AGNEWS_PLOTS_DIR", store)


def test_interrupt_after_registering_leaves_no_version(store, fixture_csv, tiny_model, monkeypatch):
    """The last moment that can fail: right after the version exists. The step undoes it and ends KILLED."""
    real = mlflow.set_tag

    def interrupted(key, value, *args, **kwargs):
        if key == "agnews.registered_version":
            raise KeyboardInterrupt
        return real(key, value, *args, **kwargs)

    monkeypatch.setattr(mlflow, "set_tag", interrupted)
    args = {"model": str(tiny_model), "data": str(fixture_csv), **GOOD, **FAST}
    message = run_step("train", *_params(**args))
    assert re.fullmatch(r"error: train interrupted by SIGINT; run \w+ ended KILLED, nothing registered; .*", message)
    client = mlflow.MlflowClient(store)
    [run] = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert run.info.status == "KILLED"
    assert not client.search_registered_models()  # the version and the registered model it created are gone
    assert not client.search_logged_models([run.info.experiment_id])
    assert not list(Path(os.environ["AGNEWS_PLOTS_DIR"]).glob("*.png"))  # figures are published on success only


def test_max_length_with_a_decimal_point_reads_back(store, fixture_csv, tiny_model, monkeypatch):
    """`mlflow run -P max_length=64.0` logs "64.0" before the step starts; evaluate reads it back as 64."""
    client = mlflow.MlflowClient(store)
    created = client.create_run(client.create_experiment("typed"))  # as `mlflow run` does: params first
    client.log_param(created.info.run_id, "max_length", "64.0")
    monkeypatch.setenv("MLFLOW_RUN_ID", created.info.run_id)
    args = {"model": str(tiny_model), "data": str(fixture_csv), **GOOD, **FAST, "max_length": "64.0"}
    assert run_step("train", *_params(**args)) is None
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)  # start_run consumed it
    train = client.get_run(created.info.run_id)
    assert train.info.status == "FINISHED" and train.data.params["max_length"] == "64.0"
    assert "effective_max_length" not in train.data.params  # 64.0 and 64 are the same value
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", train.info.experiment_id)
    assert run_step("evaluate", "--train_run_id", train.info.run_id, "--int8", "false") is None
    [evaluate] = by_step(client.search_runs([train.info.experiment_id]), "evaluate")
    assert evaluate.info.status == "FINISHED" and 0 <= evaluate.data.metrics["test_accuracy"] <= 1


# --- through the CLI: the store, signals, concurrency ---------------------------------------------------------

@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return project_copy(tmp_path_factory.mktemp("faults") / "project")


def test_tracking_server_down_fails_in_seconds(project):
    start = time.monotonic()
    result = mlflow_cli("run", ".", "-e", "prepare_data", "--env-manager", "local", cwd=project, timeout=120,
                        env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"})
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(r"tracking server http://127.0.0.1:\d+ is unreachable .*MLFLOW_TRACKING_URI",
                                          errors[0]), result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert elapsed < 60, elapsed  # not MLflow's minutes of retries


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_signal_during_training_ends_runs_killed(sig, project, fixture_csv, tiny_model):
    """A scheduler's SIGTERM to the whole group mid-training, under `main`: the train child and the parent end
    KILLED, nothing registered, nothing left in graficas/. The child also gets main's cancel milliseconds later
    (tests/unit/runs/test_signals.py: one interrupt per process). SIGINT takes the same handler; Ctrl-C on a whole
    `main` is tests/e2e/test_slurm.py's case. Training draws its figures at the end, so a kill after staging is
    tests/unit/runs/test_signals.py's (the CLI check here once globbed the shared TMPDIR and caught the other
    worker's)."""
    experiment = f"signal-{sig.name}"
    client = client_for(project)
    params = ["-P", f"models={tiny_model}", "-P", f"data={fixture_csv}", *SMALL, *UNTIL_CANCELLED,
              "-P", "learning_rate=0.01", "-P", "batch_size=8"]
    with running_cli(project, *params, "--experiment-name", experiment) as proc:
        wait_for_epoch(client, experiment, proc)
        os.killpg(proc.pid, sig)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    runs = runs_of(client, experiment)
    statuses = {r.data.tags["agnews.step"]: r.info.status for r in runs}
    assert statuses == {"main": "KILLED", "prepare_data": "FINISHED", "train": "KILLED"}, (statuses, stderr[-3000:])
    assert re.search(r"error: train interrupted by SIG(INT|TERM); run \w+ ended KILLED", stderr), stderr[-3000:]
    assert not client.search_registered_models()
    assert not client.search_logged_models([runs[0].info.experiment_id])
    assert not list((project / "graficas").glob("tiny-bert_*"))


def test_failing_child_stops_main_and_is_named(store, tmp_path, tiny_model):
    """main in-process; its prepare_data child (a process, through MLflow's local backend) fails on a bad label."""
    bad = tmp_path / "unknown_label.csv"
    bad.write_text(_rows(300) + '"9","t","d"\n')
    message = run_step("main", *_params(models=str(tiny_model), data=str(bad), **GOOD))
    assert message is not None and re.match(r"error: child run 'prepare_data' failed", message), message
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = next(r for r in runs if r.data.tags.get("agnews.step") == "main")
    assert parent.info.status == "FAILED" and parent.data.tags["agnews.failed_child"] == "prepare_data"
    assert [r.data.tags["agnews.step"] for r in runs if r is not parent] == ["prepare_data"]  # nothing after it
    assert not client.search_registered_models()


def test_two_runs_at_once_on_a_new_sqlite_store(tmp_path, fixture_csv, tiny_model):
    """Both succeed: the schema is created once under a lock, the experiment once, and each run logs the
    figures it drew itself (staged per run, then published into graficas/). Two `train` runs, not two `main`s:
    the race is in creating the store and publishing figures, which every step does (the server test runs two
    `main`s at once; the registry lock has its own unit test)."""
    project = project_copy(tmp_path / "project")
    params = ["-e", "train", "-P", f"model={tiny_model}", "-P", f"data={fixture_csv}", *SMALL, *TINY]
    with running_cli(project, *params) as first, running_cli(project, *params, "-P", "seed=7") as second:
        outputs = [proc.communicate(timeout=900) for proc in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, [err[-3000:] for _, err in outputs]
    client = client_for(project)
    runs = runs_of(client)
    assert len(by_step(runs, "train")) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert len(client.search_experiments(filter_string="name = 'agnews-classification'")) == 1
    for train in by_step(runs, "train"):  # each run's loss figure is its own: drawn from its own history
        local = mlflow.artifacts.download_artifacts(run_id=train.info.run_id, artifact_path="plots",
                                                    tracking_uri=client.tracking_uri)
        assert {p.name for p in Path(local).iterdir()} == {f"tiny-bert_{k}.png" for k in
                                                          ("accuracy_evolution", "f1_evolution", "loss_function")}
    versions = client.search_model_versions("name = 'agnews-classifier'")
    assert len(versions) == 2 and all(client.get_run(v.run_id).info.status == "FINISHED" for v in versions)


# --- your own data: the task's refusals --------------------------------------------------------------------------

def _topics(tmp_path: Path) -> Path:
    from tests.helpers import topic_rows, write_jsonl

    return write_jsonl(tmp_path / "topics.jsonl", topic_rows(rows_per_class=30))


@pytest.mark.parametrize("extra, pattern", [
    ({}, r"lacks column\(s\) \['text', 'label'\] \(it has headline, body, topic\); pass -P text_columns="),
    ({"text_columns": "headline", "label_column": "topic", "labels": "deportes,deportes"},
     r"-P labels=deportes,deportes lists deportes more than once"),
    ({"text_columns": "headline", "label_column": "topic", "labels": "deportes,política,cine,economía y empresas"},
     r"has no rows of class\(es\) cine"),
    ({"text_columns": "headline", "label_column": "topic", "labels": "deportes,política"},
     r"row \d+ has unknown label 'economía y empresas'; -P labels lists deportes, política"),
    ({"text_columns": "headline", "label_column": "topic", "data": "lone"},
     r"cannot draw the test split \(test_size=10\) .*\(cine 1, .*\): class\(es\) cine have a single row, too few to "
     r"stratify; add rows of cine, or drop the class"),
    ({"text_columns": "topic,body", "label_column": "topic", "data": "single"},
     r"has a single class \('deportes'\); a classifier needs at least 2"),
])
def test_prepare_data_refuses_a_bad_task(store, tmp_path, extra, pattern):
    data = _topics(tmp_path)
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    if extra.get("data") == "single":
        rows = [r for r in rows if r["topic"] == "deportes"]
    if extra.get("data") == "lone":  # a class of one row
        rows.append({"headline": "film", "body": "a film", "topic": "cine"})
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    args = {"train_size": 20, "val_size": 10, "test_size": 10, "gate_size": 0, **extra, "data": data}
    _assert_refused(run_step("prepare_data", *_params(**{k: str(v) for k, v in args.items()})), pattern, store)


def test_runs_of_two_label_sets_are_never_compared_or_gated(store, tmp_path, fixture_csv):
    from agnews.decide import comparison

    sizes = {"train_size": "20", "val_size": "10", "test_size": "10", "gate_size": "10"}
    assert run_step("prepare_data", *_params(data=str(fixture_csv), **sizes)) is None
    assert run_step("prepare_data", *_params(data=str(_topics(tmp_path)), text_columns="headline,body",
                                             label_column="topic", **sizes)) is None
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("agnews-classification").experiment_id
    data_runs = sorted(client.search_runs([experiment]), key=lambda r: r.info.start_time)
    trains = [client.create_run(experiment, tags={"agnews.data_run_id": d.info.run_id, "agnews.model": f"m{i}"})
              for i, d in enumerate(data_runs)]
    with pytest.raises(PipelineError, match=r"train run \w+ \(m1\) has labels \[deportes, economía y empresas, "
                                            r"política\], not \[World, Sports, Business, Sci/Tech\].*: another task; "
                                            r"compare only"):
        comparison.shared_task([client.get_run(r.info.run_id) for r in trains])
    ag_data, topics_data = (d.info.run_id for d in data_runs)
    from steps import evaluate

    with pytest.raises(PipelineError, match=rf"data run {topics_data} has labels \[deportes, .*\], not \[World, "
                                            r"Sports, Business, Sci/Tech\].*: another task; evaluate train run"):
        evaluate._task(client.get_run(trains[0].info.run_id), topics_data)
    from types import SimpleNamespace

    from agnews.decide import gate

    champion = SimpleNamespace(version="1", name="agnews-classifier")
    with pytest.raises(PipelineError, match=r"champion version 1 of agnews-classifier has labels \[World, .*\], not "
                                            r"\[deportes, .*\].*: another task; register models of another task under "
                                            r"their own"):
        gate._one_label_set(client.get_run(trains[1].info.run_id), champion, client.get_run(trains[0].info.run_id),
                            topics_data)
    with pytest.raises(PipelineError, match=rf"gate data run {ag_data} has labels \[World, .*\].*: another task; pass "
                                            r"-P gate_data_run_id="):
        gate._one_label_set(client.get_run(trains[1].info.run_id), champion, None, ag_data)
    from agnews.data import handoff
    from steps import distill  # a teacher of another task teaches the wrong classes from the wrong columns

    teacher = f"runs:/{trains[1].info.run_id}/model"
    with pytest.raises(PipelineError, match=rf"teacher '{teacher}' has labels \[deportes, .*reads text columns "
                                            r"\[headline, body\], not \[text\].*: another task"):
        distill._check_teacher_task(teacher, teacher, handoff.load_task(ag_data))
