"""The comparison written for people: the markdown table with intervals and report.md, whose sentences are
computed from the numbers (who leads, whether significantly, how each model trained, what gets confused, what the
gate decided)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from agnews import stats, vocab

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


# --- how each model trained: its best seed's run, epoch by epoch ---

OVERFIT_EPOCHS = 2  # validation loss rising this many consecutive epochs after its minimum, training loss falling


@dataclass
class ModelHistory:
    """What the per-model section reads (comparison.training_histories builds it): the run that represents the
    model (its best seed's) epoch by epoch, one value per entry of `epochs` (NaN where not logged), and its
    validation confusion matrix (true classes as rows, predicted as columns, class names on both)."""
    epochs: list[int]
    val_accuracy: list[float]
    val_f1_macro: list[float]
    val_loss: list[float] = field(default_factory=list)  # empty: not logged
    train_loss: list[float] = field(default_factory=list)
    best_epoch: int | None = None  # the run's own best_epoch; None: the first epoch with the highest val macro F1
    seed: int | None = None
    version: str = ""
    val_f1_ci: tuple[float, float] | None = None  # the model's validation macro F1 95% interval (its width)
    confusion: pd.DataFrame | None = None


def _points(history: ModelHistory, name: str) -> list[tuple[int, float]]:
    """(epoch, value) for the epochs where `name` has a finite value."""
    values = getattr(history, name) or []
    return [(e, v) for e, v in zip(history.epochs, (_num(x) for x in values)) if v is not None]


def _best_epoch(history: ModelHistory) -> int | None:
    f1 = _points(history, "val_f1_macro")
    if history.best_epoch is not None and history.best_epoch in dict(f1):
        return int(history.best_epoch)
    return max(f1, key=lambda p: p[1])[0] if f1 else None  # max keeps the first of equal values


def _progress_line(history: ModelHistory) -> str | None:
    """Validation accuracy and macro F1 from the first epoch to the best, and 'best epoch k of N'."""
    best, f1, acc = _best_epoch(history), dict(_points(history, "val_f1_macro")), dict(_points(history, "val_accuracy"))
    if best is None:
        return None
    first, n = min(f1), max(f1)
    if best == first:
        return (f"Best epoch {best} of {n}, the first: validation accuracy {_fmt(acc.get(best))}, "
                f"macro F1 {_fmt(f1[best])}.")
    return (f"Validation accuracy {_fmt(acc.get(first))} → {_fmt(acc.get(best))} and macro F1 {_fmt(f1[first])} → "
            f"{_fmt(f1[best])} from epoch {first} to the best epoch, best epoch {best} of {n}.")


def _interval_width(history: ModelHistory) -> float | None:
    if history.val_f1_ci is None:
        return None
    low, high = (_num(v) for v in history.val_f1_ci)
    return None if low is None or high is None else high - low


def still_rising(history: ModelHistory) -> bool:
    """The best epoch is the last one and the last epoch gained validation macro F1 over the one before."""
    f1 = _points(history, "val_f1_macro")
    return len(f1) >= 2 and _best_epoch(history) == f1[-1][0] and f1[-1][1] - f1[-2][1] > 0


def _trend_line(history: ModelHistory) -> str | None:
    """Whether the curve was still rising at the last epoch, the last gain set against the validation interval."""
    f1 = _points(history, "val_f1_macro")
    if not f1:
        return None
    if len(f1) < 2:
        return f"Only epoch {f1[0][0]} was validated, so the curve shows no trend."
    (before, previous), (last, value) = f1[-2], f1[-1]
    gain, width, best = value - previous, _interval_width(history), _best_epoch(history)
    if still_rising(history):
        versus = ""
        if width is not None:
            versus = (f", more than the width of its validation interval ({width:.4f})" if gain > width else
                      f", less than the width of its validation interval ({width:.4f}), so that last step alone "
                      "could be noise")
        return (f"Still rising at the last epoch: macro F1 {gain:+.4f} from epoch {before} to {last}, the best "
                f"epoch being the last{versus}; more epochs may help.")
    if best != last:
        return (f"Not rising at the end: the best epoch ({best}) came before the last ({last}), which changed macro "
                f"F1 by {gain:+.4f}.")
    return f"The last epoch is the best but gained nothing over epoch {before} (macro F1 {gain:+.4f})."


def overfitting(history: ModelHistory) -> tuple[int, int, int] | None:
    """(minimum epoch, first epoch of the rise, last epoch of the rise) of the first stretch after validation loss's
    minimum where it rose OVERFIT_EPOCHS or more consecutive epochs while training loss fell across the stretch;
    None when there is none (or the losses were not logged)."""
    val, train = _points(history, "val_loss"), dict(_points(history, "train_loss"))
    if len(val) < OVERFIT_EPOCHS + 1:
        return None
    lowest = min(range(len(val)), key=lambda k: val[k][1])  # the first of equal minima
    k = lowest
    while k < len(val) - 1:
        end = k
        while end + 1 < len(val) and val[end + 1][1] > val[end][1]:
            end += 1
        start_epoch, end_epoch = val[k][0], val[end][0]
        falls = start_epoch in train and end_epoch in train and train[end_epoch] < train[start_epoch]
        if end - k >= OVERFIT_EPOCHS and falls:
            return val[lowest][0], start_epoch, end_epoch
        k = end + 1 if end > k else k + 1
    return None


def _overfitting_line(history: ModelHistory) -> str:
    val, train = dict(_points(history, "val_loss")), dict(_points(history, "train_loss"))
    if len(val) < 2:
        return "Validation loss was not logged for enough epochs to check for overfitting."
    found = overfitting(history)
    lowest = min(val, key=val.get)
    if found is None:
        return (f"No sign of overfitting: validation loss (lowest at epoch {lowest}, {val[lowest]:.4f}) did not rise "
                f"for {OVERFIT_EPOCHS} or more consecutive epochs after its minimum while training loss fell.")
    lowest, start, end = found
    where = (f"after its minimum at epoch {lowest}" if start == lowest else
             f"after its minimum at epoch {lowest} ({val[lowest]:.4f}), from epoch {start}")
    return (f"Overfitting: validation loss rose for {sum(1 for e in val if start < e <= end)} consecutive epochs "
            f"{where} ({val[start]:.4f} at epoch {start} → {val[end]:.4f} at epoch {end}) while training loss fell "
            f"({train[start]:.4f} → {train[end]:.4f}).")


def most_confused(confusion: pd.DataFrame | None) -> list[tuple[str, str, int, int]]:
    """The class pair(s) with the largest off-diagonal count, both directions summed (all of them on a tie)."""
    if confusion is None or confusion.empty:
        return []
    pairs = confused_pairs(confusion, top=len(confusion) ** 2)
    return [p for p in pairs if p[2] + p[3] == pairs[0][2] + pairs[0][3]] if pairs else []


def _pair(a: str, b: str) -> str:
    return f"{a} ↔ {b}"


def _confused_line(history: ModelHistory) -> str:
    if history.confusion is None or history.confusion.empty:
        return "No validation predictions, so its most-confused classes are unknown."
    total, top = int(history.confusion.to_numpy().sum()), most_confused(history.confusion)
    if not top:
        return f"No validation row of {total} was misclassified."
    parts = [f"{_pair(a, b)}, {ab + ba} of {total} validation rows ({ab} {a} predicted as {b}, {ba} {b} "
             f"predicted as {a})" for a, b, ab, ba in top]
    return f"Most confused: {' and, tied, '.join(parts)}."


def _shared_sentence(order: list[str], training: dict[str, ModelHistory]) -> str | None:
    """Whether one pair is the most confused of every model (tied pairs count for each)."""
    if len(order) < 2:
        return None
    tops = {m: most_confused(training[m].confusion) for m in order}
    shared = set.intersection(*({frozenset(p[:2]) for p in top} for top in tops.values()))
    if shared:
        names = [_pair(a, b) for a, b, _, _ in tops[order[0]] if frozenset((a, b)) in shared]
        verb = "is the most-confused pair" if len(names) == 1 else "are the most-confused pairs"
        return f"{' and '.join(names)} {verb} shared by every model ({len(order)} of {len(order)})."

    def named(model: str) -> str:
        if training[model].confusion is None or training[model].confusion.empty:
            return "unknown"
        return " / ".join(_pair(a, b) for a, b, _, _ in tops[model]) or "no errors"

    listed = "; ".join(f"{m}: {named(m)}" for m in order)
    return f"No most-confused pair is shared by every model ({listed})."


def _model_lines(model: str, history: ModelHistory) -> list[str]:
    who = ", ".join(x for x in (f"seed {_fmt(history.seed)}" if history.seed is not None else "",
                                f"version {_version(history.version)}" if _fmt(history.version) not in (DASH, "")
                                else "") if x)
    lines = [f"### {model}" + (f" ({who})" if who else ""), ""]
    if not _points(history, "val_f1_macro"):
        return lines + ["No per-epoch validation metrics were logged for this run.", "", f"- {_confused_line(history)}",
                        ""]
    found = [_progress_line(history), _trend_line(history), _overfitting_line(history), _confused_line(history)]
    return lines + [f"- {line}" for line in found if line] + [""]


def training_section(order: list[str], training: dict[str, ModelHistory] | None) -> list[str]:
    """Per model, from its best seed's per-epoch metrics: first to best epoch, still rising, overfitting, the
    most-confused pair; then whether every model shares that pair."""
    order = [m for m in order if training and m in training]
    if not order:
        return []
    lines = ["## Training, model by model", "",
             "Each model's best seed's run (the one that represents it), epoch by epoch on the validation rows. "
             f"Overfitting here means validation loss rising for {OVERFIT_EPOCHS} or more consecutive epochs after "
             "its minimum while training loss falls.", ""]
    for model in order:
        lines += _model_lines(model, training[model])
    shared = _shared_sentence(order, training)
    return lines + ([shared, ""] if shared else [])


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


# --- the promotion decision ---

def _model_version(decision: dict, role: str) -> str:
    """`version 5 (distilbert)` from candidate_/incumbent_ keys; `the candidate` when the version is missing."""
    version, model = decision.get(f"{role}_version"), decision.get(f"{role}_model")
    who = f" ({model})" if _fmt(model) not in (DASH, "") else ""
    return (f"the {role}" if _fmt(version) in (DASH, "") else f"version {_version(version)}") + who


def _gate_scope(decision: dict) -> str:
    rows, excluded = _num(decision.get("gate_rows")), _num(decision.get("gate_excluded"))
    scope = f"on {int(rows)} gate rows" if rows is not None else "on the gate rows"
    notes = []
    if excluded:
        notes.append(f"{int(excluded)} excluded because either model trained, validated or distilled on them")
    elif excluded == 0:
        notes.append("none excluded")
    k, level = _num(decision.get("gate_decision_number")), _num(decision.get("gate_confidence"))
    if k is not None and level is not None:  # error-rate spending: every decision on these rows narrows alpha
        notes.append(f"decision {int(k)} made on these gate rows, so a {level:.2%} interval")
    return scope + (f" ({'; '.join(notes)})" if notes else "")


def _gate_numbers(decision: dict, incumbent: str) -> str:
    """`...lead over version 3 is 0.012 [-0.004, 0.030] (macro F1 0.91 vs 0.90 on the gate rows; McNemar p ...)`."""
    delta = _ci(decision.get("gate_delta_f1_macro"), decision.get("gate_delta_ci_low"),
                decision.get("gate_delta_ci_high"), 3)
    text = f"{_gate_scope(decision)} the candidate's macro F1 lead over {incumbent} is {delta}"
    extras = []
    cand, inc = _num(decision.get("candidate_gate_f1_macro")), _num(decision.get("incumbent_gate_f1_macro"))
    if cand is not None and inc is not None:
        extras.append(f"macro F1 {cand:.3f} vs {inc:.3f} on the gate rows")
    if _num(decision.get("gate_mcnemar_p")) is not None:
        extras.append(f"McNemar {_p_is(decision['gate_mcnemar_p'])}")
    return text + (f" ({'; '.join(extras)})" if extras else "")


def _lower_end(decision: dict, min_improvement: float) -> tuple[bool | None, str]:
    """Whether the gate interval's lower end clears min_improvement, and the clause saying so."""
    low = _num(decision.get("gate_delta_ci_low"))
    if low is None:
        return None, f"its lower end is missing, so it cannot be shown above min_improvement {min_improvement:.3f}"
    above = low > min_improvement
    return above, f"its lower end {low:.3f} is {'' if above else 'not '}above min_improvement {min_improvement:.3f}"


def _gated(decision: dict, min_improvement: float, promoted: bool) -> str:
    """promoted / kept_incumbent: the gate numbers, the rule's verdict on them, and who holds which alias."""
    candidate, incumbent = _model_version(decision, "candidate"), _model_version(decision, "incumbent")
    above, clause = _lower_end(decision, min_improvement)
    if above is not None and above != promoted:  # the words follow the numbers; flag a record that disagrees
        log.warning("decision %s disagrees with its gate numbers (%s)", decision.get("decision"), clause)
        clause += ", which disagrees with the recorded decision"
    outcome = (f"{candidate} takes `champion` from {incumbent}" if promoted
               else f"{incumbent} keeps `champion` and {candidate} gets `challenger`")
    return f"{_gate_numbers(decision, incumbent)}; {clause}, so {outcome}."


def _first_champion(decision: dict, min_improvement: float) -> str:
    return (f"there was no `champion` yet, so {_model_version(decision, 'candidate')} takes `champion` "
            "without a gate comparison.")


def _already_champion(decision: dict, min_improvement: float) -> str:
    return (f"the candidate {_model_version(decision, 'candidate')} is the incumbent's own version, "
            "already `champion`; nothing changed.")


def _over_budget(decision: dict, min_improvement: float) -> str:
    reason = str(decision.get("reason") or "no model fits the latency budget")
    return f"{_model_version(decision, 'candidate')} is not promoted: {reason}."


_WORDING: dict[str, Callable[[dict, float], str]] = {
    vocab.FIRST_CHAMPION: _first_champion,
    vocab.PROMOTED: lambda d, m: _gated(d, m, promoted=True),
    vocab.KEPT_INCUMBENT: lambda d, m: _gated(d, m, promoted=False),
    vocab.ALREADY_CHAMPION: _already_champion,
    vocab.OVER_BUDGET: _over_budget,
    vocab.UNDECIDED: lambda d, m: (f"{_model_version(d, 'candidate')} is not compared: "
                                   f"{d.get('reason') or 'no gate rows'}."),
}


# --- serving cost ---

_COST_HEADER = ["model", "variant", "computes in", "version", "test_f1_macro [95% CI]", "val_f1_macro", "p50 ms",
                "p95 ms", "texts/s (batch 32)", "size MB", "peak MB", "Pareto"]


def frontier_table(costs: pd.DataFrame) -> str:
    rows = [[str(r["model"]), str(r["variant"]), str(r.get("compute") or DASH), _version(r.get("registered_version")),
             _metric_ci(r, "test_f1_macro"),
             _fmt(r["val_f1_macro"]), _fmt(r["latency_p50_ms"], 2), _fmt(r["latency_p95_ms"], 2),
             _fmt(r["throughput_per_s"], 0), _fmt(r["model_size_mb"], 1), _fmt(r["peak_memory_mb"], 0),
             "yes" if r.get("pareto") else ""] for r in costs.sort_values("latency_p50_ms").to_dict("records")]
    return _markdown_table(_COST_HEADER, rows)


def _int8_lines(costs: pd.DataFrame) -> list[str]:
    """int8 against its own fp32 model on the same test rows: the paired difference and whether it is significant."""
    lines = []
    for r in costs[costs["variant"] == "int8"].to_dict("records"):
        if _num(r.get("delta_f1_macro")) is None:
            continue
        low, high = _num(r.get("delta_ci_low")), _num(r.get("delta_ci_high"))
        significant = stats.excludes_zero(low, high)
        agreement = _num(r.get("agreement"))
        lines.append(f"- **{r['model']}** int8 vs fp32 on the test rows: Δ macro F1 "
                     f"{_ci(r['delta_f1_macro'], low, high, 4)}, McNemar {_p_is(r.get('mcnemar_p'))}: "
                     f"{'significant' if significant else 'not significant'}"
                     + (f"; same label on {agreement:.1%} of rows" if agreement is not None else "") + ".")
    return lines + [""] if lines else []


def _budget_sentence(costs: pd.DataFrame, budget: float) -> str:
    picked = costs[costs["budget_pick"]] if "budget_pick" in costs else costs.iloc[:0]  # comparison.frontier's pick
    if picked.empty:
        return (f"No model or variant fits the latency budget of {budget:g} ms (p50 at batch 1); "
                "none can be promoted for it.")
    pick = picked.iloc[0]
    return (f"Within the latency budget of {budget:g} ms (p50 at batch 1), the best by validation macro F1 is "
            f"**{pick['model']} ({pick['variant']})** with {_fmt(pick['val_f1_macro'])} at "
            f"{_fmt(pick['latency_p50_ms'], 2)} ms; its test macro F1 is {_metric_ci(pick.to_dict(), 'test_f1_macro')} "
            "(reported only). The deploy pick may differ from the champion: only fp32 train runs go through the "
            "gate, and the gate may keep the incumbent.")


def _conditions_sentence(costs: pd.DataFrame) -> str:
    """Where the latencies come from; timings under different conditions are said to be not comparable."""
    where = [str(c) for c in costs.get("latency_measured_by", pd.Series(dtype=str)).dropna() if str(c)]
    by_compare = sorted({w for w in where if w.startswith("compare on ")})
    if by_compare:
        return f"Timed again for the latency budget by {by_compare[0]}: every row alike."
    conditions = sorted({w.split(" on ", 1)[-1] for w in where})
    if len(conditions) <= 1:
        return "Timed by each model's own evaluate run" + (f" on {conditions[0]}." if conditions else ".")
    return ("Timed by each model's own evaluate run, on different machines or thread counts (" +
            "; ".join(conditions) + "): **not comparable** as they stand; a latency budget (-P latency_budget_ms) "
            "times them again alike.")


def _cost_section(costs: pd.DataFrame | None, budget: float) -> list[str]:
    if costs is None or costs.empty:
        return []
    lines = ["## Serving cost", "",
             "After warm-up: latency at batch 1 over 100 test texts, throughput at batch 32, peak memory the model "
             "added to the process, size of the logged model. `Pareto`: no other row is both at least as fast and "
             "at least as accurate on test.", "", _conditions_sentence(costs), "", frontier_table(costs)]
    lines += _int8_lines(costs)
    if budget:
        lines += [_budget_sentence(costs, budget), ""]
    return lines


def decision_sentence(decision: dict, min_improvement: float = 0.0) -> str:
    """The promotion outcome and why, written from the gate's record (any branch, any missing key)."""
    name = str(decision.get("decision", "unknown"))
    wording = _WORDING.get(name)
    if wording is None:
        return f"`{name}`: not a known decision ({', '.join(DECISIONS)}); the registry aliases are not described."
    return f"`{name}`: {wording(decision, min_improvement)}"


def _decision_section(decision: dict, min_improvement: float) -> list[str]:
    return ["## Promotion decision", "",
            f"Rule: the candidate takes `champion` only if the lower end of its gate interval (candidate minus "
            f"incumbent macro F1) is above min_improvement {min_improvement:.3f}; otherwise the incumbent keeps "
            "`champion` and the candidate gets `challenger`. The k-th decision on one gate sample uses a "
            "1 - 0.05/2^(k-1) interval, so all decisions on those rows together promote a model that is not better "
            "with at most 5% chance.", "",
            decision_sentence(decision, min_improvement), ""]


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
           training: dict[str, ModelHistory] | None = None) -> str:
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
    lines += training_section([str(r["model"]) for r in rows], training)
    lines += _test_section(rows) + _cost_section(costs, budget) + _decision_section(decision, threshold)
    lines += _runs_section(runs, [str(r["model"]) for r in rows])
    return "\n".join(lines).rstrip("\n") + "\n"
