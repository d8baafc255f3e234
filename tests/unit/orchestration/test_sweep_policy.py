"""Who may add trials to a sweep study (agnews/orchestration/sweep.py, issue 25 item 5): a resume with other fixed
parameters is refused; one sweep at a time per study (a live one refuses a second, a crashed one is taken over); rows
compared by a sha256 of every row, not MLflow's dataset digest (the first 10,000 rows); bounds written as YAML 1.1 reads
them. Unit tests on a real SQLite store with fake trial runs: seconds each, no training."""
from __future__ import annotations

import re
import socket
import subprocess
import threading
import time

import mlflow
import pandas as pd
import pytest
from mlflow.entities import Param
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from agnews.data import handoff
from agnews.errors import PipelineError
from agnews.orchestration import search_space, sweep, sweep_report
from agnews.runs.experiment import EXPERIMENT
from tests.helpers import run_step, step_args

SPACE = {"learning_rate": FloatDistribution(1e-4, 1e-1, log=True)}
TRAINING = {"epochs": 3, "learning_rate": 0.0, "batch_size": 16, "max_length": 128, "early_stopping_patience": 2,
            "warmup_ratio": 0.1, "weight_decay": 0.01, "layer_decay": 1.0, "label_smoothing": 0.0, "reinit_top_k": 0,
            "precision": "auto", "registered_model": "agnews-classifier"}  # cli.TRAINING_KEYS at their defaults


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    """One SQLite store for the module (creating one costs ~1.4 s of CPU, measured): each test has its own
    experiment, and the study checks look within one experiment."""
    folder, before = tmp_path_factory.mktemp("store"), mlflow.get_tracking_uri()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("AGNEWS_PLOTS_DIR", str(folder / "graficas"))
        patch.chdir(folder)  # artifacts: ./mlruns
        mlflow.set_tracking_uri(uri)
        yield uri
        mlflow.end_run()
    mlflow.set_tracking_uri(before)


@pytest.fixture()
def experiment(shared_store, request) -> str:
    return mlflow.MlflowClient().create_experiment(request.node.name)


def _trial(experiment_id: str, number: int, value: float, params: dict, status: str = "FINISHED",
           study: str = "s") -> str:
    """A trial's train run as the sweep's child leaves it: tags, its -P values as params, its objective."""
    client = mlflow.MlflowClient()
    run = client.create_run(experiment_id, tags={"agnews.step": "train", sweep.STUDY_TAG: study,
                                                 sweep.TRIAL_TAG: str(number),
                                                 sweep.SPACE_TAG: search_space.space_key(SPACE)})
    params = {"data_run_id": "d1", **params}
    client.log_batch(run.info.run_id, params=[Param(key, str(value)) for key, value in params.items()])
    client.log_metric(run.info.run_id, sweep.PER_EPOCH, value, step=1)
    if status == "FINISHED":
        client.log_metric(run.info.run_id, sweep.OBJECTIVE, value)
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def _fixed(model: str = "tiny", seed: int = 1, **training) -> dict:
    return search_space.fixed_parameters(model, seed, {**TRAINING, **training}, SPACE)


# --- (a) a resume with other fixed parameters ---------------------------------------------------------------------

def test_a_resume_with_another_model_seed_or_train_parameter_is_refused_in_one_line_naming_them(experiment):
    """Before: the study was checked for its space and rows only, so a sweep of another model joined it and
    best_trial could hand compare the other model's run."""
    for number, lr in enumerate((0.01, 0.02)):
        _trial(experiment, number, 0.8 + number / 100, {**_fixed(), "learning_rate": lr, "data_run_id": "d1"})
    with pytest.raises(PipelineError) as info:
        sweep.open_study("s", experiment, SPACE, "d1", 2, True, _fixed(model="bert-mini", seed=2, epochs=5))
    message = str(info.value)
    assert "\n" not in message and message.startswith("study 's' ran its trials with other fixed parameters: ")
    assert "model=tiny (now bert-mini), seed=1 (now 2), epochs=3 (now 5); pass those -P values again" in message
    assert message.endswith("or -P study=<new name> for a new study")
    for other in ({"registered_model": "elsewhere"}, {"precision": "fp32"}, {"max_length": 64}):
        with pytest.raises(PipelineError, match=rf"other fixed parameters: {next(iter(other))}="):
            sweep.open_study("s", experiment, SPACE, "d1", 1, True, _fixed(**other))


