"""monitor.md: the verdict per predict batch, what each statistic is and which test decides it, and what to do."""
from __future__ import annotations

import numpy as np
import pandas as pd

from agnews import monitor

ADVICE = {
    "ok": "Nothing to do: the batch looks like the data the model was evaluated on.",
    "drift": ("The inputs no longer look like the reference. The model may still be right; label a sample of "
              "the drifted rows and retrain with them (command below) if its accuracy on them is lower."),
    "degraded": "The model is measurably wrong on this labelled batch: retrain with these rows (command below).",
    "too_small": "Too few rows to test; send batches of at least min_batch rows to get a verdict.",
    "unknown": "Not checked: the model could not be traced to a reference (evaluate it, then predict again).",
}


def _cell(value: float) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.3g}"


def _batches(table: pd.DataFrame) -> list[str]:
    lines = ["| # | when (UTC) | predict run | rows | accuracy | health | reasons |", "|---|---|---|---|---|---|---|"]
    for k, row in enumerate(table.itertuples(index=False), 1):
        lines.append(f"| {k} | {row.time:%Y-%m-%d %H:%M:%S} | `{row.run_id}` | {row.rows} | {_cell(row.accuracy)} | "
                     f"**{row.health}** | {row.reasons.replace('|', '/') or '-'} |")
    return lines


def _values(table: pd.DataFrame, reference: monitor.Reference) -> list[str]:
    shown = [s for s in monitor.STATISTICS if table[s].notna().any()]
    lines = ["| # | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
    for k, row in enumerate(table.to_dict("records"), 1):
        cells = [_cell(row[s]) + (" ✗" if row[f"{s}_drifted"] else "") for s in shown]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "✗: the statistic drifted (Holm-adjusted p <= alpha). What each column is, and its test:", ""]
    lines += [f"- `{s}`: {monitor.STATISTICS[s][1]}; test: {monitor.STATISTICS[s][0]}. Plot: "
              f"`monitor_{s}.png`." for s in shown]
    return lines


def markdown(table: pd.DataFrame, reference: monitor.Reference, model: str, since: str, new_rows: pd.DataFrame,
             retrain) -> str:
    """`retrain`: agnews.monitor_runs.Retrain, or None when no batch drifted or degraded."""
    latest = table.iloc[-1]
    counts = ", ".join(f"{n} {s}" for s, n in table["health"].value_counts().items())
    ci = reference.test_accuracy_ci
    lines = [f"# Monitoring {model}", "",
             f"{len(table)} predict batches ({since}): {counts}. **Latest: {latest['health']}** "
             f"(run `{latest['run_id']}`). {ADVICE.get(latest['health'], '')}", "",
             f"Reference: {reference.rows} rows, {reference.source}"
             + (f"; test accuracy {reference.test_accuracy:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") + ".", "",
             "## Verdict per batch", "", *_batches(table), "",
             "## Statistics per batch", "", *_values(table, reference), "",
             "## What to do", ""]
    for status in ("drift", "degraded", "too_small", "unknown"):
        if (table["health"] == status).any():
            lines.append(f"- **{status}** ({int((table['health'] == status).sum())} batches): {ADVICE[status]}")
    if retrain is not None:
        labelled = len(new_rows) - len(retrain.to_label)
        lines += ["", f"The drifted or degraded batches hold {len(new_rows)} rows, {labelled} of them labelled. "
                  f"`monitoring/retrain_rows.csv` on this run holds the model's own labelled rows (its data run's "
                  f"splits) plus those {labelled}: {len(retrain.rows)} rows, text and label."]
        if len(retrain.to_label):
            lines.append(f"Label the {len(retrain.to_label)} rows of `monitoring/to_label.csv` (fill `label` with "
                         "a class name) and append them to `retrain_rows.csv` first.")
        lines += ["Retrain through `main`, whose gate promotes the new model only if it beats the champion on gate "
                  "rows neither saw:", "", "```", retrain.command, "```"]
    else:
        lines += ["", "No drifted or degraded batch: no retraining needed."]
    lines += ["", "## Not monitored", "",
              "A model served with `mlflow models serve` is not instrumented: its requests are not logged and not "
              "checked. Send batches through `mlflow run . -e predict -P input=<file>` (every predict run is a "
              "health check) to see them here."]
    return "\n".join(lines) + "\n"
