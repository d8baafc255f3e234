"""Reading any labelled text source, generic cleaning, de-duplication and the stratified, seeded
train/validation/test/gate sample. What is specific to AG News lives in agnews.ag_news."""
from __future__ import annotations

import bz2
import csv
import dataclasses
import gzip
import hashlib
import io
import json
import logging
import lzma
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agnews import ag_news, task
from agnews.ag_news import DEFAULT_DATA
from agnews.errors import PipelineError, cause

log = logging.getLogger(__name__)

HUB_PREFIX = "hf:"
SPLITS = ("train", "validation", "test", "gate")
COLUMNS = ("row_id", "text", "label")
SIZE_PARAMS = {"train": "train_size", "validation": "val_size", "test": "test_size", "gate": "gate_size"}
ZERO_MEANS = {"gate": "no gate split", "train": "every row the other splits leave"}  # what a size of 0 asks for
FORMATS = "expected 'text,label' columns or the AG News format (class,title,description without header)"
_SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what datasets' save_to_disk writes into its folder

_SPACES = re.compile(r"\s+")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_OTHER_SEPARATORS = {";": "semicolon", "\t": "tab"}
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}  # pandas used to decompress these by suffix
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_OFFLINE_ERRORS = re.compile(r"Connect|Timeout|Offline")


# --- cleaning and ids ----------------------------------------------------------------------------

def clean_text(text: str) -> str:
    """Generic cleaning, for every source: whitespace runs (tabs, newlines) become one space, other control
    characters go, the ends are trimmed. No Unicode normalisation: "é" stays as the file spells it."""
    text = _CONTROLS.sub("", _SPACES.sub(" ", text))  # tabs/newlines become spaces first, the rest go
    return _SPACES.sub(" ", text).strip()


def clean_texts(texts: pd.Series, cleaning: str = "generic") -> pd.Series:
    """The cleaning a task's texts get: AG News' escapes undone first for AG News data, then the generic one."""
    texts = texts.fillna("").astype(str)
    if cleaning == task.AG_NEWS_CLEANING:
        texts = texts.map(ag_news.unescape)
    return texts.map(clean_text)


def row_id(text: str) -> str:
    """Stable id of a cleaned text: the same headline gets the same id in every run and split."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def with_row_ids(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with a (re)computed first column `row_id`, e.g. for splits logged before ids existed."""
    out = frame.drop(columns="row_id", errors="ignore")
    out.insert(0, "row_id", out["text"].map(row_id).astype(str))
    return out


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


# --- reading -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataOptions:
    """How to read a source: which columns hold the text and the label, the label set, which hub splits."""
    text_columns: tuple[str, ...] = ()  # empty: `text` (or the AG News headerless format)
    label_column: str = "label"
    labels: tuple[str, ...] = ()  # class names in id order; empty: from the data (see task.encode_labels)
    data_config: str = ""  # a hub dataset's configuration (name), e.g. "sst2" of glue
    train_split: str = "train"  # hub dataset / save_to_disk DatasetDict splits
    test_split: str = "test"

    @property
    def columns(self) -> tuple[str, ...]:
        return self.text_columns or ("text",)


@dataclass(frozen=True)
class _Labelled:
    """A source read: cleaned texts, class ids, the label set they index."""
    frame: pd.DataFrame  # text, label (id)
    labels: tuple[str, ...]
    cleaning: str = "generic"  # task.AG_NEWS_CLEANING for AG News' formats
    text_columns: tuple[str, ...] = ()  # the columns the text was joined from; (): the options' own


