"""The `slurm` MLflow project backend (entry point `mlflow.project_backend`): one Slurm batch job per run, in this
virtualenv over a shared filesystem (`--env-manager local`), on `sbatch`, `scontrol`, `squeue` and `scancel`.

    mlflow run . -e train --backend slurm --env-manager local [--backend-config slurm.json]
    mlflow run . -P backend=slurm [-P backend_config=slurm.json] [-P parallel=4]

The run is created here (a child of the active run, as MLflow's own backends do), the job runs the entry point's
command with MLFLOW_RUN_ID set, every Slurm state maps to an MLflow status, `cancel()` is `scancel` (its failure
raised, not ignored), and the job's output file is logged to the run (artifact `slurm/<job>.out`) when it ends.
Jobs are never requeued (`--no-requeue`: a requeued job would run again under a run `main` already ended). Before
the first job a node is asked to write a marker into the job folder (skipped when every node is this machine), and
the states of all the jobs `main` waits for come from one `squeue` call per poll (`SlurmSubmittedRun.poll_states`)."""
from __future__ import annotations

import logging
import shlex
import socket
import subprocess
import sys
import time
import uuid
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

from agnews import vocab
from agnews.errors import PipelineError, cause
from agnews.orchestration.backends import slurm_jobs

log = logging.getLogger(__name__)
JOB_TAG, STATE_TAG = vocab.SLURM_JOB_ID, vocab.SLURM_STATE
COMMAND_TIMEOUT_S = 30
# A state read by poll_states() serves the get_status() calls of the same round (they follow within milliseconds).
FRESH_S = 0.5
# After the visibility probe's job COMPLETED, how long its marker may take to show here: an NFS client caches a
# name it looked up and did not find for up to acdirmax (60 s by default, nfs(5)).
PROBE_MARKER_WAIT_S = 60.0


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


def job_states(job_ids: list[str]) -> dict[str, str]:
    """Each job's state from ONE `squeue` call (`-t all`: ended jobs too, while slurmctld holds them); GONE for a
    job it no longer holds (purged MinJobAge after its end). Slurm 22.05 (seen here): `squeue -j <one purged id>`
    exits 1 with "Invalid job id specified", `-j <several purged ids>` exits 0 listing none of them."""
    if not job_ids:
        return {}
    result = _slurm("squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i %T", check=False)
    if result.returncode != 0 and "Invalid job id" not in result.stderr:
        message = (result.stderr or result.stdout).strip().splitlines()
        raise PipelineError(f"`squeue` could not read the state of slurm job(s) {','.join(job_ids)} "
                            f"({message[-1] if message else result.returncode}); is slurmctld running? (sinfo)")
    listed = dict(line.split(None, 1) for line in result.stdout.splitlines() if len(line.split()) >= 2)
    return {job: listed.get(job, slurm_jobs.GONE).strip() for job in job_ids}


def job_state(job_id: str) -> str:
    return job_states([job_id])[job_id]


def submit(script: Path) -> str:
    result = _slurm("sbatch", "--parsable", str(script), check=False)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise PipelineError(f"sbatch refused the job ({lines[-1] if lines else result.returncode}); check the "
                            "partition, time, CPUs, GPUs and memory in -P backend_config")
    return result.stdout.strip().split(";")[0]  # "<id>[;<cluster>]"


# --- is the work folder shared? ------------------------------------------------------------------------------------

_visible: set[tuple[str, str, str]] = set()  # (partition, work dir, job folder) checked in this process


def check_visible(work_dir: str, folder: Path, config: slurm_jobs.SlurmConfig) -> None:
    """Before the first job: a node must see the project folder the jobs `cd` into, this virtualenv's python and
    the job folder. Trivially so when every node of the partition is this machine (the CI cluster: no job, no wait);
    otherwise one tiny job writes a marker into `folder` and it must appear here. Checked once per process."""
    key = (config.partition, work_dir, str(folder))
    if key in _visible:
        return
    if not single_node_here(config.partition or None):
        _probe(work_dir, folder, config)
    _visible.add(key)


