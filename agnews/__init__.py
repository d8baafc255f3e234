"""agnews-mlops: fine-tune small BERT-family models for text classification, tracked, compared and promoted in MLflow.

The package, by job (each subpackage's docstring says what it may import; tests/unit/test_layout.py holds it):

- leaf modules: `errors`, `vocab` (every tag, step name and decision), `values` (parameter values), `stats`,
  `hardware`, `metrics`, `drawing` (what figures share), `params` (the steps' parameters, declared once);
- `runs`: MLflow plumbing with no ML in it: step lifecycle, store, signals, reuse, registry, MLflow plugins;
- `data`: the task, reading, sampling, the hand-off of splits between runs, the rows a model has seen;
- `training`: models, the Trainer, distillation, probes, what a training step leaves on its run;
- `serving`: the classifier, its costs, int8, models from code, batch predict, the online server;
- `decide`: ranking, the gate, promotion, the report and its figures (scorers injected, no training or serving);
- `monitoring`: the health check of a batch, its reference, alarms over time, the monitor report;
- `orchestration`: children on local, Slurm or Kubernetes backends, and sweeps."""
