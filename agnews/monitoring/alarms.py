"""The window rule over a model's predict batches (`-e monitor`), decided here and nowhere else.

Over many batches (`-e monitor`) one flagged batch is not a reason to act: at `alpha` = 0.01 per batch, 100 healthy
batches hold a false `drift` with odds 1 - 0.99**100 = 63% (if each batch had the full alpha). The window rule, the one
place it is decided: an **alarm** (retrain advice) needs `persist` (2) consecutive tested batches flagged (`drift` or
`degraded`; `too_small` and `unknown` batches are untested and neither extend nor break a run). For independent
healthy batches each flagged with probability at most alpha, a run of `persist` starts at a given batch with
probability at most alpha**persist, so N batches raise a false alarm with probability at most
(N - persist + 1) * alpha**persist (union bound): 99 * 0.01**2 = 0.99% for 100 batches, the level one batch had
alone. Persistence rather than alpha spent over the window (Bonferroni, alpha / N per batch): the per-batch verdict
stays what it was (each predict run still says whether its batch looks like the reference at alpha), there is no
window length to fix in advance, and a real shift, which persists, is flagged at every batch and alarms one batch
later; what it gives up is a shift confined to a single batch (benchmarks/bench_monitor.py measures both sides)."""
from __future__ import annotations

import logging

import numpy as np

from agnews.monitoring import checks

log = logging.getLogger(__name__)


# --- over a window of batches --------------------------------------------------------------------------------------

def flagged_runs(statuses, persist: int = checks.PERSIST) -> list[list[int]]:
    """Runs of consecutive flagged batches (indices into `statuses`, oldest first) that reached `persist` tested
    batches: the alarms. Untested batches (too_small, unknown) inside a run are skipped, not counted."""
    runs, current = [], []
    for k, status in enumerate(statuses):
        if status in checks.UNTESTED:
            continue
        if status in checks.FLAGGED:
            current.append(k)
            continue
        if len(current) >= persist:
            runs.append(current)
        current = []
    if len(current) >= persist:
        runs.append(current)
    return runs


def alarms(statuses, persist: int = checks.PERSIST) -> np.ndarray:
    """True at each batch where an alarm is raised: the batch that makes a run of flagged batches `persist` long."""
    out = np.zeros(len(statuses), dtype=bool)
    for run in flagged_runs(statuses, persist):
        out[run[persist - 1]] = True
    return out


def in_alarm(statuses, persist: int = checks.PERSIST) -> np.ndarray:
    """True for every batch of a run of flagged batches that reached `persist` (the rows a retrain adds)."""
    out = np.zeros(len(statuses), dtype=bool)
    for run in flagged_runs(statuses, persist):
        out[run] = True
    return out


def false_alarm_bound(batches: int, alpha: float = checks.ALPHA, persist: int = checks.PERSIST) -> float:
    """Upper bound on the probability that `batches` independent healthy batches, each flagged with probability at
    most alpha, raise an alarm: (batches - persist + 1) * alpha**persist (union bound over where a run starts)."""
    return float(min(1.0, max(batches - persist + 1, 0) * alpha ** persist))
