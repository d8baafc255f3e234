"""The figures a training step leaves: per-epoch curves (validation macro F1 and accuracy, training and validation
loss, the best epoch marked) and evaluate's confusion matrix."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: steps run under `mlflow run`, CI and servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from agnews import drawing


def training_curves(model: str, history: pd.DataFrame, best_epoch: int) -> list[Path]:
    """`<model>_accuracy_evolution.png`, `<model>_f1_evolution.png`, `<model>_loss_function.png`."""
    epochs, c = history["epoch"].tolist(), drawing.colour(model)
    paths = []
    for metric, filename in (("val_accuracy", "accuracy_evolution"), ("val_f1_macro", "f1_evolution")):
        name = drawing.METRIC_LABELS[metric[4:]]
        fig, ax = drawing.epoch_axes(f"{model}: validation {name.lower()} by epoch", f"Validation {name.lower()}",
                                     epochs)
        ax.plot(epochs, history[metric], marker="o", color=c, label=model)
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.legend()
        paths.append(drawing._save(fig, f"{model}_{filename}.png"))
    fig, ax = drawing.epoch_axes(f"{model}: loss by epoch", "Cross-entropy loss", epochs)
    ax.plot(epochs, history["train_loss"], marker="o", color=c, label="train (epoch mean)")
    ax.plot(epochs, history["val_loss"], marker="s", linestyle="--", color=c, label="validation")
    ax.legend()
    paths.append(drawing._save(fig, f"{model}_loss_function.png"))
    return paths


def confusion_matrix(model: str, counts: pd.DataFrame) -> Path:
    """Counts in each cell, shaded by the row-normalised rate (recall of the true class)."""
    rates = counts.div(counts.sum(axis=1).replace(0, 1), axis=0)
    names, size = [str(n) for n in counts.index], len(counts)  # the task's classes, as the data run named them
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * size + 1.6), max(5.0, 1.1 * size + 0.6)))
    image = ax.imshow(rates.to_numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set(title=f"{model}: confusion matrix (test)", xlabel="Predicted class", ylabel="True class",
           xticks=range(size), yticks=range(size), xticklabels=names, yticklabels=names)
    if size > 4:  # long or many names would overlap side by side
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    for (i, j), value in np.ndenumerate(counts.to_numpy()):
        ax.text(j, i, f"{value}\n{rates.iat[i, j]:.0%}", ha="center", va="center",
                color="white" if rates.iat[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="Share of true class")
    return drawing._save(fig, f"{model}_confusion_matrix.png")
