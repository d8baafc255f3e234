"""What every figure shares: matplotlib headless, one colour per model, metric labels, and saving as PNG into a
per-run staging folder (the caller logs and publishes them). The figures themselves live with their step:
agnews.training.curves, agnews.decide.plots, agnews.monitoring.plots."""
from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: steps run under `mlflow run`, CI and servers
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import hsv_to_rgb, to_hex  # noqa: E402

from agnews.runs import staging  # noqa: E402

_PRESET_COLOURS = {"tinybert": "#1f77b4", "bert-mini": "#ff7f0e", "distilbert": "#2ca02c"}
_PALETTE = ["#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
METRIC_LABELS = {"accuracy": "Accuracy", "f1_macro": "Macro F1", "precision_macro": "Macro precision",
                 "recall_macro": "Macro recall"}


CI_GID, SEEDS_GID, SEED_LINE_GID = "ci", "seed-dots", "seed-line"  # tags tests use to find artists in a Figure


def colour(model: str) -> str:
    """The same colour for a model in every plot and every process (crc32 is stable, hash() is not).

    Two models may share a colour here; plots with several models use `colours` instead."""
    return _PRESET_COLOURS.get(model) or _PALETTE[zlib.crc32(model.encode()) % len(_PALETTE)]


def _fallback_colours() -> Iterator[str]:
    """Qualitative colormaps, then golden-ratio hues: an endless stream so any number of models stays distinct."""
    for name in ("tab20", "tab20b", "tab20c"):
        yield from (to_hex(c) for c in matplotlib.colormaps[name].colors)
    for k in itertools.count():
        yield to_hex(hsv_to_rgb(((k * 0.618034) % 1.0, 0.65, 0.8)))


def colours(models: Iterable[str]) -> dict[str, str]:
    """A distinct colour per model: presets keep theirs, the rest take free palette colours by sorted name.

    Depends only on the set of names, so every figure of one comparison agrees."""
    unique = list(dict.fromkeys(models))
    mapping = {m: _PRESET_COLOURS[m] for m in unique if m in _PRESET_COLOURS}
    used = set(_PRESET_COLOURS.values())  # reserved even when absent: blue means tinybert in every comparison
    stream = itertools.chain(_PALETTE, _fallback_colours())
    for model in sorted(m for m in unique if m not in mapping):
        mapping[model] = next(c for c in stream if c not in used)
        used.add(mapping[model])
    return {m: mapping[m] for m in unique}


def plots_dir() -> Path:
    """This run's private staging folder: the step logs each figure from here, then publishes it into
    graficas/ ($AGNEWS_PLOTS_DIR) with `tracking.log_plot`, so runs at once never share a path."""
    return staging.folder()


def _save(fig, filename: str) -> Path:
    path = plots_dir() / filename
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def epoch_axes(title: str, ylabel: str, epochs: list[int]):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.set(title=title, xlabel="Epoch", ylabel=ylabel, xticks=epochs)
    ax.grid(alpha=0.3)
    return fig, ax
