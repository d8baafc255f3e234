"""Children and where they run: each child goes through an MLflow project backend (`local`, the project's `slurm`
plugin, MLflow's `kubernetes`, any `mlflow.project_backend` plugin), up to N at once; the first failure or a signal
cancels every other child, and no child run is left RUNNING.

A *chain* is a generator: it yields a `Launch` for each child it needs, is sent that child's run id once the child
finished, and returns its result (e.g. train, then the evaluate of that train). Reused runs are never yielded, so a
reused child is not launched. Chains run in order; at most `parallel` children run at any time."""
from __future__ import annotations

import functools
import logging
import os
import shutil
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Generator, Iterable

import mlflow
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.projects.submitted_run import SubmittedRun

from agnews import vocab
from agnews.errors import PipelineError, cause
from agnews.orchestration import child_runs, placement
from agnews.runs import signals

log = logging.getLogger(__name__)
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
        self.threads = placement.thread_split(parallel)
        if backend == "local":
            # Each child inherits it: N children x threads stay within the cores. Set here, in main's own
            # environment too, so that main computes evaluate's reuse key (threads are part of it) as children will.
            os.environ["OMP_NUM_THREADS"] = str(self.threads)
        elif backend == "slurm":
            self.config = placement.slurm_defaults(self.config, parallel)
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
                submitted = child_runs.LocalChild.start(project, launch, parameters, parent.info.experiment_id)
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
        return child_runs.KubernetesChild(submitted) if self.backend == "kubernetes" else submitted

    def kubernetes(self) -> tuple[str, dict]:
        """MLflow's kubernetes backend builds each child's image from a docker_env project: the staged copy of this
        project (kubernetes_project), made once per launcher; its config tagged by the code digest."""
        if self._kubernetes is None:
            stage = child_runs.kubernetes_project(self.project_dir)
            weakref.finalize(self, shutil.rmtree, stage, True)
            self._kubernetes = str(stage), child_runs.image_repository(self.config, stage)
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
            from agnews.runs import reuse  # imports the data stack: only where runs are reused

            found = reuse.find(experiment, entry_point, parameters, inputs() if callable(inputs) else inputs)
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
        from agnews import params
        from agnews.runs import reuse

        data = params.prepare_parameters(args)
        return data, self.run(vocab.PREPARE_DATA, vocab.PREPARE_DATA, data,
                              functools.partial(reuse.input_digest, args.data))
