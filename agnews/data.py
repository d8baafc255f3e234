"""AG News loading, cleaning, de-duplication and the stratified, seeded train/validation/test/gate sample."""
from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import html
import io
import logging
import lzma
import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from agnews.errors import PipelineError, cause

log = logging.getLogger(__name__)

LABELS = ("World", "Sports", "Business", "Sci/Tech")
HUB_PREFIX = "hf:"
DEFAULT_DATA = "hf:fancyzhx/ag_news"
SPLITS = ("train", "validation", "test", "gate")
COLUMNS = ("row_id", "text", "label")
SIZE_PARAMS = {"train": "train_size", "validation": "val_size", "test": "test_size", "gate": "gate_size"}
FORMATS = "expected 'text,label' columns or the AG News format (class,title,description without header)"

# The AG corpus lost the "&" of numeric entities ("it #39;s", "US #36;5") and uses "\" for line breaks.
_NUMERIC_ENTITY = re.compile(r"(?:&| )?#(\d{1,5});")
_SPACES = re.compile(r"\s+")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SPACED_BEFORE = frozenset("\u2018\u201c\u2013\u2014")  # ‘ “ – —
_OTHER_SEPARATORS = {";": "semicolon", "\t": "tab"}
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}  # pandas used to decompress these by suffix
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_OFFLINE_ERRORS = re.compile(r"Connect|Timeout|Offline")


# --- cleaning and ids ----------------------------------------------------------------------------

def _entity_char(match: re.Match) -> str:
    number = int(match.group(1))
    if 0x80 <= number <= 0x9F:  # Windows-1252 bytes in the corpus (#146; is ’); 5 of them have no character
        char = bytes([number]).decode("cp1252", errors="ignore")
    elif 0xD800 <= number <= 0xDFFF:  # a lone surrogate cannot be written as UTF-8; as html.unescape does
        char = "\ufffd"
    else:
        char = chr(number)
    # The space stands for the lost "&" ("it #39;s"), but before an opening quote or a dash it is also the
    # usual spacing ("says #147;Hi", "up #151; again"), so it stays there; double spaces collapse later.
    return " " + char if match.group(0).startswith(" ") and char in _SPACED_BEFORE else char


def clean_text(text: str) -> str:
    """Undo the corpus' escapes: entity remnants become their characters, backslashes spaces; no control chars."""
    text = _NUMERIC_ENTITY.sub(_entity_char, text)
    text = re.sub(r"(?<![&\w])(quot|amp|lt|gt);", r"&\1;", text)  # "quot;" remnants, same loss of "&"
    text = html.unescape(text).replace("\\", " ")
    text = _CONTROLS.sub("", _SPACES.sub(" ", text))  # tabs/newlines become spaces first, the rest go
    return _SPACES.sub(" ", text).strip()


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
            object.__setattr__(self, split, _whole_size(split, getattr(self, split)))


def _whole_size(split: str, value: object) -> int:
    param = SIZE_PARAMS[split]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value).is_integer():
        raise PipelineError(f"-P {param}={value} is not a whole number; pass a whole number of rows")
    value = int(value)  # 3.0 must not reach scikit-learn, which reads floats as fractions
    if split == "gate" and value == 0:  # no promotion gate wanted
        return 0
    if value < len(LABELS):
        allowed = f"0 (no gate split) or at least {len(LABELS)}" if split == "gate" else f"at least {len(LABELS)}"
        raise PipelineError(f"-P {param}={value} must be {allowed} (one row per class)")
    return value


@dataclass
class Sample:
    splits: dict[str, pd.DataFrame]  # train, validation, test, gate; columns row_id, text, label
    rows_read: int  # rows in the source(s) before cleaning
    duplicates_removed: int  # exact duplicate texts dropped (same label)
    conflicts_removed: int  # rows of texts that carried two labels
    unlabeled: pd.DataFrame | None = None  # row_id, text: rows no split drew, labels dropped (distillation)


UNLABELED_CAP = 20_000  # the unlabelled pool prepare_data logs: enough for distillation on CPU, small on disk


# --- reading -------------------------------------------------------------------------------------

