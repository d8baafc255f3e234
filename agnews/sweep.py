"""Sweeps: a search space over train's parameters, an Optuna study, each trial a `train` child run.

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
- Trials run through agnews.launch, like `main`'s children (`parallel`, `backend`). Pruning: the sweep reads each
  running trial's per-epoch validation macro F1 from its run, reports it to the study, and stops (cancels) a trial
  Optuna's median pruner rejects; the run ends KILLED, tagged `agnews.trial_state=PRUNED`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import socket
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import yaml
from mlflow.exceptions import MlflowException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from agnews import cli, launch, tracking, vocab
from agnews.data import SPLITS
from agnews.errors import PipelineError

log = logging.getLogger(__name__)
STUDY_TAG, TRIAL_TAG, STATE_TAG, SPACE_TAG = vocab.STUDY, vocab.TRIAL, vocab.TRIAL_STATE, vocab.SEARCH_SPACE
HOST_TAG, PID_TAG, BEAT_TAG = vocab.SWEEP_HOST, vocab.SWEEP_PID, vocab.HEARTBEAT
BEAT_SECONDS, STALE_SECONDS = 60, 600  # a sweep run whose last beat is older than STALE_SECONDS is taken as crashed
OBJECTIVE, PER_EPOCH = "best_val_f1_macro", "val_f1_macro"  # the trial's best epoch (its own choice), each epoch
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_ENTRY_HELP = "use {low: <number>, high: <number>, log: true|false} or {choices: [<value>, ...]}"


# --- the search space ------------------------------------------------------------------------------------------

def load_space(path: str | Path) -> dict[str, BaseDistribution]:
    """The YAML space as Optuna distributions; every problem is one PipelineError naming the entry and the fix."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PipelineError(f"search space {path} cannot be read ({exc.strerror or exc}); pass -P search_space=<a "
                            "YAML file>, or leave it empty for sweeps/default.yaml") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"search space {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not raw:
        raise PipelineError(f"search space {path} must map train parameters to ranges, e.g. "
                            "learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}")
    tunable = cli.tunable()
    unknown = sorted(set(map(str, raw)) - set(tunable))
    if unknown:
        raise PipelineError(f"search space {path} names {', '.join(unknown)}, not a train parameter; use "
                            f"{', '.join(tunable)}")
    return {name: distribution(name, entry) for name, entry in raw.items()}


def distribution(name: str, entry: object) -> BaseDistribution:
    """One entry: choices -> categorical; low/high (log optional) -> int for whole-number parameters, else float."""
    if not isinstance(entry, dict):
        raise PipelineError(f"search space entry {name}: {entry!r} is not a range; {_ENTRY_HELP}")
    extra = set(entry) - {"low", "high", "log", "choices"}
    if extra or ("choices" in entry) == ("low" in entry or "high" in entry):
        raise PipelineError(f"search space entry {name} has {sorted(entry)}; {_ENTRY_HELP}")
    if "choices" in entry:
        choices = entry["choices"]
        if not isinstance(choices, list) or not choices or len(set(map(str, choices))) != len(choices):
            raise PipelineError(f"search space entry {name}: choices must be a non-empty list of distinct values")
        choices = [_number(value) for value in choices]
        for value in choices:  # each choice must be a value `-P name=` accepts
            _check_value(name, value)
        return CategoricalDistribution(choices)
    low, high, use_log = _number(entry.get("low")), _number(entry.get("high")), entry.get("log", False)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high))
    if not numbers or not low < high or not isinstance(use_log, bool) or (use_log and low <= 0):
        raise PipelineError(f"search space entry {name}: needs numbers low < high (low > 0 with log: true); got "
                            f"low={low!r}, high={high!r}, log={use_log!r}")
    for value in (low, high):
        _check_value(name, value)
    if cli.training_parameter(name).whole:  # train's parsing above refused a fractional bound
        return IntDistribution(int(low), int(high), log=use_log)
    return FloatDistribution(float(low), float(high), log=use_log)


def _number(value: object) -> object:
    """A string that reads as a number, as that number: YAML 1.1 reads `1e-4` (no dot) as the string '1e-4'."""
    if not isinstance(value, str):
        return value
    try:
        return float(value)
    except ValueError:
        return value


def _check_value(name: str, value: object) -> None:
    """The value through train's own `-P` parsing (range, type): a space cannot propose what train refuses."""
    try:
        cli.training_value(name, str(value))
    except PipelineError as exc:
        raise PipelineError(f"search space entry {name}: {exc}") from None


def space_key(space: dict[str, BaseDistribution]) -> str:
    """The space as canonical JSON: a study is searched over one space."""
    return json.dumps({k: json.loads(optuna.distributions.distribution_to_json(v)) for k, v in sorted(space.items())},
                      sort_keys=True, separators=(",", ":"))


