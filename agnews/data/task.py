"""The task: the label set (names and their order), the text columns joined into a model's input, the label column,
and the metric-safe form of each label name. Written once on the data run (`data/labels.json`), read by every later
step, so that train, evaluate, compare, distill and predict agree on what class 2 is."""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from agnews.data import ag_news
from agnews.errors import PipelineError

TASK_FILE = "labels.json"  # under the data run's data/ folder, next to the splits
MIN_CLASSES = 2
AG_NEWS_CLEANING = "ag_news"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")  # what MLflow metric names, file names and CSV headers all accept
# A class named like an average would overwrite it: `test_f1_macro` is the macro F1, not the class "macro".
_RESERVED = frozenset({"macro", "micro", "weighted"})


@dataclass(frozen=True)
class Task:
    labels: tuple[str, ...]  # class names, index = class id
    text_columns: tuple[str, ...] = ("text",)  # joined with a space, in this order
    label_column: str = "label"
    cleaning: str = "generic"  # "ag_news": the corpus' escapes are undone first (agnews.data.ag_news.unescape)
    metric_names: tuple[str, ...] = field(default=(), compare=False)  # derived from labels

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "text_columns", tuple(self.text_columns))
        object.__setattr__(self, "metric_names", metric_safe_names(self.labels))

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    @property
    def prob_columns(self) -> list[str]:
        return [f"prob_{name}" for name in self.metric_names]

    def to_dict(self) -> dict:
        return {"labels": list(self.labels), "text_columns": list(self.text_columns),
                "label_column": self.label_column, "cleaning": self.cleaning, "metric_names": list(self.metric_names)}

    @classmethod
    def from_dict(cls, values: dict) -> "Task":
        labels = tuple(values["labels"])
        # labels.json written before "cleaning" existed: only AG News' label set was cleaned as AG News
        cleaning = values.get("cleaning") or (AG_NEWS_CLEANING if labels == ag_news.LABELS else "generic")
        return cls(labels, tuple(values.get("text_columns") or ("text",)), values.get("label_column") or "label",
                   cleaning)


# --- names -----------------------------------------------------------------------------------------------------

def metric_safe_names(labels: tuple[str, ...]) -> tuple[str, ...]:
    """One ASCII name per class for metric keys, column names and files: accents dropped ("Économie" ->
    "Economie"), other characters "_" ("Sci/Tech" -> "Sci_Tech"); a name left empty ("体育") becomes class_<id>,
    an average's name gets class_ in front, and a name taken already gets _<id> appended."""
    out: list[str] = []
    for i, name in enumerate(labels):
        ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
        safe = _UNSAFE.sub("_", ascii_name).strip("_") or f"class_{i}"
        if safe.lower() in _RESERVED:
            safe = f"class_{safe}"
        if safe in out:
            safe = f"{safe}_{i}"
        out.append(safe)
    return tuple(out)


def parse_labels(value: str) -> tuple[str, ...]:
    """`-P labels`: class names in class-id order, comma-separated or a JSON list (names holding commas); empty:
    inferred from the data."""
    value = value.strip()
    if not value:
        return ()
    if value.startswith("["):
        try:
            names = json.loads(value)
        except ValueError as exc:
            raise PipelineError(f"-P labels={value} is not a JSON list ({exc.msg}); pass e.g. "
                                '\'["World", "Sports"]\' or a comma list World,Sports') from None
        if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
            raise PipelineError(f"-P labels={value} must list class names; pass e.g. '[\"neg\", \"pos\"]'")
    else:
        names = value.split(",")
    names = [str(n).strip() for n in names]
    if any(not n for n in names):
        raise PipelineError(f"-P labels={value} has an empty class name; list each class once, e.g. labels=neg,pos")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise PipelineError(f"-P labels={value} lists {', '.join(twice)} more than once; list each class once")
    if len(names) < MIN_CLASSES:
        raise PipelineError(f"-P labels={value} names {len(names)} class; a classifier needs at least "
                            f"{MIN_CLASSES}, e.g. labels=neg,pos")
    return tuple(names)


def parse_columns(value: str, param: str = "text_columns") -> tuple[str, ...]:
    """`-P text_columns=headline,body`: the columns joined (with a space) into the text; each once."""
    columns = [c.strip() for c in value.split(",") if c.strip()]
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise PipelineError(f"-P {param}={value} lists {', '.join(twice)} more than once; list each column once")
    return tuple(columns)


AG_NEWS = Task(ag_news.LABELS, cleaning=AG_NEWS_CLEANING)  # what a data run from before labels.json holds


# --- labels in data --------------------------------------------------------------------------------------------

def encode_labels(values: pd.Series, source: object,
                  given: tuple[str, ...] = ()) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class ids of a label column and the label set they index.

    `given` (-P labels, a hub dataset's ClassLabel names, or AG News' names for its formats): values are those
    names, or their ids 0..K-1. Else the label set is the distinct values, sorted (numbers as numbers, "2" before
    "10"; an order that does not depend on the file's row order), and each value is its own name."""
    text = values.astype("string").fillna("").str.strip()
    _refuse_blank(text, source)
    if given:
        return _encode_given(text, values, source, given), given
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().any() and not numbers.notna().all():
        row = int(np.flatnonzero(numbers.isna().to_numpy())[0])
        number_row = int(np.flatnonzero(numbers.notna().to_numpy())[0])
        raise PipelineError(f"{source} row {row + 1} has label '{values.iloc[row]}' but row {number_row + 1} has the "
                            f"number '{values.iloc[number_row]}'; use class names throughout, or numbers with "
                            "-P labels=<names in id order>")
    if numbers.notna().all() and (numbers % 1 == 0).all():  # integer ids: "1.0" and "1" are one class, "1"
        text = numbers.astype("int64").astype(str)
    labels = sorted_names(text.unique())
    if len(labels) < MIN_CLASSES:
        raise PipelineError(f"{source} has a single class ({labels[0]!r}); a classifier needs at least "
                            f"{MIN_CLASSES}: add rows of other classes or pass another file")
    return text.map({name: i for i, name in enumerate(labels)}).astype(int).to_numpy(), labels


def sorted_names(names: object) -> tuple[str, ...]:
    """Label names in id order when the data does not give one: integers numerically ("2" before "10"), any other
    set as strings."""
    names = [str(n) for n in names]
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names))


