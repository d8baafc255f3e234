"""The Slurm backend against a fake cluster (`sbatch`, `squeue`, `scancel`, `sinfo`, `scontrol` answered in-process,
the commands as the backend spells them recorded): batched polling, a failed scancel, the check that the nodes
see the project folder, --no-requeue on every job. Seconds, no cluster; the real one: tests/e2e/test_slurm.py."""
from __future__ import annotations

import re
import subprocess
import types
from pathlib import Path

import mlflow
import pytest
from mlflow.projects.utils import PROJECT_ENV_MANAGER

from agnews.errors import PipelineError
from agnews.orchestration import launch
from agnews.orchestration.backends import slurm, slurm_jobs
from agnews.orchestration.launch import Launch, Launcher
from tests.helpers import REPO, entered_store


class FakeCluster:
    """Jobs as {id: [state, ...]}: each state query of a job moves it one state on (the last one stays). A probe
    job (agnews-visible) runs its command here when `shared` (the node sees this folder), else only ends."""

    def __init__(self, nodes=("submit-host",)):
        self.nodes, self.jobs, self.calls, self.next_id = list(nodes), {}, [], 41
        self.scancel_rc, self.shared, self.probe_end, self.job_states = 0, True, "COMPLETED", ["RUNNING"]

    def run(self, args, **kwargs) -> subprocess.CompletedProcess:
        self.calls.append(list(args))
        rc, out, err = getattr(self, args[0])(list(args))
        return subprocess.CompletedProcess(args, rc, out, err)

    def state_queries(self) -> list[list[str]]:
        """The job ids each state query asked for (squeue -j, or scontrol show job <id>)."""
        return [c[c.index("-j") + 1].split(",") if c[0] == "squeue" else [c[-1]] for c in self.calls
                if c[0] == "squeue" or c[:3] == ["scontrol", "show", "job"]]

    def sbatch(self, args):
        script = Path(args[-1]).read_text()
        job, self.next_id = str(self.next_id), self.next_id + 1
        if "--job-name=agnews-visible" in script:
            if self.shared:
                subprocess.run(["bash", "-c", script.strip().splitlines()[-1]], check=True)
            self.jobs[job] = [self.probe_end]
        else:
            self.jobs[job] = list(self.job_states)
        return 0, f"{job}\n", ""

    def _step(self, job: str) -> str:
        states = self.jobs[job]
        return states.pop(0) if len(states) > 1 else states[0]

    def squeue(self, args):
        ids = args[args.index("-j") + 1].split(",")
        lines = [f"{job} {self._step(job)}" for job in ids if job in self.jobs]
        if len(ids) == 1 and not lines:
            return 1, "", "slurm_load_jobs error: Invalid job id specified"
        return 0, "".join(f"{line}\n" for line in lines), ""

    def scontrol(self, args):
        if args[1:3] == ["show", "hostnames"]:
            return 0, args[-1].replace(",", "\n") + "\n", ""
        job = args[-1]  # show job -o <id> (the backend before batched polling)
        return (0, f"JobId={job} JobState={self._step(job)}\n", "") if job in self.jobs else (
            1, "", "slurm_load_jobs error: Invalid job id specified")

    def sinfo(self, args):
        return 0, ",".join(self.nodes) + "\n", ""

    def scancel(self, args):
        if self.scancel_rc:
            return self.scancel_rc, "", f"scancel: error: Kill job error on job id {args[-1]}: Access/permission denied"
        self.jobs[args[-1]] = ["CANCELLED"]
        return 0, "", ""


class FakeClock:
    """time for the backend: sleep moves the clock, nothing waits."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture()
def cluster(monkeypatch):
    fake = FakeCluster()
    module = types.SimpleNamespace(run=fake.run, TimeoutExpired=subprocess.TimeoutExpired,
                                   CompletedProcess=subprocess.CompletedProcess)
    monkeypatch.setattr(slurm, "subprocess", module)
    monkeypatch.setattr(slurm, "time", FakeClock())
    monkeypatch.setattr(slurm.socket, "gethostname", lambda: "submit-host")
    monkeypatch.setattr(slurm.socket, "getfqdn", lambda: "submit-host.example.org")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a local Launcher sets it: restored after the test
    if hasattr(slurm, "_visible"):
        monkeypatch.setattr(slurm, "_visible", set())
    return fake


@pytest.fixture(scope="module")
def module_store(tmp_path_factory):
    """One SQLite store for the module's tests (creating one costs 1-5 s on 2 busy cores, measured here)."""
    folder = tmp_path_factory.mktemp("slurm-unit")
    with entered_store(folder):
        yield f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture()
def store(module_store):
    yield module_store
    mlflow.end_run()


# --- polling ------------------------------------------------------------------------------------------------------

def test_one_state_query_per_poll_for_every_running_job(cluster, store, monkeypatch, tmp_path):
    """main waiting on 3 jobs at once asks slurmctld once per poll for all 3, not once per job (one scontrol per
    child per second was the issue's count)."""
    cluster.job_states = ["PENDING", "RUNNING", "RUNNING", "RUNNING", "COMPLETED"]
    parent = mlflow.start_run(run_name="main")

    def submit(self, item: Launch):
        run = mlflow.MlflowClient().create_run(parent.info.experiment_id, run_name=item.run_name)
        script = tmp_path / "job.sbatch"
        script.write_text("#!/bin/bash\ntrue\n")
        _, job, _ = cluster.sbatch(["sbatch", str(script)])
        return slurm.SlurmSubmittedRun(run.info.run_id, job.strip(), tmp_path / "none.out", 0.01)

    monkeypatch.setattr(Launcher, "submit", submit)
    rounds = []
    monkeypatch.setattr(launch.time, "sleep", rounds.append)
    launcher = Launcher(".", parallel=3, poll_s=0.01)
    results = launcher.run(launch.once("train", f"train {x}", {}) for x in "abc")
    assert len(results) == 3
    queries = cluster.state_queries()
    assert queries[0] == ["41", "42", "43"]  # all three in one call
    assert len(queries) == len(rounds) + 1, queries  # one per poll round
    client = mlflow.MlflowClient()
    assert {client.get_run(r).data.tags[slurm.STATE_TAG] for r in results} == {"COMPLETED"}


