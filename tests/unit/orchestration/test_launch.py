"""agnews.launch and the Slurm backend's policy, in-process and fast: the thread split, every Slurm state, the
configuration, the store check, the batch script, and the launcher's scheduling and cancelling with fake children
(the real ones: tests/e2e/test_slurm.py, tests/e2e/test_pipeline.py)."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess

import mlflow
import pytest
from mlflow.entities import RunStatus
from mlflow.projects.submitted_run import SubmittedRun

from agnews.errors import PipelineError
from agnews.orchestration import launch, placement
from agnews.orchestration.backends import slurm, slurm_jobs
from agnews.orchestration.launch import Launch, Launcher
from agnews.runs import signals

# --- threads ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("omp, cores, parallel, expected", [
    (None, 8, 1, 8), (None, 8, 3, 2), (None, 2, 4, 1), ("4", 16, 2, 2), ("1", 16, 2, 1), ("x", 6, 2, 3)])
def test_thread_split_divides_the_cores(omp, cores, parallel, expected, monkeypatch):
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert placement.thread_split(parallel, cores) == expected


def test_cpu_count_is_at_least_one():
    assert placement.cpu_count() >= 1


# --- Slurm states and configuration -------------------------------------------------------------------------------

# Slurm's own job states, from outside this project's table: the list `squeue -t <unknown>` prints ("Valid job
# states include: ...", slurm-wlm 22.05.8, seen here 2026-12-04), checked again against the squeue installed
# wherever there is one.
SLURM_STATES = ("PENDING,RUNNING,SUSPENDED,COMPLETED,CANCELLED,FAILED,TIMEOUT,NODE_FAIL,PREEMPTED,BOOT_FAIL,DEADLINE,"
                "OUT_OF_MEMORY,COMPLETING,CONFIGURING,RESIZING,RESV_DEL_HOLD,REQUEUED,REQUEUE_FED,REQUEUE_HOLD,REVOKED,"
                "SIGNALING,SPECIAL_EXIT,STAGE_OUT,STOPPED").split(",")
# slurm.h: the base states after JOB_SUSPENDED are the finished ones (IS_JOB_FINISHED); the rest of the list are
# flags a job carries on its way (COMPLETING: "some processes on some nodes may still be active", squeue(1)), except
# two that leave it waiting on an operator for good: SPECIAL_EXIT (requeued and held on a chosen exit code) and
# REVOKED (a federation sibling that another cluster runs): main must not wait on those.
FINISHED_BASE = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE",
                 "OUT_OF_MEMORY"}
GIVEN_UP = {"SPECIAL_EXIT", "REVOKED"}


def _installed_slurm_states() -> list[str] | None:
    if not shutil.which("squeue"):
        return None
    listed = subprocess.run(["squeue", "-h", "-t", "NO_SUCH_STATE"], capture_output=True, text=True, timeout=30)
    match = re.search(r"Valid job states include: (\S+)", listed.stderr)
    return match.group(1).split(",") if match else None


def test_the_slurm_states_are_the_ones_slurm_knows():
    installed = _installed_slurm_states()
    if installed is not None:
        assert set(installed) == set(SLURM_STATES), "this Slurm has other states: map them in slurm_jobs.STATES"
    assert set(slurm_jobs.STATES) == set(SLURM_STATES)


@pytest.mark.parametrize("state", SLURM_STATES)
def test_a_slurm_state_ends_the_run_exactly_when_slurm_is_done_with_the_job(state):
    """Finished (slurm.h) or given up: a terminal MLflow status, FINISHED only for COMPLETED (exit code 0), KILLED
    for a job someone stopped (scancel, preemption), FAILED for the rest; any other state: polled again."""
    status = RunStatus.from_string(slurm_jobs.to_mlflow_status(state))
    assert RunStatus.is_terminated(status) == (state in FINISHED_BASE | GIVEN_UP)
    if state in FINISHED_BASE | GIVEN_UP:
        expected = {"COMPLETED": "FINISHED", "CANCELLED": "KILLED", "PREEMPTED": "KILLED"}.get(state, "FAILED")
        assert RunStatus.to_string(status) == expected
    else:  # waiting for resources (PENDING, held, requeued) is SCHEDULED; holding an allocation is RUNNING
        assert RunStatus.to_string(status) in ("SCHEDULED", "RUNNING")


@pytest.mark.parametrize("state, status", [("CANCELLED by 0", "KILLED"), ("COMPLETED+", "FINISHED"),
                                           ("SOMETHING_NEW", "RUNNING")])
def test_slurm_state_spellings_and_unknown_states(state, status):
    assert slurm_jobs.to_mlflow_status(state) == status


@pytest.mark.parametrize("config, pattern", [
    ({"partitoin": "debug"}, r"unknown key\(s\) partitoin; use .*partition"),
    ({"cpus_per_task": 0}, r"cpus_per_task=0 must be a whole number >= 1"),
    ({"cpus_per_task": 1.5}, r"cpus_per_task=1.5"),
    ({"poll_seconds": 0}, r"poll_seconds must be > 0"),
    ({"sbatch_lines": "#SBATCH --qos=x"}, r"sbatch_lines must be a list of \"#SBATCH ...\" lines"),
    ({"sbatch_lines": ["--qos=x"]}, r"sbatch_lines must be a list"),
    ({"time": ["1:00"]}, r"time must be a string"),
    ({"shared_filesystem": "yes"}, r"shared_filesystem must be true or false"),
])
def test_bad_slurm_config_is_one_error(config, pattern):
    with pytest.raises(PipelineError, match=pattern):
        slurm_jobs.SlurmConfig.parse(config)


def test_slurm_config_reads_every_key():
    config = slurm_jobs.SlurmConfig.parse({"partition": "gpu", "time": "01:00:00", "cpus_per_task": 4, "gpus": 1,
                                      "mem": "8G", "sbatch_lines": ["#SBATCH --qos=high"], "poll_seconds": 5,
                                      "shared_filesystem": True, "output_dir": "/shared/logs"})
    assert (config.partition, config.gpus, config.cpus_per_task, config.sbatch_lines) == (
        "gpu", "1", 4, ("#SBATCH --qos=high",))


def test_sbatch_script_runs_the_command_in_this_environment(tmp_path):
    config = slurm_jobs.SlurmConfig.parse({"partition": "gpu", "time": "00:30:00", "cpus_per_task": 3, "gpus": "a100:1",
                                      "mem": "8G", "sbatch_lines": ["#SBATCH --qos=high"]})
    script = slurm_jobs.sbatch_script("python -m steps.train --model 'a b'", "/shared/project",
                                 {"MLFLOW_RUN_ID": "abc", "MLFLOW_TRACKING_URI": "http://10.0.0.1:5000"}, config,
                                 "agnews-train-abc", tmp_path / "abc.out")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    for option in ("--job-name=agnews-train-abc", f"--output={tmp_path / 'abc.out'}", "--cpus-per-task=3",
                   "--partition=gpu", "--time=00:30:00", "--gpus=a100:1", "--mem=8G"):
        assert f"#SBATCH {option}" in lines
    assert "#SBATCH --qos=high" in lines
    assert "#SBATCH --no-requeue" in lines  # a NODE_FAIL or preemption must not run the job again under its run
    assert "export MLFLOW_RUN_ID=abc" in lines and "export OMP_NUM_THREADS=3" in lines
    assert any(re.match(r"export PATH=\S*/bin:", line) for line in lines)
    assert lines[-2:] == ["cd /shared/project", "exec python -m steps.train --model 'a b'"]
    # every #SBATCH line comes before the first command, or sbatch ignores it
    first_command = next(k for k, line in enumerate(lines) if not line.startswith("#"))
    assert not any(line.startswith("#SBATCH") for line in lines[first_command:])


# --- -P backend, backend_config, and the store every node must reach ------------------------------------------------

def test_unknown_backend_is_refused_with_the_ones_there_are():
    with pytest.raises(PipelineError, match=r"-P backend=slurmm is unknown; use one of .*local.*slurm"):
        placement.check_backend("slurmm")
    assert placement.check_backend("slurm") == "slurm"  # the project's plugin is registered (pip install -e .)


@pytest.mark.parametrize("content, pattern", [
    (None, r"cannot be read"), ("{not json", r"is not valid JSON"), ("[1, 2]", r"holds a list; it must be a JSON "
                                                                             "object"),
    ('{"nodes": 3}', r"unknown key\(s\) nodes")])
def test_bad_backend_config_file_is_one_error(content, pattern, tmp_path):
    path = tmp_path / "slurm.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PipelineError, match=pattern):
        placement.load_backend_config(str(path), "slurm")


def test_backend_config_without_a_backend_is_refused(tmp_path):
    with pytest.raises(PipelineError, match=r"-P backend=local takes no configuration"):
        placement.load_backend_config(str(tmp_path / "x.json"), "local")
    assert placement.load_backend_config("", "slurm") == {}


@pytest.mark.parametrize("backend, uri, single_node, config, refused", [
    ("local", "sqlite:////tmp/a.db", False, {}, False),
    ("kubernetes", "sqlite:////tmp/a.db", True, {}, True),
    ("kubernetes", "http://127.0.0.1:5000", True, {}, True),
    ("kubernetes", "http://mlflow.internal:5000", False, {}, False),
    ("slurm", "sqlite:////tmp/a.db", True, {}, False),  # a single-node cluster: this machine
    ("slurm", "sqlite:////tmp/a.db", False, {}, True),
    ("slurm", "sqlite:////shared/a.db", False, {"shared_filesystem": True}, False),
    ("slurm", "http://localhost:5000", False, {"shared_filesystem": True}, True),
    ("slurm", "http://10.1.2.3:5000", False, {}, False),
])
def test_store_the_jobs_cannot_reach_is_refused(backend, uri, single_node, config, refused, monkeypatch):
    monkeypatch.setattr(slurm, "single_node_here", lambda partition: single_node)
    if not refused:
        placement.check_store(backend, uri, config)
        return
    with pytest.raises(PipelineError) as info:
        placement.check_store(backend, uri, config)
    assert "\n" not in str(info.value)
    assert re.search(rf"-P backend={backend} runs children where the tracking store .* cannot be reached .*"
                     r"mlflow server .*MLFLOW_TRACKING_URI", str(info.value))


def test_slurm_cpus_come_from_the_thread_split_over_the_nodes(monkeypatch):
    monkeypatch.setattr(slurm, "partition_size", lambda partition: (1, 8))
    assert placement.slurm_defaults({}, 3)["cpus_per_task"] == 2
    monkeypatch.setattr(slurm, "partition_size", lambda partition: (10, 8))
    assert placement.slurm_defaults({}, 10)["cpus_per_task"] == 8  # one job per node
    assert placement.slurm_defaults({"cpus_per_task": 1}, 10)["cpus_per_task"] == 1


# --- the launcher's policy, with fake children ---------------------------------------------------------------------

class FakeChild(SubmittedRun):
    """A child whose run is real (in the test's store) and whose end the test decides: `polls` status checks
    RUNNING, then `outcome`. Cancel ends the run KILLED, as a step does on SIGTERM."""

    def __init__(self, run_id: str, outcome: str, polls: int, log: list):
        self._run_id, self.outcome, self.polls, self.log = run_id, outcome, polls, log
        self.cancelled = False

    @property
    def run_id(self):
        return self._run_id

    def get_status(self):
        if self.cancelled:
            return "KILLED"
        self.polls -= 1
        return "RUNNING" if self.polls >= 0 else self.outcome

    def wait(self):
        client = mlflow.MlflowClient()
        if self.outcome == "FAILED":
            client.set_tag(self._run_id, "agnews.error", "train: -P data=x.csv has no rows; pass a file with rows")
        client.set_terminated(self._run_id, self.outcome)
        self.log.append(("end", self._run_id))
        return self.outcome == "FINISHED"

    def cancel(self):
        self.cancelled = True
        mlflow.MlflowClient().set_terminated(self._run_id, "KILLED")
        self.log.append(("cancel", self._run_id))


@pytest.fixture()
def fake_launcher(store, monkeypatch):
    """A Launcher whose children are FakeChild runs; `plan` maps run names to (outcome, polls)."""
    parent = mlflow.start_run(run_name="main")
    plan, log, names = {}, [], {}

    def submit(self, item: Launch):
        run = mlflow.MlflowClient().create_run(parent.info.experiment_id, run_name=item.run_name,
                                               tags={"mlflow.parentRunId": parent.info.run_id})
        names[run.info.run_id] = item.run_name
        log.append(("start", run.info.run_id))
        outcome, polls = plan.get(item.run_name, ("FINISHED", 1))
        return FakeChild(run.info.run_id, outcome, polls, log)

    monkeypatch.setattr(Launcher, "submit", submit)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the launcher sets it for its children: restored after the test
    launcher = Launcher(".", parallel=2, poll_s=0.01)
    yield launcher, plan, log, names
    mlflow.end_run()


def _chain(name: str) -> launch.Chain:
    train = yield Launch("train", f"train {name}", {})
    yield Launch("evaluate", f"evaluate {name}", {"train_run_id": train})
    return train


def _most_at_once(log) -> int:
    running, most = set(), 0
    for event, run_id in log:
        running.add(run_id) if event == "start" else running.discard(run_id)
        most = max(most, len(running))
    return most


def test_launcher_runs_at_most_n_chains_and_keeps_their_order(fake_launcher):
    launcher, plan, log, names = fake_launcher
    plan["train a"] = ("FINISHED", 5)  # a finishes last: results still come in the chains' order
    results = launcher.run(_chain(x) for x in "abc")
    assert [names[r] for r in results] == ["train a", "train b", "train c"]
    assert _most_at_once(log) == 2
    order = [names[r] for event, r in log if event == "start"]
    for x in "abc":  # each evaluate starts after its own train ended
        assert order.index(f"evaluate {x}") > order.index(f"train {x}")
        ended = [names[r] for event, r in log if event == "end"]
        assert ended.index(f"train {x}") < ended.index(f"evaluate {x}")


def test_a_failing_child_cancels_the_others_and_is_named(fake_launcher):
    launcher, plan, log, names = fake_launcher
    plan["train a"] = ("FINISHED", 50)
    plan["train b"] = ("FAILED", 2)
    with pytest.raises(PipelineError) as info:
        launcher.run(_chain(x) for x in "abc")
    assert re.fullmatch(r"child run 'train b' failed \(\w+, FAILED\): train: -P data=x.csv has no rows; pass a file "
                        r"with rows", str(info.value))
    client = mlflow.MlflowClient()
    statuses = {names[r]: client.get_run(r).info.status for r in names}
    assert statuses == {"train a": "KILLED", "train b": "FAILED"}  # c never started: nothing queued
    assert client.get_run(mlflow.active_run().info.run_id).data.tags[launch.FAILED_CHILD_TAG] == "train b"


@pytest.fixture()
def step_signals(monkeypatch):
    """agnews.signals as in a fresh step process, this process' handlers back afterwards. SIGHUP first gets a
    harmless handler: where it is not handled (the code before this test), it must not hang up pytest itself."""
    monkeypatch.setattr(signals, "_state", {"stopping": False, "holding": 0})
    monkeypatch.setattr(signals, "_pending", [])
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGHUP, lambda signum, frame: None)
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def test_an_interrupt_cancels_every_child(fake_launcher, step_signals, monkeypatch):
    """A signal while main waits for its children, through main's own handlers: here SIGHUP, the terminal or ssh
    session of `main` going away (SIGINT and SIGTERM raise the same way: tests/unit/runs/test_signals.py). Every child
    is cancelled (on Slurm the jobs would outlive main otherwise) and the interrupt names the signal."""
    launcher, plan, log, names = fake_launcher
    plan["train a"] = plan["train b"] = ("FINISHED", 10 ** 6)
    sleeps = []

    def hung_up_sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:
            signal.raise_signal(signal.SIGHUP)
        assert len(sleeps) < 10, "SIGHUP did not stop main"

    signals.install(parent_death=False)  # as steps.main does (tracking.step_run)
    monkeypatch.setattr(launch.time, "sleep", hung_up_sleep)
    with pytest.raises(signals.Terminated) as info:
        launcher.run(_chain(x) for x in "ab")
    assert info.value.signal_name == "SIGHUP"
    client = mlflow.MlflowClient()
    assert {client.get_run(r).info.status for r in names} == {"KILLED"}
    assert [event for event, _ in log].count("cancel") == 2


def test_nohup_keeps_a_step_running_on_hangup(step_signals):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what nohup does before it execs the command
    signals.install(parent_death=False)
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    with signals.deferred():
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is signals._interrupt


def test_a_child_that_never_ends_its_run_is_ended_for_it(store):
    with mlflow.start_run() as run:
        child = mlflow.MlflowClient().create_run(run.info.experiment_id)
        launch._ensure_ended(child.info.run_id, "KILLED", timeout_s=0.1)
        assert mlflow.MlflowClient().get_run(child.info.run_id).info.status == "KILLED"


def test_backend_config_json_round_trip(tmp_path):
    path = tmp_path / "slurm.json"
    path.write_text(json.dumps({"partition": "debug", "cpus_per_task": 2}))
    assert placement.load_backend_config(str(path), "slurm") == {"partition": "debug", "cpus_per_task": 2}


def test_a_backend_failing_half_way_leaves_no_run_open(fake_launcher, monkeypatch):
    """A backend that created the run and then failed (kubernetes: the image build): that run ends FAILED, the
    child already running is cancelled."""
    launcher, plan, log, names = fake_launcher
    plan["train a"] = ("FINISHED", 10 ** 6)
    fake_submit, parent = Launcher.submit, mlflow.active_run()

    def half_way(self, item: Launch):
        if item.run_name != "train b":
            return fake_submit(self, item)
        mlflow.MlflowClient().create_run(parent.info.experiment_id, run_name="train b",
                                         tags={"mlflow.parentRunId": parent.info.run_id})
        raise PipelineError("child run 'train b' could not start on -P backend=kubernetes (docker build failed)")

    monkeypatch.setattr(Launcher, "submit", half_way)
    with pytest.raises(PipelineError, match=r"could not start"):
        launcher.run(_chain(x) for x in "ab")
    children = mlflow.MlflowClient().search_runs([parent.info.experiment_id],
                                                 f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {r.info.run_name: r.info.status for r in children} == {"train a": "KILLED", "train b": "FAILED"}


def test_slurm_children_go_through_mlflow_projects_run(store, monkeypatch, tmp_path):
    """What MLflow is asked: the backend, its config, env manager local, not synchronous, no image (kubernetes:
    tests/unit/orchestration/test_kubernetes.py)."""
    backend, config = "slurm", {"cpus_per_task": 3}
    calls = []

    class Submitted:
        run_id = None

    def fake_run(uri, entry_point, **kwargs):
        calls.append((uri, entry_point, kwargs))
        Submitted.run_id = mlflow.MlflowClient().create_run(kwargs["experiment_id"]).info.run_id
        return Submitted()

    monkeypatch.setattr(mlflow.projects, "run", fake_run)
    with mlflow.start_run():
        launcher = Launcher(str(tmp_path), parallel=2, backend=backend, config=config)
        launcher.submit(Launch("train", "train a", {"seed": 1}))
    [(uri, entry_point, kwargs)] = calls
    assert uri == str(tmp_path) and entry_point == "train"
    assert (kwargs["backend"], kwargs["backend_config"], kwargs["env_manager"], kwargs["synchronous"],
            kwargs["build_image"]) == (backend, config, "local", False, False)
    assert kwargs["parameters"] == {"seed": "1"} and kwargs["run_name"] == "train a"


def test_watch_stops_a_child_its_chain_hears_it_and_the_rest_go_on(fake_launcher):
    """A sweep's pruning: `watch` picks a running child, the launcher cancels it (its run KILLED) and throws
    Stopped into its chain, which returns; the other chains are not cancelled."""
    launcher, plan, log, names = fake_launcher
    plan["train a"] = ("FINISHED", 10 ** 6)  # would never end by itself

    def chain(name: str) -> launch.Chain:
        try:
            return (yield Launch("train", f"train {name}", {}))
        except launch.Stopped as stopped:
            return f"stopped {names[stopped.run_id]}"

    launcher.watch = lambda child, run_id: child.run_name == "train a"
    results = launcher.run(chain(x) for x in "abc")
    assert results[0] == "stopped train a" and [names[r] for r in results[1:]] == ["train b", "train c"]
    client = mlflow.MlflowClient()
    assert {names[r]: client.get_run(r).info.status for r in names} == {
        "train a": "KILLED", "train b": "FINISHED", "train c": "FINISHED"}
    assert [names[r] for event, r in log if event == "cancel"] == ["train a"]
