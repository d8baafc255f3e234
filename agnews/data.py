"""AG News loading, cleaning and the stratified, seeded train/validation/test sample."""
from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from agnews.errors import PipelineError

log = logging.getLogger(__name__)

LABELS = ("World", "Sports", "Business", "Sci/Tech")
HUB_PREFIX = "hf:"
DEFAULT_DATA = "hf:fancyzhx/ag_news"
SPLITS = ("train", "validation", "test")

# The AG corpus lost the "&" of numeric entities ("it #39;s", "US #36;5") and uses "\" for line breaks.
_NUMERIC_ENTITY = re.compile(r"(?:&| )?#(\d{1,5});")
_SPACES = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Undo the corpus' escapes: entity remnants become their characters, backslashes spaces."""
    text = _NUMERIC_ENTITY.sub(lambda m: chr(int(m.group(1))), text)
    text = re.sub(r"(?<![&\w])(quot|amp|lt|gt);", r"&\1;", text)  # "quot;" remnants, same loss of "&"
    text = html.unescape(text).replace("\\", " ")
    return _SPACES.sub(" ", text).strip()


@dataclass(frozen=True)
class SampleSizes:
    train: int = 1000
    validation: int = 500
    test: int = 500


def _read_table(path: Path) -> pd.DataFrame:
    """A `text,label` CSV/Parquet (label 0-3) or the original headerless CSV (class 1-4, title, description)."""
    if not path.is_file():
        raise PipelineError(f"data file not found: {path}; pass -P data=<csv or parquet path> or {DEFAULT_DATA}")
    if path.suffix.lower() == ".parquet":
        return _validate(pd.read_parquet(path), path)
    try:
        head = pd.read_csv(path, nrows=1, header=None, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path} is not a readable CSV ({exc}); expected 'text,label' columns "
                            "or the AG News format (class,title,description without header)") from exc
    first_row = [str(v).strip().lower() for v in head.iloc[0]]
    if {"text", "label"} & set(first_row):  # a header: validate names the missing column
        return _validate(pd.read_csv(path, dtype={"text": str}, keep_default_na=False), path)
    if len(first_row) != 3:
        raise PipelineError(f"{path} has {len(first_row)} columns and no 'text,label' header; expected "
                            "'text,label' columns or the AG News format (class,title,description without header)")
    raw = pd.read_csv(path, header=None, names=["cls", "title", "description"], dtype=str, keep_default_na=False)
    cls = pd.to_numeric(raw["cls"], errors="coerce")
    frame = pd.DataFrame({"text": raw["title"] + " " + raw["description"], "label": cls - 1})
    return _validate(frame, path, label_hint="class must be 1-4 in the AG News format", shown_labels=raw["cls"])


def _validate(frame: pd.DataFrame, source: object, label_hint: str = "label must be 0-3",
              shown_labels: pd.Series | None = None) -> pd.DataFrame:
    """Columns, labels and texts checked; errors name the first bad data row (1-based) as the file has it."""
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise PipelineError(f"{source} lacks column(s) {sorted(missing)}; expected 'text' and 'label' (0-3)")
    labels = pd.to_numeric(frame["label"], errors="coerce")
    bad = frame.index[~labels.isin(range(len(LABELS)))]
    if len(bad):
        shown = (frame["label"] if shown_labels is None else shown_labels).iloc[bad[0]]
        raise PipelineError(f"{source} row {bad[0] + 1} has unknown label '{shown}'; "
                            f"{label_hint} ({', '.join(LABELS)})")
    text = frame["text"].fillna("").astype(str).map(clean_text)
    empty = text.index[text.str.len() == 0]
    if len(empty):
        raise PipelineError(f"{source} row {empty[0] + 1} has empty text; fill it or drop the row")
    return pd.DataFrame({"text": text.to_numpy(), "label": labels.astype(int).to_numpy()})


def _load_hub(dataset_id: str) -> dict[str, pd.DataFrame]:
    import datasets  # heavy import, only needed for hub data

    try:
        ds = datasets.load_dataset(dataset_id)
    except Exception as exc:  # network, auth or missing cache: all end the same way for the user
        raise PipelineError(f"cannot load hub dataset {dataset_id!r} ({type(exc).__name__}); offline, pass "
                            "-P data=<local csv>, e.g. the AG News test.csv") from exc
    return {split: _validate(ds[split].to_pandas(), f"{dataset_id}[{split}]") for split in ("train", "test")}


def _stratified_take(frame: pd.DataFrame, n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off `n` rows stratified by label; returns (taken, rest)."""
    if n == len(frame):
        return frame, frame.iloc[:0]
    taken, rest = train_test_split(frame, train_size=n, stratify=frame["label"], random_state=seed)
    return taken, rest


def _check_size(available: int, wanted: int, what: str, source: str) -> None:
    if wanted > available:
        raise PipelineError(f"{what} ({wanted} rows) exceeds the {available} rows of {source}; "
                            "lower the sizes or use a larger dataset")


def sample_splits(data: str, sizes: SampleSizes, seed: int) -> dict[str, pd.DataFrame]:
    """Three disjoint, stratified, seeded samples; from the hub, test comes from the test split."""
    if min(sizes.train, sizes.validation, sizes.test) < len(LABELS):
        raise PipelineError(f"sizes {sizes} too small: each split needs at least {len(LABELS)} rows (one per class)")
    if data.startswith(HUB_PREFIX):
        dataset_id = data[len(HUB_PREFIX):]
        hub = _load_hub(dataset_id)
        _check_size(len(hub["train"]), sizes.train + sizes.validation, "train_size + val_size", f"{data}[train]")
        _check_size(len(hub["test"]), sizes.test, "test_size", f"{data}[test]")
        pool, test = hub["train"], _stratified_take(hub["test"], sizes.test, seed)[0]
    else:
        pool = _read_table(Path(data).expanduser())
        _check_size(len(pool), sizes.train + sizes.validation + sizes.test, "train_size + val_size + test_size", data)
        test, pool = _stratified_take(pool, sizes.test, seed)
    validation, pool = _stratified_take(pool, sizes.validation, seed)
    train = _stratified_take(pool, sizes.train, seed)[0]
    splits = {"train": train, "validation": validation, "test": test}
    return {name: split.reset_index(drop=True) for name, split in splits.items()}


def class_counts(frame: pd.DataFrame) -> dict[str, int]:
    counts = frame["label"].value_counts()
    return {LABELS[i]: int(counts.get(i, 0)) for i in range(len(LABELS))}
