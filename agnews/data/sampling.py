"""The stratified, seeded sample: train/validation/test/gate sizes (0: none, or every row left for train),
de-duplication (a text in two labels is dropped), per-split draws with every class present, the unlabelled rest
for distillation, and a check that no text is in two splits."""
from __future__ import annotations

import hashlib
import logging
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agnews import values
from agnews.data import ag_news, reading, task
from agnews.errors import PipelineError, cause

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test", "gate")
SIZE_PARAMS = {"train": "train_size", "validation": "val_size", "test": "test_size", "gate": "gate_size"}
ZERO_MEANS = {"gate": "no gate split", "train": "every row the other splits leave"}  # what a size of 0 asks for


# --- sizes and result ----------------------------------------------------------------------------

@dataclass(frozen=True)
class SampleSizes:
    train: int = 1000
    validation: int = 500
    test: int = 500
    gate: int = 500

    def __post_init__(self) -> None:
        for split in SPLITS:  # refused at construction, so no half-drawn sample ever exists
            object.__setattr__(self, split, _whole_size(split, getattr(self, split), task.MIN_CLASSES))

    def check_classes(self, classes: int) -> None:
        """Each split needs a row per class: checked once the label set is known, before any draw."""
        for split in SPLITS:
            _whole_size(split, getattr(self, split), classes)


COLUMNS = ("row_id", "text", "label")  # of every split prepare_data logs


def row_id(text: str) -> str:
    """Stable id of a cleaned text: the same headline gets the same id in every run and split."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def with_row_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with a (re)computed first column `row_id`, e.g. for splits logged before ids existed."""
    out = frame.drop(columns="row_id", errors="ignore")
    out.insert(0, "row_id", out["text"].map(row_id).astype(str))
    return out


def _whole_size(split: str, value: object, classes: int) -> int:
    param = SIZE_PARAMS[split]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value).is_integer():
        raise PipelineError(f"-P {param}={value} is not a whole number; pass a whole number of rows")
    value = int(value)  # 3.0 must not reach scikit-learn, which reads floats as fractions
    if split in ZERO_MEANS and value == 0:  # no promotion gate / every row the other splits left for training
        return 0
    if value < classes:
        allowed = f"0 ({ZERO_MEANS[split]}) or at least {classes}" if split in ZERO_MEANS else f"at least {classes}"
        raise PipelineError(f"-P {param}={value} must be {allowed} (one row per class)")
    return value


@dataclass
class Sample:
    splits: dict[str, pd.DataFrame]  # train, validation, test, gate; columns row_id, text, label
    rows_read: int  # rows in the source(s) before cleaning
    duplicates_removed: int  # exact duplicate texts dropped (same label)
    conflicts_removed: int  # rows of texts that carried two labels
    unlabeled: pd.DataFrame | None = None  # row_id, text: rows no split drew, labels dropped (distillation)
    task: task.Task = task.AG_NEWS  # the label set the ids index, the columns the texts came from


UNLABELED_CAP = 20_000  # the unlabelled pool prepare_data logs: enough for distillation on CPU, small on disk


# --- sampling ------------------------------------------------------------------------------------

def _deduplicate(frame: pd.DataFrame) -> tuple[pd.DataFrame, int, int]:
    """Texts with two labels go entirely; of the rest, the first occurrence of each text stays."""
    conflicting = frame.groupby("text")["label"].transform("nunique").to_numpy() > 1
    kept = frame[~conflicting]
    duplicate = kept["text"].duplicated(keep="first").to_numpy()
    if duplicate.any() or conflicting.any():
        log.warning("removed %d duplicate texts and %d rows of texts with conflicting labels",
                    duplicate.sum(), conflicting.sum())
    return kept[~duplicate], int(duplicate.sum()), int(conflicting.sum())


def _removed(duplicates: int, conflicts: int) -> str:
    parts = []
    if duplicates:
        parts.append(f"{duplicates} duplicate text{'s' * (duplicates != 1)}")
    if conflicts:
        parts.append(f"{conflicts} row{'s' * (conflicts != 1)} with conflicting labels")
    return " and ".join(parts)


