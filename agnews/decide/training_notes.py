"""How each model trained, in sentences for report.md: its validation curve (still rising, levelled, overfitting
after its best epoch), the interval width a model's validation rows allow, and which classes it confuses most."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

from agnews.decide import report

log = logging.getLogger(__name__)


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
    return [(e, v) for e, v in zip(history.epochs, (report._num(x) for x in values)) if v is not None]


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
        return (f"Best epoch {best} of {n}, the first: validation accuracy {report._fmt(acc.get(best))}, "
                f"macro F1 {report._fmt(f1[best])}.")
    return (f"Validation accuracy {report._fmt(acc.get(first))} → {report._fmt(acc.get(best))} "
            f"and macro F1 {report._fmt(f1[first])} → "
            f"{report._fmt(f1[best])} from epoch {first} to the best epoch, best epoch {best} of {n}.")


def _interval_width(history: ModelHistory) -> float | None:
    if history.val_f1_ci is None:
        return None
    low, high = (report._num(v) for v in history.val_f1_ci)
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
    pairs = report.confused_pairs(confusion, top=len(confusion) ** 2)
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
    who = ", ".join(x for x in (f"seed {report._fmt(history.seed)}" if history.seed is not None else "",
                                f"version {report._version(history.version)}"
                                if report._fmt(history.version) not in (report.DASH, "")
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
