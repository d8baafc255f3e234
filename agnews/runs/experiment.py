"""The default experiment for `mlflow run` in this project's folder (MLflow's provider entry point).

Kept apart from agnews.runs.lifecycle: MLflow loads entry points while `import mlflow` runs, so this module
must not import anything that imports mlflow at module level."""
from __future__ import annotations

import sys
from pathlib import Path

from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider

EXPERIMENT = "agnews-classification"
PROJECT_NAME = "agnews-mlops"


def experiment_id(name: str = EXPERIMENT) -> str:
    """The store checked (seconds, one line on failure), then `name` got or created without a race."""
    import mlflow

    from agnews.runs import store  # imports mlflow: only once `import mlflow` has finished

    store.check(mlflow.get_tracking_uri())
    return store.experiment_id(name)


class ProjectExperimentProvider(DefaultExperimentProvider):
    """`mlflow run` in this project's folder without --experiment-name lands in `agnews-classification`.

    MLflow asks registered providers (entry point group `mlflow.default_experiment_provider`) for the
    default experiment before it creates a run; explicit names, ids and MLFLOW_EXPERIMENT_* win.
    """

    def in_context(self) -> bool:
        mlproject = Path.cwd() / "MLproject"
        return mlproject.is_file() and mlproject.read_text().startswith(f"name: {PROJECT_NAME}")

    def get_experiment_id(self) -> str:
        """Runs inside `mlflow run` before it creates the run (where an unreachable server means minutes of
        retries). MLflow swallows exceptions from providers, so a bad store ends the process here."""
        from agnews.errors import PipelineError

        try:
            return experiment_id()
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

