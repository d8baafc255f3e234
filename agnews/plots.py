"""Matplotlib figures, written as PNG into graficas/ (or $AGNEWS_PLOTS_DIR); the caller logs them."""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: steps run under `mlflow run`, CI and servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from agnews.data import LABELS  # noqa: E402

_PRESET_COLOURS = {"tinybert": "#1f77b4", "bert-mini": "#ff7f0e", "distilbert": "#2ca02c"}
_PALETTE = ["#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
METRIC_LABELS = {"accuracy": "Accuracy", "f1_macro": "Macro F1", "precision_macro": "Macro precision",
                 "recall_macro": "Macro recall"}


def colour(model: str) -> str:
    """The same colour for a model in every plot and every process (crc32 is stable, hash() is not)."""
    return _PRESET_COLOURS.get(model) or _PALETTE[zlib.crc32(model.encode()) % len(_PALETTE)]


def plots_dir() -> Path:
    folder = Path(os.environ.get("AGNEWS_PLOTS_DIR", "graficas"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _save(fig, filename: str) -> Path:
    path = plots_dir() / filename
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _epoch_axes(title: str, ylabel: str, epochs: list[int]):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.set(title=title, xlabel="Epoch", ylabel=ylabel, xticks=epochs)
    ax.grid(alpha=0.3)
    return fig, ax


def training_curves(model: str, history: pd.DataFrame, best_epoch: int) -> list[Path]:
    """`<model>_accuracy_evolution.png`, `<model>_f1_evolution.png`, `<model>_loss_function.png`."""
    epochs, c = history["epoch"].tolist(), colour(model)
    paths = []
    for metric, filename in (("val_accuracy", "accuracy_evolution"), ("val_f1_macro", "f1_evolution")):
        name = METRIC_LABELS[metric[4:]]
        fig, ax = _epoch_axes(f"{model}: validation {name.lower()} by epoch", f"Validation {name.lower()}", epochs)
        ax.plot(epochs, history[metric], marker="o", color=c, label=model)
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.legend()
        paths.append(_save(fig, f"{model}_{filename}.png"))
    fig, ax = _epoch_axes(f"{model}: loss by epoch", "Cross-entropy loss", epochs)
    ax.plot(epochs, history["train_loss"], marker="o", color=c, label="train (epoch mean)")
    ax.plot(epochs, history["val_loss"], marker="s", linestyle="--", color=c, label="validation")
    ax.legend()
    paths.append(_save(fig, f"{model}_loss_function.png"))
    return paths


def confusion_matrix(model: str, counts: pd.DataFrame) -> Path:
    """Counts in each cell, shaded by the row-normalised rate (recall of the true class)."""
    rates = counts.div(counts.sum(axis=1).replace(0, 1), axis=0)
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(rates.to_numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set(title=f"{model}: confusion matrix (test)", xlabel="Predicted class", ylabel="True class",
           xticks=range(len(LABELS)), yticks=range(len(LABELS)), xticklabels=LABELS, yticklabels=LABELS)
    for (i, j), value in np.ndenumerate(counts.to_numpy()):
        ax.text(j, i, f"{value}\n{rates.iat[i, j]:.0%}", ha="center", va="center",
                color="white" if rates.iat[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="Share of true class")
    return _save(fig, f"{model}_confusion_matrix.png")


def _bars(table: pd.DataFrame, columns: list[str], title: str, filename: str) -> Path:
    """Grouped bars, one group per metric column, one bar per model; y-axis zoomed to the data."""
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(columns) + 2), 4.5))
    width = 0.8 / len(table)
    for k, row in enumerate(table.itertuples(index=False)):
        x = np.arange(len(columns)) + (k - (len(table) - 1) / 2) * width
        values = [getattr(row, col) for col in columns]
        bars = ax.bar(x, values, width, color=colour(row.model), label=row.model)
        ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    low = float(np.nanmin(table[columns].to_numpy()))
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.set_xticks(range(len(columns)), [col.replace("_", " ") for col in columns])
    ax.set(title=title, ylabel="Score")
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, filename)


def comparison(table: pd.DataFrame, histories: dict[str, pd.DataFrame]) -> list[Path]:
    """The five cross-model plots; `table` has one row per model with val_* and test_* columns."""
    paths = [
        _bars(table, ["val_accuracy", "test_accuracy"], "Accuracy by model (validation at best epoch, test)",
              "comparison_accuracy.png"),
        _bars(table, ["val_f1_macro", "test_f1_macro"], "Macro F1 by model (validation at best epoch, test)",
              "comparison_f1.png"),
        _bars(table, [f"test_{m}" for m in METRIC_LABELS], "Test metrics by model", "comparison_all_metrics.png"),
    ]
    epochs = sorted({e for h in histories.values() for e in h["epoch"]})
    fig, ax = _epoch_axes("Validation accuracy by epoch", "Validation accuracy", epochs)
    for model, history in histories.items():
        ax.plot(history["epoch"], history["val_accuracy"], marker="o", color=colour(model), label=model)
    ax.legend()
    paths.append(_save(fig, "comparison_accuracy_evolution.png"))
    paths.append(radar(table))
    return paths


def radar(table: pd.DataFrame) -> Path:
    """Test metrics on a radial axis zoomed to [min - margin, max + margin], so 1-3 point gaps show."""
    metrics = list(METRIC_LABELS)
    values = table[[f"test_{m}" for m in metrics]].to_numpy(dtype=float)
    low, high = float(values.min()), float(values.max())
    margin = max(0.01, (high - low) * 0.25)
    inner, outer = max(0.0, low - margin), min(1.0, high + margin)
    angles = np.linspace(0, 2 * np.pi, len(metrics), endpoint=False).tolist()
    fig, ax = plt.subplots(figsize=(6.5, 6.5), subplot_kw={"projection": "polar"})
    for row, model in zip(values, table["model"]):
        closed = np.append(row, row[0])
        ax.plot(angles + angles[:1], closed, marker="o", color=colour(model), label=model)
        ax.fill(angles + angles[:1], closed, color=colour(model), alpha=0.08)
    ax.set_ylim(inner, outer)
    ax.set_xticks(angles, [METRIC_LABELS[m] for m in metrics])
    ax.set_title(f"Test metrics (radial axis {inner:.3f}-{outer:.3f})", pad=20)
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1))
    return _save(fig, "comparison_radar.png")
