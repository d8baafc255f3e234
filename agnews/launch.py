"""Children and where they run: each child goes through an MLflow project backend (`local`, the project's `slurm`
plugin, MLflow's `kubernetes`, any `mlflow.project_backend` plugin), up to N at once; the first failure or a signal
cancels every other child, and no child run is left RUNNING.

A *chain* is a generator: it yields a `Launch` for each child it needs, is sent that child's run id once the child
finished, and returns its result (e.g. train, then the evaluate of that train). Reused runs are never yielded, so a
reused child is not launched. Chains run in order; at most `parallel` children run at any time."""
from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator, Iterable
from urllib.parse import urlparse

import mlflow
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.projects.submitted_run import SubmittedRun
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from agnews import signals, vocab
from agnews.errors import PipelineError, cause

log = logging.getLogger(__name__)
BUILT_IN = ("local", "kubernetes", "databricks")
KUBE_PROJECT = Path("deploy") / "kubernetes"  # its MLproject: the root's entry points in a docker_env
CANCEL_WAIT_S = 60.0  # how long a cancelled child may take to end its run KILLED before we end it ourselves
FAILED_CHILD_TAG = vocab.FAILED_CHILD


@dataclass(frozen=True)
class Launch:
    """One child to start: an MLproject entry point, its run name and parameters (and tags set on its run)."""

    entry_point: str
    run_name: str
    parameters: dict
    tags: dict = field(default_factory=dict)


Chain = Generator[Launch, str, str]
Watch = Callable[[Launch, str], bool]  # (a running child, its run id) -> stop it now (e.g. a pruned sweep trial)


