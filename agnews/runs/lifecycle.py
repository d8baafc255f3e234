"""The life of a step run: it ends FINISHED, FAILED or KILLED with nothing half-written (undo actions run on failure,
signals held while it closes), its parameters logged once, and the figures it publishes only on success."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import mlflow
from mlflow.exceptions import MlflowException

from agnews import values, vocab
from agnews.errors import PipelineError
from agnews.runs import reuse, signals, staging, store
from agnews.runs.experiment import EXPERIMENT

log = logging.getLogger(__name__)

STEP_TAG, MODEL_TAG = vocab.STEP, vocab.MODEL


def setup(level: int = logging.INFO) -> str:
    """Logging, quiet telemetry, a checked store, and one absolute tracking URI that every child inherits."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Expected here: labels are ints, with no missing values to encode.
    warnings.filterwarnings("ignore", message=".*Inferred schema contains integer column.*")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()  # default: <cwd>/mlflow.db, absolute
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    store.check(uri)
    return uri


@contextlib.contextmanager
def step_run(step: str, run_name: str | None = None, plots: bool = False) -> Iterator[mlflow.ActiveRun]:
    """The step's run (the one `mlflow run` created, or a new one), ended FINISHED only if the body returns.

    PipelineError (bad input, also raised by argument parsing inside the body): FAILED, one `error:` line.
    SIGINT/SIGTERM: KILLED. Any failure first undoes what the step registered (see `on_failure`), so no
    registry entry outlives a run that did not finish. `plots`: the step writes figures; check the folder first.
    """
    signals.install(parent_death="MLFLOW_RUN_ID" in os.environ)  # launched by `mlflow run`: die with it
    try:
        setup()
    except PipelineError as exc:  # the store is unusable: there is no run to mark
        raise SystemExit(f"error: {exc}") from None
    experiment = None
    if "MLFLOW_RUN_ID" not in os.environ:  # python -m steps.x / torchrun: no run was created for us
        experiment = os.environ.get("MLFLOW_EXPERIMENT_ID") or store.experiment_id(
            os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
    run = mlflow.start_run(run_name=run_name, experiment_id=experiment)
    mlflow.set_tags({STEP_TAG: step, reuse.CODE_TAG: reuse.code_digest()})  # what `main` reuses runs by
    if run_name:
        set_run_name(run_name)
    try:
        if plots:
            plots_folder()  # before any work: a figure that cannot be published fails the step at the end
        yield run
        _publish()
    except PipelineError as exc:
        _abort(step, "FAILED", str(exc))
        raise SystemExit(f"error: {exc}") from None
    except KeyboardInterrupt as exc:
        reason = f"interrupted by {getattr(exc, 'signal_name', 'SIGINT')}"
        _abort(step, "KILLED", reason)
        raise SystemExit(f"error: {step} {reason}; run {run.info.run_id} ended KILLED, nothing registered; "
                         "re-run the step to start clean") from None
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None) and not _rollbacks:
            _discard(run, created=experiment is not None)  # `--help` (argparse's clean exit): no work was done
        else:
            _abort(step, "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _to_publish.clear()
        staging.cleanup()
    _rollbacks.clear()
    mlflow.end_run()


def _discard(run: mlflow.ActiveRun, created: bool) -> None:
    """A body that exited cleanly before doing anything (`python -m steps.X --help`): a run this process opened is
    deleted (it holds nothing but its step tags), one `mlflow run` opened ends FINISHED as the command did."""
    with signals.deferred():
        mlflow.end_run()
        if created:
            _retrying(lambda: mlflow.MlflowClient().delete_run(run.info.run_id))


def set_run_name(name: str) -> None:
    mlflow.set_tag("mlflow.runName", name)


_rollbacks: list[tuple[str, Callable[[], None]]] = []


def on_failure(what: str, undo: Callable[[], None]) -> None:
    """Register how to undo something the step created (a model version, a logged model) if it then fails."""
    _rollbacks.append((what, undo))


def _abort(step: str, status: str, reason: str) -> None:
    """Undo, tag and end the run; signals are held off so a second Ctrl-C cannot leave it half-done."""
    with signals.deferred():
        log.error("%s %s: %s", step, status, reason)
        while _rollbacks:
            what, undo = _rollbacks.pop()
            try:
                undo()
                log.info("undid %s", what)
            except Exception as exc:  # keep undoing the rest; say what could not be undone
                log.error("could not undo %s: %s", what, exc)
        try:
            _retrying(lambda: mlflow.set_tag(vocab.ERROR, reason[:5000]))
        finally:
            _retrying(lambda: mlflow.end_run(status))


def _retrying(write: Callable[[], None], attempts: int = 5) -> None:
    """A status write while the parent writes its own (both interrupted at once) can meet a locked SQLite file:
    try again shortly rather than leave the run for `mlflow run` to mark FAILED."""
    for attempt in range(attempts):
        try:
            write()
            return
        except Exception as exc:  # sqlite3.OperationalError arrives wrapped by SQLAlchemy and MLflow
            if attempt == attempts - 1:
                raise
            log.warning("run status write failed (%s); retrying", type(exc).__name__)
            time.sleep(0.5 * (attempt + 1))


def get_run(run_id: str, *steps: str) -> mlflow.entities.Run:
    """A finished run of one of `steps`, or a one-line error saying what to pass."""
    wanted = " or ".join(steps)
    try:
        run = mlflow.get_run(run_id)
    except MlflowException as exc:
        raise PipelineError(f"run {run_id!r} not found in {mlflow.get_tracking_uri()}; pass the id of a "
                            f"{wanted} run from this tracking store") from exc
    step = run.data.tags.get(STEP_TAG)
    if step not in steps or run.info.status != "FINISHED":
        raise PipelineError(f"run {run_id} is a {run.info.status} {step or 'non-agnews'} run; pass the id of "
                            f"a finished {wanted} run")
    return run


def log_params(params: dict) -> None:
    """Log params next to the ones `mlflow run` already logged from -P: a resolved value that differs
    (learning_rate 0 -> the preset's 1e-4, precision auto -> fp32) goes in as `effective_<key>`."""
    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    fresh = {}
    for key, value in params.items():
        if key not in logged:
            fresh[key] = value
        elif not values.same_value(logged[key], value):
            fresh[f"effective_{key}"] = value
    mlflow.log_params(fresh)


def plots_folder() -> Path:
    """Where finished figures are copied for people to look at (checked writable): $AGNEWS_PLOTS_DIR, else
    graficas/ in the folder `mlflow run` was started from (not MLflow's checkout of a git URL)."""
    default = Path(os.environ.get("AGNEWS_LAUNCH_DIR", ".")) / "graficas"
    folder = Path(os.environ.get("AGNEWS_PLOTS_DIR", default)).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".agnews-write-test-"):
            pass
    except OSError as exc:
        raise PipelineError(f"plots folder {folder} is not writable ({type(exc).__name__}: {exc.strerror or exc}); "
                            "make it writable or set AGNEWS_PLOTS_DIR to a writable folder") from exc
    return folder


_to_publish: list[Path] = []


def log_plot(path: Path) -> None:
    """Log a figure this run drew in its own staging folder; it reaches the plots folder when the step succeeds."""
    mlflow.log_artifact(str(path), "plots")
    publish_on_success(path)


def publish_on_success(path: Path) -> None:
    """Copy a file this run wrote (in its staging folder) into the plots folder once the step has succeeded:
    graficas/ never shows a figure of a run that failed or was killed."""
    _to_publish.append(path)


def _publish() -> None:
    """Atomically (temporary name, then rename): two runs at once never leave half a PNG for anyone."""
    folder = plots_folder()
    while _to_publish:
        path = _to_publish.pop(0)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.stem}-", suffix=path.suffix, delete=False) as tmp:
            tmp.write(path.read_bytes())
        os.replace(tmp.name, folder / path.name)