def test_a_purged_job_reads_as_its_run_ended(cluster):
    """`squeue -j <one id>` fails on a job slurmctld has purged, several ids list none: both read as GONE."""
    assert slurm.job_states(["7"]) == {"7": slurm_jobs.GONE}
    assert slurm.job_states(["7", "8"]) == {"7": slurm_jobs.GONE, "8": slurm_jobs.GONE}
    cluster.jobs["8"] = ["RUNNING"]
    assert slurm.job_states(["7", "8"]) == {"7": slurm_jobs.GONE, "8": "RUNNING"}


# --- cancelling ---------------------------------------------------------------------------------------------------

def test_a_failed_scancel_is_raised_with_the_job_still_running(cluster):
    cluster.jobs["41"], cluster.scancel_rc = ["RUNNING"], 1
    child = slurm.SlurmSubmittedRun("r1", "41", Path("/nonexistent/r1.out"))
    with pytest.raises(PipelineError) as info:
        child.cancel()
    assert re.fullmatch(r"`scancel 41` failed \(scancel: error: .*Access/permission denied\) and slurm job 41 is "
                        r"still RUNNING; cancel it yourself \(scancel 41; .*\)", str(info.value))


def test_a_failed_cancel_is_reported_on_the_run_and_main_does_not_wait_for_it(store, caplog):
    class Stuck:
        run_id = None

        def cancel(self):
            raise PipelineError("`scancel 41` failed (Access/permission denied) and slurm job 41 is still RUNNING")

    with mlflow.start_run() as parent:
        Stuck.run_id = mlflow.MlflowClient().create_run(parent.info.experiment_id).info.run_id
        item = launch._Running(0, iter(()), Launch("train", "train a", {}), Stuck())
        clock = FakeClock()
        launch_time = types.SimpleNamespace(monotonic=clock.monotonic, sleep=clock.sleep)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(launch, "time", launch_time)
            Launcher(".", parallel=1).cancel([item])
    run = mlflow.MlflowClient().get_run(Stuck.run_id)
    assert run.info.status == "KILLED" and run.data.tags["agnews.backend_error"].startswith("cancel failed: `scancel")
    assert clock.now == 1000.0  # ended at once: a job that was not cancelled will not end its run for us
    assert any(r.levelname == "ERROR" and "slurm job 41 is still RUNNING" in r.getMessage() for r in caplog.records)


# --- the nodes see the project ------------------------------------------------------------------------------------

def _submit(store: str, tmp_path: Path, **config) -> str:
    """One prepare_data child through the backend itself; the run id."""
    backend_config = {PROJECT_ENV_MANAGER: "local", "output_dir": str(tmp_path / "jobs"), **config}
    experiment = mlflow.get_experiment_by_name("Default").experiment_id
    return slurm.SlurmBackend().run(str(REPO), "prepare_data", {"data": "x.csv"}, None, backend_config, store,
                                    experiment).run_id


def _submitted_scripts(cluster: FakeCluster) -> list[str]:
    return [c[-1] for c in cluster.calls if c[0] == "sbatch"]


def test_every_job_is_submitted_without_requeue(cluster, store, tmp_path):
    run_id = _submit(store, tmp_path)
    script = (tmp_path / "jobs" / f"{run_id}.sbatch").read_text()
    assert "#SBATCH --no-requeue" in script.splitlines()


def test_a_multi_node_partition_is_asked_first_whether_it_sees_the_folder(cluster, store, tmp_path):
    """Nodes other than this machine: one tiny job writes a marker into the job folder before the first real job;
    it appeared, so the job goes; a second child does not ask again."""
    cluster.nodes = ["node01", "node02"]
    _submit(store, tmp_path)
    _submit(store, tmp_path)
    scripts = _submitted_scripts(cluster)
    assert len(scripts) == 3 and ".visible-" in scripts[0] and ".visible-" not in scripts[1] + scripts[2]
    assert not list((tmp_path / "jobs").glob(".visible-*"))  # marker and probe script cleaned up


@pytest.mark.parametrize("probe_end, why", [
    ("COMPLETED", r"wrote its marker into a \S+/jobs of the node's own \(not here 60 s after the job ended\)"),
    ("FAILED", r"ended FAILED \(a node could not enter the folder, run this python or write \S+/jobs\)")])
def test_nodes_that_do_not_see_the_folder_are_refused_before_any_run(cluster, store, tmp_path, probe_end, why):
    cluster.nodes, cluster.shared, cluster.probe_end = ["node01", "node02"], False, probe_end
    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    with pytest.raises(PipelineError) as info:
        _submit(store, tmp_path)
    assert re.fullmatch(rf"the Slurm nodes do not see {re.escape(str(REPO))} as this machine does: slurm job 41 "
                        rf"{why}; run from a folder every node mounts .*TMPDIR.*output_dir.*", str(info.value))
    assert len(_submitted_scripts(cluster)) == 1  # the probe only
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before  # no run left behind


def test_a_single_node_cluster_of_this_machine_needs_no_probe_job(cluster, store, tmp_path):
    """The CI cluster: every node is this machine, so no extra job (and no wait) before the first one."""
    _submit(store, tmp_path)
    assert len(_submitted_scripts(cluster)) == 1
