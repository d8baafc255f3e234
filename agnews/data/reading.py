"""Reading any labelled text source (CSV, JSON lines, Parquet, a `save_to_disk` folder, a hub dataset) into texts
and labels, refusing what cannot be read right, and the generic cleaning. What is specific to AG News lives in
agnews.data.ag_news; the sample drawn from what is read, in agnews.data.sampling."""
from __future__ import annotations

import bz2
import csv
import dataclasses
import gzip
import io
import json
import logging
import lzma
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agnews import values
from agnews.data import ag_news, task
from agnews.data.ag_news import DEFAULT_DATA
from agnews.errors import PipelineError, cause

log = logging.getLogger(__name__)
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


def table_format(path: Path) -> tuple[str, str]:
    """(format, compression suffix): `x.jsonl.gz` -> ("jsonl", ".gz"); anything unknown reads as CSV."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in _OPENERS else ""
    kind = suffixes[-1].lstrip(".") if suffixes else ""
    return (kind if kind in ("tsv", "parquet", "jsonl", "json") else "csv"), compression


def _read_table(path: Path, options: DataOptions = DataOptions()) -> _Labelled:
    """A CSV/TSV/Parquet/JSON Lines table with a header (.gz/.bz2/.xz too), or the original headerless AG News
    CSV (class 1-4, title, description)."""
    check_is_file(path)
    kind, _ = table_format(path)
    if kind == "parquet":
        return _labelled(read_parquet(path), path, options)
    content = decode(path)
    if not content.strip():
        raise PipelineError(f"{path} has only blank lines; {FORMATS}")
    if kind in ("jsonl", "json"):
        return _labelled(read_json_lines(content, path), path, options)
    separator = "\t" if kind == "tsv" else ","
    head = first_row(content, separator, path)
    wanted = {c.lower() for c in (*options.columns, options.label_column)}
    if wanted & {v.strip().lower() for v in head}:  # a header: _labelled names the missing column
        return _labelled(read_csv(content, path, header=0, sep=separator), path, options)
    if len(head) != 3 or options.text_columns:
        if separator == ",":
            refuse_other_separator(content, path)
        raise PipelineError(f"{path} has {len(head)} columns and no header naming "
                            f"{', '.join(sorted(wanted))}; {FORMATS}")
    raw = read_csv(content, path, header=None, names=ag_news.HEADERLESS_COLUMNS, sep=separator)
    frame = ag_news.headerless_frame(raw, path, options.labels or ag_news.LABELS)
    return _Labelled(_with_texts(frame, path, task.AG_NEWS_CLEANING), options.labels or ag_news.LABELS,
                     task.AG_NEWS_CLEANING)


def read_parquet(path: Path) -> pd.DataFrame:
    try:
        import pyarrow.parquet as pq

        refuse_duplicate_columns(pq.read_schema(path).names, path)
        return pd.read_parquet(path)
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise PipelineError(f"{path} is not a readable Parquet file ({cause(exc)}); {FORMATS}") from exc


def read_json_lines(content: str, path: Path) -> pd.DataFrame:
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


def check_is_file(path: Path) -> None:
    if path.is_dir():
        raise PipelineError(f"data path {path} is a folder but not a dataset saved with save_to_disk (no "
                            f"{' or '.join(_SAVED_MARKERS)}); pass -P data=<csv, tsv, parquet or jsonl file>, such a "
                            f"folder, or {DEFAULT_DATA}")
    if not path.is_file():
        raise PipelineError(f"data file not found: {path}; pass -P data=<csv, tsv, parquet or jsonl path> "
                            f"or {DEFAULT_DATA}")
    if path.stat().st_size == 0:
        raise PipelineError(f"{path} is empty (0 bytes); {FORMATS}")


def decode(path: Path) -> str:
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


def first_row(content: str, separator: str, path: Path) -> list[str]:
    try:
        return next((row for row in csv.reader(io.StringIO(content), delimiter=separator) if row), [])
    except csv.Error as exc:  # e.g. a first field over the csv module's size limit
        raise PipelineError(f"{path} is not a readable CSV ({cause(exc)}); {FORMATS}") from exc


def refuse_other_separator(content: str, path: Path) -> None:
    """Comma parsing found no known layout; say so if another separator would have found one."""
    for separator, name in _OTHER_SEPARATORS.items():
        row = [v.strip().lower() for v in first_row(content, separator, path)]
        if {"text", "label"} <= set(row) or len(row) == 3:
            raise PipelineError(f"{path} looks {name}-separated; save it comma-separated ('text,label' columns "
                                "or the AG News format class,title,description without header)"
                                + (", or name it .tsv" if separator == "\t" else ""))


def read_csv(content: str, path: Path, **kwargs) -> pd.DataFrame:
    """A CSV/TSV as strings; a header with one name twice is refused (pandas would rename the second `name.1`)."""
    if kwargs.get("header", "infer") in (0, "infer") and "names" not in kwargs:
        refuse_duplicate_columns([c.strip() for c in first_row(content, kwargs.get("sep", ","), path)], path)
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
        raise PipelineError(f"data '{values.HUB_PREFIX}' names no dataset; pass -P data={DEFAULT_DATA} or a local csv")
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
