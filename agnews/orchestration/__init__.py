"""Where child runs run: MLflow project backends (local, the project's Slurm plugin, Kubernetes), up to N at once with
cancellation, and Optuna sweeps whose trials are such children. May import the leaf modules, agnews.runs and
agnews.data."""
