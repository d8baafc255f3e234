"""Batch predictions: read texts (optionally labelled) from a CSV or Parquet file, build the predictions table
(one row per input row, input order), score it when the input carries labels, and write it."""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from agnews import metrics, values, vocab
from agnews.data import handoff, reading
from agnews.data.task import AG_NEWS, AG_NEWS_CLEANING, Task, label_ids, numeric_names, parse_columns
from agnews.errors import PipelineError
from agnews.serving import classifiers

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".csv", ".parquet")
PROB_COLUMNS = AG_NEWS.prob_columns  # an AG News model's; any model's are its task's prob_columns
INPUT_FORMATS = ("expected a 'text' column, the model's text columns (AG News: 'title' and 'description'; optional "
                 "label column: class ids or names), or the AG News format (class 1-4, title, description; no header)")
_HEADER_NAMES = {"text", "title", "description", "label"}


@dataclass(frozen=True)
class Batch:
    texts: list[str]  # cleaned (what the model was trained on), in file order, duplicates kept
    labels: np.ndarray | None  # class ids into `label_names`, when the input carries labels
    label_names: tuple[str, ...] = AG_NEWS.labels


def model_task(model_uri: str, text_columns: str = "") -> Task:
    """The task behind a model (its version's or runs:/ run, then that run's data run), read before loading it so
    bad input fails first; AG News when it cannot be traced (a model registered by hand). `text_columns`
    (`-P text_columns=a,b`) replaces the columns the model was trained on."""
    found = _traced_task(model_uri)
    return dataclasses.replace(found, text_columns=parse_columns(text_columns)) if text_columns.strip() else found


def _traced_task(model_uri: str) -> Task:
    run_id, run = "", None
    try:  # a version or run that does not exist: loading the model says so, in its own words
        resolved = classifiers.registered_version(model_uri)
        if resolved is not None:
            run_id = mlflow.MlflowClient().get_model_version(*resolved).run_id or ""
        elif model_uri.startswith("runs:/"):
            run_id = model_uri[len("runs:/"):].split("/")[0]
        run = mlflow.get_run(run_id) if run_id else None
    except MlflowException:
        pass
    data_run = run.data.tags.get(vocab.DATA_RUN_ID, "") if run is not None else ""
    return handoff.load_task(data_run) if data_run else AG_NEWS


def output_path(value: str) -> Path | None:
    """The checked `-P output` (None: not asked for): known extension, existing writable folder; before any work."""
    if not value.strip():
        return None
    path = values.user_path(value)
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


def read_input(value: str, task: Task = AG_NEWS, explicit: bool = False) -> Batch:
    """Texts and optional labels from a CSV/TSV/Parquet/JSONL with `text`, the task's text columns or
    `title`+`description`, or the headerless AG News CSV; errors name the first bad data row (1-based).
    `explicit`: the task's text columns were named by the user (-P text_columns): only they are read."""
    path = _input_file(value)
    kind, _ = reading.table_format(path)
    if kind == "parquet":
        return _from_columns(reading.read_parquet(path), path, task, explicit)
    content = reading.decode(path)  # also .gz/.bz2/.xz, and a located error for non-UTF-8 bytes
    if not content.strip():
        raise PipelineError(f"{path} has only blank lines; {INPUT_FORMATS}")
    if kind in ("jsonl", "json"):
        return _from_columns(reading.read_json_lines(content, path), path, task, explicit)
    separator = "\t" if kind == "tsv" else ","
    first_row = reading.first_row(content, separator, path)
    known = _HEADER_NAMES | {c.lower() for c in (*task.text_columns, task.label_column)}
    if known & {v.strip().lower() for v in first_row}:
        return _from_columns(reading.read_csv(content, path, header=0, sep=separator), path, task, explicit)
    if len(first_row) == 3 and task.num_labels == 4:
        raw = reading.read_csv(content, path, header=None, names=["class", "title", "description"], sep=separator)
        labels = _labels(raw["class"], path, task.labels, first=1, hint="class must be 1-4 in the AG News format")
        return Batch(_clean(raw["title"] + " " + raw["description"], path, AG_NEWS_CLEANING), labels, task.labels)
    reading.refuse_other_separator(content, path)
    raise PipelineError(f"{path} has no 'text' column (first row: {len(first_row)} fields, no known header); "
                        f"{INPUT_FORMATS}")


def _input_file(value: str) -> Path:
    """Missing and folder paths get this entry point's parameter name; data's check covers the rest (0 bytes)."""
    if not value.strip():
        raise PipelineError("-P input is empty; pass -P input=<csv or parquet file> with the texts to classify")
    path = values.user_path(value)
    if not path.exists():
        raise PipelineError(f"input file not found: {path}; pass -P input=<csv or parquet file>")
    if path.is_dir():
        raise PipelineError(f"input {path} is a folder, not a file; pass -P input=<csv or parquet file>")
    reading.check_is_file(path)
    return path


