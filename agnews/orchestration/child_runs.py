"""One child run as MLflow's `SubmittedRun`: run here by MLflow's local backend, or as a Kubernetes Job from a staged
copy of the project whose code digest is baked in (`CODE_DIGEST`); a cancelled child ends its run KILLED."""
from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import mlflow
from mlflow.entities import RunStatus
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from agnews.orchestration import launch

log = logging.getLogger(__name__)
KUBE_PROJECT = Path("deploy") / "kubernetes"  # its MLproject: the root's entry points in a docker_env


# --- running children -----------------------------------------------------------------------------------------

class _Wrapped(SubmittedRun):
    """A backend's own SubmittedRun, delegated to; subclasses change what they must (wait, cancel)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    @property
    def run_id(self) -> str:
        return self.inner.run_id

    def get_status(self) -> str:
        return self.inner.get_status()

    def wait(self) -> bool:
        return self.inner.wait()

    def cancel(self) -> None:
        self.inner.cancel()


class LocalChild(_Wrapped):
    """A local child: MLflow's LocalBackend starting the entry point's process directly, as `mlflow.projects.run(
    synchronous=True)` does, without waiting. `synchronous=False` would put a second `mlflow run` process in front
    of every child (4 s of CPU each, measured). The child shares main's process group, so a terminal's Ctrl-C
    reaches it as it always did; `cancel()` sends SIGTERM, which the step turns into a KILLED run."""

    @classmethod
    def start(cls, project: str, launch: launch.Launch, parameters: dict, experiment_id: str) -> "LocalChild":
        from mlflow.projects import utils
        from mlflow.projects.backend.local import LocalBackend

        config = {utils.PROJECT_ENV_MANAGER: "local", utils.PROJECT_SYNCHRONOUS: True, utils.PROJECT_DOCKER_ARGS: None,
                  utils.PROJECT_STORAGE_DIR: None, utils.PROJECT_BUILD_IMAGE: False, utils.PROJECT_DOCKER_AUTH: None}
        inner = LocalBackend().run(project, launch.entry_point, parameters, None, config, mlflow.get_tracking_uri(),
                                   experiment_id)
        mlflow.MlflowClient().set_tag(inner.run_id, MLFLOW_RUN_NAME, launch.run_name)
        return cls(inner)

    def wait(self) -> bool:
        """The process' exit status; a run its process left open is ended as `mlflow run` would end it."""
        ok = self.inner.wait()
        client = mlflow.MlflowClient()
        if not RunStatus.is_terminated(RunStatus.from_string(client.get_run(self.run_id).info.status)):
            client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")
        return ok


def kubernetes_project(project_dir: str) -> Path:
    """The folder MLflow builds every pod's image from (build_image=True: FROM the docker_env image, this folder
    copied into its work dir, /mlflow/projects/code, where `python -m steps.<step>` finds these agnews/ and steps/
    first on sys.path, before the base image's installed copy): deploy/kubernetes/MLproject, the project's agnews/
    and steps/, and their code digest in cache.DIGEST_FILE, which the pods' cache.code_digest reads, so that the
    runs they tag are the ones `main` reuses. A temporary folder, removed with the launcher."""
    from agnews.runs import reuse

    root, stage = Path(project_dir), Path(tempfile.mkdtemp(prefix="agnews-kubernetes-"))
    shutil.copy2(root / KUBE_PROJECT / "MLproject", stage / "MLproject")
    for package in ("agnews", "steps"):
        shutil.copytree(root / package, stage / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (stage / reuse.DIGEST_FILE).write_text(reuse.code_digest(root) + "\n")
    return stage


def image_repository(config: dict, stage: Path) -> dict:
    """The backend config with the code digest as the image's tag, where MLflow would push an untagged name (it
    tags with the work folder's git commit, and the staged folder has none): `docker push` of an untagged name
    pushes every local tag of it."""
    from mlflow.utils.git_utils import get_git_commit

    from agnews.runs import reuse

    uri = config.get("repository-uri", "")
    if not uri or ":" in uri.rsplit("/", 1)[-1] or "@" in uri or get_git_commit(str(stage)):
        return config
    return {**config, "repository-uri": f"{uri}:{(stage / reuse.DIGEST_FILE).read_text().strip()}"}


class KubernetesChild(_Wrapped):
    """MLflow's KubernetesSubmittedRun, cancelled so that its pod goes too. MLflow's cancel() deletes the Job with
    no propagation policy, and the API's default for a batch/v1 Job orphans its pods: the pod trained on, then
    registered a version and ended the run FINISHED over main's KILLED. Deleting with propagation_policy=
    "Background" deletes the pod as well (SIGTERM: the step ends its run KILLED and undoes its registration)."""

    def cancel(self) -> None:
        inner = self.inner
        with inner._status_lock:
            if RunStatus.is_terminated(inner._status):
                return
            log.info("deleting kubernetes job %s/%s and its pod", inner._job_namespace, inner._job_name)
            inner._kube_api.delete_namespaced_job(name=inner._job_name, namespace=inner._job_namespace,
                                                  propagation_policy="Background")
            inner._status = RunStatus.KILLED
