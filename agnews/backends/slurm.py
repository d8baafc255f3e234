"""The `slurm` MLflow project backend (entry point `mlflow.project_backend`): one Slurm batch job per run, in this
virtualenv over a shared filesystem (`--env-manager local`), on `sbatch`, `scontrol`, `squeue` and `scancel`.

    mlflow run . -e train --backend slurm --env-manager local [--backend-config slurm.json]
    mlflow run . -P backend=slurm [-P backend_config=slurm.json] [-P parallel=4]

The run is created here (a child of the active run, as MLflow's own backends do), the job runs the entry point's
command with MLFLOW_RUN_ID set, every Slurm state maps to an MLflow status, `cancel()` is `scancel`, and the job's
output file is logged to the run (artifact `slurm/<job>.out`) when it ends."""
from __future__ import annotations

import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities import RunStatus
from mlflow.projects.backend.abstract_backend import AbstractBackend
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.projects.utils import (
    PROJECT_ENV_MANAGER,
    PROJECT_STORAGE_DIR,
    fetch_and_validate_project,
    get_entry_point_command,
    get_or_create_run,
    load_project,
)

from agnews.errors import PipelineError, cause

log = logging.getLogger(__name__)
JOB_TAG, STATE_TAG = "agnews.slurm_job_id", "agnews.slurm_state"
COMMAND_TIMEOUT_S = 30

# Every Slurm job state (squeue/scontrol names) and the MLflow status it means. Not terminal: SCHEDULED/RUNNING.
STATES = {
    "PENDING": "SCHEDULED", "CONFIGURING": "SCHEDULED", "REQUEUED": "SCHEDULED", "REQUEUE_HOLD": "SCHEDULED",
    "REQUEUE_FED": "SCHEDULED", "RESV_DEL_HOLD": "SCHEDULED", "SUSPENDED": "SCHEDULED",
    "RUNNING": "RUNNING", "COMPLETING": "RUNNING", "RESIZING": "RUNNING", "SIGNALING": "RUNNING",
    "STAGE_OUT": "RUNNING", "STOPPED": "RUNNING",
    "COMPLETED": "FINISHED",
    "FAILED": "FAILED", "TIMEOUT": "FAILED", "OUT_OF_MEMORY": "FAILED", "NODE_FAIL": "FAILED",
    "BOOT_FAIL": "FAILED", "DEADLINE": "FAILED", "SPECIAL_EXIT": "FAILED", "REVOKED": "FAILED",
    "CANCELLED": "KILLED", "PREEMPTED": "KILLED",
}
# The job's state is gone from slurmctld (purged after MinJobAge): the run's own status is all there is.
GONE = "GONE"


def to_mlflow_status(state: str) -> str:
    """An MLflow run status for a Slurm job state (`CANCELLED by 0` reads as CANCELLED); unknown: RUNNING, so the
    run is polled again rather than ended on a state this code does not know (a warning says which)."""
    base = state.split()[0].rstrip("+") if state.strip() else ""
    if base not in STATES:
        log.warning("unknown Slurm job state %r; treating the job as still running", state)
    return STATES.get(base, "RUNNING")


# --- configuration ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlurmConfig:
    """`--backend-config` / `-P backend_config` keys; any other key is refused with the list of these."""

    partition: str = ""
    time: str = ""
    cpus_per_task: int = 1
    gpus: str = ""
    mem: str = ""
    sbatch_lines: tuple[str, ...] = ()
    poll_seconds: float = 2.0
    shared_filesystem: bool = False  # read by agnews.launch.check_store
    output_dir: str = ""  # job scripts and output files; default <project>/slurm-logs (shared like the project)

    @classmethod
    def parse(cls, config: dict) -> "SlurmConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(config) - known)
        if unknown:
            raise PipelineError(f"slurm backend_config has unknown key(s) {', '.join(unknown)}; use "
                                f"{', '.join(sorted(known))}")
        values = dict(config)
        try:
            values["cpus_per_task"] = _whole(values.get("cpus_per_task", 1), "cpus_per_task", 1)
            values["poll_seconds"] = float(values.get("poll_seconds", 2.0))
            if not values["poll_seconds"] > 0:
                raise ValueError("poll_seconds must be > 0")
        except (TypeError, ValueError) as exc:
            raise PipelineError(f"slurm backend_config: {exc}; e.g. {{\"cpus_per_task\": 2, "
                                "\"poll_seconds\": 2}") from None
        for key in ("partition", "time", "gpus", "mem", "output_dir"):
            if not isinstance(values.get(key, ""), (str, int)) or isinstance(values.get(key), bool):
                raise PipelineError(f"slurm backend_config: {key} must be a string, e.g. \"time\": \"01:00:00\"")
            values[key] = str(values.get(key, ""))
        lines = values.get("sbatch_lines", [])
        if not isinstance(lines, list) or not all(isinstance(x, str) and x.startswith("#SBATCH ") for x in lines):
            raise PipelineError("slurm backend_config: sbatch_lines must be a list of \"#SBATCH ...\" lines, "
                                "e.g. [\"#SBATCH --qos=normal\"]")
        values["sbatch_lines"] = tuple(lines)
        if not isinstance(values.get("shared_filesystem", False), bool):
            raise PipelineError("slurm backend_config: shared_filesystem must be true or false")
        return cls(**values)


