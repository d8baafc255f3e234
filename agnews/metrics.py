"""Classification metrics (scikit-learn), one vocabulary for validation and test; class names and their metric-safe
forms come from the task the data run wrote."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from agnews.data.task import Task


def summary(labels, predictions, prefix: str = "", classes: int = 4) -> dict[str, float]:
    """accuracy and macro F1/precision/recall over all `classes` classes, keys like `val_f1_macro` (prefix "val")."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=list(range(classes)), average="macro", zero_division=0)
    values = {"accuracy": accuracy_score(labels, predictions), "f1_macro": f1,
              "precision_macro": precision, "recall_macro": recall}
    return {(f"{prefix}_{key}" if prefix else key): float(value) for key, value in values.items()}


def per_class(labels, predictions, prefix: str, task: Task) -> dict[str, float]:
    """precision/recall/F1 per class, keys like `test_f1_Sci_Tech` (the metric-safe name: no '/', ASCII)."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=list(range(task.num_labels)), average=None, zero_division=0)
    out = {}
    for i, key in enumerate(task.metric_names):
        out.update({f"{prefix}_precision_{key}": float(precision[i]), f"{prefix}_recall_{key}": float(recall[i]),
                    f"{prefix}_f1_{key}": float(f1[i])})
    return out


def confusion(labels, predictions, task: Task, normalize: bool = False) -> pd.DataFrame:
    """Rows: true class, columns: predicted class (the task's names); normalised per true class when asked."""
    matrix = confusion_matrix(labels, predictions, labels=list(range(task.num_labels)),
                              normalize="true" if normalize else None)
    return pd.DataFrame(np.asarray(matrix), index=list(task.labels), columns=list(task.labels))


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over classes, numerically stable."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predictions_table(frame: pd.DataFrame, logits: np.ndarray, task: Task) -> pd.DataFrame:
    """`frame` (row_id, text, label, ...) plus the predicted class and each class's probability (`prob_<metric-safe
    name>`): what compare pairs row by row across models."""
    probs = probabilities(logits)
    table = frame.assign(predicted=logits.argmax(axis=1))
    for i, column in enumerate(task.prob_columns):
        table[column] = probs[:, i].round(5)
    return table
