"""Classification metrics (scikit-learn), one vocabulary for validation and test."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from agnews.data import LABELS

CLASS_IDS = list(range(len(LABELS)))


def summary(labels, predictions, prefix: str = "") -> dict[str, float]:
    """accuracy and macro F1/precision/recall, keys like `val_f1_macro` (prefix "val")."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=CLASS_IDS, average="macro", zero_division=0)
    values = {"accuracy": accuracy_score(labels, predictions), "f1_macro": f1,
              "precision_macro": precision, "recall_macro": recall}
    return {(f"{prefix}_{key}" if prefix else key): float(value) for key, value in values.items()}


def per_class(labels, predictions, prefix: str) -> dict[str, float]:
    """precision/recall/F1 per class, keys like `test_f1_Sci_Tech` (metric names cannot hold '/')."""
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=CLASS_IDS, average=None, zero_division=0)
    out = {}
    for i, name in enumerate(LABELS):
        key = name.replace("/", "_")
        out.update({f"{prefix}_precision_{key}": float(precision[i]), f"{prefix}_recall_{key}": float(recall[i]),
                    f"{prefix}_f1_{key}": float(f1[i])})
    return out


def confusion(labels, predictions, normalize: bool = False) -> pd.DataFrame:
    """Rows: true class, columns: predicted class; normalised per true class when asked."""
    matrix = confusion_matrix(labels, predictions, labels=CLASS_IDS, normalize="true" if normalize else None)
    return pd.DataFrame(np.asarray(matrix), index=list(LABELS), columns=list(LABELS))


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over classes, numerically stable."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def predictions_table(frame: pd.DataFrame, logits: np.ndarray) -> pd.DataFrame:
    """`frame` (row_id, text, label, ...) plus the predicted class and each class's probability: what compare
    pairs row by row across models."""
    probs = probabilities(logits)
    table = frame.assign(predicted=logits.argmax(axis=1))
    for i, name in enumerate(LABELS):
        table[f"prob_{name.replace('/', '_')}"] = probs[:, i].round(5)
    return table
