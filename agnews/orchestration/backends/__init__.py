"""MLflow project backends the project ships (entry point group `mlflow.project_backend`): `slurm`."""
