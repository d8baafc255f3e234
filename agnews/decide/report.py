"""The comparison written for people: the markdown table with intervals and report.md, whose sentences are
computed from the numbers (who leads, whether significantly, how each model trained, what gets confused, what the
gate decided)."""
from __future__ import annotations

import logging
from collections.abc import Callable

import pandas as pd

from agnews import stats, vocab
from agnews.decide import training_notes, wording

DASH = "—"
ALPHA = stats.ALPHA  # significance level of the Holm-adjusted McNemar test
DECISIONS = vocab.DECISIONS
_HIDDEN = ["train_run_id", "base_model", "registered_model", "data_run_id"]
_FOLDED = ("_ci_low", "_ci_high", "_mean", "_std")  # shown inside their metric's cell, not as columns
_DIGITS = {"train_seconds": 1}

log = logging.getLogger(__name__)


# --- cell formatting: every number goes through these, so NaN always reads "—" ---

def _num(value) -> float | None:
    """A finite float, or None for NaN, None and text that is not a number (decision values may be strings)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if pd.isna(number) else number


def _fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return DASH
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ci(value, low, high, digits: int = 4) -> str:
    """`0.9120 [0.8870, 0.9340]`, the value alone when the interval is missing, `—` when the value is."""
    value, low, high = _num(value), _num(low), _num(high)
    if value is None:
        return DASH
    bounds = f" [{low:.{digits}f}, {high:.{digits}f}]" if low is not None and high is not None else ""
    return f"{value:.{digits}f}{bounds}"


def _metric_ci(row: dict, column: str, digits: int = 4) -> str:
    return _ci(row.get(column), row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high"), digits)


def _mean_std(mean, std, n_seeds=None) -> str:
    """`0.9050 ± 0.0060 (3 seeds)`; without n_seeds the count is left to the sentence around it."""
    mean, std = _num(mean), _num(std)
    if mean is None:
        return DASH
    spread = f" ± {std:.4f}" if std is not None else ""  # std is NaN with one seed
    n = _num(n_seeds)
    return f"{mean:.4f}{spread}" + (f" ({int(n)} seed{'s' if n != 1 else ''})" if n is not None else "")


def _p(value) -> str:
    p = _num(value)
    return DASH if p is None else ("<0.0001" if p < 1e-4 else f"{p:.4f}")


def _p_is(value) -> str:
    """'p = 0.0123' or 'p < 0.0001', for sentences."""
    shown = _p(value)
    return f"p {shown[0]} {shown[1:]}" if shown.startswith("<") else f"p = {shown}"


def _version(value) -> str:
    number = _num(value)
    return str(int(number)) if number is not None and number.is_integer() else str(value)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


# --- the comparison table ---

Cell = Callable[[dict], str]


def _metric_cells(frame: pd.DataFrame, column: str, seeds: bool) -> list[tuple[str, Cell]]:
    """A metric's cell (with its interval when there is one) and, with several seeds, its mean ± std cell."""
    if f"{column}_ci_low" in frame.columns:
        cells = [(f"{column} [95% CI]", lambda r: _metric_ci(r, column))]
    else:
        cells = [(column, lambda r: _fmt(r[column], _DIGITS.get(column, 4)))]
    if seeds and f"{column}_mean" in frame.columns:
        cells.append((f"{column} mean ± std",
                      lambda r: _mean_std(r[f"{column}_mean"], r.get(f"{column}_std"), r.get("n_seeds"))))
    return cells


def _table_cells(frame: pd.DataFrame) -> list[tuple[str, Cell]]:
    """The shown columns in frame order: intervals, means and stds folded into their metric's cells."""
    seeds = "n_seeds" in frame.columns and bool((frame["n_seeds"].fillna(1) > 1).any())
    cells: list[tuple[str, Cell]] = []
    for column in frame.columns:
        if column in _HIDDEN or column.endswith(_FOLDED) or column in ("delta_ci_low", "delta_ci_high"):
            continue
        if column == "delta_f1_macro":
            cells.append(("Δ val_f1_macro vs leader [95% CI]",
                          lambda r: _ci(r["delta_f1_macro"], r.get("delta_ci_low"), r.get("delta_ci_high"))))
        elif column in ("mcnemar_p", "mcnemar_p_holm"):
            cells.append((column, lambda r, c=column: _p(r[c])))
        else:
            cells += _metric_cells(frame, column, seeds)
    return cells