def _read_table(path: Path) -> pd.DataFrame:
    """A `text,label` CSV/Parquet (label 0-3) or the original headerless CSV (class 1-4, title, description)."""
    _check_is_file(path)
    if path.suffix.lower() == ".parquet":
        return _validate(_read_parquet(path), path)
    content = _decode(path)
    if not content.strip():
        raise PipelineError(f"{path} has only blank lines; {FORMATS}")
    first_row = _first_row(content, ",", path)
    if {"text", "label"} & {v.strip().lower() for v in first_row}:  # a header: validate names the missing column
        return _validate(_read_csv(content, path, header=0), path)
    if len(first_row) != 3:
        _refuse_other_separator(content, path)
        raise PipelineError(f"{path} has {len(first_row)} columns and no 'text,label' header; {FORMATS}")
    raw = _read_csv(content, path, header=None, names=["cls", "title", "description"])
    frame = pd.DataFrame({"text": raw["title"] + " " + raw["description"],
                          "label": pd.to_numeric(raw["cls"], errors="coerce") - 1})
    return _validate(frame, path, label_hint="class must be 1-4 in the AG News format", shown_labels=raw["cls"])


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise PipelineError(f"{path} is not a readable Parquet file ({cause(exc)}); {FORMATS}") from exc


def _check_is_file(path: Path) -> None:
    if path.is_dir():
        raise PipelineError(f"data path {path} is a folder, not a file; pass -P data=<csv or parquet path> "
                            f"or {DEFAULT_DATA}")
    if not path.is_file():
        raise PipelineError(f"data file not found: {path}; pass -P data=<csv or parquet path> or {DEFAULT_DATA}")
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
                                "or the AG News format class,title,description without header)")


def _read_csv(content: str, path: Path, **kwargs) -> pd.DataFrame:
    try:
        return pd.read_csv(io.StringIO(content), dtype=str, keep_default_na=False, **kwargs)
    except ValueError as exc:  # ParserError and EmptyDataError included
        raise PipelineError(f"{path} is not a readable CSV ({cause(exc)}); {FORMATS}") from exc


def _validate(frame: pd.DataFrame, source: object, label_hint: str = "label must be 0-3",
              shown_labels: pd.Series | None = None) -> pd.DataFrame:
    """Columns, labels and texts checked; errors name the first bad data row (1-based) as the file has it."""
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise PipelineError(f"{source} lacks column(s) {sorted(missing)}; expected 'text' and 'label' (0-3)")
    if frame.empty:
        raise PipelineError(f"{source} has no data rows; add rows or pass another file")
    extra = [str(c) for c in frame.columns if c not in COLUMNS]
    if extra:
        log.warning("%s: ignoring extra column(s) %s; only 'text' and 'label' are used", source, extra)
    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad = np.flatnonzero(~labels.isin(range(len(LABELS))))
    if len(bad):
        shown = (frame["label"] if shown_labels is None else shown_labels).iloc[bad[0]]
        raise PipelineError(f"{source} row {bad[0] + 1} has unknown label '{shown}'; "
                            f"{label_hint} ({', '.join(LABELS)})")
    text = frame["text"].fillna("").astype(str).map(clean_text)
    empty = np.flatnonzero(text.str.len() == 0)
    if len(empty):
        raise PipelineError(f"{source} row {empty[0] + 1} has empty text; fill it or drop the row")
    return pd.DataFrame({"text": text.to_numpy(), "label": labels.astype(int).to_numpy()})


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


def _load_hub(dataset_id: str) -> dict[str, pd.DataFrame]:
    if not dataset_id:
        raise PipelineError(f"data '{HUB_PREFIX}' names no dataset; pass -P data={DEFAULT_DATA} or a local csv")
    import datasets  # heavy import, only needed for hub data

    try:
        ds = datasets.load_dataset(dataset_id)
    except Exception as exc:  # network, auth, missing cache or id: the user gets the type and first line
        raise PipelineError(hub_error_message(dataset_id, exc)) from exc
    missing = {"train", "test"} - set(ds)
    if missing:
        raise PipelineError(f"hub dataset {dataset_id!r} lacks split(s) {sorted(missing)} (it has {sorted(ds)}); "
                            "pass a dataset with train and test splits, or -P data=<local csv>")
    return {split: _validate(ds[split].to_pandas(), f"{dataset_id}[{split}]") for split in ("train", "test")}


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


def _draw_error(split: str, n: int, frame: pd.DataFrame, reason: str,
                fix: str = "lower the sizes or add rows to the small classes") -> PipelineError:
    counts = ", ".join(f"{name} {count}" for name, count in class_counts(frame).items())
    return PipelineError(f"cannot draw the {split} split ({SIZE_PARAMS[split]}={n}) stratified by label from the "
                         f"{len(frame)} rows left ({counts}): {reason}; {fix}")


