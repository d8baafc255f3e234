"""main: one parent run; prepare_data, then train + evaluate per model and seed, then compare, each a child run."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import mlflow
from mlflow.exceptions import ExecutionException

from agnews import cli, models, tracking
from agnews.errors import PipelineError

log = logging.getLogger("steps.main")
PROJECT_DIR = str(Path(__file__).resolve().parents[1])  # in a git-URL run: MLflow's checkout of the commit
TRAINING_KEYS = ("epochs", "learning_rate", "batch_size", "max_length", "precision", "early_stopping_patience",
                 "registered_model")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.StepParser(description=__doc__)
    parser.add_argument("--models", default="tinybert,bert-mini,distilbert", help="comma list of models")
    parser.add_argument("--seeds", default="", help="comma list of training seeds; empty: the one --seed")
    cli.add_data_arguments(parser)
    cli.add_training_arguments(parser)
    cli.add_gate_arguments(parser)
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
    names = cli.model_list(args.models)
    seeds = cli.seed_list(args.seeds, args.seed)
    specs = [models.resolve_model(name) for name in names]  # unknown names fail before any child starts
    tracking.log_params({**vars(args), "seeds": ",".join(map(str, seeds))})
    data = {k: getattr(args, k) for k in ("data", "train_size", "val_size", "test_size", "gate_size", "seed")}
    data_run_id = _child("prepare_data", "prepare_data", data)
    training = {k: getattr(args, k) for k in TRAINING_KEYS}
    for name, spec in zip(names, specs):
        for seed in seeds:
            suffix = f" seed {seed}" if len(seeds) > 1 else ""
            train_run_id = _child("train", f"train {spec.name}{suffix}", {
                "model": name, "data_run_id": data_run_id, **data, "seed": seed, **training})
            _child("evaluate", f"evaluate {spec.name}{suffix}", {
                "train_run_id": train_run_id, "data_run_id": data_run_id, "precision": args.precision})
    _child("compare", "compare", {"registered_model": args.registered_model, "min_improvement": args.min_improvement})


def main(argv: list[str] | None = None) -> None:
    with tracking.step_run("main", "main"):
        run_pipeline(parse_args(argv))


if __name__ == "__main__":
    main()