def to_markdown(frame: pd.DataFrame) -> str:
    """The ranked table: metrics with bootstrap 95% intervals, mean ± std across seeds, delta and p-values."""
    cells = _table_cells(frame)
    rows = frame.to_dict("records")  # native Python values per column: ints stay ints
    return _markdown_table([name for name, _ in cells], [[cell(r) for _, cell in cells] for r in rows])


# --- report sentences ---

def _name(row: dict) -> str:
    return f"**{row['model']}** (version {_version(row.get('registered_version'))})"


def _rank_score(row: dict) -> float | None:
    """What the ranking sorts on: the mean validation macro F1 over the model's seeds (comparison.model_table)."""
    mean = _num(row.get("val_f1_macro_mean"))
    return _num(row.get("val_f1_macro")) if mean is None else mean


def _leader_sentence(rows: list[dict]) -> str:
    lead = rows[0]
    n = int(_num(lead.get("n_seeds")) or 1)
    if n > 1:
        text = (f"{_name(lead)} leads on mean validation macro F1 with "
                f"{_mean_std(lead.get('val_f1_macro_mean'), lead.get('val_f1_macro_std'))} over its {n} seeds "
                f"(mean ± std); its best seed, seed {_fmt(lead.get('seed'))}, represents it with "
                f"{_metric_ci(lead, 'val_f1_macro')} (bootstrap 95% interval)")
    else:
        text = (f"{_name(lead)} leads on validation macro F1 with {_metric_ci(lead, 'val_f1_macro')} "
                f"(seed {_fmt(lead.get('seed'))}, its only seed; bootstrap 95% interval)")
    ties = [r["model"] for r in rows[1:] if _rank_score(r) == _rank_score(lead)]
    if ties:
        text += (f". It ties with {', '.join(ties)} on mean validation macro F1; the smaller model (then the older "
                 "version) ranks first")
    return text + "."


def _ranking_sentence(rows: list[dict]) -> str:
    def entry(r: dict) -> str:
        n = int(_num(r.get("n_seeds")) or 1)
        seeds = f"mean of {n} seeds, best seed {_fmt(_num(r['val_f1_macro']))}" if n > 1 else "1 seed"
        return f"{r['model']} {_fmt(_rank_score(r))} ({seeds})"

    return (f"Ranking by mean validation macro F1 over each model's seeds, not its best seed: "
            f"{', '.join(entry(r) for r in rows)}. Each model's best seed's run represents it: its version, its "
            "row in the table below, the paired comparisons and the gate.")


def _not_significant_reasons(row: dict) -> list[str]:
    """Why a lead fails the rule (stats.lead_shortfalls: paired interval above 0 AND Holm p < ALPHA), in words;
    empty when it passes."""
    low, high, holm = _num(row.get("delta_ci_low")), _num(row.get("delta_ci_high")), _num(row.get("mcnemar_p_holm"))
    words = {stats.INTERVAL_MISSING: lambda: "the paired interval is missing",
             stats.INTERVAL_BELOW: lambda: f"the paired interval [{low:.4f}, {high:.4f}] lies below 0",
             stats.INTERVAL_INCLUDES_0: lambda: f"the paired interval [{low:.4f}, {high:.4f}] includes 0",
             stats.P_MISSING: lambda: "the Holm-adjusted McNemar p is missing",
             stats.P_NOT_BELOW_ALPHA: lambda: f"the Holm-adjusted McNemar p = {holm:.4f} is not below {ALPHA}"}
    return [words[shortfall]() for shortfall in stats.lead_shortfalls(low, high, holm, ALPHA)]


