"""Batch predictions: read texts (optionally labelled) from a CSV or Parquet file, build the predictions table
(one row per input row, input order), score it when the input carries labels, and write it."""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agnews import data, metrics  # data's private readers: one reading path for training and predicting
from agnews.data import LABELS, clean_text
from agnews.errors import PipelineError

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".csv", ".parquet")
PROB_COLUMNS = [f"prob_{name.replace('/', '_')}" for name in LABELS]  # as metrics.predictions_table names them
INPUT_FORMATS = ("expected a 'text' column, or 'title' and 'description' columns (optional 'label': 0-3 or a class "
                 "name), or the AG News format (class 1-4, title, description; no header)")
_HEADER_NAMES = {"text", "title", "description", "label"}
_LABEL_NAMES = {key.lower(): i for i, name in enumerate(LABELS) for key in (name, name.replace("/", "_"))}


@dataclass(frozen=True)
class Batch:
    texts: list[str]  # cleaned (what the model was trained on), in file order, duplicates kept
    labels: np.ndarray | None  # 0-3, when the input carries labels


def user_path(value: str) -> Path:
    """A `-P` path as the user meant it: relative to where `mlflow run` was started (MLflow runs the step in the
    project folder, or in a temporary checkout for git URLs)."""
    return (Path(os.environ.get("AGNEWS_LAUNCH_DIR", ".")) / Path(value).expanduser()).absolute()


def output_path(value: str) -> Path | None:
    """The checked `-P output` (None: not asked for): known extension, existing writable folder; before any work."""
    if not value.strip():
        return None
    path = user_path(value)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        extension = repr(path.suffix) if path.suffix else "no"
        raise PipelineError(f"-P output={value} has {extension} extension; the format is taken from it: end the path "
                            "in .csv or .parquet")
    if not path.parent.is_dir():
        raise PipelineError(f"-P output={value}: folder {path.parent} does not exist; create it or pass a path in "
                            "an existing folder")
    if path.is_dir():
        raise PipelineError(f"-P output={value} is a folder; pass a file path ending in .csv or .parquet")
    if not os.access(path.parent, os.W_OK):
        raise PipelineError(f"-P output={value}: folder {path.parent} is not writable; pass a writable location")
    return path


def read_input(value: str) -> Batch:
    """Texts and optional labels from a CSV/Parquet with `text` or `title`+`description` columns, or the headerless
    AG News CSV; errors name the first bad data row (1-based) as the file has it."""
    path = _input_file(value)
    if path.suffix.lower() == ".parquet":
        return _from_columns(data._read_parquet(path), path)
    content = data._decode(path)  # also .gz/.bz2/.xz, and a located error for non-UTF-8 bytes
    if not content.strip():
        raise PipelineError(f"{path} has only blank lines; {INPUT_FORMATS}")
    first_row = data._first_row(content, ",", path)
    if _HEADER_NAMES & {v.strip().lower() for v in first_row}:
        return _from_columns(data._read_csv(content, path, header=0), path)
    if len(first_row) == 3:
        raw = data._read_csv(content, path, header=None, names=["class", "title", "description"])
        labels = _labels(raw["class"], path, first=1, hint="class must be 1-4 in the AG News format")
        return Batch(_clean(raw["title"] + " " + raw["description"], path), labels)
    data._refuse_other_separator(content, path)
    raise PipelineError(f"{path} has no 'text' column (first row: {len(first_row)} fields, no known header); "
                        f"{INPUT_FORMATS}")


def _input_file(value: str) -> Path:
    """Missing and folder paths get this entry point's parameter name; data's check covers the rest (0 bytes)."""
    if not value.strip():
        raise PipelineError("-P input is empty; pass -P input=<csv or parquet file> with the texts to classify")
    path = user_path(value)
    if not path.exists():
        raise PipelineError(f"input file not found: {path}; pass -P input=<csv or parquet file>")
    if path.is_dir():
        raise PipelineError(f"input {path} is a folder, not a file; pass -P input=<csv or parquet file>")
    data._check_is_file(path)
    return path


def _from_columns(frame: pd.DataFrame, path: Path) -> Batch:
    frame = frame.rename(columns=lambda c: str(c).strip().lower())
    if "text" in frame.columns:
        text = _strings(frame["text"])
    elif {"title", "description"} <= set(frame.columns):
        text = _strings(frame["title"]) + " " + _strings(frame["description"])
    else:
        raise PipelineError(f"{path} has no 'text' column (columns: {', '.join(map(str, frame.columns))}); "
                            f"{INPUT_FORMATS}")
    if frame.empty:
        raise PipelineError(f"{path} has a header but no data rows; add rows to classify")
    labels = _labels(frame["label"], path, first=0, hint="label must be 0-3 or a class name") \
        if "label" in frame.columns else None
    return Batch(_clean(text, path), labels)


def _strings(column: pd.Series) -> pd.Series:
    return column.fillna("").astype(str)  # Parquet may hold None/NaN where a CSV holds ""


def _labels(values: pd.Series, path: Path, first: int, hint: str) -> np.ndarray:
    """Class ids 0-3 from numbers (`first` is the number of class 0) or, for 0-based labels, class names."""
    ids = pd.to_numeric(values, errors="coerce") - first
    ids = ids.where(ids.isin(metrics.CLASS_IDS))
    if first == 0:  # names only where numbers are 0-3: the 1-4 format has no names
        ids = ids.fillna(_strings(values).str.strip().str.lower().map(_LABEL_NAMES))
    bad = np.flatnonzero(ids.isna().to_numpy())
    if len(bad):
        raise PipelineError(f"{path} row {bad[0] + 1} has unknown label '{values.iloc[bad[0]]}'; {hint} "
                            f"({', '.join(LABELS)})")
    return ids.astype(int).to_numpy()


def _clean(text: pd.Series, path: Path) -> list[str]:
    cleaned = text.map(clean_text)
    empty = np.flatnonzero((cleaned.str.len() == 0).to_numpy())
    if len(empty):
        raise PipelineError(f"{path} row {empty[0] + 1} has empty text; fill it or drop the row")
    return cleaned.tolist()


def predictions_table(batch: Batch, probabilities: np.ndarray) -> pd.DataFrame:
    """One row per input row, in input order: text, predicted label and name, true ones if known, probabilities."""
    if probabilities.shape != (len(batch.texts), len(LABELS)):
        raise ValueError(f"expected probabilities of shape {(len(batch.texts), len(LABELS))}, "
                         f"got {probabilities.shape}")
    predicted = probabilities.argmax(axis=1)
    table = pd.DataFrame({"text": batch.texts, "label": predicted, "label_name": [LABELS[i] for i in predicted]})
    if batch.labels is not None:
        table["true_label"] = batch.labels
        table["true_label_name"] = [LABELS[i] for i in batch.labels]
    for i, column in enumerate(PROB_COLUMNS):
        table[column] = probabilities[:, i].round(5)
    return table


def scores(table: pd.DataFrame) -> dict[str, float]:
    """accuracy and macro F1 (precision, recall) against the input's labels; {} when it has none."""
    if "true_label" not in table.columns:
        return {}
    return metrics.summary(table["true_label"].to_numpy(), table["label"].to_numpy())


def write(table: pd.DataFrame, path: Path) -> None:
    """CSV or Parquet by extension, atomically (temporary name, then rename): never half a file at `path`."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}-", suffix=path.suffix,
                                     delete=False) as handle:
        tmp = Path(handle.name)
    try:
        if path.suffix.lower() == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %d predictions to %s", len(table), path)
