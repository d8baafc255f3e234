"""`mlflow run git://...`: the project served by a real `git daemon` on 127.0.0.1."""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, SMALL, SMALL_AND_TINY, client_for, free_port, mlflow_cli, project_copy, runs_of


def _serve(served: Path, port: int) -> subprocess.Popen:
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={served}",
                               "--listen=127.0.0.1", f"--port={port}", str(served)])
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return daemon


@pytest.fixture()
def git_server(tmp_path):
    """This repository, plus a second one holding a copy of the project in a subfolder, on 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "--quiet", "--bare", str(REPO), str(served / "agnews.git")], check=True)
    wrapper = tmp_path / "wrapper"
    project_copy(wrapper / "project")
    git = ["git", "-C", str(wrapper), "-c", "user.name=t", "-c", "user.email=t@127.0.0.1"]
    for command in (["init", "--quiet", "-b", "main"], ["add", "."], ["commit", "--quiet", "-m", "in a subfolder"]):
        subprocess.run([*git, *command], check=True)
    subprocess.run(["git", "clone", "--quiet", "--bare", str(wrapper), str(served / "wrapper.git")], check=True)
    port = free_port()
    daemon = _serve(served, port)
    yield f"git://127.0.0.1:{port}"
    daemon.terminate()
    daemon.wait(timeout=10)


def test_train_from_git_url(git_server, tmp_path, fixture_csv, tiny_model):
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    work = tmp_path / "work"
    work.mkdir()
    result = mlflow_cli("run", f"{git_server}/agnews.git", "-v", commit, "-e", "train", "--env-manager", "local",
                        "--experiment-name", "agnews-classification", "-P", f"model={tiny_model}",
                        "-P", f"data={fixture_csv}", *SMALL_AND_TINY, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    client = client_for(work)  # the store is where the user ran `mlflow run`, not MLflow's checkout
    [run] = runs_of(client)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.source.git.commit"] == commit
    assert run.data.tags["mlflow.source.git.repoURL"] == f"{git_server}/agnews.git"
    assert client.get_model_version("agnews-classifier", run.data.tags["agnews.registered_version"]).run_id == \
        run.info.run_id
    # figures land where the user ran `mlflow run`, not in MLflow's temporary checkout
    assert {p.name for p in (work / "graficas").glob("*.png")} == {
        f"tiny-bert_{kind}.png" for kind in ("accuracy_evolution", "f1_evolution", "loss_function")}


def test_subdirectory_and_branch_of_a_git_url(git_server, tmp_path, fixture_csv):
    """`<url>#<subdir>` with `-v <branch>`: the project in a subfolder of another repository."""
    work = tmp_path / "work"
    work.mkdir()
    result = mlflow_cli("run", f"{git_server}/wrapper.git#project", "-v", "main", "-e", "prepare_data",
                        "--env-manager", "local", "--experiment-name", "agnews-classification",
                        "-P", f"data={fixture_csv}", *SMALL, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = runs_of(client_for(work))
    assert run.info.status == "FINISHED" and run.data.tags["agnews.step"] == "prepare_data"
    assert run.data.tags["mlflow.source.git.branch"] == "main"
