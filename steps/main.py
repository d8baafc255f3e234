"""main: one parent run; prepare_data, then train + evaluate per model, then compare, each a child run."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import mlflow
from mlflow.exceptions import ExecutionException

from agnews import models, tracking
from agnews.errors import PipelineError
from steps.prepare_data import add_data_arguments
from steps.train import add_training_arguments

log = logging.getLogger("steps.main")
PROJECT_DIR = str(Path(__file__).resolve().parents[1])  # in a git-URL run: MLflow's checkout of the commit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="tinybert,bert-mini,distilbert", help="comma list of models")
    add_data_arguments(parser)
    add_training_arguments(parser)
    return parser.parse_args(argv)


def _child(entry_point: str, run_name: str, parameters: dict) -> str:
    """Run one entry point as a child of the active run (MLflow tags mlflow.parentRunId); its run id."""
    log.info("starting child run %r", run_name)
    try:
        submitted = mlflow.projects.run(PROJECT_DIR, entry_point, parameters={k: str(v) for k, v in parameters.items()},
                                        experiment_id=mlflow.active_run().info.experiment_id, run_name=run_name,
                                        env_manager="local", synchronous=True)
    except ExecutionException as exc:
        mlflow.set_tag("agnews.failed_child", run_name)
        raise PipelineError(f"child run {run_name!r} failed ({exc}); see its run for the error") from exc
    return submitted.run_id


def run_pipeline(args: argparse.Namespace) -> None:
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if not names:
        raise PipelineError("no models given; pass -P models=tinybert,bert-mini,distilbert or any hub id/folder")
    specs = [models.resolve_model(name) for name in names]  # unknown names fail before any child starts
    tracking.log_params({k: v for k, v in vars(args).items()})
    data = {k: getattr(args, k) for k in ("data", "train_size", "val_size", "test_size", "seed")}
    data_run_id = _child("prepare_data", "prepare_data", data)
    for name, spec in zip(names, specs):
        train_run_id = _child("train", f"train {spec.name}", {
            "model": name, "data_run_id": data_run_id, **data, "epochs": args.epochs,
            "learning_rate": args.learning_rate, "batch_size": args.batch_size, "max_length": args.max_length,
            "precision": args.precision, "early_stopping_patience": args.early_stopping_patience,
            "registered_model": args.registered_model})
        _child("evaluate", f"evaluate {spec.name}", {"train_run_id": train_run_id, "data_run_id": data_run_id,
                                                    "precision": args.precision})
    _child("compare", "compare", {"registered_model": args.registered_model})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tracking.setup()
    with tracking.step_run("main", "main"):
        run_pipeline(args)


if __name__ == "__main__":
    main()