def _table_format(path: Path) -> tuple[str, str]:
    """(format, compression suffix): `x.jsonl.gz` -> ("jsonl", ".gz"); anything unknown reads as CSV."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in _OPENERS else ""
    kind = suffixes[-1].lstrip(".") if suffixes else ""
    return (kind if kind in ("tsv", "parquet", "jsonl", "json") else "csv"), compression


def _read_table(path: Path, options: DataOptions = DataOptions()) -> _Labelled:
    """A CSV/TSV/Parquet/JSON Lines table with a header (.gz/.bz2/.xz too), or the original headerless AG News
    CSV (class 1-4, title, description)."""
    _check_is_file(path)
    kind, _ = _table_format(path)
    if kind == "parquet":
        return _labelled(_read_parquet(path), path, options)
    content = _decode(path)
    if not content.strip():
        raise PipelineError(f"{path} has only blank lines; {FORMATS}")
    if kind in ("jsonl", "json"):
        return _labelled(_read_json_lines(content, path), path, options)
    separator = "\t" if kind == "tsv" else ","
    first_row = _first_row(content, separator, path)
    wanted = {c.lower() for c in (*options.columns, options.label_column)}
    if wanted & {v.strip().lower() for v in first_row}:  # a header: _labelled names the missing column
        return _labelled(_read_csv(content, path, header=0, sep=separator), path, options)
    if len(first_row) != 3 or options.text_columns:
        if separator == ",":
            _refuse_other_separator(content, path)
        raise PipelineError(f"{path} has {len(first_row)} columns and no header naming "
                            f"{', '.join(sorted(wanted))}; {FORMATS}")
    raw = _read_csv(content, path, header=None, names=ag_news.HEADERLESS_COLUMNS, sep=separator)
    frame = ag_news.headerless_frame(raw, path, options.labels or ag_news.LABELS)
    return _Labelled(_with_texts(frame, path, task.AG_NEWS_CLEANING), options.labels or ag_news.LABELS,
                     task.AG_NEWS_CLEANING)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        import pyarrow.parquet as pq

        refuse_duplicate_columns(pq.read_schema(path).names, path)
        return pd.read_parquet(path)
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise PipelineError(f"{path} is not a readable Parquet file ({cause(exc)}); {FORMATS}") from exc


def _read_json_lines(content: str, path: Path) -> pd.DataFrame:
    """One JSON object per line (blank lines skipped); the error names the line."""
    records = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, object_pairs_hook=lambda pairs: _no_twice(pairs, path, number))
        except PipelineError:
            raise
        except ValueError as exc:
            raise PipelineError(f"{path} line {number} is not JSON ({cause(exc)}); write one JSON object per line "
                                '(JSON Lines), e.g. {"text": "...", "label": "..."}') from exc
        if not isinstance(record, dict):
            raise PipelineError(f"{path} line {number} is a JSON {type(record).__name__}, not an object; write one "
                                'object per line, e.g. {"text": "...", "label": "..."}')
        records.append(record)
    return pd.DataFrame.from_records(records)


def _no_twice(pairs: list[tuple[str, object]], path: Path, number: int) -> dict:
    """A JSON object with one key twice: json.loads keeps the last silently; we cannot know which was meant."""
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise PipelineError(f"{path} line {number} has key {twice[0]!r} twice; keep one, so it is clear which value "
                            "is meant")
    return dict(pairs)


def refuse_duplicate_columns(columns, source: object, note: str = "") -> None:
    """Two columns of one name: which one holds the text (or the label) cannot be known; refused, not guessed."""
    names = [str(c) for c in columns]
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise PipelineError(f"{source} has {names.count(twice[0])} columns named {twice[0]!r} {note}".rstrip() +
                            "; rename or drop all but one, so it is clear which one is meant")


def _check_is_file(path: Path) -> None:
    if path.is_dir():
        raise PipelineError(f"data path {path} is a folder but not a dataset saved with save_to_disk (no "
                            f"{' or '.join(_SAVED_MARKERS)}); pass -P data=<csv, tsv, parquet or jsonl file>, such a "
                            f"folder, or {DEFAULT_DATA}")
    if not path.is_file():
        raise PipelineError(f"data file not found: {path}; pass -P data=<csv, tsv, parquet or jsonl path> "
                            f"or {DEFAULT_DATA}")
    if path.stat().st_size == 0:
        raise PipelineError(f"{path} is empty (0 bytes); {FORMATS}")


def _decode(path: Path) -> str:
    """The file as text; decoded here so that a bad byte can be located for the user."""
    try:
        with _OPENERS.get(path.suffix.lower(), open)(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise PipelineError(f"cannot read {path} ({cause(exc)}); check the file and its permissions") from exc
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PipelineError(f"{path} is not UTF-8 (line {line}, byte {exc.start}: {cause(exc)}); "
                            "re-save it as UTF-8") from exc


def _first_row(content: str, separator: str, path: Path) -> list[str]:
    try:
        return next((row for row in csv.reader(io.StringIO(content), delimiter=separator) if row), [])
    except csv.Error as exc:  # e.g. a first field over the csv module's size limit
        raise PipelineError(f"{path} is not a readable CSV ({cause(exc)}); {FORMATS}") from exc


def _refuse_other_separator(content: str, path: Path) -> None:
    """Comma parsing found no known layout; say so if another separator would have found one."""
    for separator, name in _OTHER_SEPARATORS.items():
        row = [v.strip().lower() for v in _first_row(content, separator, path)]
        if {"text", "label"} <= set(row) or len(row) == 3:
            raise PipelineError(f"{path} looks {name}-separated; save it comma-separated ('text,label' columns "
                                "or the AG News format class,title,description without header)"
                                + (", or name it .tsv" if separator == "\t" else ""))


def _read_csv(content: str, path: Path, **kwargs) -> pd.DataFrame:
    """A CSV/TSV as strings; a header with one name twice is refused (pandas would rename the second `name.1`)."""
    if kwargs.get("header", "infer") in (0, "infer") and "names" not in kwargs:
        refuse_duplicate_columns([c.strip() for c in _first_row(content, kwargs.get("sep", ","), path)], path)
    try:
        return pd.read_csv(io.StringIO(content), dtype=str, keep_default_na=False, **kwargs)
    except ValueError as exc:  # ParserError and EmptyDataError included
        raise PipelineError(f"{path} is not a readable CSV ({cause(exc)}); {FORMATS}") from exc


def _labelled(frame: pd.DataFrame, source: object, options: DataOptions,
              names: tuple[str, ...] = ()) -> _Labelled:
    """Columns, labels and texts checked; errors name the first bad data row (1-based) as the file has it.
    `names`: the label names the source itself defines (a hub dataset's ClassLabel), used unless -P labels."""
    if not options.text_columns and "text" not in frame.columns and {"title", "description"} <= set(frame.columns):
        options = dataclasses.replace(options, text_columns=("title", "description"))  # the second default
    missing = [c for c in (*options.columns, options.label_column) if c not in frame.columns]
    if missing:
        raise PipelineError(f"{source} lacks column(s) {missing} (it has {', '.join(map(str, frame.columns))}); "
                            "pass -P text_columns=<col,col> and -P label_column=<col>, or rename them 'text' and "
                            "'label'")
    if frame.empty:
        raise PipelineError(f"{source} has no data rows; add rows or pass another file")
    extra = [str(c) for c in frame.columns if c not in {*options.columns, options.label_column, "row_id"}]
    if extra:
        log.warning("%s: ignoring extra column(s) %s; only %s are used", source, extra,
                    ", ".join(map(repr, (*options.columns, options.label_column))))
    given = options.labels or names or _ag_news_names(frame, options)
    ids, labels = task.encode_labels(frame[options.label_column], source, given)
    cleaning = task.AG_NEWS_CLEANING if labels == ag_news.LABELS else "generic"
    text = _joined(frame, options.columns, source)
    return _Labelled(_with_texts(pd.DataFrame({"text": text.to_numpy(), "label": ids}), source, cleaning), labels,
                     cleaning, options.columns)


def _ag_news_names(frame: pd.DataFrame, options: DataOptions) -> tuple[str, ...]:
    """AG News' names for its documented `text,label` format (ids 0-3) read with the default columns; () for any
    other table, whose numbered labels are then named by their values."""
    default_columns = options.columns == ("text",) and options.label_column == "label"
    if default_columns and ag_news.is_text_label_format(frame.columns, frame["label"]):
        return ag_news.LABELS
    return ()


def _joined(frame: pd.DataFrame, columns: tuple[str, ...], source: object = "the data") -> pd.Series:
    """The text columns as one string per row, in the order given (AG News: title, then description). A value that
    is not a string (a JSON object or list, a number or a boolean in a Parquet or JSON column) is refused: its
    printed form is not a text anyone wrote; missing values (None, NaN) read as ""."""
    for column in columns:
        _refuse_non_strings(frame[column], column, source)
    parts = [frame[c].fillna("").astype(str) for c in columns]
    text = parts[0]
    for part in parts[1:]:
        text = text + " " + part
    return text


def _refuse_non_strings(values: pd.Series, column: str, source: object) -> None:
    if isinstance(values.dtype, pd.StringDtype):  # strings (and missing values) only
        return
    if values.dtype == object:
        wrong = values.map(lambda v: not (isinstance(v, str) or v is None or (isinstance(v, float) and v != v)))
    else:  # a whole column of numbers or booleans (Parquet, JSON)
        wrong = values.notna()
    bad = np.flatnonzero(wrong.to_numpy())
    if len(bad):
        value = values.iloc[bad[0]]
        raise PipelineError(f"{source} row {bad[0] + 1} has a {type(value).__name__} in text column {column!r} "
                            f"({str(value)[:40]!r}), not a string; write the text as a string, or pass "
                            "-P text_columns=<the columns that hold text>")


def _with_texts(frame: pd.DataFrame, source: object, cleaning: str) -> pd.DataFrame:
    text = clean_texts(frame["text"], cleaning)
    empty = np.flatnonzero(text.str.len() == 0)
    if len(empty):
        raise PipelineError(f"{source} row {empty[0] + 1} has empty text; fill it or drop the row")
    return pd.DataFrame({"text": text.to_numpy(), "label": frame["label"].astype(int).to_numpy()})


def _one_label_set(parts: dict[str, _Labelled], options: DataOptions, source: str,
                   frames: dict[str, pd.DataFrame], names: tuple[str, ...]) -> dict[str, _Labelled]:
    """Train and test parts read apart infer their own label sets; both must index one set (their union, sorted)."""
    sets = {p.labels for p in parts.values()}
    if len(sets) == 1:
        return parts
    if options.labels or names:  # given names: already one set
        return parts
    # AG News' ids in one part make the other part's numbers AG News' ids too; else the union, sorted as read
    joint = ag_news.LABELS if ag_news.LABELS in sets else task.sorted_names(set().union(*sets))
    log.info("%s: the splits' label sets differ; using their union %s", source, joint)
    return {k: _labelled(frames[k], f"{source}[{k}]", options, joint) for k in parts}


def hub_error_message(dataset_id: str, exc: BaseException) -> str:
    """One line for a failed hub load; 'offline' only when it is (set by the user, or no connection)."""
    head = f"cannot load hub dataset {dataset_id!r} ({cause(exc)})"
    if _is_offline(exc):
        return f"{head}; the hub is unreachable (offline): pass -P data=<local csv>, e.g. the AG News test.csv"
    return f"{head}; check the id, or offline pass -P data=<local csv>"


def _is_offline(exc: BaseException) -> bool:
    if any(os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"} for var in _OFFLINE_VARS):
        return True
    chain, seen = [exc], set()
    while chain:  # the connection error may sit anywhere in the cause/context chain
        error = chain.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, ConnectionError) or _OFFLINE_ERRORS.search(type(error).__name__):
            return True
        chain += [e for e in (error.__cause__, error.__context__) if e is not None]
    return False


def _load_hub(dataset_id: str, options: DataOptions):
    if not dataset_id:
        raise PipelineError(f"data '{HUB_PREFIX}' names no dataset; pass -P data={DEFAULT_DATA} or a local csv")
    import datasets  # heavy import, only needed for hub data

    try:
        return datasets.load_dataset(dataset_id, options.data_config or None)
    except Exception as exc:  # network, auth, missing cache, id or config: the user gets the type and first line
        raise PipelineError(hub_error_message(dataset_id, exc)) from exc


def _load_saved(path: Path):
    """A folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except Exception as exc:  # a half-written or foreign folder
        raise PipelineError(f"cannot load the saved dataset {path} ({cause(exc)}); pass a folder written by "
                            "save_to_disk, or a data file") from exc


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in _SAVED_MARKERS)


def _class_names(dataset, column: str) -> tuple[str, ...]:
    """The names a `datasets` ClassLabel column carries (ag_news: World, Sports, Business, Sci/Tech); () if none."""
    feature = getattr(dataset, "features", {}).get(column)
    return tuple(getattr(feature, "names", None) or ())


def _read_splits(ds, source: str, options: DataOptions) -> dict[str, _Labelled]:
    """The train and test splits of a DatasetDict (hub or save_to_disk), read and checked."""
    wanted = {"train": options.train_split, "test": options.test_split}
    missing = sorted({split for split in wanted.values() if split not in ds})
    if missing:
        raise PipelineError(f"dataset {source!r} lacks split(s) {missing} (it has {sorted(ds)}); pass "
                            "-P train_split=<name> and -P test_split=<name> from those, or -P data=<local file>")
    class_names = _class_names(ds[options.train_split], options.label_column)
    frames = {part: ds[split].to_pandas() for part, split in wanted.items()}
    if class_names and options.labels:  # -P labels orders the dataset's own names: each id mapped by its name
        _check_same_names(options.labels, class_names, source)
        frames = {part: frame.assign(**{options.label_column: frame[options.label_column].map(
            dict(enumerate(class_names)))}) for part, frame in frames.items()}
    names = () if options.labels else class_names
    parts = {part: _labelled(frames[part], f"{source}[{wanted[part]}]", options, names) for part in wanted}
    return _one_label_set(parts, options, source, frames, names)


def _check_same_names(given: tuple[str, ...], class_names: tuple[str, ...], source: str) -> None:
    """-P labels for a dataset that names its classes (a ClassLabel) may reorder those names, never rename them:
    renaming by position would call one class by another's name."""
    if set(given) != set(class_names):
        unknown, absent = sorted(set(given) - set(class_names)), sorted(set(class_names) - set(given))
        raise PipelineError(
            f"-P labels={','.join(given)} is not the set of class names dataset {source!r} defines "
            f"({', '.join(class_names)}): " + "; ".join(filter(None, (
                f"not in the dataset: {', '.join(unknown)}" if unknown else "",
                f"missing: {', '.join(absent)}" if absent else ""))) +
            "; pass those names in the order you want, or leave -P labels empty")


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


def _task(read: _Labelled, options: DataOptions) -> task.Task:
    return task.Task(read.labels, read.text_columns or options.columns, options.label_column, read.cleaning)


def _sample_one(source: str, read: _Labelled, sizes: SampleSizes, seed: int, options: DataOptions) -> Sample:
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


def _sample_two(source: str, parts: dict[str, _Labelled], sizes: SampleSizes, seed: int,
                options: DataOptions) -> Sample:
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


def sample_splits(data: str, sizes: SampleSizes, seed: int, options: DataOptions = DataOptions()) -> Sample:
    """Four disjoint, stratified, seeded samples of de-duplicated texts. From the hub or a saved DatasetDict, test
    comes from its test split; from a file or a saved Dataset, all four from its rows."""
    if data.startswith(HUB_PREFIX):
        dataset_id = data[len(HUB_PREFIX):]
        return _sample_two(data, _read_splits(_load_hub(dataset_id, options), dataset_id, options), sizes, seed,
                           options)
    path = Path(data).expanduser()
    if _is_saved_dataset(path):
        saved = _load_saved(path)
        if isinstance(saved, dict):  # a DatasetDict (a dict of splits): its own train and test splits
            return _sample_two(data, _read_splits(saved, data, options), sizes, seed, options)
        return _sample_one(data, _labelled(saved.to_pandas(), data, options,
                                           _class_names(saved, options.label_column)), sizes, seed, options)
    return _sample_one(data, _read_table(path, options), sizes, seed, options)


def class_counts(frame: pd.DataFrame, labels: tuple[str, ...] = ag_news.LABELS) -> dict[str, int]:
    counts = frame["label"].value_counts()
    return {name: int(counts.get(i, 0)) for i, name in enumerate(labels)}
