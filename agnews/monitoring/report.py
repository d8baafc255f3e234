"""monitor.md: the verdict per predict batch, what each statistic is and which test decides it, and what to do."""
from __future__ import annotations

import numpy as np
import pandas as pd

from agnews.monitoring import alarms, checks

ADVICE = {
    "ok": "Nothing to do: the batch looks like the data the model was evaluated on.",
    "drift": ("The inputs no longer look like the reference. The model may still be right; when the drift persists "
              "(an alarm), label a sample of the drifted rows and retrain with them (command below) if its accuracy "
              "on them is lower."),
    "degraded": ("The model is measurably wrong on this labelled batch; when it persists (an alarm), retrain with "
                 "these rows (command below)."),
    "too_small": "Too few rows to test; send batches of at least min_batch rows to get a verdict.",
    "unknown": "Not checked: the model could not be traced to a reference (evaluate it, then predict again).",
}


def _cell(value: float) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.3g}"


def _window(row) -> str:
    if row.alarm:
        return "**alarm**"
    if row.in_alarm:
        return "in alarm"
    return "isolated" if row.health in checks.FLAGGED else ""


def _batches(table: pd.DataFrame) -> list[str]:
    lines = ["| # | when (UTC) | predict run | rows | accuracy | health | window | reasons |",
             "|---|---|---|---|---|---|---|---|"]
    for k, row in enumerate(table.itertuples(index=False), 1):
        lines.append(f"| {k} | {row.time:%Y-%m-%d %H:%M:%S} | `{row.run_id}` | {row.rows} | {_cell(row.accuracy)} | "
                     f"**{row.health}** | {_window(row)} | {row.reasons.replace('|', '/') or '-'} |")
    return lines


def alarm_summary(table: pd.DataFrame, persist: int) -> str:
    """One line on the window: the alarms (runs of `persist`+ flagged batches) or why none was raised."""
    runs = alarms.flagged_runs(table["health"].tolist(), persist)
    if runs:
        return "alarm: " + "; ".join(f"{'/'.join(sorted(set(table['health'].iloc[r])))} over batches #{r[0] + 1}-"
                                     f"#{r[-1] + 1} ({len(r)} flagged in a row)" for r in runs)
    flagged = [k + 1 for k, h in enumerate(table["health"]) if h in checks.FLAGGED]
    if not flagged:
        return "none: no batch flagged"
    return (f"none: {len(flagged)} isolated flagged batch(es) (#{', #'.join(map(str, flagged))}), not significant "
            f"over the window (an alarm needs {persist} flagged tested batches in a row)")


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def _window_rule(table: pd.DataFrame, alpha: float, persist: int) -> list[str]:
    bound = alarms.false_alarm_bound(100, alpha, persist)
    return ["## Over the window", "",
            f"**{_upper_first(alarm_summary(table, persist))}.** Each batch is tested at alpha = {alpha:g}, so one "
            f"healthy batch in {1 / alpha:.0f} may be flagged; the retrain advice waits for {persist} flagged tested "
            f"batches in a row (too_small/unknown batches skipped), which independent healthy batches produce with "
            f"probability at most {bound:.2%} per 100 batches ((100 - {persist} + 1) x alpha^{persist}; "
            "agnews/monitoring/checks.py). Column `window`: **alarm** where it was raised, `in alarm` for the other "
            "batches of that run, `isolated` for a flagged batch no alarm followed."]


def _values(table: pd.DataFrame, reference: checks.Reference) -> list[str]:
    shown = [s for s in checks.STATISTICS if table[s].notna().any()]
    lines = ["| # | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
    for k, row in enumerate(table.to_dict("records"), 1):
        cells = [_cell(row[s]) + (" ✗" if row[f"{s}_drifted"] else "") for s in shown]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "✗: the statistic drifted (Holm-adjusted p <= alpha). What each column is, and its test:", ""]
    lines += [f"- `{s}`: {checks.STATISTICS[s][1]}; test: {checks.STATISTICS[s][0]}. Plot: "
              f"`monitor_{s}.png`." for s in shown]
    return lines


def _references(table: pd.DataFrame) -> list[str]:
    """The batches not tested against an exact reference (the model's own data run, variant and precision)."""
    odd = [(k, row) for k, row in enumerate(table.itertuples(index=False), 1) if row.reference_match == "fallback"]
    if not odd:
        return []
    return ["Batches tested against a fallback reference:", "",
            *[f"- #{k}: {row.reference_note}" for k, row in odd], ""]


def markdown(table: pd.DataFrame, reference: checks.Reference, model: str, since: str, new_rows: pd.DataFrame,
             retrain, alpha: float = checks.ALPHA, persist: int = checks.PERSIST) -> str:
    """`table`: agnews.monitoring.batches.batch_table with the window's `alarm`/`in_alarm` columns; `retrain`:
    agnews.monitoring.batches.Retrain, or None when no alarm was raised."""
    latest = table.iloc[-1]
    counts = ", ".join(f"{n} {s}" for s, n in table["health"].value_counts().items())
    ci = reference.test_accuracy_ci
    lines = [f"# Monitoring {model}", "",
             f"{len(table)} predict batches ({since}): {counts}. **Latest: {latest['health']}** "
             f"(run `{latest['run_id']}`). {ADVICE.get(latest['health'], '')}", "",
             f"Reference: {reference.rows} rows, {reference.source}"
             + (f"; test accuracy {reference.test_accuracy:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + ".", "",
             *_window_rule(table, alpha, persist), "",
             "## Verdict per batch", "", *_batches(table), "", *_references(table),
             "## Statistics per batch", "", *_values(table, reference), "",
             "## What to do", ""]
    for status in ("drift", "degraded", "too_small", "unknown"):
        if (table["health"] == status).any():
            lines.append(f"- **{status}** ({int((table['health'] == status).sum())} batches): {ADVICE[status]}")
    if retrain is not None:
        labelled = len(new_rows) - len(retrain.to_label)
        lines += ["", f"The batches of the alarms hold {len(new_rows)} rows, {labelled} of them labelled. "
                  f"`monitoring/retrain_rows.csv` on this run holds the model's own labelled rows (its data run's "
                  f"splits) plus those {labelled}: {len(retrain.rows)} rows, text and label."]
        if len(retrain.to_label):
            lines.append(f"Label the {len(retrain.to_label)} rows of `monitoring/to_label.csv` (fill `label` with "
                         "a class name) and append them to `retrain_rows.csv` first.")
        lines += ["Retrain through `main`, whose gate promotes the new model only if it beats the champion on gate "
                  "rows neither saw:", "", "```", retrain.command, "```"]
    else:
        lines += ["", "No alarm over the window: no retraining needed."]
    lines += ["", "## Not monitored", "",
              "A model served with `mlflow models serve` is not instrumented: its requests are not logged and not "
              "checked. Send batches through `mlflow run . -e predict -P input=<file>` (every predict run is a "
              "health check) to see them here."]
    return "\n".join(lines) + "\n"
