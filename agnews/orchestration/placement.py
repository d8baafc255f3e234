"""Where children may run: the backends installed, `-P backend_config` read and checked, a tracking store every
backend can reach (no file store or loopback server for a remote cluster), Slurm defaults, and the thread split
of this machine's cores between children running at once."""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from urllib.parse import urlparse

import mlflow

from agnews.errors import PipelineError, cause

log = logging.getLogger(__name__)
BUILT_IN = ("local", "kubernetes", "databricks")


# --- threads -------------------------------------------------------------------------------------------------

def cpu_count() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (containers, CI)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here
    return cores


def thread_split(parallel: int, cores: int | None = None) -> int:
    """Torch threads per child so that `parallel` children do not oversubscribe the cores. An OMP_NUM_THREADS
    already set (a scheduler's allocation, the test workers' 1) is the budget they share."""
    budget = os.environ.get("OMP_NUM_THREADS", "")
    total = int(budget) if budget.isdigit() and int(budget) > 0 else (cores or cpu_count())
    return max(1, total // parallel)


# --- backend and its configuration ----------------------------------------------------------------------------

def available_backends() -> list[str]:
    from mlflow.utils.plugins import get_entry_points

    return sorted({*BUILT_IN, *(e.name for e in get_entry_points("mlflow.project_backend"))})


def check_backend(name: str) -> str:
    names = available_backends()
    if name not in names:
        raise PipelineError(f"-P backend={name} is unknown; use one of {', '.join(names)} (plugins register under "
                            "the mlflow.project_backend entry point: pip install the plugin)")
    return name


def load_backend_config(path: str, backend: str) -> dict:
    """`-P backend_config=<file.json>` as a dict ({} when empty); the Slurm keys are checked here, before any run."""
    if not path.strip():
        return {}
    if backend == "local":
        raise PipelineError(f"-P backend_config={path} is given but -P backend=local takes no configuration; "
                            "pass -P backend=slurm (or another backend) or drop backend_config")
    file = Path(path).expanduser()
    try:
        config = json.loads(file.read_text())
    except OSError as exc:
        raise PipelineError(f"-P backend_config={path} cannot be read ({exc.strerror or cause(exc)}); pass the path "
                            "of a JSON file") from None
    except ValueError as exc:
        raise PipelineError(f"-P backend_config={path} is not valid JSON ({cause(exc)}); fix the file") from None
    if not isinstance(config, dict):
        raise PipelineError(f"-P backend_config={path} holds a {type(config).__name__}; it must be a JSON object")
    if backend == "slurm":
        from agnews.orchestration.backends import slurm_jobs

        slurm_jobs.SlurmConfig.parse(config)
    return config


def _loopback(host: str | None) -> bool:
    return host in ("localhost", "::1") or bool(host and host.startswith("127."))


def check_store(backend: str, uri: str, config: dict) -> None:
    """With a remote backend, the jobs must reach the tracking store: refuse before anything runs when they cannot.
    A SQLite/file store is fine for Slurm when every node of the partition is this machine, or when the config
    says the nodes share its filesystem (`"shared_filesystem": true`); a loopback server only on a single node."""
    if backend == "local":
        return
    parsed = urlparse(uri)
    file_store = parsed.scheme in ("sqlite", "file", "")
    if backend == "kubernetes" and not file_store and os.environ.get("KUBE_MLFLOW_TRACKING_URI"):
        # The same server under the address pods use (main may reach it through a port-forward on loopback).
        uri = os.environ["KUBE_MLFLOW_TRACKING_URI"]
        parsed = urlparse(uri)
        file_store = parsed.scheme in ("sqlite", "file", "")
    if not file_store and not _loopback(parsed.hostname):
        return  # a server: reachable by the nodes is the user's promise (its health was checked at start-up)
    reason = "a file on this machine" if file_store else "a server on this machine's loopback address"
    if backend == "slurm":
        from agnews.orchestration.backends import slurm

        shared = file_store and bool(config.get("shared_filesystem"))
        if shared or slurm.single_node_here(config.get("partition")):
            return
        reason += ", and the partition has nodes other than this one"
    raise PipelineError(f"-P backend={backend} runs children where the tracking store {uri} cannot be reached "
                        f"({reason}); start a tracking server every node reaches (mlflow server --host <address> "
                        "--backend-store-uri ...) and set MLFLOW_TRACKING_URI=http://<address>:<port>"
                        + ("; a SQLite file is fine on a single node or a filesystem all nodes share "
                           "(\"shared_filesystem\": true in -P backend_config)" if backend == "slurm" else ""))


def slurm_defaults(config: dict, parallel: int) -> dict:
    """CPUs per job from the thread split over the partition's nodes, unless the config sets them."""
    if "cpus_per_task" in config:
        return config
    from agnews.orchestration.backends import slurm

    nodes, cpus = slurm.partition_size(config.get("partition"))
    per_node = math.ceil(parallel / max(1, nodes))  # jobs that land on one node share its CPUs
    return {**config, "cpus_per_task": max(1, cpus // per_node)}


def backend_config(args) -> dict:
    """`-P backend` and `-P backend_config` read and checked, and the store checked against them (jobs must reach
    it): before any child starts."""
    config = load_backend_config(args.backend_config, check_backend(args.backend))
    check_store(args.backend, mlflow.get_tracking_uri(), config)
    return config
