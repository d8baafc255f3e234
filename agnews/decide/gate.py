"""The promotion policy in one place: which version is the candidate, which rows the gate scores (none that either
model trained, validated or distilled on), how many rows a decision needs, the rule and its error-rate spending
across the decisions one gate sample makes, and the registry tags it writes (put back if the step then fails).

The rule: the candidate takes `champion` only if the lower end of the paired bootstrap interval of its macro-F1
lead on the gate rows is above `min_improvement`. The k-th decision made on one gate sample uses a two-sided
interval at level 1 - ALPHA / 2**(k-1) (95%, 97.5%, 98.75%, ...): each decision's one-sided false-promotion rate is
at most ALPHA / 2**k, so over every decision ever made on those rows it is at most ALPHA / 2 + ALPHA / 4 + ... =
ALPHA (as far as the percentile bootstrap's coverage is exact; it is approximate on few rows).

"One gate sample" is its rows, not the run that logged them: the count is kept on the registered model under a
digest of every gate row (text and label), so a data run prepared again (after a commit, on another machine) with
the same rows continues the count instead of starting at 1. A decision also needs a floor of rows in every class
(macro F1 averages per-class F1; a class of 1 or 2 rows makes its F1 a coin toss), not only in all."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, fields

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from agnews import stats, vocab
from agnews.data import handoff, lineage
from agnews.data.sampling import with_row_ids
from agnews.data.task import Task, check_same

log = logging.getLogger(__name__)
CHAMPION, CHALLENGER = vocab.CHAMPION, vocab.CHALLENGER
ALPHA = stats.ALPHA  # the first decision's two-sided level: a 95% interval, as every decision used before spending
MIN_GATE_ROWS = 30  # the documented floor: fewer rows and the percentile bootstrap of macro F1 is not to be trusted
MIN_GATE_ROWS_PER_CLASS = 5  # the default floor of unseen gate rows in every class
DECISIONS_TAG = vocab.GATE_DECISIONS  # how many decisions a gate sample made: before 2026-12 on its data run only


def confidence(k: int) -> float:
    """The interval level of the k-th decision (k >= 1) on one gate sample: 1 - ALPHA / 2**(k-1)."""
    if k < 1:
        raise ValueError(f"decision number {k} < 1")
    return 1 - ALPHA / 2 ** (k - 1)


@dataclass
class Decision:
    """What the gate decided for the candidate, written onto its version as tags."""

    decision: str  # one of vocab.DECISIONS
    candidate_model: str
    candidate_version: str
    incumbent_version: str = ""
    incumbent_model: str = ""
    min_improvement: float = 0.0
    gate_rows: int = 0
    gate_excluded: int = 0
    gate_delta_f1_macro: float = float("nan")
    gate_delta_ci_low: float = float("nan")
    gate_delta_ci_high: float = float("nan")
    gate_mcnemar_p: float = float("nan")
    candidate_gate_f1_macro: float = float("nan")
    incumbent_gate_f1_macro: float = float("nan")
    gate_data_run_id: str = ""
    gate_rows_digest: str = ""  # sha256 of every row of the gate sample: the decision count is kept under it
    gate_probe_version: str = ""  # the baseline (linear probe) the candidate also had to beat on these rows
    gate_probe_delta_ci_low: float = float("nan")
    gate_probe_delta_ci_high: float = float("nan")
    gate_decision_number: int = 0  # k: this was the k-th decision on those gate rows
    gate_confidence: float = float("nan")  # the interval level k allows
    reason: str = ""

    def tags(self) -> dict[str, str]:
        values = {k: v for k, v in asdict(self).items() if k != "decision"}
        out = {vocab.VERSION_DECISION: self.decision}
        for key, value in values.items():
            if value == "" or (isinstance(value, float) and value != value) or (key == "gate_decision_number"
                                                                                 and not value):
                continue
            out[key] = f"{value:.4f}" if isinstance(value, float) else str(value)
        return out


# Figures a decision may or may not have (NaN or ""): an older decision's must not outlive a newer one's.
GATE_TAGS = {f.name for f in fields(Decision)} - {"decision", "candidate_model", "candidate_version",
                                                  "min_improvement", "reason"}


# --- which version competes ---------------------------------------------------------------------------------

def candidate(ranked: pd.DataFrame, latency: pd.Series, budget_ms: float):
    """The best-ranked model whose fp32 p50 latency (by train run id) is within the budget (the best-ranked without
    one), and the models ranked above it that are over; (None, all) when none fits."""
    if not budget_ms:
        return ranked.iloc[0], []
    fits = ranked["train_run_id"].map(latency <= budget_ms).fillna(False).to_numpy(bool)
    first = int(fits.argmax()) if fits.any() else len(ranked)
    return (ranked.iloc[first] if first < len(ranked) else None), [ranked.iloc[k] for k in range(first)]


def version_by_alias(registered_model: str, alias: str) -> ModelVersion | None:
    try:
        return mlflow.MlflowClient().get_model_version_by_alias(registered_model, alias)
    except MlflowException:
        return None


@dataclass
class GateRows:
    rows: pd.DataFrame | None  # None: no rows the gate may decide on (see `why`)
    excluded: int
    data_run_id: str
    why: str = ""
    classes: int = 4  # the gate data run's label count (macro F1 averages over all of them)
    digest: str = ""  # of the whole gate sample (before exclusions): what its decisions are counted under
    decisions_before: int = 0  # decisions already made on that sample for this registered model


def rows_digest(gate: pd.DataFrame) -> str:
    """sha256 over every row's id (a hash of its text) and label, in a fixed order: the same rows give the same
    digest whichever run logged them or in what order; one changed row, label or count gives another."""
    lines = sorted(f"{r}\t{y}" for r, y in zip(with_row_ids(gate)["row_id"], gate["label"].astype(int)))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _count_tag(digest: str) -> str:
    return vocab.gate_decisions(digest)


def decisions_made(registered_model: str, digest: str, data_run_id: str = "") -> int:
    """Decisions already made for `registered_model` on the gate sample of this digest; a data run's own count
    (written before counts were kept by digest) is a floor."""
    client = mlflow.MlflowClient()
    tags = client.get_registered_model(registered_model).tags or {}
    legacy = client.get_run(data_run_id).data.tags.get(DECISIONS_TAG, "0") if data_run_id else "0"
    return max(int(tags.get(_count_tag(digest), "0") or 0), int(legacy or 0))


def class_floor(rows: pd.DataFrame, classes: int, per_class: int) -> list[int]:
    """The class ids with fewer than `per_class` rows among `rows` (absent ones included)."""
    counts = np.bincount(rows["label"].astype(int).to_numpy(), minlength=classes)
    return [k for k in range(classes) if counts[k] < per_class]


def rows_for(candidate_run: mlflow.entities.Run, incumbent: ModelVersion, gate_data_run_id: str = "") -> GateRows:
    """The gate split of `gate_data_run_id` (default: the candidate's data run) minus every row either model
    trained, validated or distilled on. An incumbent whose rows cannot be known only allows rows the user names."""
    source = gate_data_run_id or candidate_run.data.tags[vocab.DATA_RUN_ID]
    gate = with_row_ids(handoff.load_splits(source, ("gate",))["gate"])
    digest = rows_digest(gate)
    before = decisions_made(incumbent.name, digest, source)
    incumbent_run = lineage.training_run(incumbent)
    labels = _one_label_set(candidate_run, incumbent, incumbent_run, source)
    theirs = lineage.seen_rows(incumbent_run) if incumbent_run is not None else None
    ours = lineage.seen_rows(candidate_run)
    unknown = [who for who, rows in ((f"champion version {incumbent.version}", theirs), ("the candidate", ours))
               if rows is None]
    if unknown and not gate_data_run_id:
        return GateRows(None, 0, source, classes=labels.num_labels, digest=digest, decisions_before=before, why=(
            f"the rows {' and '.join(unknown)} trained on cannot be known (no training run with a data run behind "
            "it, e.g. registered by hand, or a teacher that cannot be traced), so any gate row may be one it saw; "
            "pass -P gate_data_run_id=<a prepare_data run whose gate rows it never saw> to decide"))
    rows, excluded = lineage.unseen(gate, ours or set(), theirs or set())
    return GateRows(rows, excluded, source, classes=labels.num_labels, digest=digest, decisions_before=before)


def _one_label_set(candidate_run: mlflow.entities.Run, incumbent: ModelVersion,
                   incumbent_run: mlflow.entities.Run | None, gate_source: str) -> Task:
    """Candidate, champion and gate rows must be one task (labels, text columns, label column, cleaning): class 2
    of one is not class 2 of another, and a model of another task must never take `champion`."""
    ours = handoff.load_task(candidate_run.data.tags.get(vocab.DATA_RUN_ID, ""))
    if incumbent_run is not None:
        check_same(ours, handoff.load_task(incumbent_run.data.tags.get(vocab.DATA_RUN_ID, "")),
                   f"champion version {incumbent.version} of {incumbent.name}",
                   "register models of another task under their own name: pass -P registered_model=<new name>")
    check_same(ours, handoff.load_task(gate_source), f"gate data run {gate_source}",
               "pass -P gate_data_run_id=<a prepare_data run of the candidate's task>")
    return ours


# --- the rule -----------------------------------------------------------------------------------------------

@dataclass
class Bar:
    """A baseline the candidate must beat as well, on the same gate rows: the linear probe compared with it (issue
    24: a fine-tune is promoted only when it beats the probe), when the champion is another version."""

    version: str
    model: str
    predict: object  # texts -> class ids


def decide(candidate_version: str, model: str, incumbent: ModelVersion | None, rows: GateRows | None,
           predict_candidate, predict_incumbent, min_improvement: float, min_rows: int = MIN_GATE_ROWS,
           seed: int = 0, min_per_class: int = MIN_GATE_ROWS_PER_CLASS, bar: Bar | None = None) -> Decision:
    """Apply the rule. `predict_*(texts)` are only called when a comparison is made; `rows` only read then.
    With a `bar`, promotion needs both leads (over the champion and over the bar) above `min_improvement`, each at
    the decision's level: an intersection-union test, whose false-promotion rate is at most that one level's, so it
    is counted as one decision."""
    if incumbent is None:
        return Decision(vocab.FIRST_CHAMPION, model, candidate_version, min_improvement=min_improvement,
                        reason="no version held champion; the candidate becomes the first champion")
    inc_model = incumbent.tags.get("model", "") or incumbent.tags.get("base_model", "")
    base = dict(candidate_model=model, candidate_version=candidate_version, incumbent_version=str(incumbent.version),
                incumbent_model=inc_model, min_improvement=min_improvement)
    if str(incumbent.version) == candidate_version:
        return Decision(vocab.ALREADY_CHAMPION, **base,
                        reason="the candidate is the champion's own version; nothing changes")
    if rows.rows is None:
        return Decision(vocab.UNDECIDED, **base, gate_data_run_id=rows.data_run_id,
                        reason=f"not decided, version {incumbent.version} keeps champion: {rows.why}")
    n = len(rows.rows)
    if n < min_rows:
        return Decision(vocab.UNDECIDED, **base, gate_rows=n, gate_excluded=rows.excluded,
                        gate_data_run_id=rows.data_run_id, reason=(
                            f"not decided, version {incumbent.version} keeps champion: only {n} gate rows neither "
                            f"model saw ({rows.excluded} excluded), fewer than the {min_rows} a decision needs; "
                            "prepare data with a larger -P gate_size and train the candidate on it, or pass "
                            "-P gate_data_run_id=<a prepare_data run with unseen gate rows>"))
    short = class_floor(rows.rows, rows.classes, min_per_class)
    if short:
        return Decision(vocab.UNDECIDED, **base, gate_rows=n, gate_excluded=rows.excluded,
                        gate_data_run_id=rows.data_run_id, reason=(
                            f"not decided, version {incumbent.version} keeps champion: {len(short)} of "
                            f"{rows.classes} classes (ids {', '.join(map(str, short[:10]))}) have fewer than "
                            f"{min_per_class} gate rows neither model saw, and macro F1 averages every class; "
                            "prepare data with a larger -P gate_size, pass -P gate_data_run_id=<a prepare_data run "
                            "with more unseen gate rows>, or lower -P min_gate_rows_per_class"))
    k = rows.decisions_before + 1
    level = confidence(k)
    texts, labels = rows.rows["text"].tolist(), rows.rows["label"].to_numpy()
    a, b = predict_candidate(texts), predict_incumbent(texts)
    result = stats.paired(labels, a, b, "f1_macro", seed=seed, confidence=level, classes=rows.classes)
    promoted = result.ci_low > min_improvement
    over_bar = None
    if bar is not None and bar.version not in (candidate_version, str(incumbent.version)):
        over_bar = stats.paired(labels, a, bar.predict(texts), "f1_macro", seed=seed, confidence=level,
                                classes=rows.classes)
    beats_bar = over_bar is None or over_bar.ci_low > min_improvement
    decision = Decision(
        vocab.PROMOTED if promoted and beats_bar else vocab.KEPT_INCUMBENT, **base, gate_rows=n,
        gate_excluded=rows.excluded,
        gate_delta_f1_macro=result.delta, gate_delta_ci_low=result.ci_low, gate_delta_ci_high=result.ci_high,
        gate_mcnemar_p=result.mcnemar_p, candidate_gate_f1_macro=stats.score("f1_macro", labels, a, rows.classes),
        incumbent_gate_f1_macro=stats.score("f1_macro", labels, b, rows.classes), gate_data_run_id=rows.data_run_id,
        gate_rows_digest=rows.digest, gate_decision_number=k, gate_confidence=level)
    verdict = "above" if promoted else "not above"
    decision.reason = (f"on {n} gate rows ({rows.excluded} excluded) the candidate's macro-F1 lead over version "
                       f"{incumbent.version} is {result.delta:+.4f} [{result.ci_low:+.4f}, {result.ci_high:+.4f}] "
                       f"({level:.2%} interval: decision {k} on these gate rows), McNemar p={result.mcnemar_p:.3g}; "
                       f"the lower end is {verdict} min_improvement {min_improvement:.4f}")
    if over_bar is not None:
        decision.gate_probe_version = bar.version
        decision.gate_probe_delta_ci_low, decision.gate_probe_delta_ci_high = over_bar.ci_low, over_bar.ci_high
        decision.reason += (f"; over the baseline {bar.model} (version {bar.version}) its lead is "
                            f"{over_bar.delta:+.4f} [{over_bar.ci_low:+.4f}, {over_bar.ci_high:+.4f}], the lower end "
                            f"{'above' if beats_bar else 'not above'} min_improvement: promoted only if both are")
    return decision


def over_budget(candidate_version: str, model: str, incumbent: ModelVersion | None, reason: str) -> Decision:
    """No model fits the latency budget: nothing is promoted, the incumbent (if any) keeps `champion`."""
    kept = f"version {incumbent.version} keeps champion" if incumbent else "no champion is set"
    return Decision(vocab.OVER_BUDGET, model, candidate_version, str(incumbent.version) if incumbent else "",
                    (incumbent.tags.get("model", "") if incumbent else ""),
                    reason=f"no trained (fp32) model fits the latency budget; the best-ranked one's {reason}; {kept}")
