"""Promotion writes: the journal of registry tags and aliases a compare sets (every one put back if the step then
fails), the over-budget mark, the promotion lock (a file lock beside SQLite, a lease in any other store: see
agnews.runs.store) and `apply`, which moves `champion`/`challenger` as a gate decision says."""
from __future__ import annotations

import contextlib
import logging

import mlflow
from mlflow.exceptions import MlflowException

from agnews import vocab
from agnews.decide import gate
from agnews.errors import PipelineError
from agnews.runs import lifecycle, store

log = logging.getLogger(__name__)


# --- what it writes, undone on failure -------------------------------------------------------------------------

class Journal:
    """Every version tag and registered-model tag this compare writes, with the value it replaced; if the step fails
    afterwards, `tracking.step_run` puts them all back (no decision outlives a compare that did not finish)."""

    def __init__(self, registered_model: str):
        self.name, self.client = registered_model, mlflow.MlflowClient()
        self._versions: dict[tuple[str, str], str | None] = {}
        self._model: dict[str, str | None] = {}
        lifecycle.on_failure(f"gate tags of {registered_model}", self.restore)

    def set_version_tag(self, version: str, key: str, value: str | None) -> None:
        """Set (or, with None, delete) a tag on a version, remembering the first value it had."""
        if (version, key) not in self._versions:
            self._versions[(version, key)] = self.client.get_model_version(self.name, version).tags.get(key)
        if value is None:
            with contextlib.suppress(MlflowException):
                self.client.delete_model_version_tag(self.name, version, key)
        else:
            self.client.set_model_version_tag(self.name, version, key, value[:5000])

    def set_model_tag(self, key: str, value: str) -> None:
        if key not in self._model:
            self._model[key] = (self.client.get_registered_model(self.name).tags or {}).get(key)
        self.client.set_registered_model_tag(self.name, key, value)

    def restore(self) -> None:
        for (version, key), old in self._versions.items():
            if old is None:
                with contextlib.suppress(MlflowException):
                    self.client.delete_model_version_tag(self.name, version, key)
            else:
                self.client.set_model_version_tag(self.name, version, key, old)
        for key, old in self._model.items():
            if old is None:
                with contextlib.suppress(MlflowException):
                    self.client.delete_registered_model_tag(self.name, key)
            else:
                self.client.set_registered_model_tag(self.name, key, old)


def mark_over_budget(journal: Journal, version: str, reason: str) -> None:
    """A model ranked above the candidate but refused for its latency; the champion's own record is left alone."""
    champion = gate.version_by_alias(journal.name, gate.CHAMPION)
    if champion is not None and str(champion.version) == str(version):
        return
    journal.set_version_tag(version, vocab.VERSION_DECISION, vocab.OVER_BUDGET)
    journal.set_version_tag(version, vocab.VERSION_REASON, reason)


def promotion_lock(registered_model: str):
    """Held from reading the incumbent (and the decision count) to setting the alias, so two compares at once,
    on one machine or on several against one server, cannot both promote or both number a decision k. Yields what
    `apply` verifies before it writes (a lease in the store can expire)."""
    return store.exclusive(f"{registered_model}.promotion")


def apply(journal: Journal, decision: gate.Decision, selected_by_run: str, hold=None) -> None:
    """Tags first (and the decision counted on its gate rows), aliases last; if the step fails after this, tags,
    count and aliases are put back as they were. `hold`: the promotion lock, verified still held first."""
    if hold is not None:
        hold.verify()
    name, client = journal.name, journal.client
    before = {alias: gate.version_by_alias(name, alias) for alias in (gate.CHAMPION, gate.CHALLENGER)}
    current = before[gate.CHAMPION]
    if (str(current.version) if current else "") != decision.incumbent_version:
        raise PipelineError(f"the champion of {name} moved while this compare ran (now version "
                            f"{current.version if current else 'none'}); re-run compare")
    tags = {**decision.tags(), vocab.VERSION_REASON: decision.reason, vocab.SELECTED_BY_RUN: selected_by_run}
    stale = set(client.get_model_version(name, decision.candidate_version).tags) & gate.GATE_TAGS - set(tags)
    for key in stale:  # left by an earlier decision on this version; this one has no such figure
        journal.set_version_tag(decision.candidate_version, key, None)
    for key, value in tags.items():
        journal.set_version_tag(decision.candidate_version, key, value)
    if decision.gate_decision_number:  # the rows were looked at: the next decision on them spends less
        journal.set_model_tag(gate._count_tag(decision.gate_rows_digest), str(decision.gate_decision_number))

    def restore() -> None:
        for alias, version in before.items():
            if version is None:
                with contextlib.suppress(MlflowException):
                    client.delete_registered_model_alias(name, alias)
            else:
                client.set_registered_model_alias(name, alias, version.version)

    lifecycle.on_failure(f"aliases of {name}", restore)
    if decision.decision in (vocab.FIRST_CHAMPION, vocab.PROMOTED):
        if decision.incumbent_version:
            journal.set_version_tag(decision.incumbent_version, vocab.REPLACED_BY_VERSION, decision.candidate_version)
        client.set_registered_model_alias(name, gate.CHAMPION, decision.candidate_version)
        challenger = before[gate.CHALLENGER]
        if challenger is not None and str(challenger.version) == decision.candidate_version:
            client.delete_registered_model_alias(name, gate.CHALLENGER)
    elif decision.decision == vocab.KEPT_INCUMBENT:
        client.set_registered_model_alias(name, gate.CHALLENGER, decision.candidate_version)
    log.info("%s: %s", decision.decision, decision.reason)
    if decision.decision == vocab.UNDECIDED:
        log.warning("gate: %s", decision.reason)
