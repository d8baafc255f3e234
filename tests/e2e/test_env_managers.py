"""`mlflow run . --env-manager uv`: MLflow builds a fresh environment from the project's pins (conda.yaml's pip
list, the file MLproject names) with uv, and runs a step in it."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.helpers import MLFLOW_BIN, SMALL, client_for, mlflow_cli, project_copy, runs_of


def test_prepare_data_in_a_uv_environment(tmp_path, fixture_csv):
    assert shutil.which("uv", path=str(Path(MLFLOW_BIN).parent)), "uv is missing: requirements-dev.txt installs it"
    project = project_copy(tmp_path / "project")
    env = {"MLFLOW_ENV_ROOT": str(tmp_path / "envs")}  # a fresh environment, not one cached by an earlier run
    if os.environ.get("PIP_FIND_LINKS"):  # uv reads no pip.conf: the local CPU torch wheel, not a CUDA download
        env["UV_FIND_LINKS"] = os.environ["PIP_FIND_LINKS"]
    result = mlflow_cli("run", ".", "--env-manager", "uv", "-e", "prepare_data", "-P", f"data={fixture_csv}", *SMALL,
                        cwd=project, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "torch==2.13.0" in result.stderr  # uv's install list: the pinned torch
    [run] = runs_of(client_for(project))
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.project.env"] == "uv"
    [python] = list((tmp_path / "envs").glob("mlflow-*/bin/python"))  # the step ran from the new environment
    assert f"source {python.parent}/activate" in result.stderr
