"""Data-parallel training under torchrun (gloo on CPU): one run, one version, rank 0 alone logs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd

from tests.helpers import EPOCHS, SMALL, by_step, client_for, mlflow_cli, project_copy, runs_of


def test_torchrun_two_processes_log_one_run(tmp_path, fixture_csv, tiny_model):
    project = project_copy(tmp_path / "project")
    prep = mlflow_cli("run", ".", "-e", "prepare_data", "--env-manager", "local", "-P", f"data={fixture_csv}",
                      *SMALL, cwd=project)
    assert prep.returncode == 0, prep.stderr[-3000:]
    client = client_for(project)
    [data_run] = runs_of(client)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_RUN_ID")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}", PYTHONPATH=str(project))
    env.pop("AGNEWS_PLOTS_DIR", None)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    result = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "-m", "steps.train", "--", "--model", str(tiny_model),
         "--data_run_id", data_run.info.run_id, "--epochs", str(EPOCHS), "--learning_rate", "0.01",
         "--batch_size", "8", "--registered_model", "agnews-ddp"],
        cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    [train] = by_step(runs_of(client), "train")
    assert train.info.status == "FINISHED" and train.data.params["world_size"] == "2"
    for key in ("train_loss", "val_loss", "val_accuracy", "val_f1_macro"):
        assert [m.step for m in client.get_metric_history(train.info.run_id, key)] == list(range(1, EPOCHS + 1))
    versions = client.search_model_versions("name = 'agnews-ddp'")
    assert [v.run_id for v in versions] == [train.info.run_id]
    local = mlflow.artifacts.download_artifacts(run_id=train.info.run_id, artifact_path="predictions/validation.csv",
                                                tracking_uri=client.tracking_uri)
    predictions = pd.read_csv(local)  # gathered from both ranks, still in row order
    assert len(predictions) == 40 and predictions["row_id"].is_unique
    accuracy = (predictions["label"] == predictions["predicted"]).mean()
    assert abs(accuracy - train.data.metrics["best_val_accuracy"]) < 1e-9
