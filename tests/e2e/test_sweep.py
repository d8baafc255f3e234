"""agnews/orchestration/sweep.py and `-e sweep`: the search space, the study rebuilt from runs (resume, pruned and
interrupted trials), pruning from the runs' per-epoch metrics, and the done criterion through the CLI."""
from __future__ import annotations

import os
import re
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from agnews.data import handoff
from agnews.errors import PipelineError
from agnews.orchestration import search_space, sweep, sweep_report
from tests.helpers import (
    REPO,
    SMALL,
    by_step,
    client_for,
    entered_store,
    mlflow_cli,
    project_copy,
    run_step,
    runs_of,
    step_args,
)

LR_ONLY = REPO / "sweeps" / "learning_rate.yaml"


# --- the search space ----------------------------------------------------------------------------------------------

def test_the_default_space_covers_every_tunable_parameter_with_the_right_kinds():
    space = search_space.load_space(REPO / "sweeps" / "default.yaml")
    assert set(space) == {"learning_rate", "epochs", "batch_size", "warmup_ratio", "weight_decay", "layer_decay",
                          "label_smoothing", "max_length", "reinit_top_k"}
    assert space["learning_rate"] == FloatDistribution(1e-5, 3e-4, log=True)
    assert space["reinit_top_k"] == IntDistribution(0, 2)
    assert isinstance(space["epochs"], CategoricalDistribution) and space["epochs"].choices == (5, 10, 20)


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, pattern", [
    ("dropout: {low: 0.0, high: 0.5}", r"names dropout, not a train parameter; use epochs, learning_rate"),
    ("learning_rate: 0.001", r"entry learning_rate: 0.001 is not a range; use \{low"),
    ("learning_rate: {low: 0.01}", r"entry learning_rate: needs numbers low < high"),
    ("learning_rate: {low: 0.0, high: 0.01, log: true}", r"low > 0 with log: true"),
    ("learning_rate: {low: 0.01, high: 0.001}", r"needs numbers low < high"),
    ("epochs: {low: 1.5, high: 4}", r"entry epochs: -P epochs=1.5 is not a whole number; pass e.g. epochs=1"),
    ("batch_size: {choices: [0, 8]}", r"entry batch_size: -P batch_size=0 must be at least 1"),
    ("warmup_ratio: {low: 0.0, high: 1.0}", r"entry warmup_ratio: -P warmup_ratio=1.0 is not a number from 0 to below"),
    ("epochs: {choices: []}", r"choices must be a non-empty list of distinct values"),
    ("learning_rate: {low: 1.0e-5, high: 1.0e-3, choices: [1]}", r"has \['choices', 'high', 'low'\]; use \{low"),
    ("[1, 2]", r"must map train parameters to ranges"),
    ("learning_rate: {low: [", r"is not valid YAML"),
], ids=["unknown", "scalar", "no_high", "log_from_zero", "reversed", "fractional_int", "choice_train_refuses",
        "range_train_refuses", "no_choices", "both_kinds", "a_list", "bad_yaml"])
def test_bad_search_spaces_are_one_line_each(tmp_path, text, pattern):
    with pytest.raises(PipelineError, match=pattern) as info:
        search_space.load_space(_space(tmp_path, text))
    assert "\n" not in str(info.value)


def test_a_missing_space_file_says_what_to_pass(tmp_path):
    with pytest.raises(PipelineError, match=r"cannot be read .*pass -P search_space=<a YAML file>"):
        search_space.load_space(tmp_path / "nowhere.yaml")


@pytest.mark.faults
def test_a_bad_space_fails_the_sweep_in_one_line_before_any_child(store, tmp_path, tiny_model, fixture_csv):
    space = _space(tmp_path, "dropout: {low: 0.0, high: 0.5}")
    message = run_step("sweep", *step_args(model=tiny_model, data=fixture_csv, search_space=space, n_trials=2))
    assert message is not None and message.startswith("error: search space ") and "\n" not in message
    client = mlflow.MlflowClient()
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [(r.data.tags["agnews.step"], r.info.status) for r in runs] == [("sweep", "FAILED")]  # no child started
    assert "dropout" in runs[0].data.tags["agnews.error"] and not client.search_registered_models()


def test_the_space_key_is_canonical():
    a = {"learning_rate": FloatDistribution(1e-4, 1e-2, log=True), "epochs": IntDistribution(1, 3)}
    b = dict(reversed(list(a.items())))
    assert search_space.space_key(a) == search_space.space_key(b)
    assert search_space.space_key(a) != search_space.space_key({**a, "epochs": IntDistribution(1, 4)})


# --- the study, rebuilt from runs ------------------------------------------------------------------------------------

SPACE = {"learning_rate": FloatDistribution(1e-4, 1e-1, log=True)}