_NUMBER = re.compile(r"-?\d+(\.\d*)?")


def numeric_names(names: tuple[str, ...]) -> bool:
    """Any class named like a number (star ratings 1-5, a CSV's 1-4): then numbers in data are names, never ids."""
    return any(_NUMBER.fullmatch(str(n).strip()) for n in names)


def label_ids(values: pd.Series, names: tuple[str, ...]) -> pd.Series:
    """Class ids (float, NaN where unknown) of label values, matched to the task by name first: as the data run
    recorded them, then case-insensitively or in their metric-safe form (where that names one class), then a number
    equal to a numeric name ("1.0" is class "1"). Numbers 0..K-1 are read as ids only when no class is named like a
    number and no value of the column is a name: a position must never shift a name. One rule for prepare_data,
    predict and monitoring."""
    text = values.astype("string").fillna("").str.strip()
    ids = text.map({name: i for i, name in enumerate(names)}).astype(float)
    folded: dict[str, set[int]] = {}
    for i, (name, safe) in enumerate(zip(names, metric_safe_names(tuple(names)))):
        for key in (name.lower(), safe.lower()):
            folded.setdefault(key, set()).add(i)
    ids = ids.fillna(text.str.lower().map({k: next(iter(v)) for k, v in folded.items() if len(v) == 1}))
    numbers = pd.to_numeric(text, errors="coerce")
    if numeric_names(names):
        by_value = {float(n): i for i, n in enumerate(names) if _NUMBER.fullmatch(str(n).strip())}
        return ids.fillna(numbers.map(by_value))
    if ids.notna().any():
        return ids
    return numbers.where(numbers.isin(range(len(names))))


def _encode_given(text: pd.Series, values: pd.Series, source: object, given: tuple[str, ...]) -> np.ndarray:
    ids = label_ids(text, given)
    positions = "" if numeric_names(given) else f" (numbers 0-{len(given) - 1} are read as those classes in order)"
    _refuse_unknown(ids, values, source, f"-P labels lists {', '.join(given)}; add the class there or fix the "
                                         f"row{positions}")
    return ids.astype(int).to_numpy()


def _refuse_blank(text: pd.Series, source: object) -> None:
    blank = np.flatnonzero((text == "").to_numpy())
    if len(blank):
        raise PipelineError(f"{source} row {blank[0] + 1} has no label; fill it or drop the row")


def _refuse_unknown(ids: pd.Series, values: pd.Series, source: object, hint: str) -> None:
    bad = np.flatnonzero(ids.isna().to_numpy())
    if len(bad):
        raise PipelineError(f"{source} row {bad[0] + 1} has unknown label '{values.iloc[bad[0]]}'; {hint}")


def check_every_class(ids: np.ndarray, labels: tuple[str, ...], source: object) -> None:
    """Stratified splits need every class: a label with no rows (a typo in -P labels, or 0/1 labels read as AG
    News' four classes) is refused before sampling."""
    absent = [name for i, name in enumerate(labels) if not (ids == i).any()]
    if absent:
        raise PipelineError(f"{source} has no rows of class(es) {', '.join(absent)} (label set: {', '.join(labels)}); "
                            "pass -P labels=<only the classes the data has, in id order>")


def differences(expected: Task, other: Task) -> list[str]:
    """How `other` is another task than `expected`: the label names and order, the text columns a model reads, the
    label column, the cleaning of the text. Empty when they are one task."""
    out = []
    if expected.labels != other.labels:
        out.append(f"has labels [{', '.join(other.labels)}], not [{', '.join(expected.labels)}]")
    if expected.text_columns != other.text_columns:
        out.append(f"reads text columns [{', '.join(other.text_columns)}], not [{', '.join(expected.text_columns)}]")
    if expected.label_column != other.label_column:
        out.append(f"has label column {other.label_column!r}, not {expected.label_column!r}")
    if expected.cleaning != other.cleaning:
        out.append(f"cleans text as {other.cleaning!r}, not {expected.cleaning!r}")
    return out


def check_same(expected: Task, other: Task, what: str, fix: str) -> None:
    """Two runs must be one task: one label set in one order, read from the same columns, cleaned alike; else their
    metrics and predictions do not pair, and a model of one must not be compared or promoted on the other's rows.
    Data runs written before text columns, label column and cleaning were recorded read as AG News' (`from_dict`)."""
    diffs = differences(expected, other)
    if diffs:
        raise PipelineError(f"{what} {'; '.join(diffs)}: another task; {fix}")


# --- on disk ---------------------------------------------------------------------------------------------------

def write(task: Task, folder: Path) -> Path:
    path = folder / TASK_FILE
    path.write_text(json.dumps(task.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def read(folder: Path) -> Task:
    """The task a data run's data/ folder holds; AG News for runs prepared before labels.json existed."""
    path = folder / TASK_FILE
    if not path.is_file():
        return AG_NEWS
    return Task.from_dict(json.loads(path.read_text(encoding="utf-8")))