def probe_script(work_dir: str, marker: Path, token: str, config: slurm_jobs.SlurmConfig) -> str:
    options = ["--job-name=agnews-visible", "--output=/dev/null", "--no-requeue", "--time=1", "--cpus-per-task=1"]
    options += [f"--{key}={value}" for key, value in (("partition", config.partition), ("mem", config.mem)) if value]
    return "\n".join(["#!/bin/bash", *(f"#SBATCH {option}" for option in options), *config.sbatch_lines,
                      f"cd {shlex.quote(work_dir)} && test -x {shlex.quote(sys.executable)} "
                      f"&& echo {token} > {shlex.quote(str(marker))}", ""])


def _probe(work_dir: str, folder: Path, config: slurm_jobs.SlurmConfig) -> None:
    token = uuid.uuid4().hex[:16]
    marker, script = folder / f".visible-{token}", folder / f".visible-{token}.sbatch"
    script.write_text(probe_script(work_dir, marker, token, config))
    try:
        job = submit(script)
    finally:
        script.unlink(missing_ok=True)  # slurmctld keeps its own copy
    log.info("slurm job %s checks that the nodes see %s (it waits for a node like any job)", job, work_dir)
    outcome = ""
    try:
        outcome = _await_marker(job, marker, token, config.poll_seconds)
    finally:
        marker.unlink(missing_ok=True)
        if not outcome:  # interrupted while waiting: leave no job queued
            _slurm("scancel", job, check=False)
    if outcome != "seen":
        raise PipelineError(
            f"the Slurm nodes do not see {work_dir} as this machine does: slurm job {job} {outcome}; run from a "
            f"folder every node mounts at the same path, this virtualenv ({Path(sys.executable).parent.parent}) "
            "included (a git URL: set TMPDIR to such a folder, MLflow checks out there), and output_dir in "
            "-P backend_config on it too")


def _await_marker(job: str, marker: Path, token: str, poll_s: float) -> str:
    """"seen" once the marker holds the token, else why not: the job's end state, or no marker after it ended."""
    ended_at = None
    while True:
        if marker.is_file() and marker.read_text().strip() == token:
            return "seen"
        state = job_state(job).split()[0]
        if slurm_jobs.ended(state) and state not in ("COMPLETED", slurm_jobs.GONE):
            return f"ended {state} (a node could not enter the folder, run this python or write {marker.parent})"
        if slurm_jobs.ended(state):
            ended_at = ended_at or time.monotonic()
            if time.monotonic() - ended_at > PROBE_MARKER_WAIT_S:
                return (f"wrote its marker into a {marker.parent} of the node's own (not here "
                        f"{PROBE_MARKER_WAIT_S:.0f} s after the job ended)")
        time.sleep(min(poll_s, 1.0))


# --- a submitted job --------------------------------------------------------------------------------------------