def _trial_run(experiment_id: str, number: int, status: str, value: float | None, curve: list[float],
               lr: float = 0.01, state: str = "", data_run_id: str = "d1", space=SPACE) -> str:
    client = mlflow.MlflowClient()
    run = client.create_run(experiment_id, tags={"agnews.step": "train", sweep.STUDY_TAG: "s",
                                                 sweep.TRIAL_TAG: str(number),
                                                 sweep.SPACE_TAG: search_space.space_key(space),
                                                 **({sweep.STATE_TAG: state} if state else {})})
    client.log_param(run.info.run_id, "learning_rate", str(lr))
    client.log_param(run.info.run_id, "data_run_id", data_run_id)
    for epoch, f1 in enumerate(curve, 1):
        client.log_metric(run.info.run_id, sweep.PER_EPOCH, f1, step=epoch)
    if value is not None:
        client.log_metric(run.info.run_id, sweep.OBJECTIVE, value)
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_a_study_resumes_from_its_runs_numbering_on_and_keeping_interrupted_trials_failed(store):
    experiment = mlflow.MlflowClient().create_experiment("sweeps")
    best = _trial_run(experiment, 0, "FINISHED", 0.8, [0.5, 0.8], lr=0.02)
    _trial_run(experiment, 1, "KILLED", None, [0.4])  # interrupted: Ctrl-C on the sweep
    _trial_run(experiment, 2, "KILLED", None, [0.1], state="PRUNED")
    _trial_run(experiment, 3, "FINISHED", 0.7, [0.7], lr=0.005)
    study = sweep.open_study("s", experiment, SPACE, "d1", seed=0, prune=True)
    assert study.next_number == 4 and len(study.run_of) == 4
    states = [t.state for t in study.finished]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED, TrialState.COMPLETE]
    chosen = sweep_report.best_trial(study)
    assert chosen.user_attrs["run_id"] == best and chosen.params == {"learning_rate": 0.02}
    assert study.finished[2].intermediate_values == {1: 0.1}  # the pruner sees the curves of earlier trials
    table = sweep_report.trials_table(study)
    assert list(table["trial"]) == [0, 1, 2, 3] and list(table["state"]) == ["COMPLETE", "FAIL", "PRUNED", "COMPLETE"]
    trials = sweep.Trials(study, {"model": "m"}, "train m")
    assert len(trials.chains(2)) == 2 and study.next_number == 6  # the next sweep's trials: 4 and 5


def _data_run(experiment_id: str, texts: list[str]) -> str:
    """A prepare_data-like run: its splits logged as prepare_data logs them (a sha256 of their rows names them)."""
    frame = pd.DataFrame({"row_id": [f"r{i}" for i in range(len(texts))], "text": texts, "label": [0, 1] * 2})
    with mlflow.start_run(experiment_id=experiment_id) as run:
        handoff.log_splits({"train": frame, "validation": frame.iloc[:2]})
    return run.info.run_id


def test_a_study_refuses_another_space_or_other_rows(store):
    experiment = mlflow.MlflowClient().create_experiment("sweeps")
    original = _data_run(experiment, ["a", "b", "c", "d"])
    _trial_run(experiment, 0, "FINISHED", 0.8, [0.8], data_run_id=original)
    with pytest.raises(PipelineError, match=r"study 's' was searched over another space .*new -P study=<name>"):
        sweep.open_study("s", experiment, {"learning_rate": FloatDistribution(1e-5, 1e-1, log=True)}, original, 0,
                         True)
    other = _data_run(experiment, ["a", "b", "c", "e"])
    with pytest.raises(PipelineError, match=rf"study 's' ran on data run {original}, not {other}, and their rows "
                                            r"differ .*new -P study=<name>"):
        sweep.open_study("s", experiment, SPACE, other, 0, True)
    with pytest.raises(PipelineError, match=rf"ran on data run {original}, not missing, and their rows differ"):
        sweep.open_study("s", experiment, SPACE, "missing", 0, True)


def test_a_study_continues_on_a_data_run_prepared_again_with_the_same_rows(store):
    """prepare_data is reused only by the same code: after a code change the sweep prepares the same rows again
    (a new data run); the study continues on it (this refused a resume once, after a commit between sweeps)."""
    experiment = mlflow.MlflowClient().create_experiment("sweeps")
    _trial_run(experiment, 0, "FINISHED", 0.8, [0.8], data_run_id=_data_run(experiment, ["a", "b", "c", "d"]))
    again = _data_run(experiment, ["a", "b", "c", "d"])
    study = sweep.open_study("s", experiment, SPACE, again, 0, True)
    assert study.next_number == 1 and sweep_report.best_trial(study).value == 0.8
    with pytest.raises(PipelineError, match=r"-P study='a b' is not a valid study name"):
        sweep.study_name("a b", "m")
    assert sweep.study_name("", "tiny") == "sweep-tiny"


def test_no_finished_trial_is_one_line(store):
    experiment = mlflow.MlflowClient().create_experiment("sweeps")
    _trial_run(experiment, 0, "KILLED", None, [0.1])
    with pytest.raises(PipelineError, match=r"has no finished trial to pick .*-P n_trials"):
        sweep_report.best_trial(sweep.open_study("s", experiment, SPACE, "d1", 0, True))


