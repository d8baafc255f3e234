"""What a Slurm job is to this project: the backend's configuration (`--backend-config` keys), the batch script,
the folder jobs write to, and every Slurm job state with the MLflow run status it means. No Slurm command here:
agnews.orchestration.backends.slurm talks to the cluster."""
from __future__ import annotations

import logging
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import RunStatus

from agnews.errors import PipelineError

log = logging.getLogger(__name__)

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


def ended(state: str) -> bool:
    """The job will not run any more (GONE: slurmctld purged it, MinJobAge after its end)."""
    return state == GONE or RunStatus.is_terminated(RunStatus.from_string(to_mlflow_status(state)))


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
    shared_filesystem: bool = False  # read by agnews.orchestration.placement.check_store
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


# --- the job ----------------------------------------------------------------------------------------------------

def sbatch_script(command: str, work_dir: str, env: dict[str, str], config: SlurmConfig, job_name: str,
                  output: Path) -> str:
    """The batch script: #SBATCH options from the config (and --no-requeue), this virtualenv's python first on PATH,
    the MLflow run's environment, then the entry point's command (exec: scancel's SIGTERM reaches the step, which
    ends its run KILLED)."""
    options = [f"--job-name={job_name}", f"--output={output}", f"--cpus-per-task={config.cpus_per_task}",
               "--no-requeue"]  # a requeued job (NODE_FAIL, preemption) would run again under an ended run
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


def job_folder(work_dir: str, config: SlurmConfig) -> Path:
    """Where job scripts and outputs go: output_dir, else <project>/slurm-logs; created here."""
    folder = Path(config.output_dir or Path(work_dir) / "slurm-logs").expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(f"cannot create the Slurm job folder {folder} ({exc.strerror}); set output_dir in "
                            "-P backend_config to a folder you can write that every node mounts") from None
    return folder