def _intervals_overlap(a: dict, b: dict) -> tuple[str, str] | None:
    """Both validation macro F1 intervals, formatted, when they overlap; None when apart or missing."""
    bounds = [(_num(r.get("val_f1_macro_ci_low")), _num(r.get("val_f1_macro_ci_high"))) for r in (a, b)]
    if any(v is None for pair in bounds for v in pair):
        return None
    (a_low, a_high), (b_low, b_high) = bounds
    if a_low > b_high or b_low > a_high:
        return None
    return f"[{a_low:.4f}, {a_high:.4f}]", f"[{b_low:.4f}, {b_high:.4f}]"


def _verdict_sentence(lead: dict, row: dict) -> str:
    delta = _ci(row.get("delta_f1_macro"), row.get("delta_ci_low"), row.get("delta_ci_high"))
    reasons = _not_significant_reasons(row)
    if not reasons:
        return (f"**{lead['model']}**'s lead over **{row['model']}** is significant: Δ macro F1 {delta} excludes 0 "
                f"and the Holm-adjusted McNemar {_p_is(row.get('mcnemar_p_holm'))} < {ALPHA} "
                f"(raw {_p_is(row.get('mcnemar_p'))}).")
    text = (f"**{lead['model']}**'s lead over **{row['model']}** (Δ macro F1 {delta}) is not significant: "
            f"{' and '.join(reasons)}.")
    overlap = _intervals_overlap(lead, row)
    if overlap:
        text += (f" Their validation macro F1 intervals overlap ({overlap[0]} vs {overlap[1]}), "
                 "so the ranking between them may be noise.")
    return text


def _paired_section(rows: list[dict]) -> list[str]:
    lines = ["## Paired comparisons", ""]
    if len(rows) < 2:
        return lines + [f"Only one model ({rows[0]['model']}) was compared, so there are no paired comparisons.", ""]
    lead = rows[0]
    table = [[str(r["model"]), _ci(r.get("delta_f1_macro"), r.get("delta_ci_low"), r.get("delta_ci_high")),
              _p(r.get("mcnemar_p")), _p(r.get("mcnemar_p_holm")),
              "not significant" if _not_significant_reasons(r) else "significant"] for r in rows[1:]]
    lines += [f"{lead['model']} (leader) minus each other model on the same validation rows: paired bootstrap "
              "95% interval of the macro F1 difference, exact McNemar p on accuracy, raw and Holm-adjusted.", "",
              _markdown_table(["model", "Δ val macro F1 [95% CI]", "McNemar p", "Holm p", "verdict"], table)]
    return lines + [f"- {_verdict_sentence(lead, r)}" for r in rows[1:]] + [""]


def confused_pairs(confusion: pd.DataFrame, top: int = 2) -> list[tuple[str, str, int, int]]:
    """The `top` class pairs with the most off-diagonal counts, both directions summed: (a, b, a→b, b→a)."""
    names = list(confusion.index)
    counts = confusion.reindex(index=names, columns=names, fill_value=0).to_numpy()
    pairs = [(names[i], names[j], int(counts[i, j]), int(counts[j, i]))
             for i in range(len(names)) for j in range(i + 1, len(names))]
    pairs = [p for p in pairs if p[2] + p[3] > 0]
    return sorted(pairs, key=lambda p: -(p[2] + p[3]))[:top]  # stable sort: ties keep class order


def _confusion_section(confusion: pd.DataFrame | None, leader: str) -> list[str]:
    lines = ["## Most confused classes", ""]
    if confusion is None or confusion.empty:
        return lines + ["No validation confusion matrix was given.", ""]
    total, pairs = int(confusion.to_numpy().sum()), confused_pairs(confusion)
    if not pairs:
        return lines + [f"{leader}'s validation confusion matrix ({total} rows) has no off-diagonal counts.", ""]
    lines.append(f"In {leader}'s validation confusion matrix ({total} rows):")
    for a, b, ab, ba in pairs:
        lines.append(f"- {a} ↔ {b}: {ab + ba} of {total} validation rows ({(ab + ba) / max(total, 1):.1%}): "
                     f"{ab} {a} predicted as {b}, {ba} {b} predicted as {a}.")
    return lines + [""]


