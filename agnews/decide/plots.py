"""The comparison's figures: bars with intervals and seed dots per metric, validation curves per model, the radar of
metrics and the cost frontier (macro F1 against latency, the Pareto front marked)."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: steps run under `mlflow run`, CI and servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from agnews import drawing


def _metric_split(ranked: pd.DataFrame) -> tuple[str, str]:
    """(split, heading): test when every model has every test metric, else validation; never mixed in one figure."""
    present = ranked.reindex(columns=[f"test_{m}" for m in drawing.METRIC_LABELS]).notna().all(axis=1)
    if present.all():
        return "test", "Test metrics"
    missing = ranked.loc[~present, "model"].astype(str).tolist()
    who = ", ".join(missing) if len(missing) <= 3 else f"{len(missing)} models"
    return "val", f"Validation metrics (best epoch; test missing for {who})"


def _finite(values: Iterable) -> list[float]:
    return [float(v) for v in values if pd.notna(v)]


def _seed_values(runs: pd.DataFrame | None, model: str, column: str) -> list[float]:
    """Per-seed scores of a model, only when there are several (one seed is the bar itself)."""
    if runs is None or column not in runs.columns:
        return []
    values = _finite(runs.loc[runs["model"] == model, column])
    return values if len(values) > 1 else []


def _interval(row: pd.Series, column: str) -> tuple[float, float] | None:
    low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    return (float(low), float(high)) if pd.notna(low) and pd.notna(high) else None


def _y_limits(ax, values: list[float], room_above: float) -> float:
    """Zoom to the data (bars, whiskers, dots) so 2-3 point gaps show; returns the data span."""
    low, high = min(values), max(values)
    span = max(high - low, 0.02)
    ax.set_ylim(max(0.0, low - 0.3 * span), high + room_above * span)
    return span


def _draw_bar(ax, x: float, width: float, value: float, colour_: str, label: str,
              interval: tuple[float, float] | None, seeds: list[float]) -> list[float]:
    """One bar with its bootstrap whisker and seed dots; returns every y drawn, for the zoom and the label."""
    ax.bar(x, value, width, color=colour_, label=label)
    if interval:
        err = np.clip([[value - interval[0]], [interval[1] - value]], 0.0, None)  # matplotlib rejects negatives
        ax.errorbar(x, value, yerr=err, fmt="none", ecolor="black", elinewidth=1, capsize=3, gid=drawing.CI_GID)
    if seeds:
        ax.scatter(x + np.linspace(-0.25, 0.25, len(seeds)) * width, seeds, s=14, facecolor="white",
                   edgecolor="black", linewidth=0.7, zorder=4, gid=drawing.SEEDS_GID, label="_nolegend_")
    return [float(value), *(interval or ()), *seeds]


def _label_bars(ax, labels: list[tuple[float, float | None, str]], vertical: bool, span: float) -> None:
    """Each value above its whisker and dots, so no label sits on an error bar; a skipped bar says why."""
    bottom = ax.get_ylim()[0]
    for x, top, text in labels:
        y, shade = (top, "black") if top is not None else (bottom + 0.03 * span, "dimgrey")
        ax.annotate(text, (x, y), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                    rotation=90 if vertical or top is None else 0, fontsize=8, color=shade)


def _bar_notes(ax) -> str:
    """What whiskers and dots mean, only for those drawn; the first dot set carries the legend entry."""
    dots = [c for c in ax.collections if c.get_gid() == drawing.SEEDS_GID]
    if dots:
        dots[0].set_label("individual seeds")
    notes = ["whiskers: bootstrap 95% interval (best seed)"] if any(
        isinstance(c, ErrorbarContainer) for c in ax.containers) else []
    return "; ".join(notes + (["dots: individual seeds"] if dots else []))


def _bar_figure(ranked: pd.DataFrame, columns: list[str], ticks: list[str], title: str, palette: dict[str, str],
                runs: pd.DataFrame | None = None) -> Figure:
    """Grouped bars: one group per column, one bar per model (skipped where NaN), y zoomed to the data."""
    n = len(ranked)
    fig, ax = plt.subplots(figsize=(min(16.0, max(7.0, 3.0 + 0.45 * n * len(columns))), 5.0))
    width, extents, labels = 0.8 / n, [], []
    for k, (_, row) in enumerate(ranked.iterrows()):
        model = str(row["model"])
        for j, column in enumerate(columns):
            x, value = j + (k - (n - 1) / 2) * width, row.get(column)
            if pd.isna(value):
                labels.append((x, None, "not evaluated"))
                continue
            drawn = _draw_bar(ax, x, width, value, palette[model], model if j == 0 else "_nolegend_",
                              _interval(row, column), _seed_values(runs, model, column))
            extents += drawn
            labels.append((x, max(drawn), f"{value:.3f}"))
    vertical = n > 3  # side-by-side horizontal labels overlap beyond three bars per group
    _label_bars(ax, labels, vertical, _y_limits(ax, extents or [0.0, 1.0], room_above=0.55 if vertical else 0.3))
    notes = _bar_notes(ax)
    ax.set_title(title + (f"\n{notes}" if notes else ""), fontsize=10)
    ax.set_xticks(range(len(columns)), ticks)
    ax.set_xlim(-0.5, len(columns) - 0.5)  # keeps the slot of a skipped (not evaluated) bar in view
    ax.set_ylabel("Score")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def _evolution_figure(histories: dict[str, pd.DataFrame], palette: dict[str, str]) -> Figure:
    """One colour per model: thin lines for each seed and a bold mean when it has several, else one line."""
    epochs = sorted({int(e) for h in histories.values() for e in h["epoch"]})
    fig, ax = drawing.epoch_axes("Validation accuracy by epoch", "Validation accuracy", epochs)
    several = False
    for model in (m for m in palette if m in histories):  # palette lists ranked models first: legend in rank order
        history = histories[model]
        seeds = history["seed"].nunique() if "seed" in history.columns else 1
        if seeds > 1:
            for _, seed_history in history.groupby("seed"):
                seed_history = seed_history.sort_values("epoch")
                ax.plot(seed_history["epoch"], seed_history["val_accuracy"], color=palette[model], linewidth=0.8,
                        alpha=0.45, gid=drawing.SEED_LINE_GID)
            mean = history.groupby("epoch")["val_accuracy"].mean()
            ax.plot(mean.index, mean.to_numpy(), marker="o", linewidth=2.4, color=palette[model],
                    label=f"{model} (mean of {seeds} seeds)")
            several = True
        else:
            history = history.sort_values("epoch")
            ax.plot(history["epoch"], history["val_accuracy"], marker="o", color=palette[model], label=model)
    if several:
        ax.set_title("Validation accuracy by epoch\nthin lines: individual seeds; bold: mean over seeds", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def _radar_figure(ranked: pd.DataFrame, palette: dict[str, str]) -> Figure:
    """Metrics on a radial axis zoomed to [min - margin, max + margin], so 1-3 point gaps show."""
    split, heading = _metric_split(ranked)
    metrics = list(drawing.METRIC_LABELS)
    values = ranked[[f"{split}_{m}" for m in metrics]].to_numpy(dtype=float)
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    margin = max(0.01, (high - low) * 0.25)
    inner, outer = max(0.0, low - margin), min(1.0, high + margin)
    angles = np.linspace(0, 2 * np.pi, len(metrics), endpoint=False).tolist()
    fig, ax = plt.subplots(figsize=(7.0, 7.5), subplot_kw={"projection": "polar"})
    for row, model in zip(values, ranked["model"].astype(str)):
        closed = np.append(row, row[0])
        ax.plot(angles + angles[:1], closed, marker="o", color=palette[model], label=model)
        ax.fill(angles + angles[:1], closed, color=palette[model], alpha=0.08)
    ax.set_ylim(inner, outer)
    ax.set_xticks(angles, [drawing.METRIC_LABELS[m] for m in metrics])
    ax.tick_params(axis="y", labelsize=8)
    ax.set_title(f"{heading}\nradial axis {inner:.3f}-{outer:.3f}", pad=28, fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=min(3, len(ranked)), fontsize=8, frameon=False)
    return fig


def comparison_figures(ranked: pd.DataFrame, runs: pd.DataFrame | None,
                       histories: dict[str, pd.DataFrame]) -> dict[str, Figure]:
    """The five cross-model figures by file name, unsaved (tests inspect them); one colour mapping for all."""
    palette = drawing.colours([*ranked["model"].astype(str), *histories])
    split, heading = _metric_split(ranked)
    return {
        "comparison_accuracy.png": _bar_figure(
            ranked, ["val_accuracy", "test_accuracy"], ["validation (best epoch)", "test"],
            "Accuracy by model", palette, runs),
        "comparison_f1.png": _bar_figure(
            ranked, ["val_f1_macro", "test_f1_macro"], ["validation (best epoch)", "test"],
            "Macro F1 by model", palette, runs),
        "comparison_all_metrics.png": _bar_figure(
            ranked, [f"{split}_{m}" for m in drawing.METRIC_LABELS], list(drawing.METRIC_LABELS.values()), heading,
            palette),
        "comparison_accuracy_evolution.png": _evolution_figure(histories, palette),
        "comparison_radar.png": _radar_figure(ranked, palette),
    }


def comparison(ranked: pd.DataFrame, runs: pd.DataFrame | None, histories: dict[str, pd.DataFrame]) -> list[Path]:
    """Write the five cross-model plots; `ranked` is one row per model (leader first), `runs` one row per seed."""
    return [drawing._save(fig, name) for name, fig in comparison_figures(ranked, runs, histories).items()]


def radar(table: pd.DataFrame) -> Path:
    """The radar plot alone (kept for callers of the old API)."""
    return drawing._save(_radar_figure(table, drawing.colours(table["model"].astype(str))), "comparison_radar.png")


def frontier_figure(costs: pd.DataFrame) -> Figure:
    """Test macro F1 (95% interval) against p50 batch-1 latency, one point per model and variant (int8 hollow),
    the Pareto front as a step line; log-scaled latency when the points span more than 10x."""
    palette = drawing.colours(costs["model"].astype(str))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    shown = costs.dropna(subset=["latency_p50_ms", "test_f1_macro"])
    for row in shown.to_dict("records"):
        int8 = row["variant"] == "int8"
        low, high = row.get("test_f1_macro_ci_low"), row.get("test_f1_macro_ci_high")
        err = None if pd.isna(low) or pd.isna(high) else [[row["test_f1_macro"] - low], [high - row["test_f1_macro"]]]
        ax.errorbar(row["latency_p50_ms"], row["test_f1_macro"], yerr=err, fmt="s" if int8 else "o", ms=8,
                    capsize=4, color=palette[str(row["model"])], mfc="white" if int8 else palette[str(row["model"])],
                    label=f"{row['model']} ({row['variant']})", gid=drawing.CI_GID)
    front = shown[shown["pareto"]].sort_values("latency_p50_ms")
    if len(front):
        ax.step(front["latency_p50_ms"], front["test_f1_macro"], where="post", color="0.4", ls="--", lw=1,
                label="Pareto front", gid="pareto")
    latencies = shown["latency_p50_ms"]
    if len(latencies) and latencies.max() > 10 * latencies.min() > 0:
        ax.set_xscale("log")
    ax.set(title="Serving frontier: test macro F1 vs latency", xlabel="p50 latency at batch 1 (ms, this machine)",
           ylabel="Test macro F1 (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def frontier(costs: pd.DataFrame) -> Path:
    return drawing._save(frontier_figure(costs), "comparison_frontier.png")