def _from_columns(frame: pd.DataFrame, path: Path, task: Task, explicit: bool = False) -> Batch:
    frame = frame.rename(columns=lambda c: str(c).strip().lower())
    reading.refuse_duplicate_columns(frame.columns, path, "(names are matched ignoring case and spaces)")
    columns = [c.lower() for c in task.text_columns]
    if explicit:  # -P text_columns: exactly these, or a one-line refusal naming what is there
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise PipelineError(f"{path} lacks column(s) {missing} named by -P text_columns (columns: "
                                f"{', '.join(map(str, frame.columns))}); pass the columns that hold the text")
        text = reading._joined(frame, tuple(columns), path)
    elif set(columns) <= set(frame.columns):  # the model's own columns first: a `text` beside them is not its input
        text = reading._joined(frame, tuple(columns), path)
    elif "text" in frame.columns:
        text = reading._joined(frame, ("text",), path)
    elif {"title", "description"} <= set(frame.columns):
        text = reading._joined(frame, ("title", "description"), path)
    else:
        raise PipelineError(f"{path} has no 'text' column nor the model's text columns {', '.join(columns)} "
                            f"(columns: {', '.join(map(str, frame.columns))}); {INPUT_FORMATS}")
    if frame.empty:
        raise PipelineError(f"{path} has a header but no data rows; add rows to classify")
    label_column = task.label_column.lower() if task.label_column.lower() in frame.columns else None  # its own only
    hint = "label must be a class name" + ("" if numeric_names(task.labels) else f" or 0-{task.num_labels - 1}")
    labels = _labels(frame[label_column], path, task.labels, first=0, hint=hint) if label_column else None
    return Batch(_clean(text, path, task.cleaning), labels, task.labels)


def _labels(values: pd.Series, path: Path, names: tuple[str, ...], first: int, hint: str) -> np.ndarray:
    """Class ids: in AG News' own headerless format (`first` = 1) its class numbers 1-4; else by the task's rule
    (`task.label_ids`: names first, numbers as positions only when no class is named like a number)."""
    if first:  # the 1-4 format has no names
        ids = pd.to_numeric(values, errors="coerce") - first
        ids = ids.where(ids.isin(range(len(names))))
    else:
        ids = label_ids(values, names)
    bad = np.flatnonzero(ids.isna().to_numpy())
    if len(bad):
        raise PipelineError(f"{path} row {bad[0] + 1} has unknown label '{values.iloc[bad[0]]}'; {hint} "
                            f"({', '.join(names)})")
    return ids.astype(int).to_numpy()


def _clean(text: pd.Series, path: Path, cleaning: str) -> list[str]:
    """As the model's data run cleaned its texts (AG News: its escapes undone too), so the model sees the same."""
    cleaned = reading.clean_texts(text, cleaning)
    empty = np.flatnonzero((cleaned.str.len() == 0).to_numpy())
    if len(empty):
        raise PipelineError(f"{path} row {empty[0] + 1} has empty text; fill it or drop the row")
    return cleaned.tolist()


def predictions_table(batch: Batch, probabilities: np.ndarray,
                      labels: tuple[str, ...] = AG_NEWS.labels) -> pd.DataFrame:
    """One row per input row, in input order: text, predicted label and name, true ones if known, and one
    prob_<metric-safe name> column per class of the model (`labels`: its classes in logit order)."""
    if probabilities.shape != (len(batch.texts), len(labels)):
        raise ValueError(f"expected probabilities of shape {(len(batch.texts), len(labels))}, "
                         f"got {probabilities.shape}")
    if batch.labels is not None and tuple(batch.label_names) != tuple(labels):
        raise PipelineError(f"the model's labels [{', '.join(labels)}] are not its data run's "
                            f"[{', '.join(batch.label_names)}]; predict with a model trained by this project")
    predicted = probabilities.argmax(axis=1)
    table = pd.DataFrame({"text": batch.texts, "label": predicted, "label_name": [labels[i] for i in predicted]})
    if batch.labels is not None:
        table["true_label"] = batch.labels
        table["true_label_name"] = [labels[i] for i in batch.labels]
    for i, column in enumerate(Task(tuple(labels)).prob_columns):
        table[column] = probabilities[:, i].round(5)
    return table


def scores(table: pd.DataFrame) -> dict[str, float]:
    """accuracy and macro F1 (precision, recall) against the input's labels; {} when it has none."""
    if "true_label" not in table.columns:
        return {}
    classes = sum(str(c).startswith("prob_") for c in table.columns)
    return metrics.summary(table["true_label"].to_numpy(), table["label"].to_numpy(), classes=classes)


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
