"""Kubernetes on paper: the files the README's `main -P backend=kubernetes` uses, and the Job MLflow's own kubernetes
backend renders from them (mlflow.projects.kubernetes). Nothing is submitted: there is no cluster here."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from mlflow.projects import _parse_kubernetes_config
from mlflow.projects import kubernetes as kb
from mlflow.projects.utils import get_entry_point_command, get_run_env_vars, load_project

from agnews import launch
from agnews.errors import PipelineError

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "kubernetes"
POD_URI = "http://mlflow.mlflow.svc.cluster.local:5000"


def test_kubernetes_project_has_the_root_entry_points_in_a_docker_env():
    root = yaml.safe_load((REPO / "MLproject").read_text())
    kube = yaml.safe_load((DEPLOY / "MLproject").read_text())
    assert kube["entry_points"] == root["entry_points"]  # the same steps, run in the image
    assert kube["docker_env"]["image"] == "agnews-mlops:latest" and "conda_env" not in kube


def test_dockerfile_installs_the_pinned_requirements_and_the_project():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", dockerfile, re.M)
    assert "pip install -r requirements.txt" in dockerfile and "COPY requirements.txt" in dockerfile
    assert "grep -E '^torch==' requirements.txt" in dockerfile  # torch at the pinned version, from the CPU index
    assert "pip install --no-deps ." in dockerfile  # agnews and steps importable from MLflow's work folder


def test_job_rendered_by_mlflow_has_image_command_and_environment(monkeypatch):
    monkeypatch.chdir(REPO)  # the config names the template relative to the project root, where main runs
    monkeypatch.setenv("KUBE_MLFLOW_TRACKING_URI", POD_URI)
    config = _parse_kubernetes_config(json.loads((DEPLOY / "kubernetes_config.json").read_text()))
    project = load_project(str(DEPLOY))
    command = get_entry_point_command(project, "train", {"model": "tinybert", "data_run_id": "d1", "seed": "2"}, None)
    job = kb._get_kubernetes_job_definition(
        project.name, f"{config['repository-uri']}:5e1f0c", "sha256:0123abcd", kb._get_run_command(command),
        get_run_env_vars(run_id="r1", experiment_id="7"), config["kube-job-template"])
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == "mlflow"
    assert job["metadata"]["name"].startswith("agnews-mlops-")
    assert job["spec"]["backoffLimit"] == 0
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/agnews-mlops:5e1f0c@sha256:0123abcd"
    assert container["command"][:5] == ["python", "-m", "steps.train", "--model", "tinybert"]
    assert container["command"][container["command"].index("--seed") + 1] == "2"
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == POD_URI  # from KUBE_MLFLOW_TRACKING_URI, not this machine's store
    assert (env["MLFLOW_RUN_ID"], env["MLFLOW_EXPERIMENT_ID"], env["OMP_NUM_THREADS"]) == ("r1", "7", "4")
    assert container["resources"]["limits"]["cpu"] == env["OMP_NUM_THREADS"]


@pytest.mark.parametrize("uri", ["sqlite:////tmp/mlflow.db", "http://127.0.0.1:5000"])
def test_kubernetes_refuses_a_store_the_pods_cannot_reach(uri):
    with pytest.raises(PipelineError, match=r"-P backend=kubernetes runs children where the tracking store"):
        launch.check_store("kubernetes", uri, {})


def test_kubernetes_takes_the_pods_address_of_the_same_server(monkeypatch):
    monkeypatch.setenv("KUBE_MLFLOW_TRACKING_URI", POD_URI)
    launch.check_store("kubernetes", "http://127.0.0.1:5000", {})  # main through a port-forward: fine
    with pytest.raises(PipelineError, match=r"tracking store sqlite:////tmp/mlflow.db cannot be reached"):
        launch.check_store("kubernetes", "sqlite:////tmp/mlflow.db", {})  # the runs main creates would live here