def _test_line(row: dict) -> str:
    if _num(row.get("test_accuracy")) is None and _num(row.get("test_f1_macro")) is None:
        return f"- {_name(row)}: not evaluated (no test scores)."
    text = (f"- {_name(row)}: test accuracy {_metric_ci(row, 'test_accuracy')}, "
            f"macro F1 {_metric_ci(row, 'test_f1_macro')}")
    n = int(_num(row.get("n_seeds")) or 1)
    if n > 1 and _num(row.get("test_f1_macro_mean")) is not None:
        text += f"; macro F1 across seeds {_mean_std(row['test_f1_macro_mean'], row.get('test_f1_macro_std'), n)}"
    return text + "."


def _test_section(rows: list[dict]) -> list[str]:
    lines = ["## Test set (reported only)", "",
             "Test scores play no part in the ranking or the promotion; they are reported for reference.", ""]
    lines += [_test_line(r) for r in rows]
    scored = [r for r in rows if _num(r.get("test_f1_macro")) is not None]
    if len(scored) > 1:
        by_test = sorted(scored, key=lambda r: -_num(r["test_f1_macro"]))
        same = [r["model"] for r in by_test] == [r["model"] for r in scored]
        lines.append(f"\nBy test macro F1 the order is {', '.join(str(r['model']) for r in by_test)}, which "
                     f"{'matches' if same else 'differs from'} the validation ranking of the evaluated models.")
    return lines + [""]


def _runs_section(runs: pd.DataFrame | None, order: list[str]) -> list[str]:
    """Every seed's scores, models in ranked order, so the spread behind each mean ± std is visible."""
    if runs is None or runs.empty:
        return []
    columns = [c for c in ("model", "seed", "registered_version", "val_accuracy", "val_f1_macro", "test_accuracy",
                           "test_f1_macro") if c in runs.columns]
    rank = {model: k for k, model in enumerate(order)}
    ordered = runs.assign(_rank=runs["model"].map(rank).fillna(len(rank))).sort_values(["_rank", "seed"])
    rows = [[_fmt(r[c]) for c in columns] for r in ordered.to_dict("records")]
    return ["## Runs (every seed)", "", _markdown_table(columns, rows)]


def render(ranked: pd.DataFrame, runs: pd.DataFrame | None, decision: dict, confusion: pd.DataFrame | None,
           min_improvement: float = 0.0, costs: pd.DataFrame | None = None, budget: float = 0.0,
           training: dict[str, training_notes.ModelHistory] | None = None) -> str:
    """report.md: the table, paired comparisons, confused classes, how each model trained (`training`, per model,
    from comparison.training_histories), test figures, the promotion and why."""
    rows = ranked.to_dict("records")
    if not rows:
        return "# AG News model comparison\n\nNo models to compare.\n"
    # the gate's own record wins: it is the threshold the decision was actually taken with
    threshold = _num(decision.get("min_improvement"))
    threshold = min_improvement if threshold is None else threshold
    lines = ["# AG News model comparison", "",
             f"{len(rows)} model(s) compared. Their mean validation macro F1 over seeds (not the best seed) ranks "
             "them; each model's best seed's run represents it; the promotion gate decides the registry alias; test "
             "scores are reported only. Intervals are bootstrap 95% intervals.", "",
             "## Ranking", "", _leader_sentence(rows), "", _ranking_sentence(rows), "", to_markdown(ranked)]
    lines += _paired_section(rows) + _confusion_section(confusion, str(rows[0]["model"]))
    lines += training_notes.training_section([str(r["model"]) for r in rows], training)
    lines += _test_section(rows) + wording._cost_section(costs, budget) + wording._decision_section(decision, threshold)
    lines += _runs_section(runs, [str(r["model"]) for r in rows])
    return "\n".join(lines).rstrip("\n") + "\n"
