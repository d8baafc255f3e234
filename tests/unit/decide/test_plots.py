"""Comparison plots: distinct colours, five PNGs, bootstrap whiskers and seed spread, from synthetic frames."""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot as plt
from matplotlib.collections import PathCollection
from matplotlib.container import ErrorbarContainer

from agnews import drawing
from agnews.decide import plots
from agnews.runs import staging

FOLDERS = ["all-MiniLM-L6-v2", "deberta-v3-xsmall"]  # crc32 % 7 collide: the old colour() gave both one colour
TEN = ["tinybert", "bert-mini", "distilbert", *FOLDERS, "albert-base-v2", "bert-tiny", "electra-small",
       "roberta-base", "mobilebert-uncased"]
FILES = ["comparison_accuracy.png", "comparison_f1.png", "comparison_all_metrics.png",
         "comparison_accuracy_evolution.png", "comparison_radar.png"]
METRICS = ["accuracy", "f1_macro", "precision_macro", "recall_macro"]


def frames(models: list[str], seeds: int = 1, evaluated: bool = True, gap: float = 0.01):
    """(ranked, runs, histories) shaped like the compare step's: model k scores 0.90 - k * gap, seeds spread 0.004."""
    ranked, runs, histories = [], [], {}
    for k, model in enumerate(models):
        best = 0.90 - k * gap
        scores = best - 0.004 * np.arange(seeds)  # seed 0 is the representative (best) run
        for seed, score in enumerate(scores):
            runs.append({"model": model, "seed": seed, "train_run_id": f"r{k}{seed}", "registered_version": str(k + 1),
                         "val_accuracy": score, "val_f1_macro": score - 0.002,
                         "test_accuracy": score - 0.01 if evaluated else np.nan,
                         "test_f1_macro": score - 0.012 if evaluated else np.nan})
        histories[model] = pd.DataFrame([{"seed": s, "epoch": e, "val_accuracy": sc - 0.03 / e}
                                         for s, sc in enumerate(scores) for e in (1, 2, 3)])
        row = {"model": model, "base_model": model, "registered_model": "agnews-classifier",
               "registered_version": str(k + 1), "train_run_id": f"r{k}0", "seed": 0, "n_seeds": seeds,
               "best_epoch": 3, "num_parameters": 4_000_000 * (k + 1), "train_seconds": 60.0 + k}
        for split, shift in (("val", 0.0), ("test", -0.01)):
            for j, metric in enumerate(METRICS):
                row[f"{split}_{metric}"] = best + shift - 0.002 * j if split == "val" or evaluated else np.nan
            for metric in ("accuracy", "f1_macro"):
                value = row[f"{split}_{metric}"]
                row |= {f"{split}_{metric}_ci_low": value - 0.025, f"{split}_{metric}_ci_high": value + 0.022,
                        f"{split}_{metric}_mean": value - 0.002 * (seeds - 1),
                        f"{split}_{metric}_std": 0.003 if seeds > 1 else np.nan}
        lead = 0.0 if k == 0 else k * gap
        row |= {"delta_f1_macro": lead or np.nan, "delta_ci_low": lead - 0.012 if k else np.nan,
                "delta_ci_high": lead + 0.012 if k else np.nan, "mcnemar_p": 0.01 * k if k else np.nan,
                "mcnemar_p_holm": 0.02 * k if k else np.nan}
        ranked.append(row)
    return pd.DataFrame(ranked), pd.DataFrame(runs), histories


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _bar_axes(figures, name: str):
    return figures[name].axes[0]


def test_colours_are_distinct_for_ten_models_and_presets_keep_theirs():
    assert drawing.colour(FOLDERS[0]) == drawing.colour(FOLDERS[1])  # the collision colours() exists to fix
    assert zlib.crc32(FOLDERS[0].encode()) % 7 == zlib.crc32(FOLDERS[1].encode()) % 7
    mapping = drawing.colours(TEN)
    assert list(mapping) == TEN and len(set(mapping.values())) == len(TEN)
    assert mapping["tinybert"] == "#1f77b4" and mapping["bert-mini"] == "#ff7f0e" and mapping["distilbert"] == "#2ca02c"
    assert drawing.colours(TEN) == mapping
    assert drawing.colours(list(reversed(TEN))) == mapping  # order of the input does not matter


