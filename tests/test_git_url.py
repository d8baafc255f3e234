"""`mlflow run git://...`: the project served by a real `git daemon` on 127.0.0.1."""
from __future__ import annotations

import socket
import subprocess
import time

import pytest
from conftest import REPO, SMALL_AND_TINY, client_for, free_port, mlflow_cli, runs_of


@pytest.fixture()
def git_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "--quiet", "--bare", str(REPO), str(served / "agnews.git")], check=True)
    port = free_port()
    daemon = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={served}",
                               "--listen=127.0.0.1", f"--port={port}", str(served)])
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"git://127.0.0.1:{port}/agnews.git"
    daemon.terminate()
    daemon.wait(timeout=10)


def test_train_from_git_url(git_server, tmp_path, fixture_csv, tiny_model):
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    work = tmp_path / "work"
    work.mkdir()
    result = mlflow_cli("run", git_server, "-v", commit, "-e", "train", "--env-manager", "local",
                        "--experiment-name", "agnews-classification", "-P", f"model={tiny_model}",
                        "-P", f"data={fixture_csv}", *SMALL_AND_TINY, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    client = client_for(work)  # the store is where the user ran `mlflow run`, not MLflow's checkout
    [run] = runs_of(client)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.source.git.commit"] == commit
    assert run.data.tags["mlflow.source.git.repoURL"] == git_server
    assert client.get_model_version("agnews-classifier", run.data.tags["agnews.registered_version"]).run_id == \
        run.info.run_id
