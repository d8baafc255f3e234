"""Kubernetes on paper: the files the README's `main -P backend=kubernetes` uses, and what `main` has MLflow's own
kubernetes backend (mlflow.projects.kubernetes, mlflow.projects.docker) build, push and submit, with only the
docker daemon and the kube API replaced by fakes. Nothing is submitted: there is no cluster here."""
from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import yaml
from mlflow.projects import _parse_kubernetes_config

from agnews.errors import PipelineError
from agnews.orchestration import launch, placement
from agnews.runs import reuse

REPO = Path(__file__).resolve().parents[3]
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


def test_the_shipped_config_names_a_template_from_the_project_root(monkeypatch):
    monkeypatch.chdir(REPO)  # the config names the template relative to the project root, where main runs
    config = _parse_kubernetes_config(json.loads((DEPLOY / "kubernetes_config.json").read_text()))
    assert config["kube-job-template"]["kind"] == "Job" and config["repository-uri"]


class FakeDocker:
    """docker.from_env(): builds record the build context MLflow sends (extracted to a folder), pushes answer
    a registry digest. The no-build path (build_image=False) pulls the base image as it is."""

    def __init__(self, folder: Path):
        self.folder, self.builds, self.pushed = folder, [], []
        self.images = self

    def build(self, tag, fileobj, dockerfile, **kwargs):
        context = self.folder / f"context-{len(self.builds)}"
        with tarfile.open(fileobj=fileobj, mode="r:gz") as archive:
            archive.extractall(context, filter="data")
        self.builds.append((tag, context / dockerfile))
        return SimpleNamespace(tags=[tag], id="sha256:built"), []

    def list(self, name):
        return []

    def pull(self, name):
        return SimpleNamespace(tags=[name], id="sha256:base")

    def push(self, repository, stream, decode):
        self.pushed.append(repository)
        return iter([{"status": "Pushed"}])

    def get_registry_data(self, tag):
        return SimpleNamespace(id="sha256:0123abcd")


class FakeBatchApi:
    """kubernetes.client.BatchV1Api(): the Jobs created and the deletions asked for."""

    created, deleted = [], []

    def create_namespaced_job(self, namespace, body, **kwargs):
        self.created.append(body)

    def delete_namespaced_job(self, **kwargs):
        self.deleted.append(kwargs)

    def read_namespaced_job_status(self, **kwargs):
        return SimpleNamespace(status=SimpleNamespace(start_time="now", conditions=None))


@pytest.fixture()
def cluster(monkeypatch, tmp_path):
    """MLflow's own kubernetes backend with only docker and the kube API replaced."""
    import docker
    import kubernetes
    from mlflow.projects import docker as mlflow_docker

    fake = FakeDocker(tmp_path)
    monkeypatch.setattr(docker, "from_env", lambda **kwargs: fake)
    monkeypatch.setattr(mlflow_docker, "validate_docker_installation", lambda: None)
    monkeypatch.setattr(kubernetes.config, "load_kube_config", lambda context=None: None)
    monkeypatch.setattr(FakeBatchApi, "created", [])
    monkeypatch.setattr(FakeBatchApi, "deleted", [])
    monkeypatch.setattr(kubernetes.client, "BatchV1Api", FakeBatchApi)
    monkeypatch.setenv("KUBE_MLFLOW_TRACKING_URI", POD_URI)
    return fake


def test_main_submits_a_job_on_an_image_built_from_the_project(store, cluster):
    """What `main -P backend=kubernetes` has MLflow submit: an image built FROM the base image with the project's
    current source in its work folder, pushed to repository-uri and pinned by its registry digest; the entry
    point's command; the pods' tracking URI. The pods' code digest is main's, so their runs are the ones reused."""
    config = json.loads((DEPLOY / "kubernetes_config.json").read_text())
    config["kube-job-template-path"] = str(REPO / config["kube-job-template-path"])
    with mlflow.start_run():
        launcher = launch.Launcher(str(REPO), parallel=2, backend="kubernetes", config=config)
        child = launcher.submit(launch.Launch("train", "train tinybert seed 2",
                                              {"model": "tinybert", "data_run_id": "d1", "seed": 2}))
    digest = reuse.code_digest()
    [(tag, dockerfile)] = cluster.builds
    assert tag == f"registry.example.com/agnews-mlops:{digest}" and cluster.pushed == [tag]
    assert dockerfile.read_text().startswith("FROM agnews-mlops:latest")
    code = dockerfile.parent  # what the image holds in its work folder, /mlflow/projects/code
    assert (code / "MLproject").read_bytes() == (DEPLOY / "MLproject").read_bytes()
    for source in ("agnews/runs/reuse.py", "agnews/orchestration/launch.py", "steps/train.py"):
        assert (code / source).read_bytes() == (REPO / source).read_bytes()
    assert reuse.code_digest(code) == digest  # a pod's agnews.runs.reuse, run from that folder
    (code / reuse.DIGEST_FILE).unlink()
    assert reuse.code_digest(code) != digest  # its own hash would differ: deploy/kubernetes' MLproject

    [job] = FakeBatchApi.created
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == "mlflow" and job["spec"]["backoffLimit"] == 0
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"registry.example.com/agnews-mlops:{digest}@sha256:0123abcd"
    assert container["command"][:5] == ["python", "-m", "steps.train", "--model", "tinybert"]
    assert container["command"][container["command"].index("--seed") + 1] == "2"
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == POD_URI  # from KUBE_MLFLOW_TRACKING_URI, not this machine's store
    assert (env["MLFLOW_RUN_ID"], env["OMP_NUM_THREADS"]) == (child.run_id, "4")
    assert container["resources"]["limits"]["cpu"] == env["OMP_NUM_THREADS"]

    child.cancel()  # the Job goes with its pod: MLflow's own cancel orphans the pod, which trains on
    assert FakeBatchApi.deleted == [{"name": job["metadata"]["name"], "namespace": "mlflow",
                                     "propagation_policy": "Background"}]


@pytest.mark.parametrize("uri", ["sqlite:////tmp/mlflow.db", "http://127.0.0.1:5000"])
def test_kubernetes_refuses_a_store_the_pods_cannot_reach(uri):
    with pytest.raises(PipelineError, match=r"-P backend=kubernetes runs children where the tracking store"):
        placement.check_store("kubernetes", uri, {})


def test_kubernetes_takes_the_pods_address_of_the_same_server(monkeypatch):
    monkeypatch.setenv("KUBE_MLFLOW_TRACKING_URI", POD_URI)
    placement.check_store("kubernetes", "http://127.0.0.1:5000", {})  # main through a port-forward: fine
    with pytest.raises(PipelineError, match=r"tracking store sqlite:////tmp/mlflow.db cannot be reached"):
        placement.check_store("kubernetes", "sqlite:////tmp/mlflow.db", {})  # the runs main creates would live here
