"""The tracking store: checked once at start-up (seconds, not MLflow's minutes of retries), initialised by one
process at a time, and the experiment got-or-created without a race."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Iterator

from agnews.errors import PipelineError, cause

log = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 5.0
_checked: set[str] = set()


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:"):
        return None
    return Path(uri.split("sqlite:///", 1)[-1]).expanduser().resolve()


@contextlib.contextmanager
def lock(uri: str, purpose: str = "store", timeout_s: float = 600) -> Iterator[None]:
    """An inter-process lock for one store: beside a SQLite file, else in ~/.cache/agnews/locks (per machine;
    processes on other machines against one server rely on the server's own guarantees)."""
    from filelock import FileLock, Timeout

    db = sqlite_path(uri)
    if db is not None:
        path = db.with_name(f"{db.name}.{purpose}.lock")
    else:
        folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agnews" / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{hashlib.sha1(uri.encode()).hexdigest()[:16]}.{purpose}.lock"
    try:
        with FileLock(str(path), timeout=timeout_s):
            yield
    except Timeout:
        raise PipelineError(f"waited {timeout_s:.0f} s for the {purpose} lock {path}; another agnews process holds "
                            "it: let it finish, or remove the file if no such process is running") from None


def _check_http(uri: str) -> None:
    import requests

    url = uri.rstrip("/") + "/health"
    try:
        answer = requests.get(url, timeout=CHECK_TIMEOUT_S)
    except requests.RequestException as exc:
        raise PipelineError(f"tracking server {uri} is unreachable ({cause(exc)}); start it "
                            "(mlflow server ...) or fix MLFLOW_TRACKING_URI") from None
    if answer.status_code != 200:
        raise PipelineError(f"tracking server {uri} answered HTTP {answer.status_code} at /health; check that "
                            "MLFLOW_TRACKING_URI points at an MLflow server") from None


def _check_sqlite(uri: str, db: Path) -> None:
    if not db.parent.is_dir():
        raise PipelineError(f"tracking store {uri}: folder {db.parent} does not exist; create it or fix "
                            "MLFLOW_TRACKING_URI")
    if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise PipelineError(f"tracking store {uri} is not writable; fix its permissions or MLFLOW_TRACKING_URI")


def check(uri: str) -> None:
    """Reachable, writable and initialised, or one PipelineError naming the URI and what to check."""
    if uri in _checked:
        return
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if uri.startswith(("http://", "https://")):
        _check_http(uri)
    elif db is not None:
        _check_sqlite(uri, db)
    try:
        # A new SQLite file gets its schema here; two processes creating it at once collide
        # ("table ... already exists"), so one creates it while the others wait.
        with lock(uri) if db is not None else contextlib.nullcontext():
            MlflowClient(uri).search_experiments(max_results=1)
    except PipelineError:
        raise
    except Exception as exc:
        raise PipelineError(f"tracking store {uri} cannot be used ({cause(exc)}); check "
                            "MLFLOW_TRACKING_URI") from None
    _checked.add(uri)


def experiment_id(name: str) -> str:
    """Get or create `name`; a second process creating it at the same moment gets the same id."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = mlflow.get_tracking_uri()
    client = MlflowClient(uri)
    with lock(uri, "experiment"):
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(name)
            except MlflowException as exc:  # created meanwhile by a process on another machine
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        raise PipelineError(f"experiment {name!r} is deleted; restore it (mlflow experiments restore "
                            f"--experiment-id {experiment.experiment_id}) or pass --experiment-name <another>")
    return experiment.experiment_id