def _take(frame: pd.DataFrame, split: str, n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off `n` rows stratified by label, each class present; returns (taken, rest)."""
    if n == 0:
        return frame.iloc[:0], frame
    if 0 < len(frame) - n < len(LABELS):  # scikit-learn stratifies the rest too: it needs a row per class
        raise _draw_error(split, n, frame, f"it would leave {len(frame) - n} rows, fewer than the {len(LABELS)} "
                          "classes stratified sampling needs",
                          f"pass -P {SIZE_PARAMS[split]}={len(frame)} (all rows) or at most {len(frame) - len(LABELS)}")
    if n == len(frame):
        taken, rest = frame, frame.iloc[:0]
    else:
        try:
            taken, rest = train_test_split(frame, train_size=n, stratify=frame["label"], random_state=seed)
        except ValueError as exc:  # e.g. a class with a single row
            raise _draw_error(split, n, frame, cause(exc)) from exc
    absent = [name for name, count in class_counts(taken).items() if count == 0]
    if absent:
        raise _draw_error(split, n, frame, f"it would get no {', '.join(absent)} rows")
    return taken, rest


def _draw_rest(pool: pd.DataFrame, sizes: SampleSizes, seed: int) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Gate, then validation, then train, from one pool; and what is left of it."""
    gate, pool = _take(pool, "gate", sizes.gate, seed)
    validation, pool = _take(pool, "validation", sizes.validation, seed)
    train, rest = _take(pool, "train", sizes.train, seed)
    return {"gate": gate, "validation": validation, "train": train}, rest


def _unlabeled(rest: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The rows no split drew, without their labels, capped at UNLABELED_CAP (seeded draw)."""
    if len(rest) > UNLABELED_CAP:
        rest = rest.sample(n=UNLABELED_CAP, random_state=seed)
    return with_row_ids(rest[["text"]].reset_index(drop=True))


def _sample_local(data: str, sizes: SampleSizes, seed: int) -> Sample:
    frame = _read_table(Path(data).expanduser())
    pool, duplicates, conflicts = _deduplicate(frame)
    _check_size(len(pool), sizes.train + sizes.validation + sizes.test + sizes.gate,
                "train_size + val_size + test_size + gate_size", data, _removed(duplicates, conflicts))
    test, pool = _take(pool, "test", sizes.test, seed)
    splits, rest = _draw_rest(pool, sizes, seed)
    return _finish({"test": test, **splits}, len(frame), duplicates, conflicts, _unlabeled(rest, seed))


def _sample_hub(data: str, sizes: SampleSizes, seed: int) -> Sample:
    hub = _load_hub(data[len(HUB_PREFIX):])
    both = pd.concat([hub["test"].assign(part="test"), hub["train"].assign(part="train")], ignore_index=True)
    kept, duplicates, conflicts = _deduplicate(both)  # test first: a text in both stays in test only
    test_pool, pool = (kept[kept["part"] == part].drop(columns="part") for part in ("test", "train"))
    removed = _removed(duplicates, conflicts)
    _check_size(len(pool), sizes.train + sizes.validation + sizes.gate, "train_size + val_size + gate_size",
                f"{data}[train]", removed)
    _check_size(len(test_pool), sizes.test, "test_size", f"{data}[test]", removed)
    test = _take(test_pool, "test", sizes.test, seed)[0]
    splits, rest = _draw_rest(pool, sizes, seed)  # the pool comes from the hub's train split only
    return _finish({"test": test, **splits}, len(both), duplicates, conflicts, _unlabeled(rest, seed))


def _finish(splits: dict[str, pd.DataFrame], rows_read: int, duplicates: int, conflicts: int,
            unlabeled: pd.DataFrame) -> Sample:
    ordered = {name: with_row_ids(splits[name].reset_index(drop=True))[list(COLUMNS)] for name in SPLITS}
    _check_disjoint({**ordered, "unlabeled": unlabeled})
    return Sample(ordered, rows_read, duplicates, conflicts, unlabeled)


def _check_disjoint(splits: dict[str, pd.DataFrame]) -> None:
    frames = list(splits.values())
    texts = pd.concat([frame["text"] for frame in frames])
    shared = texts.duplicated().to_numpy()
    if shared.any():
        first = pd.concat([frame["row_id"] for frame in frames]).iloc[int(np.argmax(shared))]
        raise PipelineError(f"internal error: {int(shared.sum())} text(s) are in more than one split (row_id "
                            f"{first}); the sample is not disjoint, report this bug in agnews.data")


def sample_splits(data: str, sizes: SampleSizes, seed: int) -> Sample:
    """Four disjoint, stratified, seeded samples of de-duplicated texts; from the hub, test is its test split."""
    if data.startswith(HUB_PREFIX):
        return _sample_hub(data, sizes, seed)
    return _sample_local(data, sizes, seed)


def class_counts(frame: pd.DataFrame) -> dict[str, int]:
    counts = frame["label"].value_counts()
    return {LABELS[i]: int(counts.get(i, 0)) for i in range(len(LABELS))}
