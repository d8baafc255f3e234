"""agnews/runs/lifecycle.py: how a step's run ends when its body exits early."""
from __future__ import annotations

import mlflow
import pytest

from agnews.runs import lifecycle
from steps import compare


def _runs() -> list:
    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, run_view_type=mlflow.entities.ViewType.ALL)


def test_help_prints_and_leaves_no_run(store, capsys):
    """`python -m steps.compare --help` opened a run, then argparse's SystemExit(0) ended it FAILED: every look at
    the options left a failed compare in the store."""
    with pytest.raises(SystemExit) as exited:
        compare.main(["--help"])
    assert exited.value.code == 0
    assert "--gate_data_run_id" in capsys.readouterr().out
    [run] = _runs()
    assert run.info.lifecycle_stage == "deleted" and run.data.tags["agnews.step"] == "compare"


def test_an_unknown_option_still_ends_the_run_failed(store):
    with pytest.raises(SystemExit) as exited:
        compare.main(["--no_such_option", "1"])
    assert str(exited.value.code).startswith("error: unrecognized arguments: --no_such_option")
    [run] = _runs()
    assert run.info.status == "FAILED" and run.info.lifecycle_stage == "active"


def test_a_clean_exit_after_registering_something_is_a_failure(store):
    """Something to undo means work was done: a bare exit then is not `--help`, and the rollback runs."""
    undone = []
    with pytest.raises(SystemExit):
        with lifecycle.step_run("train"):
            lifecycle.on_failure("a model version", lambda: undone.append(True))
            raise SystemExit(0)
    assert undone == [True]
    [run] = _runs()
    assert run.info.status == "FAILED"