def test_watch_prunes_a_trial_below_the_median_from_its_runs_epochs(store):
    """Four finished trials at 0.8 by epoch 2: a running trial logging 0.2 at epoch 2 is stopped; one at 0.9 is
    not. The sweep reads the epochs from the child's run, as it does for any backend."""
    experiment = mlflow.MlflowClient().create_experiment("sweeps")
    for number in range(4):
        _trial_run(experiment, number, "FINISHED", 0.8, [0.6, 0.8])
    study = sweep.open_study("s", experiment, SPACE, "d1", seed=0, prune=True)
    trials = sweep.Trials(study, {}, "train m")
    weak, strong = trials.chains(2)
    client = mlflow.MlflowClient()
    verdicts = {}
    for chain, curve in ((weak, [0.1, 0.2]), (strong, [0.7, 0.9])):
        child = next(chain)  # the chain asks the study for a trial and names its child
        run = client.create_run(experiment)
        assert not trials.watch(child, run.info.run_id)  # no epoch yet: nothing to judge
        for epoch, f1 in enumerate(curve, 1):
            client.log_metric(run.info.run_id, sweep.PER_EPOCH, f1, step=epoch)
        verdicts[child.run_name] = trials.watch(child, run.info.run_id)
        assert child.tags[sweep.TRIAL_TAG] in ("4", "5") and child.entry_point == "train"
    assert verdicts == {"train m trial 4": True, "train m trial 5": False}


# --- the done criterion: 4 trials, 2 at a time, then more on the same study -----------------------------------------

LR_SWEEP = ["-P", f"search_space={LR_ONLY}", "-P", "study=lr", "-P", "n_trials=4", "-P", "parallel=2",
            "-P", "epochs=1", "-P", "batch_size=8", "-P", "int8=false", "-P", "min_gate_rows=10"]


# minutes on two shared cores: 4 + 2 tiny trainings, each a child process
def test_sweep_of_four_trials_two_at_a_time_then_two_more(tmp_path, fixture_csv, tiny_model, monkeypatch):
    project = project_copy(tmp_path / "project")
    result = mlflow_cli("run", ".", "-e", "sweep", "--env-manager", "local", "-P", f"model={tiny_model}",
                        "-P", f"data={fixture_csv}", *SMALL, *LR_SWEEP, cwd=project)
    assert result.returncode == 0, result.stderr[-4000:]
    client = client_for(project)
    runs = runs_of(client)
    [parent] = by_step(runs, "sweep")
    assert parent.info.status == "FINISHED" and parent.info.run_name == "sweep tiny-bert"
    trials = [r for r in by_step(runs, "train") if r.data.tags.get(sweep.STUDY_TAG) == "lr"]
    assert len(trials) == 4 and all(r.info.status == "FINISHED" for r in trials)
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    assert sorted(int(r.data.tags[sweep.TRIAL_TAG]) for r in trials) == [0, 1, 2, 3]
    assert len({r.data.params["learning_rate"] for r in trials}) == 4  # TPE proposed 4 distinct rates
    starts = sorted((r.info.start_time, r.info.end_time) for r in trials)
    assert starts[1][0] < starts[0][1], "no two trials ran at once"
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/sweep_lr_history.png" in plots and (project / "graficas" / "sweep_lr_history.png").is_file()
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "sweep/trials.csv"))
    assert list(table["trial"]) == [0, 1, 2, 3] and set(table["state"]) == {"COMPLETE"}
    best = parent.data.tags["agnews.best_run_id"]
    assert parent.data.metrics["best_val_f1_macro"] == max(r.data.metrics["best_val_f1_macro"] for r in trials)
    assert "biased upward" in Path(client.download_artifacts(parent.info.run_id, "sweep/sweep.md")).read_text()
    [evaluation] = by_step(runs, "evaluate")
    assert evaluation.data.tags["agnews.train_run_id"] == best
    champion = client.get_model_version_by_alias("agnews-classifier", "champion")
    assert champion.run_id == best

    # The same study again, in-process (the CLI path is above): numbering goes on (trials 4-5; two, not the issue's
    # four, for CI's time: the resume is the same for any count), prepare_data reused, no trial re-run.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))  # the launcher sets it: restored
    with entered_store(project):
        assert run_step("sweep", *step_args(model=tiny_model, data=fixture_csv, train_size=80, val_size=40,
                                            test_size=40, gate_size=40, search_space=LR_ONLY, study="lr",
                                            n_trials=2, parallel=2, epochs=1, batch_size=8, int8="false",
                                            min_gate_rows=10)) is None
    runs = runs_of(client)
    trials = [r for r in by_step(runs, "train") if r.data.tags.get(sweep.STUDY_TAG) == "lr"]
    assert sorted(int(r.data.tags[sweep.TRIAL_TAG]) for r in trials) == list(range(6))
    assert len(by_step(runs, "prepare_data")) == 1 and len(by_step(runs, "sweep")) == 2
    second = max(by_step(runs, "sweep"), key=lambda r: r.info.start_time)
    assert second.data.metrics["trials"] == 6
    assert re.fullmatch(r"[0-5]", second.data.tags["agnews.best_trial"])
