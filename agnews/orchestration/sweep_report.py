"""What a sweep leaves for people: the trials table, the best trial (by validation macro F1, never test), Optuna's
figures, and sweep.md."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from agnews.errors import PipelineError
from agnews.orchestration import sweep

log = logging.getLogger(__name__)


# --- what the parent logs --------------------------------------------------------------------------------------

def trials_table(study: sweep.Study) -> pd.DataFrame:
    rows = []
    for trial in study.finished:
        if trial.state == TrialState.RUNNING:
            continue
        rows.append({"trial": trial.user_attrs.get("number", trial.number), "state": trial.state.name,
                     "value": trial.value, "epochs_run": len(trial.intermediate_values), **trial.params,
                     "run_id": trial.user_attrs.get("run_id", "")})
    return pd.DataFrame(rows).sort_values("trial").reset_index(drop=True)


def best_trial(study: sweep.Study) -> optuna.trial.FrozenTrial:
    complete = [t for t in study.finished if t.state == TrialState.COMPLETE]
    if not complete:
        raise PipelineError(f"study {study.name!r} has no finished trial to pick (all pruned or failed); run more "
                            "trials (-P n_trials) or widen the search space")
    return max(complete, key=lambda t: (t.value, -t.user_attrs.get("number", t.number)))  # ties: the earlier


def figures(study: sweep.Study, folder: Path) -> list[Path]:
    """Optuna's own matplotlib plots: the optimisation history, and parameter importances where they exist
    (two finished trials at least, a parameter that varied)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    paths = []
    plots = [("history", optuna_plots.plot_optimization_history)]
    if sum(t.state == TrialState.COMPLETE for t in study.finished) >= 2:
        plots.append(("importance", optuna_plots.plot_param_importances))
    for kind, plot in plots:
        try:
            axes = plot(study.study)
        except (ValueError, RuntimeError) as exc:  # e.g. importances of parameters that never varied
            log.warning("no %s plot for study %r: %s", kind, study.name, exc)
            continue
        figure = axes.figure
        figure.set_size_inches(7.5, 4.5)
        figure.tight_layout()
        path = folder / f"sweep_{study.name}_{kind}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths


def report(study: sweep.Study, best: optuna.trial.FrozenTrial, table: pd.DataFrame) -> str:
    counts = table["state"].value_counts().to_dict()
    lines = [f"# Sweep {study.name}", "",
             f"{len(table)} trials ({', '.join(f'{n} {s.lower()}' for s, n in sorted(counts.items()))}). Best: "
             f"trial {best.user_attrs.get('number', best.number)}, validation macro F1 {best.value:.4f}, with "
             + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items()) + ".",
             "",
             f"The best of {counts.get('COMPLETE', 0)} finished trials was picked on the validation rows, so its "
             "validation score is biased upward (the winner's curse of a search); it is no estimate of how it does "
             "on new rows. Its evaluate run scores it on the test rows, and compare's gate decides on gate rows "
             "that neither the search nor the incumbent saw.", ""]
    def cell(column: str, value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4f}" if column == "value" else f"{value:.3g}"
        return str(value)

    cells = [[cell(c, v) for c, v in zip(table.columns, row)] for row in table.itertuples(index=False)]
    lines += ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns),
              *("| " + " | ".join(row) + " |" for row in cells)]
    return "\n".join(lines) + "\n"