def test_colours_stay_distinct_beyond_every_palette():
    many = [f"model-{i:02d}" for i in range(60)]
    mapping = drawing.colours(["tinybert", *many])
    assert len(set(mapping.values())) == 61
    assert "#1f77b4" not in {mapping[m] for m in many}  # tinybert's blue stays reserved in the fallback too


def test_comparison_writes_five_pngs_into_a_private_folder():
    paths = plots.comparison(*frames(["distilbert", "tinybert", "all-MiniLM-L6-v2"], seeds=3))
    assert [p.name for p in paths] == FILES
    assert all(p.parent == staging.folder() and p.stat().st_size > 10_000 for p in paths)
    staging.cleanup()
    assert not any(p.exists() for p in paths)


@pytest.mark.parametrize("name", ["comparison_accuracy.png", "comparison_f1.png"])
def test_bars_carry_bootstrap_whiskers_and_zoomed_axis(name):
    ranked, runs, histories = frames(["distilbert", "tinybert", "bert-mini"])
    ax = _bar_axes(plots.comparison_figures(ranked, runs, histories), name)
    whiskers = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(whiskers) == 6  # 3 models x (validation, test)
    low, high = ax.get_ylim()
    assert low > 0.5 and high - low < 0.3  # zoomed, not 0-1
    metric = name.removeprefix("comparison_").removesuffix(".png").replace("f1", "f1_macro")
    ends = ranked.filter(regex=rf"^(val|test)_{metric}_ci_(low|high)$")
    assert low < ends.min().min() and high > ends.max().max()
    assert "bootstrap 95%" in ax.get_title()
    bar_colours = {p.get_facecolor() for c in ax.containers if not isinstance(c, ErrorbarContainer) for p in c.patches}
    assert len(bar_colours) == 3


def test_seeds_draw_dots_on_bars_and_thin_lines():
    figures = plots.comparison_figures(*frames(["distilbert", "tinybert"], seeds=3))
    dots = [c for c in _bar_axes(figures, "comparison_accuracy.png").collections
            if isinstance(c, PathCollection) and c.get_gid() == drawing.SEEDS_GID]
    assert len(dots) == 4 and all(len(d.get_offsets()) == 3 for d in dots)  # 2 models x (validation, test)
    lines = figures["comparison_accuracy_evolution.png"].axes[0].get_lines()
    assert sum(line.get_gid() == drawing.SEED_LINE_GID for line in lines) == 6  # thin: 2 models x 3 seeds
    assert sum(line.get_linewidth() > 2 for line in lines) == 2  # bold: one mean per model


def test_single_seed_draws_no_dots_or_seed_lines():
    figures = plots.comparison_figures(*frames(["distilbert", "tinybert"], seeds=1))
    ax = _bar_axes(figures, "comparison_f1.png")
    assert not [c for c in ax.collections if c.get_gid() == drawing.SEEDS_GID]
    assert "seeds" not in ax.get_title()
    lines = figures["comparison_accuracy_evolution.png"].axes[0].get_lines()
    assert len(lines) == 2 and not [line for line in lines if line.get_gid() == drawing.SEED_LINE_GID]


def test_missing_test_skips_bars_and_falls_back_to_validation():
    ranked, runs, histories = frames(["distilbert", "tinybert"], evaluated=False)
    figures = plots.comparison_figures(ranked, runs, histories)
    ax = _bar_axes(figures, "comparison_accuracy.png")
    assert sum(len(c.patches) for c in ax.containers if not isinstance(c, ErrorbarContainer)) == 2  # validation only
    assert "not evaluated" in [t.get_text() for t in ax.texts]
    assert "Validation metrics" in _bar_axes(figures, "comparison_all_metrics.png").get_title()
    assert "Validation metrics" in figures["comparison_radar.png"].axes[0].get_title()


def test_one_colour_mapping_across_figures():
    models = ["distilbert", *FOLDERS]
    figures = plots.comparison_figures(*frames(models))
    expected = drawing.colours(models)
    for name in ("comparison_accuracy.png", "comparison_accuracy_evolution.png", "comparison_radar.png"):
        handles, labels = figures[name].axes[0].get_legend_handles_labels()
        seen = {label: (h.patches[0].get_facecolor() if hasattr(h, "patches") else h.get_color())
                for h, label in zip(handles, labels) if label in models}
        assert {m: drawing.to_hex(c) for m, c in seen.items()} == expected
