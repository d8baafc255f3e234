"""Monitoring figures a person reads at a glance: one statistic over time, the reference band shaded (where a batch
of that size drawn like the reference falls), each batch a point, drifted batches marked in red."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from agnews.drawing import _save, plt
from agnews.monitoring import checks

BAND_GID, POINT_GID, DRIFT_GID, ALARM_GID = "reference-band", "batches", "drifted", "alarm"  # tests find artists
AXIS_LABELS = {"label_mix": "label-mix distance (TVD)", "confidence": "mean top-class probability",
               "low_confidence": "share of unsure predictions", "length": "mean tokens per text",
               "unknown_tokens": "mean share of [UNK] tokens", "split_words": "share in many-piece words",
               "embedding": "embedding shift (RMS, reference stds)"}
COLOURS = {"ok": "#2ca02c", "drift": "#d62728", "degraded": "#9467bd", "too_small": "#7f7f7f", "unknown": "#7f7f7f"}


def statistic_figure(table: pd.DataFrame, statistic: str, bands: list[tuple[float, float]], model: str,
                     caption: str = ""):
    """`table`: one row per batch (time, rows, health, <statistic>, <statistic>_drifted, optionally `alarm`), oldest
    first; `bands`: the reference band at each batch's size; `caption`: what drew the figure, where. Batches are
    evenly spaced and labelled by time (runs may be seconds or weeks apart)."""
    fig, ax = plt.subplots(figsize=(max(7.0, 1.0 + 0.6 * len(table)), 4.5))
    x = np.arange(len(table))
    low, high = np.array(bands, dtype=float).T if bands else (np.array([]), np.array([]))
    if np.isfinite(low).any():  # one step per batch, from half a slot before the first to after the last
        edges, share = np.arange(len(x) + 1) - 0.5, 1 - table.attrs.get("alpha", checks.ALPHA)
        ax.fill_between(edges, np.append(low, low[-1]), np.append(high, high[-1]), step="post", color="#1f77b4",
                        alpha=0.18, gid=BAND_GID, label=f"reference band ({share:.0%} of batches of that size)")
    values = table[statistic].to_numpy(dtype=float)
    colours = [COLOURS.get(h, "#7f7f7f") for h in table["health"]]
    ax.plot(x, values, color="0.6", lw=1, zorder=2)
    ax.scatter(x, values, c=colours, s=60, zorder=3, edgecolor="black", linewidth=0.6, gid=POINT_GID)
    drifted = table[f"{statistic}_drifted"].to_numpy(dtype=bool)
    if drifted.any():
        ax.scatter(x[drifted], values[drifted], marker="x", s=160, color="#d62728", linewidth=2.5, zorder=4,
                   gid=DRIFT_GID, label="this statistic drifted (Holm)")
    for k, xi in enumerate(np.flatnonzero(table["alarm"].to_numpy(dtype=bool)) if "alarm" in table else []):
        ax.axvline(xi, color="#d62728", linestyle="--", lw=1.2, zorder=1, gid=ALARM_GID,
                   label=None if k else "alarm (window rule: flagged batches in a row)")
    for xi, value, health in zip(x, values, table["health"]):
        if np.isfinite(value):
            ax.annotate(health, (xi, value), xytext=(0, 8), textcoords="offset points", ha="center", fontsize=8,
                        color=COLOURS.get(health, "black"))
    ticks = [f"{t:%m-%d %H:%M:%S}\n{n} rows" for t, n in zip(table["time"], table["rows"])]
    ax.set_xticks(x, ticks, fontsize=7, rotation=30 if len(x) > 6 else 0)
    ax.set_xlim(-0.6, len(x) - 0.4)
    ax.margins(y=0.15)  # room for the verdict written above each point
    ax.set(title=f"{model}: {statistic.replace('_', ' ')} per predict batch", ylabel=AXIS_LABELS[statistic],
           xlabel="predict run (UTC start time)" + (f"\n{caption}" if caption else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def monitor_plots(table: pd.DataFrame, reference: checks.Reference, model: str, alpha: float,
                  caption: str = "") -> list[Path]:
    """`monitor_<statistic>.png` for each statistic some batch has a value for."""
    table.attrs["alpha"] = alpha
    paths = []
    for statistic in checks.STATISTICS:
        if table[statistic].notna().sum() == 0:
            continue
        bands = [checks.band(reference, statistic, n, alpha) for n in table["rows"]]
        paths.append(_save(statistic_figure(table, statistic, bands, model, caption), f"monitor_{statistic}.png"))
    return paths