def study_name(value: str, model_name: str) -> str:
    name = value or f"sweep-{model_name}"
    if not _STUDY_NAME.match(name):
        raise PipelineError(f"-P study={value!r} is not a valid study name; use letters, digits, '.', '_' or '-'")
    return name


def fixed_parameters(model: str, seed: int, training: dict, space: dict[str, BaseDistribution]) -> dict:
    """What a study holds fixed, as the trials' `-P` values: the model, the seed and every train parameter
    (`training`: cli.TRAINING_KEYS) its space does not search."""
    return {"model": model, "seed": seed, **{k: v for k, v in training.items() if k not in space}}


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
        return next((c for c in dist.choices if str(c) == text or cli.same_value(text, c)), text)
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
    key, same_rows = space_key(space), {data_run_id: True}
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
            if key not in differ and logged is not None and not cli.same_value(logged, value):
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
    if tracking.ROWS_TAG in run.data.tags:
        return json.loads(run.data.tags[tracking.ROWS_TAG])
    digests = {}
    for split in SPLITS:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = mlflow.artifacts.download_artifacts(run_id=data_run_id, artifact_path=f"data/{split}.parquet",
                                                           dst_path=tmp)
            except (MlflowException, OSError):
                continue  # a split it never wrote (e.g. gate, prepared before it existed)
            digests[split] = tracking.rows_digest(pd.read_parquet(path))
    log.info("data run %s has no %s tag (prepared before it): row digests computed from its splits", data_run_id,
             tracking.ROWS_TAG)
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
    """Chains for agnews.launch: each asks the study for parameters when the launcher starts it, runs `train` with
    them, and tells the study the trial's value; `watch` prunes from the runs' per-epoch metrics."""

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
        tags = {STUDY_TAG: self.study.name, TRIAL_TAG: str(number), SPACE_TAG: space_key(self.study.space)}
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


# --- what the parent logs --------------------------------------------------------------------------------------

def trials_table(study: Study) -> pd.DataFrame:
    rows = []
    for trial in study.finished:
        if trial.state == TrialState.RUNNING:
            continue
        rows.append({"trial": trial.user_attrs.get("number", trial.number), "state": trial.state.name,
                     "value": trial.value, "epochs_run": len(trial.intermediate_values), **trial.params,
                     "run_id": trial.user_attrs.get("run_id", "")})
    return pd.DataFrame(rows).sort_values("trial").reset_index(drop=True)


def best_trial(study: Study) -> optuna.trial.FrozenTrial:
    complete = [t for t in study.finished if t.state == TrialState.COMPLETE]
    if not complete:
        raise PipelineError(f"study {study.name!r} has no finished trial to pick (all pruned or failed); run more "
                            "trials (-P n_trials) or widen the search space")
    return max(complete, key=lambda t: (t.value, -t.user_attrs.get("number", t.number)))  # ties: the earlier


def figures(study: Study, folder: Path) -> list[Path]:
    """Optuna's own matplotlib plots: the optimisation history, and parameter importances where they exist
    (two finished trials at least, a parameter that varied)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    paths = []
    plots = [("history", optuna_plots.plot_optimization_history)]
    if sum(t.state == TrialState.COMPLETE for t in study.finished) >= 2:
        plots.append(("importance", optuna_plots.plot_param_importances))
    for kind, plot in plots:
        try:
            axes = plot(study.study)
        except (ValueError, RuntimeError) as exc:  # e.g. importances of parameters that never varied
            log.warning("no %s plot for study %r: %s", kind, study.name, exc)
            continue
        figure = axes.figure
        figure.set_size_inches(7.5, 4.5)
        figure.tight_layout()
        path = folder / f"sweep_{study.name}_{kind}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths


def report(study: Study, best: optuna.trial.FrozenTrial, table: pd.DataFrame) -> str:
    counts = table["state"].value_counts().to_dict()
    lines = [f"# Sweep {study.name}", "",
             f"{len(table)} trials ({', '.join(f'{n} {s.lower()}' for s, n in sorted(counts.items()))}). Best: "
             f"trial {best.user_attrs.get('number', best.number)}, validation macro F1 {best.value:.4f}, with "
             + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()) + ".",
             "",
             f"The best of {counts.get('COMPLETE', 0)} finished trials was picked on the validation rows, so its "
             "validation score is biased upward (the winner's curse of a search); it is no estimate of how it does "
             "on new rows. Its evaluate run scores it on the test rows, and compare's gate decides on gate rows "
             "that neither the search nor the incumbent saw.", ""]
    def cell(column: str, value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4f}" if column == "value" else f"{value:.3g}"
        return str(value)

    cells = [[cell(c, v) for c, v in zip(table.columns, row)] for row in table.itertuples(index=False)]
    lines += ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns),
              *("| " + " | ".join(row) + " |" for row in cells)]
    return "\n".join(lines) + "\n"
