"""The default experiment for `mlflow run` in this project's folder (MLflow's provider entry point).

Kept apart from agnews.tracking: MLflow loads entry points while `import mlflow` runs, so this module
must not import anything that imports mlflow at module level."""
from __future__ import annotations

from pathlib import Path

from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider

EXPERIMENT = "agnews-classification"
PROJECT_NAME = "agnews-mlops"


def experiment_id(name: str = EXPERIMENT) -> str:
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


class ProjectExperimentProvider(DefaultExperimentProvider):
    """`mlflow run` in this project's folder without --experiment-name lands in `agnews-classification`.

    MLflow asks registered providers (entry point group `mlflow.default_experiment_provider`) for the
    default experiment before it creates a run; explicit names, ids and MLFLOW_EXPERIMENT_* win.
    """

    def in_context(self) -> bool:
        mlproject = Path.cwd() / "MLproject"
        return mlproject.is_file() and mlproject.read_text().startswith(f"name: {PROJECT_NAME}")

    def get_experiment_id(self) -> str:
        return experiment_id()