def test_a_resume_with_the_same_fixed_parameters_continues_and_tuned_ones_may_differ(experiment):
    _trial(experiment, 0, 0.8, {**_fixed(), "learning_rate": 0.01, "epochs": "3.0"})  # 3.0 as -P may log it
    _trial(experiment, 1, 0.7, {"model": "tiny", "learning_rate": 0.02})  # older code: fewer params, not compared
    study = sweep.open_study("s", experiment, SPACE, "d1", 1, True, _fixed(learning_rate=0.5))  # searched: not fixed
    assert study.next_number == 2 and sweep_report.best_trial(study).value == 0.8
    assert "learning_rate" not in _fixed() and _fixed()["registered_model"] == "agnews-classifier"


# --- (b) one sweep at a time per study ----------------------------------------------------------------------------

def _sweep_run(experiment_id: str, study: str = "s", **tags) -> str:
    """A sweep parent as another process leaves it while it runs (RUNNING, its study tag, heartbeat tags)."""
    return mlflow.MlflowClient().create_run(experiment_id, tags={"agnews.step": "sweep", sweep.STUDY_TAG: study,
                                                                 **tags}).info.run_id


def test_a_second_sweep_on_a_running_study_is_refused_and_trial_numbers_never_collide(experiment):
    """Before: both sweeps rebuilt the study from the same runs, numbered their trials from the same count and
    seeded TPE alike (the same proposals under the same numbers)."""
    client = mlflow.MlflowClient()
    first = _sweep_run(experiment)
    with sweep.heartbeat(first):
        tags = client.get_run(first).data.tags
        assert sweep.BEAT_TAG in tags and tags[sweep.PID_TAG].isdigit() and sweep.HOST_TAG in tags
        sweep.claim_study("s", experiment, first)  # its own run does not count
        second = _sweep_run(experiment)
        with pytest.raises(PipelineError) as info:
            sweep.claim_study("s", experiment, second)
    assert str(info.value) == (f"study 's' is in use by sweep run {first}, still running on {tags[sweep.HOST_TAG]}; "
                               "wait for it to end, or pass -P study=<new name> for a new study")
    assert not [t for t in threading.enumerate() if t.name == f"heartbeat-{first}"]  # the beat stops with the body
    assert client.get_run(first).info.status == "RUNNING"  # a live sweep is never ended by another
    sweep.claim_study("other", experiment, second)  # another study: free
    client.set_terminated(first, "FINISHED")
    sweep.claim_study("s", experiment, second)  # the first has ended: the study is free


def test_a_crashed_sweep_is_taken_over_and_its_trial_numbers_are_not_reused(experiment):
    """A sweep killed with SIGKILL (or its machine lost) leaves its run RUNNING for ever: one whose heartbeat is
    older than STALE_SECONDS, or whose process on this host is gone, is ended FAILED and the study continues past
    its trials (one left RUNNING counts as failed)."""
    client = mlflow.MlflowClient()
    silent = _sweep_run(experiment, **{sweep.BEAT_TAG: f"{time.time() - sweep.STALE_SECONDS - 60:.0f}",
                                       sweep.HOST_TAG: "elsewhere", sweep.PID_TAG: "1"})
    _trial(experiment, 0, 0.8, {"learning_rate": 0.01})
    _trial(experiment, 1, 0.5, {"learning_rate": 0.02}, status="RUNNING")
    dead = _sweep_run(experiment, **{sweep.BEAT_TAG: f"{time.time():.0f}", sweep.HOST_TAG: socket.gethostname(),
                                     sweep.PID_TAG: str(_pid_of_ended_process())})
    owner = _sweep_run(experiment)
    sweep.claim_study("s", experiment, owner)
    for run_id, reason in ((silent, r"no heartbeat for \d+ s"), (dead, r"its process \d+ on this host is gone")):
        run = client.get_run(run_id)
        assert run.info.status == "FAILED"
        assert re.fullmatch(rf"ended by sweep run {owner} on the same study: {reason}", run.data.tags["agnews.error"])
    study = sweep.open_study("s", experiment, SPACE, "d1", 1, True)
    assert study.next_number == 2 and [t.state.name for t in study.finished] == ["COMPLETE", "FAIL"]


def _pid_of_ended_process() -> int:
    process = subprocess.Popen(["true"])  # a pid that has just ended
    process.wait()
    return process.pid


def test_a_second_sweep_step_fails_in_one_line_before_preparing_data(shared_store, fixture_csv):
    """Through the step: the refusal comes before prepare_data, and the live sweep is left alone."""
    client = mlflow.MlflowClient()
    experiment = mlflow.set_experiment(EXPERIMENT).experiment_id
    live = _sweep_run(experiment, study="lr")  # no beat yet: its start time counts
    message = run_step("sweep", *step_args(model="tinybert", data=fixture_csv, study="lr", n_trials=1))
    assert message is not None and message.startswith(f"error: study 'lr' is in use by sweep run {live}")
    runs = client.search_runs([experiment])
    assert sorted((r.data.tags["agnews.step"], r.info.status) for r in runs) == [("sweep", "FAILED"),
                                                                                ("sweep", "RUNNING")]