class Stopped(Exception):
    """Thrown into a chain whose child the launcher's `watch` stopped: the child's run ended KILLED."""

    def __init__(self, run_id: str):
        super().__init__(run_id)
        self.run_id = run_id


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
        from agnews.backends import slurm

        slurm.SlurmConfig.parse(config)
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
        from agnews.backends import slurm

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
    from agnews.backends import slurm

    nodes, cpus = slurm.partition_size(config.get("partition"))
    per_node = math.ceil(parallel / max(1, nodes))  # jobs that land on one node share its CPUs
    return {**config, "cpus_per_task": max(1, cpus // per_node)}


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
    def start(cls, project: str, launch: Launch, parameters: dict, experiment_id: str) -> "LocalChild":
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
    from agnews import cache

    root, stage = Path(project_dir), Path(tempfile.mkdtemp(prefix="agnews-kubernetes-"))
    shutil.copy2(root / KUBE_PROJECT / "MLproject", stage / "MLproject")
    for package in ("agnews", "steps"):
        shutil.copytree(root / package, stage / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (stage / cache.DIGEST_FILE).write_text(cache.code_digest(root) + "\n")
    return stage


def image_repository(config: dict, stage: Path) -> dict:
    """The backend config with the code digest as the image's tag, where MLflow would push an untagged name (it
    tags with the work folder's git commit, and the staged folder has none): `docker push` of an untagged name
    pushes every local tag of it."""
    from mlflow.utils.git_utils import get_git_commit

    from agnews import cache

    uri = config.get("repository-uri", "")
    if not uri or ":" in uri.rsplit("/", 1)[-1] or "@" in uri or get_git_commit(str(stage)):
        return config
    return {**config, "repository-uri": f"{uri}:{(stage / cache.DIGEST_FILE).read_text().strip()}"}


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


@dataclass
class _Running:
    index: int
    chain: Chain
    launch: Launch
    submitted: SubmittedRun


class Launcher:
    """Starts children of the active run through one backend, at most `parallel` at once."""

    def __init__(self, project_dir: str, parallel: int = 1, backend: str = "local", config: dict | None = None,
                 poll_s: float = 1.0, watch: Watch | None = None):
        self.project_dir, self.parallel, self.backend, self.watch = project_dir, parallel, backend, watch
        self.config = dict(config or {})
        self.poll_s = float(self.config.get("poll_seconds", poll_s))
        self._kubernetes: tuple[str, dict] | None = None  # the staged project and its config, made once
        self.threads = thread_split(parallel)
        if backend == "local":
            # Each child inherits it: N children x threads stay within the cores. Set here, in main's own
            # environment too, so that main computes evaluate's reuse key (threads are part of it) as children will.
            os.environ["OMP_NUM_THREADS"] = str(self.threads)
        elif backend == "slurm":
            self.config = slurm_defaults(self.config, parallel)
            self.threads = int(self.config["cpus_per_task"])

    def one(self, chain: Chain) -> str:
        return self.run([chain])[0]

    def run(self, chains: Iterable[Chain]) -> list[str]:
        """Run the chains, at most `parallel` children at once; their results in the chains' order."""
        waiting = list(enumerate(chains))
        results: dict[int, str] = {}
        running: list[_Running] = []
        try:
            while waiting or running:
                while waiting and len(running) < self.parallel:
                    index, chain = waiting.pop(0)
                    self._advance(index, chain, None, running, results)
                if running:
                    self._collect(running, results)
        except BaseException:  # a failed child, a signal (KeyboardInterrupt, Terminated), a bug: stop them all
            self.cancel(running)
            with signals.deferred():
                _end_strays()
            raise
        return [results[k] for k in sorted(results)]

    def _advance(self, index: int, chain: Chain, value: str | None, running: list[_Running],
                 results: dict[int, str], stopped: Stopped | None = None) -> None:
        """Step a chain until it needs a child (submitted, added to `running`) or returns (its result recorded)."""
        try:
            if stopped is not None:
                launch = chain.throw(stopped)
            else:
                launch = chain.send(value) if value is not None else next(chain)
        except StopIteration as stop:
            results[index] = stop.value
            return
        # A signal while starting waits until the child is in `running`: it then cancels that child too.
        with signals.deferred(redeliver=True):
            running.append(_Running(index, chain, launch, self.submit(launch)))

    def submit(self, launch: Launch) -> SubmittedRun:
        """Start one child of the active run through the backend."""
        parent = mlflow.active_run()
        log.info("starting child run %r on %s (%d at once, %d threads each)", launch.run_name, self.backend,
                 self.parallel, self.threads)
        project, config = self.project_dir, dict(self.config)
        if self.backend == "kubernetes":
            project, config = self.kubernetes()
        parameters = {k: str(v) for k, v in launch.parameters.items()}
        try:
            if self.backend == "local":
                submitted = LocalChild.start(project, launch, parameters, parent.info.experiment_id)
            else:
                submitted = mlflow.projects.run(
                    project, launch.entry_point, parameters=parameters, experiment_id=parent.info.experiment_id,
                    run_name=launch.run_name, backend=self.backend, backend_config=config, env_manager="local",
                    synchronous=False, build_image=self.backend == "kubernetes")
        except MlflowException as exc:
            raise PipelineError(f"child run {launch.run_name!r} could not start on -P backend={self.backend} "
                                f"({cause(exc)})") from exc
        client = mlflow.MlflowClient()
        for key, value in {vocab.THREADS: str(self.threads), **launch.tags}.items():
            client.set_tag(submitted.run_id, key, value)
        return KubernetesChild(submitted) if self.backend == "kubernetes" else submitted

    def kubernetes(self) -> tuple[str, dict]:
        """MLflow's kubernetes backend builds each child's image from a docker_env project: the staged copy of this
        project (kubernetes_project), made once per launcher; its config tagged by the code digest."""
        if self._kubernetes is None:
            stage = kubernetes_project(self.project_dir)
            weakref.finalize(self, shutil.rmtree, stage, True)
            self._kubernetes = str(stage), image_repository(self.config, stage)
        return self._kubernetes[0], dict(self._kubernetes[1])

    def _collect(self, running: list[_Running], results: dict[int, str]) -> None:
        """Wait until at least one child has ended; a success steps its chain, a failure raises."""
        while True:
            _poll(running)
            done = [item for item in running if RunStatus.is_terminated(
                RunStatus.from_string(item.submitted.get_status()))]
            if done:
                break
            if self.watch is not None and self._stop_watched(running, results):
                return
            time.sleep(self.poll_s)
        for item in done:
            running.remove(item)
            if not item.submitted.wait():  # ended: returns at once; the backend finishes its bookkeeping
                raise self._failure(item)
            self._advance(item.index, item.chain, item.submitted.run_id, running, results)

    def _stop_watched(self, running: list[_Running], results: dict[int, str]) -> bool:
        """Cancel the running children `watch` asks to stop (their runs end KILLED) and throw Stopped into their
        chains; True if any was stopped."""
        chosen = [item for item in running if self.watch(item.launch, item.submitted.run_id)]
        for item in chosen:
            log.info("stopping child run %r (%s)", item.launch.run_name, item.submitted.run_id)
            running.remove(item)
            with signals.deferred():
                item.submitted.cancel()
                _ensure_ended(item.submitted.run_id, "KILLED")
            self._advance(item.index, item.chain, None, running, results, Stopped(item.submitted.run_id))
        return bool(chosen)

    def _failure(self, item: _Running) -> PipelineError:
        """The parent's error: which child, and the child's own `error:` line."""
        client = mlflow.MlflowClient()
        if not RunStatus.is_terminated(RunStatus.from_string(client.get_run(item.submitted.run_id).info.status)):
            client.set_terminated(item.submitted.run_id, "FAILED")  # died without closing its run (killed, crashed)
        run = client.get_run(item.submitted.run_id)
        tags = run.data.tags
        error = tags.get(vocab.ERROR) or tags.get(vocab.BACKEND_ERROR) or "no error recorded; see its log"
        if tags.get(vocab.SLURM_STATE, "COMPLETED") != "COMPLETED":  # who ended it: e.g. scancel, a time limit
            error += f" (slurm job {tags.get(vocab.SLURM_JOB_ID)} {tags[vocab.SLURM_STATE]})"
        mlflow.set_tag(FAILED_CHILD_TAG, item.launch.run_name)
        return PipelineError(f"child run {item.launch.run_name!r} failed ({run.info.run_id}, "
                             f"{run.info.status}): {error}")

    def cancel(self, running: list[_Running]) -> None:
        """Cancel every running child and make sure its run ends KILLED; a second signal cannot cut this short."""
        if not running:
            return
        with signals.deferred():
            failed = {item.submitted.run_id for item in running if not _cancel(item)}
            for item in running:  # a child whose cancel failed will not end its run: no wait for it
                wait_s = 0.0 if item.submitted.run_id in failed else CANCEL_WAIT_S
                _ensure_ended(item.submitted.run_id, "KILLED", wait_s)
            running.clear()


def _poll(running: list[_Running]) -> None:
    """One state query per backend that batches them (Slurm: one `squeue` for all its jobs) before the children's
    get_status() calls read it; other backends are asked child by child."""
    groups: dict[type, list[SubmittedRun]] = {}
    for item in running:
        groups.setdefault(type(item.submitted), []).append(item.submitted)
    for kind, children in groups.items():
        if callable(getattr(kind, "poll_states", None)):
            kind.poll_states(children)


def _cancel(item: _Running) -> bool:
    """Cancel one child; a failure (e.g. scancel refused) is logged as an error and tagged on its run, not raised:
    the other children are cancelled still. Its job may be running on: the message says how to stop it."""
    log.warning("cancelling child run %r (%s)", item.launch.run_name, item.submitted.run_id)
    try:
        item.submitted.cancel()
        return True
    except Exception as exc:
        reason = str(exc) if isinstance(exc, PipelineError) else cause(exc)
        log.error("could not cancel child run %r (%s): %s", item.launch.run_name, item.submitted.run_id, reason)
        mlflow.MlflowClient().set_tag(item.submitted.run_id, vocab.BACKEND_ERROR, f"cancel failed: {reason}"[:5000])
        return False


def _ensure_ended(run_id: str, status: str, timeout_s: float = CANCEL_WAIT_S) -> None:
    """Wait for a cancelled child to end its own run (it undoes its registrations first); then end it ourselves."""
    client = mlflow.MlflowClient()
    deadline = time.monotonic() + timeout_s
    while not RunStatus.is_terminated(RunStatus.from_string(client.get_run(run_id).info.status)):
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    else:
        return
    if timeout_s:
        log.warning("child run %s did not end within %.0f s of cancelling; ending it %s", run_id, timeout_s, status)
    client.set_terminated(run_id, status)


def _end_strays() -> None:
    """A backend that failed half-way through starting a child (e.g. kubernetes after creating the run, before the
    image was built) leaves a run no one tracks: end every child of the active run still open, FAILED."""
    parent = mlflow.active_run()
    if parent is None:
        return
    client = mlflow.MlflowClient()
    try:
        children = client.search_runs([parent.info.experiment_id],
                                      f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    except MlflowException as exc:  # the store itself failing: nothing more we can do here
        log.error("could not look for children left open: %s", cause(exc))
        return
    for run in [r for r in children if r.info.status in ("RUNNING", "SCHEDULED")]:
        log.warning("child run %s (%s) was left %s; ending it FAILED", run.info.run_id, run.info.run_name,
                    run.info.status)
        client.set_tag(run.info.run_id, vocab.ERROR, "its backend failed while starting it")
        client.set_terminated(run.info.run_id, "FAILED")


# --- reusing finished children --------------------------------------------------------------------------------

def once(entry_point: str, run_name: str, parameters: dict) -> Chain:
    """A child that is never reused (its inputs include the registry's state)."""
    return (yield Launch(entry_point, run_name, parameters))


class Steps:
    """Children as chains for the launcher, or a finished run with the same parameters, code and inputs reused
    (`-P reuse`): a reused child is never launched. `inputs` is the input key the step's runs tag
    (cache.INPUT_TAG), or a function computing it: only called when reusing (hashing a model folder takes seconds)."""

    def __init__(self, reuse: bool, launcher: Launcher):
        self.reuse, self.reused, self.launcher = reuse, {}, launcher

    def child(self, entry_point: str, run_name: str, parameters: dict, inputs: str | Callable[[], str] = "") -> Chain:
        if self.reuse:
            experiment = mlflow.active_run().info.experiment_id
            from agnews import cache  # imports the data stack: only where runs are reused

            found = cache.find(experiment, entry_point, parameters, inputs() if callable(inputs) else inputs)
            if found is not None:
                log.info("reusing run %s for %r: same parameters, code and inputs", found, run_name)
                self.reused.setdefault(entry_point, []).append(found)
                mlflow.set_tag(vocab.reused(entry_point), ",".join(self.reused[entry_point]))
                return found
        return (yield from once(entry_point, run_name, parameters))

    def run(self, entry_point: str, run_name: str, parameters: dict, inputs: str | Callable[[], str] = "") -> str:
        return self.launcher.one(self.child(entry_point, run_name, parameters, inputs))

    def prepare_data(self, args) -> tuple[dict, str]:
        """prepare_data's parameters from a parent's arguments (main, sweep) and its run, reused when the same
        sample of the same input was drawn before."""
        from agnews import cache, tracking

        data = tracking.prepare_parameters(args)
        return data, self.run(vocab.PREPARE_DATA, vocab.PREPARE_DATA, data,
                              functools.partial(cache.input_digest, args.data))


def backend_config(args) -> dict:
    """`-P backend` and `-P backend_config` read and checked, and the store checked against them (jobs must reach
    it): before any child starts."""
    config = load_backend_config(args.backend_config, check_backend(args.backend))
    check_store(args.backend, mlflow.get_tracking_uri(), config)
    return config