def _whole(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or int(value) < minimum:
        raise ValueError(f"{name}={value!r} must be a whole number >= {minimum}")
    return int(value)


# --- the cluster ------------------------------------------------------------------------------------------------

def _slurm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """A Slurm command; missing tools or a dead controller become one PipelineError."""
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except FileNotFoundError:
        raise PipelineError(f"`{args[0]}` is not installed here; -P backend=slurm needs the Slurm client tools "
                            "(apt-get install slurm-client) and a running cluster (.ci/slurm-up starts one)") from None
    except subprocess.TimeoutExpired:
        raise PipelineError(f"`{' '.join(args)}` did not answer in {COMMAND_TIMEOUT_S} s; is slurmctld running? "
                            "(sinfo; .ci/slurm-up starts a single-node cluster)") from None
    if check and result.returncode != 0:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise PipelineError(f"`{' '.join(args[:2])}` failed: {message[-1] if message else result.returncode}")
    return result


def partition_hosts(partition: str | None) -> list[str]:
    """The node names of a partition (all partitions when none is given), host lists expanded."""
    nodes = _slurm("sinfo", "-h", "-o", "%N", *(["-p", partition] if partition else [])).stdout.split()
    hosts: list[str] = []
    for node_list in nodes:
        hosts += _slurm("scontrol", "show", "hostnames", node_list).stdout.split()
    return sorted(set(hosts))


def single_node_here(partition: str | None) -> bool:
    """Every node the jobs can land on is this machine: they see its files and its loopback address."""
    here = {socket.gethostname().split(".")[0], socket.getfqdn().split(".")[0]}
    hosts = partition_hosts(partition)
    return bool(hosts) and {host.split(".")[0] for host in hosts} <= here


def partition_size(partition: str | None) -> tuple[int, int]:
    """(nodes, CPUs of the smallest node) of a partition (all partitions when none is given)."""
    lines = _slurm("sinfo", "-h", "-o", "%D %c", *(["-p", partition] if partition else [])).stdout.split("\n")
    sizes = [tuple(int(x.rstrip("+")) for x in line.split()) for line in lines if line.strip()]
    if not sizes:
        raise PipelineError(f"Slurm partition {partition or '(default)'} has no nodes; check `sinfo`")
    return sum(n for n, _ in sizes), min(c for _, c in sizes)


def job_state(job_id: str) -> str:
    """The job's state from slurmctld (`scontrol show job`), GONE once it was purged (MinJobAge after the end)."""
    result = _slurm("scontrol", "show", "job", "-o", job_id, check=False)
    match = re.search(r"\bJobState=(\S+)", result.stdout)
    if match:
        return match.group(1)
    if "Invalid job id" in result.stderr:
        return GONE
    raise PipelineError(f"`scontrol show job {job_id}` failed: {result.stderr.strip() or result.returncode}")


# --- the job ----------------------------------------------------------------------------------------------------

def sbatch_script(command: str, work_dir: str, env: dict[str, str], config: SlurmConfig, job_name: str,
                  output: Path) -> str:
    """The batch script: #SBATCH options from the config, this virtualenv's python first on PATH, the MLflow run's
    environment, then the entry point's command (exec: scancel's SIGTERM reaches the step, which ends its run
    KILLED)."""
    options = [f"--job-name={job_name}", f"--output={output}", f"--cpus-per-task={config.cpus_per_task}"]
    options += [f"--{key}={value}" for key, value in
                (("partition", config.partition), ("time", config.time), ("gpus", config.gpus), ("mem", config.mem))
                if value]
    exports = {**env, "OMP_NUM_THREADS": str(config.cpus_per_task),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return "\n".join([
        "#!/bin/bash",
        *(f"#SBATCH {option}" for option in options),
        *config.sbatch_lines,
        "set -e",
        *(f"export {key}={shlex.quote(value)}" for key, value in exports.items()),
        f"cd {shlex.quote(work_dir)}",
        f"exec {command}",
        "",
    ])


def submit(script: Path) -> str:
    result = _slurm("sbatch", "--parsable", str(script), check=False)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise PipelineError(f"sbatch refused the job ({lines[-1] if lines else result.returncode}); check the "
                            "partition, time, CPUs, GPUs and memory in -P backend_config")
    return result.stdout.strip().split(";")[0]  # "<id>[;<cluster>]"


class SlurmSubmittedRun(SubmittedRun):
    """A run's Slurm job: polled with `scontrol`, cancelled with `scancel`, its output logged to the run."""

    def __init__(self, run_id: str, job_id: str, output: Path, poll_seconds: float = 2.0):
        super().__init__()
        self._run_id, self.job_id, self.output, self.poll_seconds = run_id, job_id, output, poll_seconds
        self._closed = False

    @property
    def run_id(self) -> str:
        return self._run_id

    def _state(self) -> str:
        state = job_state(self.job_id)
        if state == GONE:  # purged: the run's own end is what we know
            run_status = mlflow.MlflowClient().get_run(self._run_id).info.status
            return "COMPLETED" if run_status == "FINISHED" else "FAILED" if run_status != "KILLED" else "CANCELLED"
        return state

    def get_status(self) -> str:
        return to_mlflow_status(self._state())

    def wait(self) -> bool:
        while True:
            state = self._state()
            status = to_mlflow_status(state)
            if RunStatus.is_terminated(RunStatus.from_string(status)):
                self._close(state, status)
                return status == "FINISHED"
            time.sleep(self.poll_seconds)

    def cancel(self) -> None:
        """scancel, then wait until Slurm has ended the job (the step got SIGTERM and ended its run KILLED)."""
        _slurm("scancel", self.job_id, check=False)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = self._state()
            if RunStatus.is_terminated(RunStatus.from_string(to_mlflow_status(state))):
                self._close(state, "KILLED")
                return
            time.sleep(min(self.poll_seconds, 1.0))
        log.error("slurm job %s still %s 120 s after scancel", self.job_id, self._state())

    def _close(self, state: str, status: str) -> None:
        """Record the job's end on the run once: its state, its output file, and an end status if the step could
        not write one (killed before Python started, out of memory, node failure)."""
        if self._closed:
            return
        self._closed = True
        client = mlflow.MlflowClient()
        client.set_tag(self._run_id, STATE_TAG, state.split()[0])
        if self.output.is_file():
            try:
                client.log_artifact(self._run_id, str(self.output), "slurm")
            except Exception as exc:  # the status below matters more than the log
                log.error("could not log %s to run %s: %s", self.output, self._run_id, cause(exc))
        run = client.get_run(self._run_id)
        if not RunStatus.is_terminated(RunStatus.from_string(run.info.status)):
            if status != "FINISHED" and "agnews.error" not in run.data.tags:
                client.set_tag(self._run_id, "agnews.backend_error", f"slurm job {self.job_id} ended {state}; "
                               f"see its output (artifact slurm/{self.output.name})")
            client.set_terminated(self._run_id, status)


class SlurmBackend(AbstractBackend):
    """`mlflow.projects.run(..., backend="slurm")`: creates the run, submits its job, returns at once."""

    def run(self, project_uri, entry_point, params, version, backend_config, tracking_uri, experiment_id):
        env_manager = backend_config.get(PROJECT_ENV_MANAGER)
        if env_manager not in (None, "local"):
            raise PipelineError(f"the slurm backend runs jobs in this virtualenv over a shared filesystem; pass "
                                f"--env-manager local (got {env_manager})")
        config = SlurmConfig.parse({k: v for k, v in backend_config.items() if not _mlflow_key(k)})
        work_dir = fetch_and_validate_project(project_uri, version, entry_point, params)
        project = load_project(work_dir)
        run = get_or_create_run(None, project_uri, experiment_id, work_dir, version, entry_point, params)
        run_id = run.info.run_id
        try:
            command = " ".join(get_entry_point_command(project, entry_point, params,
                                                       backend_config.get(PROJECT_STORAGE_DIR)))
            folder = Path(config.output_dir or Path(work_dir) / "slurm-logs").expanduser().resolve()
            folder.mkdir(parents=True, exist_ok=True)
            output, script = folder / f"{run_id}.out", folder / f"{run_id}.sbatch"
            env = {"MLFLOW_RUN_ID": run_id, "MLFLOW_TRACKING_URI": tracking_uri,
                   "MLFLOW_EXPERIMENT_ID": str(experiment_id)}
            script.write_text(sbatch_script(command, work_dir, env, config, f"agnews-{entry_point}-{run_id[:8]}",
                                            output))
            job_id = submit(script)
        except BaseException as exc:  # no job: the run must not stay RUNNING
            client = mlflow.MlflowClient()
            client.set_tag(run_id, "agnews.error", str(exc)[:5000] or type(exc).__name__)
            client.set_terminated(run_id, "FAILED")
            raise
        mlflow.MlflowClient().set_tag(run_id, JOB_TAG, job_id)
        log.info("run %s is slurm job %s (output %s)", run_id, job_id, output)
        return SlurmSubmittedRun(run_id, job_id, output, config.poll_seconds)


def _mlflow_key(key: str) -> bool:
    """Keys MLflow adds to every backend_config (ENV_MANAGER, SYNCHRONOUS, DOCKER_ARGS, build_image ...)."""
    from mlflow.projects import utils

    return key in {value for name, value in vars(utils).items() if name.startswith(("PROJECT_", "MLFLOW_LOCAL"))}