# --- (c) rows compared by a digest of all of them -----------------------------------------------------------------

def _data_run(experiment_id: str, frame: pd.DataFrame, tagged: bool = True) -> str:
    """A prepare_data-like run; `tagged=False`: one prepared before the rows tag (its splits' artifacts only)."""
    with mlflow.start_run(experiment_id=experiment_id) as run:
        handoff.log_splits({"train": frame, "validation": frame.iloc[:3]})
    if not tagged:
        mlflow.MlflowClient().delete_tag(run.info.run_id, handoff.ROWS_TAG)
    return run.info.run_id


def _rows(n: int, last: str = "z") -> pd.DataFrame:
    texts = [f"headline {i}" for i in range(n - 1)] + [last]
    return pd.DataFrame({"row_id": [f"r{i}" for i in range(n)], "text": texts, "label": [i % 4 for i in range(n)]})


def test_rows_that_differ_after_the_first_10000_are_other_rows(experiment):
    """Before: the study compared MLflow's dataset digests, which read the first 10,000 rows only."""
    original, other = _data_run(experiment, _rows(10_001)), _data_run(experiment, _rows(10_001, last="changed"))
    assert handoff.split_digests(original) == handoff.split_digests(other)  # MLflow's digest cannot tell them apart
    _trial(experiment, 0, 0.8, {"learning_rate": 0.01, "data_run_id": original})
    with pytest.raises(PipelineError, match=rf"ran on data run {original}, not {other}, and their rows differ"):
        sweep.open_study("s", experiment, SPACE, other, 1, True)
    assert sweep.row_digests(original)["train"] != sweep.row_digests(other)["train"]


def test_a_data_run_prepared_before_the_rows_tag_is_compared_from_its_split_files(experiment):
    frame = _rows(12)
    frame.loc[3, "text"] = None  # a missing value reads back from Parquet as NaN: the same digest
    old, new = _data_run(experiment, frame, tagged=False), _data_run(experiment, frame)
    assert handoff.ROWS_TAG not in mlflow.MlflowClient().get_run(old).data.tags
    assert sweep.row_digests(old) == sweep.row_digests(new) == {"train": handoff.rows_digest(frame),
                                                                "validation": handoff.rows_digest(frame.iloc[:3])}
    _trial(experiment, 0, 0.8, {"learning_rate": 0.01, "data_run_id": old})
    assert sweep.open_study("s", experiment, SPACE, new, 1, True).next_number == 1
    assert sweep.row_digests("no-such-run") == {}


# --- (d) numbers as YAML 1.1 reads them ---------------------------------------------------------------------------

def test_bounds_and_choices_written_like_1e_4_are_numbers(tmp_path):
    """Before: `1e-4` (no dot) is a string to YAML 1.1 and the space was refused ("needs numbers ... got
    low='1e-4'")."""
    path = tmp_path / "space.yaml"
    path.write_text("learning_rate: {low: 1e-4, high: 1e-3, log: true}\nweight_decay: {choices: [0, 1e-2, 5e-2]}\n"
                    "epochs: {low: 1, high: 1e1}\n")
    space = search_space.load_space(path)
    assert space == {"learning_rate": FloatDistribution(1e-4, 1e-3, log=True),
                     "weight_decay": CategoricalDistribution([0, 0.01, 0.05]), "epochs": IntDistribution(1, 10)}
    assert search_space.space_key(space) == search_space.space_key(
        search_space.load_space(_written(tmp_path, "1.0e-4", "1.0e-3")))


def _written(tmp_path, low: str, high: str):
    path = tmp_path / "dotted.yaml"
    path.write_text(f"learning_rate: {{low: {low}, high: {high}, log: true}}\n"
                    "weight_decay: {choices: [0, 1.0e-2, 5.0e-2]}\nepochs: {low: 1, high: 10}\n")
    return path


@pytest.mark.parametrize("low, high", [("abc", "1e-3"), ("1e-4", "'ten'"), ("1e-4", "nan"), ("1e-2", "1e-3")])
def test_bounds_that_are_not_numbers_are_still_one_line(tmp_path, low, high):
    path = tmp_path / "space.yaml"
    path.write_text(f"learning_rate: {{low: {low}, high: {high}, log: true}}\n")
    with pytest.raises(PipelineError, match=r"^search space entry learning_rate: needs numbers low < high") as info:
        search_space.load_space(path)
    assert "\n" not in str(info.value)