def _check_size(available: int, wanted: int, what: str, source: str, removed: str = "") -> None:
    if wanted > available:
        rows = f"rows left after removing {removed} from" if removed else "rows of"
        raise PipelineError(f"{what} ({wanted} rows) exceeds the {available} {rows} {source}; "
                            "lower the sizes or use a larger dataset")


def _draw_error(split: str, n: int, frame: pd.DataFrame, labels: tuple[str, ...], reason: str,
                fix: str = "lower the sizes or add rows to the small classes") -> PipelineError:
    counts = ", ".join(f"{name} {count}" for name, count in class_counts(frame, labels).items())
    return PipelineError(f"cannot draw the {split} split ({SIZE_PARAMS[split]}={n}) stratified by label from the "
                         f"{len(frame)} rows left ({counts}): {reason}; {fix}")


def _take(frame: pd.DataFrame, split: str, n: int, seed: int,
          labels: tuple[str, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off `n` rows stratified by label, each class present; returns (taken, rest)."""
    if n == 0:
        return frame.iloc[:0], frame
    classes = len(labels)
    if 0 < len(frame) - n < classes:  # scikit-learn stratifies the rest too: it needs a row per class
        raise _draw_error(split, n, frame, labels, f"it would leave {len(frame) - n} rows, fewer than the {classes} "
                          "classes stratified sampling needs",
                          f"pass -P {SIZE_PARAMS[split]}={len(frame)} (all rows) or at most {len(frame) - classes}")
    if n == len(frame):
        taken, rest = frame, frame.iloc[:0]
    else:
        single = [name for name, count in class_counts(frame, labels).items() if count == 1]
        if single:  # scikit-learn would name the class by its id; the user knows it by name
            raise _draw_error(split, n, frame, labels, f"class(es) {', '.join(single)} have a single row, too few "
                              "to stratify", f"add rows of {', '.join(single)}, or drop the class")
        from sklearn.model_selection import train_test_split  # ~1 s of imports only prepare_data needs

        try:
            taken, rest = train_test_split(frame, train_size=n, stratify=frame["label"], random_state=seed)
        except ValueError as exc:  # e.g. a class with a single row
            raise _draw_error(split, n, frame, labels, cause(exc)) from exc
    absent = [name for name, count in class_counts(taken, labels).items() if count == 0]
    if absent:
        raise _draw_error(split, n, frame, labels, f"it would get no {', '.join(absent)} rows")
    return taken, rest


def _draw_rest(pool: pd.DataFrame, sizes: SampleSizes, seed: int,
               labels: tuple[str, ...]) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Gate, then validation, then train, from one pool; and what is left of it."""
    gate, pool = _take(pool, "gate", sizes.gate, seed, labels)
    validation, pool = _take(pool, "validation", sizes.validation, seed, labels)
    train, rest = _take(pool, "train", sizes.train or _all_left(pool, labels), seed, labels)
    return {"gate": gate, "validation": validation, "train": train}, rest


def _all_left(pool: pd.DataFrame, labels: tuple[str, ...]) -> int:
    """train_size=0: every row left (full-data training, no unlabelled pool); it needs a row of each class."""
    if len(pool) < len(labels):
        raise _draw_error("train", 0, pool, labels, f"only {len(pool)} rows are left after the other splits, fewer "
                          f"than the {len(labels)} classes", "lower val_size, test_size or gate_size, or add rows")
    return len(pool)


def _unlabeled(rest: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The rows no split drew, without their labels, capped at UNLABELED_CAP (seeded draw)."""
    if len(rest) > UNLABELED_CAP:
        rest = rest.sample(n=UNLABELED_CAP, random_state=seed)
    return with_row_ids(rest[["text"]].reset_index(drop=True))


def _task(read: reading._Labelled, options: reading.DataOptions) -> task.Task:
    return task.Task(read.labels, read.text_columns or options.columns, options.label_column, read.cleaning)


def _sample_one(source: str, read: reading._Labelled, sizes: SampleSizes, seed: int,
                options: reading.DataOptions) -> Sample:
    """One labelled table (a file, a saved Dataset): test, then gate, validation and train from what is left."""
    frame, labels = read.frame, read.labels
    task.check_every_class(frame["label"].to_numpy(), labels, source)
    sizes.check_classes(len(labels))
    pool, duplicates, conflicts = _deduplicate(frame)
    _check_size(len(pool), sizes.train + sizes.validation + sizes.test + sizes.gate,
                "train_size + val_size + test_size + gate_size", source, _removed(duplicates, conflicts))
    test, pool = _take(pool, "test", sizes.test, seed, labels)
    splits, rest = _draw_rest(pool, sizes, seed, labels)
    return _finish({"test": test, **splits}, len(frame), duplicates, conflicts, _unlabeled(rest, seed),
                   _task(read, options))


def _sample_two(source: str, parts: dict[str, reading._Labelled], sizes: SampleSizes, seed: int,
                options: reading.DataOptions) -> Sample:
    """A dataset with its own train and test splits: test from its test split, the rest from its train split."""
    labels = parts["train"].labels
    both = pd.concat([parts["test"].frame.assign(part="test"), parts["train"].frame.assign(part="train")],
                     ignore_index=True)
    task.check_every_class(both["label"].to_numpy(), labels, source)
    sizes.check_classes(len(labels))
    kept, duplicates, conflicts = _deduplicate(both)  # test first: a text in both stays in test only
    test_pool, pool = (kept[kept["part"] == part].drop(columns="part") for part in ("test", "train"))
    removed = _removed(duplicates, conflicts)
    _check_size(len(pool), sizes.train + sizes.validation + sizes.gate, "train_size + val_size + gate_size",
                f"{source}[{options.train_split}]", removed)
    _check_size(len(test_pool), sizes.test, "test_size", f"{source}[{options.test_split}]", removed)
    test = _take(test_pool, "test", sizes.test, seed, labels)[0]
    splits, rest = _draw_rest(pool, sizes, seed, labels)  # the pool comes from the train split only
    return _finish({"test": test, **splits}, len(both), duplicates, conflicts, _unlabeled(rest, seed),
                   _task(parts["train"], options))


def _finish(splits: dict[str, pd.DataFrame], rows_read: int, duplicates: int, conflicts: int,
            unlabeled: pd.DataFrame, the_task: task.Task) -> Sample:
    ordered = {name: with_row_ids(splits[name].reset_index(drop=True))[list(COLUMNS)] for name in SPLITS}
    _check_disjoint({**ordered, "unlabeled": unlabeled})
    return Sample(ordered, rows_read, duplicates, conflicts, unlabeled, the_task)


def _check_disjoint(splits: dict[str, pd.DataFrame]) -> None:
    frames = list(splits.values())
    texts = pd.concat([frame["text"] for frame in frames])
    shared = texts.duplicated().to_numpy()
    if shared.any():
        first = pd.concat([frame["row_id"] for frame in frames]).iloc[int(np.argmax(shared))]
        raise PipelineError(f"internal error: {int(shared.sum())} text(s) are in more than one split (row_id "
                            f"{first}); the sample is not disjoint, report this bug in agnews.data")


def sample_splits(data: str, sizes: SampleSizes, seed: int,
                  options: reading.DataOptions = reading.DataOptions()) -> Sample:
    """Four disjoint, stratified, seeded samples of de-duplicated texts. From the hub or a saved DatasetDict, test
    comes from its test split; from a file or a saved Dataset, all four from its rows."""
    if data.startswith(values.HUB_PREFIX):
        dataset_id = data[len(values.HUB_PREFIX):]
        return _sample_two(data, reading._read_splits(reading._load_hub(dataset_id, options), dataset_id, options),
                           sizes, seed, options)
    path = Path(data).expanduser()
    if reading._is_saved_dataset(path):
        saved = reading._load_saved(path)
        if isinstance(saved, dict):  # a DatasetDict (a dict of splits): its own train and test splits
            return _sample_two(data, reading._read_splits(saved, data, options), sizes, seed, options)
        return _sample_one(data, reading._labelled(saved.to_pandas(), data, options,
                                           reading._class_names(saved, options.label_column)), sizes, seed, options)
    return _sample_one(data, reading._read_table(path, options), sizes, seed, options)


def class_counts(frame: pd.DataFrame, labels: tuple[str, ...] = ag_news.LABELS) -> dict[str, int]:
    counts = frame["label"].value_counts()
    return {name: int(counts.get(i, 0)) for i, name in enumerate(labels)}