class SlurmSubmittedRun(SubmittedRun):
    """A run's Slurm job: polled with `squeue` (all of a launcher's jobs in one call: `poll`), cancelled with
    `scancel`, its output logged to the run."""

    def __init__(self, run_id: str, job_id: str, output: Path, poll_seconds: float = 2.0):
        super().__init__()
        self._run_id, self.job_id, self.output, self.poll_seconds = run_id, job_id, output, poll_seconds
        self._closed = False
        self._seen: tuple[float, str] | None = None  # (when, state) last read

    @property
    def run_id(self) -> str:
        return self._run_id

    @classmethod
    def poll_states(cls, runs: list["SlurmSubmittedRun"]) -> None:
        """Read the state of every job still running with one `squeue` call (Launcher._collect calls this once per
        round; each get_status() then reads it)."""
        live = [run for run in runs if run._seen is None or not slurm_jobs.ended(run._seen[1])]
        states = job_states([run.job_id for run in live])
        now = time.monotonic()
        for run in live:
            state = states[run.job_id]
            run._seen = (now, run._gone_state() if state == slurm_jobs.GONE else state)

    def _gone_state(self) -> str:
        """Purged from slurmctld: the run's own end is what we know."""
        run_status = mlflow.MlflowClient().get_run(self._run_id).info.status
        return "COMPLETED" if run_status == "FINISHED" else "FAILED" if run_status != "KILLED" else "CANCELLED"

    def _state(self) -> str:
        """The job's state: an ended one is final, a live one read again when older than FRESH_S."""
        if self._seen is None or not slurm_jobs.ended(self._seen[1]) and time.monotonic() - self._seen[0] > FRESH_S:
            self.poll_states([self])
        return self._seen[1]

    def get_status(self) -> str:
        return slurm_jobs.to_mlflow_status(self._state())

    def wait(self) -> bool:
        while True:
            state = self._state()
            status = slurm_jobs.to_mlflow_status(state)
            if RunStatus.is_terminated(RunStatus.from_string(status)):
                self._close(state, status)
                return status == "FINISHED"
            time.sleep(self.poll_seconds)

    def cancel(self) -> None:
        """scancel, then wait until Slurm has ended the job (the step got SIGTERM and ended its run KILLED). A
        scancel that failed on a job still running, or a job still running 120 s later, raises."""
        result = _slurm("scancel", self.job_id, check=False)
        self._seen = None
        if result.returncode != 0 and not slurm_jobs.ended(self._state()):
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise PipelineError(f"`scancel {self.job_id}` failed ({lines[-1] if lines else result.returncode}) and "
                                f"slurm job {self.job_id} is still {self._state()}; cancel it yourself (scancel "
                                f"{self.job_id}; check the job's owner and slurmctld)")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = self._state()
            if slurm_jobs.ended(state):
                self._close(state, "KILLED")
                return
            time.sleep(min(self.poll_seconds, 1.0))
        raise PipelineError(f"slurm job {self.job_id} is still {self._state()} 120 s after scancel; check it "
                            f"(scontrol show job {self.job_id}) and cancel it yourself")

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
            if status != "FINISHED" and vocab.ERROR not in run.data.tags:
                client.set_tag(self._run_id, vocab.BACKEND_ERROR, f"slurm job {self.job_id} ended {state}; "
                               f"see its output (artifact slurm/{self.output.name})")
            client.set_terminated(self._run_id, status)


class SlurmBackend(AbstractBackend):
    """`mlflow.projects.run(..., backend="slurm")`: creates the run, submits its job, returns at once."""

    def run(self, project_uri, entry_point, params, version, backend_config, tracking_uri, experiment_id):
        env_manager = backend_config.get(PROJECT_ENV_MANAGER)
        if env_manager not in (None, "local"):
            raise PipelineError(f"the slurm backend runs jobs in this virtualenv over a shared filesystem; pass "
                                f"--env-manager local (got {env_manager})")
        config = slurm_jobs.SlurmConfig.parse({k: v for k, v in backend_config.items() if not _mlflow_key(k)})
        work_dir = fetch_and_validate_project(project_uri, version, entry_point, params)
        project = load_project(work_dir)
        folder = slurm_jobs.job_folder(work_dir, config)
        check_visible(work_dir, folder, config)  # before the run exists: a refusal leaves nothing behind
        run = get_or_create_run(None, project_uri, experiment_id, work_dir, version, entry_point, params)
        run_id = run.info.run_id
        try:
            command = " ".join(get_entry_point_command(project, entry_point, params,
                                                       backend_config.get(PROJECT_STORAGE_DIR)))
            output, script = folder / f"{run_id}.out", folder / f"{run_id}.sbatch"
            env = {"MLFLOW_RUN_ID": run_id, "MLFLOW_TRACKING_URI": tracking_uri,
                   "MLFLOW_EXPERIMENT_ID": str(experiment_id)}
            script.write_text(slurm_jobs.sbatch_script(command, work_dir, env, config,
                                            f"agnews-{entry_point}-{run_id[:8]}", output))
            job_id = submit(script)
        except BaseException as exc:  # no job: the run must not stay RUNNING
            client = mlflow.MlflowClient()
            client.set_tag(run_id, vocab.ERROR, str(exc)[:5000] or type(exc).__name__)
            client.set_terminated(run_id, "FAILED")
            raise
        mlflow.MlflowClient().set_tag(run_id, JOB_TAG, job_id)
        log.info("run %s is slurm job %s (output %s)", run_id, job_id, output)
        return SlurmSubmittedRun(run_id, job_id, output, config.poll_seconds)


def _mlflow_key(key: str) -> bool:
    """Keys MLflow adds to every backend_config (ENV_MANAGER, SYNCHRONOUS, DOCKER_ARGS, build_image ...)."""
    from mlflow.projects import utils

    return key in {value for name, value in vars(utils).items() if name.startswith(("PROJECT_", "MLFLOW_LOCAL"))}
