"""MLflow plumbing with no ML knowledge: a step run's life (FINISHED, FAILED or KILLED with nothing half-written),
the tracking store and its locks, signals, staging folders, step reuse, the Model Registry, and the MLflow plugins
(default experiment, run context). May import the leaf modules only."""
