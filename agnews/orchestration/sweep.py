"""Sweeps: an Optuna study over train's parameters (the space: agnews.orchestration.search_space), each trial a
`train` child run; what it leaves for people: agnews.orchestration.sweep_report.

- The space is YAML, one entry per train parameter: `{low, high, log}` for numbers, `{choices: [...]}` otherwise
  (`sweeps/default.yaml` is the default, `sweeps/learning_rate.yaml` the smallest).
- The study is rebuilt from the MLflow runs of its trials (tags `agnews.study`, `agnews.trial`; params; the
  per-epoch `val_f1_macro`; `best_val_f1_macro`), so it lives wherever the runs live: the embedded SQLite store, a
  PostgreSQL-backed server, any store a team already has, with no second database. Re-running a sweep with the
  same study continues its numbering and never re-runs a finished trial; an interrupted trial (its run KILLED or
  FAILED) is kept as a failed trial: its number is not reused and it is not retried. A study holds its model, seed and
  every train parameter it does not search fixed, on the same rows (a sha256 of every row of each split): a resume
  with others is refused. One sweep at a time per study: the sweep run tagged with it beats a heartbeat tag; a
  second one is refused while it is alive, and a stale one (no beat for STALE_SECONDS, or its process gone on this
  host) is ended FAILED and the study taken over.
- Trials run through agnews.orchestration.launch, like `main`'s children (`parallel`, `backend`). Pruning: the sweep
  reads each running trial's per-epoch validation macro F1 from its run, reports it to the study, and stops (cancels) a
  trial Optuna's median pruner rejects; the run ends KILLED, tagged `agnews.trial_state=PRUNED`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import mlflow
import numpy as np
import optuna
import pandas as pd
from mlflow.exceptions import MlflowException
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from agnews import values, vocab
from agnews.data import handoff
from agnews.data.sampling import SPLITS
from agnews.errors import PipelineError
from agnews.orchestration import launch, search_space

log = logging.getLogger(__name__)
STUDY_TAG, TRIAL_TAG, STATE_TAG, SPACE_TAG = vocab.STUDY, vocab.TRIAL, vocab.TRIAL_STATE, vocab.SEARCH_SPACE
HOST_TAG, PID_TAG, BEAT_TAG = vocab.SWEEP_HOST, vocab.SWEEP_PID, vocab.HEARTBEAT
BEAT_SECONDS, STALE_SECONDS = 60, 600  # a sweep run whose last beat is older than STALE_SECONDS is taken as crashed
OBJECTIVE, PER_EPOCH = "best_val_f1_macro", "val_f1_macro"  # the trial's best epoch (its own choice), each epoch
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def study_name(value: str, model_name: str) -> str:
    name = value or f"sweep-{model_name}"
    if not _STUDY_NAME.match(name):
        raise PipelineError(f"-P study={value!r} is not a valid study name; use letters, digits, '.', '_' or '-'")
    return name


# --- the study, rebuilt from the runs ----------------------------------------------------------------------------

@dataclass
class Study:
    """An Optuna study of one sweep and the MLflow runs its trials are."""

    name: str
    experiment_id: str
    space: dict[str, BaseDistribution]
    study: optuna.Study
    next_number: int = 0
    run_of: dict[int, str] = field(default_factory=dict)  # trial number (our tag) -> train run id

    @property
    def finished(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False)


def _trial_runs(experiment_id: str, name: str) -> list:
    client = mlflow.MlflowClient()
    runs = client.search_runs([experiment_id],
                              f"tags.`{STUDY_TAG}` = '{name}' and tags.`{vocab.STEP}` = '{vocab.TRAIN}'",
                              max_results=50000)
    return sorted(runs, key=lambda r: int(r.data.tags.get(TRIAL_TAG, -1)))


def _state_of(run) -> TrialState:
    if run.data.tags.get(STATE_TAG) == "PRUNED":
        return TrialState.PRUNED
    if run.info.status == "FINISHED" and OBJECTIVE in run.data.metrics:
        return TrialState.COMPLETE
    return TrialState.FAIL  # KILLED, FAILED, or left RUNNING by a sweep that died: kept, never re-run


def _param_value(dist: BaseDistribution, text: str):
    if isinstance(dist, CategoricalDistribution):
        return next((c for c in dist.choices if str(c) == text or values.same_value(text, c)), text)
    return int(float(text)) if isinstance(dist, IntDistribution) else float(text)


def open_study(name: str, experiment_id: str, space: dict[str, BaseDistribution], data_run_id: str, seed: int,
               prune: bool, fixed: dict | None = None) -> Study:
    """The study `name`, its finished trials added back from their runs; refuses a resumed study searched over
    another space, on other rows or with other `fixed` parameters (fixed_parameters; its values would not compare).
    A data run prepared again with the same rows (prepare_data is not reused across code versions) continues the
    study."""
    client = mlflow.MlflowClient()
    runs = _trial_runs(experiment_id, name)
    _check_fixed(name, runs, fixed or {})
    key, same_rows = search_space.space_key(space), {data_run_id: True}
    for run in runs:
        if run.data.tags.get(SPACE_TAG) != key:
            raise PipelineError(f"study {name!r} was searched over another space (trial "
                                f"{run.data.tags.get(TRIAL_TAG)}: {run.data.tags.get(SPACE_TAG)}); pass that "
                                "-P search_space again, or a new -P study=<name>")
        used = run.data.params.get("data_run_id")
        if used not in same_rows:
            same_rows[used] = _same_rows(used, data_run_id)
        if not same_rows[used]:
            raise PipelineError(f"study {name!r} ran on data run {used}, not {data_run_id}, and their rows differ "
                                "(other data parameters); pass the same data parameters, or a new -P study=<name>")
    # A sampler seeded by (seed, trials so far): a resumed study does not propose its first trials again.
    sampler_seed = int(np.random.SeedSequence([seed, len(runs)]).generate_state(1)[0])
    pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2) if prune else optuna.pruners.NopPruner()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=sampler_seed),
                                pruner=pruner, study_name=name)
    result = Study(name, experiment_id, space, study)
    for run in runs:
        number = int(run.data.tags[TRIAL_TAG])
        state = _state_of(run)
        history = client.get_metric_history(run.info.run_id, PER_EPOCH)
        params = {k: _param_value(d, run.data.params[k]) for k, d in space.items() if k in run.data.params}
        study.add_trial(optuna.trial.create_trial(
            state=state, value=run.data.metrics[OBJECTIVE] if state == TrialState.COMPLETE else None,
            params=params if len(params) == len(space) else None, distributions=space if len(params) == len(space)
            else None, intermediate_values={m.step: m.value for m in history},
            user_attrs={"run_id": run.info.run_id, "number": number}))
        result.run_of[number] = run.info.run_id
        result.next_number = max(result.next_number, number + 1)
    if runs:
        counts = Counter(_state_of(r).name.lower() for r in runs)
        log.info("study %r: %d earlier trials (%s); continuing at trial %d", name, len(runs),
                 ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), result.next_number)
    return result


def _check_fixed(name: str, runs: list, fixed: dict) -> None:
    """One line naming every fixed parameter an earlier trial ran with another value (a param it never logged,
    from older code, is not compared)."""
    differ = {}
    for run in runs:
        for key, value in fixed.items():
            logged = run.data.params.get(key)
            if key not in differ and logged is not None and not values.same_value(logged, value):
                differ[key] = logged
    if differ:
        listed = ", ".join(f"{k}={v} (now {fixed[k]})" for k, v in differ.items())
        raise PipelineError(f"study {name!r} ran its trials with other fixed parameters: {listed}; pass those -P "
                            "values again to resume it, or -P study=<new name> for a new study")


def _same_rows(used: str, data_run_id: str) -> bool:
    digests = row_digests(used)
    same = bool(digests) and digests == row_digests(data_run_id)
    if same:
        log.info("data run %s holds the same rows as %s, the study's (prepared again, e.g. after a code change): "
                 "the study continues", data_run_id, used)
    return same


def row_digests(data_run_id: str) -> dict[str, str]:
    """A sha256 of every row of each split of a data run (tracking.rows_digest): its tag, or for a run prepared
    before the tag, computed from its data/<split>.parquet artifacts. Empty when the run cannot be read."""
    try:
        run = mlflow.MlflowClient().get_run(data_run_id or "")
    except MlflowException:
        return {}
    if handoff.ROWS_TAG in run.data.tags:
        return json.loads(run.data.tags[handoff.ROWS_TAG])
    digests = {}
    for split in SPLITS:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = mlflow.artifacts.download_artifacts(run_id=data_run_id, artifact_path=f"data/{split}.parquet",
                                                           dst_path=tmp)
            except (MlflowException, OSError):
                continue  # a split it never wrote (e.g. gate, prepared before it existed)
            digests[split] = handoff.rows_digest(pd.read_parquet(path))
    log.info("data run %s has no %s tag (prepared before it): row digests computed from its splits", data_run_id,
             handoff.ROWS_TAG)
    return digests


# --- one sweep per study at a time ------------------------------------------------------------------------------

@contextlib.contextmanager
def heartbeat(run_id: str, seconds: float = BEAT_SECONDS):
    """Tag the sweep run with its host and process, and beat BEAT_TAG (unix seconds) every `seconds` from a
    thread while the body runs: claim_study tells a live sweep from a crashed one by it."""
    client = mlflow.MlflowClient()
    client.set_tag(run_id, HOST_TAG, socket.gethostname())
    client.set_tag(run_id, PID_TAG, str(os.getpid()))
    stop = threading.Event()

    def beat() -> None:
        try:
            client.set_tag(run_id, BEAT_TAG, f"{time.time():.0f}")
        except Exception as exc:  # a store that is briefly down: the next beat may get through
            log.warning("heartbeat of sweep run %s not recorded: %s", run_id, exc)

    def beating() -> None:
        while not stop.wait(seconds):
            beat()

    beat()
    thread = threading.Thread(target=beating, name=f"heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def claim_study(name: str, experiment_id: str, owner: str) -> None:
    """Refuse a second sweep on study `name` while another sweep run holding it is alive (RUNNING, a recent
    heartbeat); end a stale one (a crashed sweep) FAILED, so that only the sweep run `owner` adds trials."""
    client = mlflow.MlflowClient()
    running = client.search_runs([experiment_id], f"tags.`{STUDY_TAG}` = '{name}' and tags.`{vocab.STEP}` = "
                                                  f"'{vocab.SWEEP}' and attributes.status = 'RUNNING'")
    for run in running:
        if run.info.run_id == owner:
            continue
        reason = _stale(run)
        if reason is None:
            raise PipelineError(f"study {name!r} is in use by sweep run {run.info.run_id}, still running on "
                                f"{run.data.tags.get(HOST_TAG, 'an unknown host')}; wait for it to end, or pass "
                                "-P study=<new name> for a new study")
        log.warning("sweep run %s on study %r is stale (%s): ending it FAILED and taking the study over",
                    run.info.run_id, name, reason)
        client.set_tag(run.info.run_id, vocab.ERROR, f"ended by sweep run {owner} on the same study: {reason}")
        client.set_terminated(run.info.run_id, "FAILED")


def _stale(run) -> str | None:
    """Why a RUNNING sweep run is taken as crashed, or None when it may be alive."""
    tags = run.data.tags
    last = float(tags.get(BEAT_TAG, run.info.start_time / 1000))  # no beat yet (or older code): its start
    if time.time() - last > STALE_SECONDS:
        return f"no heartbeat for {time.time() - last:.0f} s"
    pid = int(tags.get(PID_TAG, 0))
    if pid and tags.get(HOST_TAG) == socket.gethostname() and not _alive(pid):
        return f"its process {pid} on this host is gone"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


# --- trials as train children --------------------------------------------------------------------------------------

class Trials:
    """Chains for agnews.orchestration.launch: each asks the study for parameters when the launcher starts it, runs
    `train` with them, and tells the study the trial's value; `watch` prunes from the runs' per-epoch metrics."""

    def __init__(self, study: Study, base: dict, run_name: str):
        self.study, self.base, self.run_name = study, base, run_name
        self.live: dict[str, tuple[optuna.Trial, set[int]]] = {}  # child run name -> its trial, epochs reported

    def chains(self, n_trials: int) -> list[launch.Chain]:
        first = self.study.next_number
        self.study.next_number += n_trials
        return [self._trial(number) for number in range(first, first + n_trials)]

    def _trial(self, number: int) -> launch.Chain:
        trial = self.study.study.ask(self.study.space)
        trial.set_user_attr("number", number)
        name = f"{self.run_name} trial {number}"
        tags = {STUDY_TAG: self.study.name, TRIAL_TAG: str(number), SPACE_TAG: search_space.space_key(self.study.space)}
        self.live[name] = (trial, set())
        client = mlflow.MlflowClient()
        try:
            run_id = yield launch.Launch(vocab.TRAIN, name, {**self.base, **trial.params}, tags)
        except launch.Stopped as stopped:
            client.set_tag(stopped.run_id, STATE_TAG, "PRUNED")
            trial.set_user_attr("run_id", stopped.run_id)
            self.study.study.tell(trial, state=TrialState.PRUNED)
            self.study.run_of[number] = stopped.run_id
            log.info("trial %d pruned after %d epoch(s)", number, len(self.live.pop(name)[1]))
            return stopped.run_id
        self.live.pop(name, None)
        value = client.get_run(run_id).data.metrics[OBJECTIVE]
        trial.set_user_attr("run_id", run_id)
        self.study.study.tell(trial, value)
        client.set_tag(run_id, STATE_TAG, "COMPLETE")
        self.study.run_of[number] = run_id
        log.info("trial %d: %s = %.4f (%s)", number, OBJECTIVE, value, trial.params)
        return run_id

    def watch(self, child: launch.Launch, run_id: str) -> bool:
        """Report the child's new epochs to its trial; True when the pruner stops it."""
        if child.run_name not in self.live:
            return False
        trial, reported = self.live[child.run_name]
        new = [m for m in mlflow.MlflowClient().get_metric_history(run_id, PER_EPOCH) if m.step not in reported]
        for metric in sorted(new, key=lambda m: m.step):
            trial.report(metric.value, metric.step)
            reported.add(metric.step)
        return bool(new) and trial.should_prune()
