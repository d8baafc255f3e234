"""main: one parent run; prepare_data, then train + evaluate per model and seed, then compare, each a child run
(or an earlier finished run with the same parameters, code and inputs, reused)."""
from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path
from typing import Callable

import mlflow
from mlflow.exceptions import ExecutionException

from agnews import cache, cli, models, tracking
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
    cli.add_serving_arguments(parser)
    parser.add_argument("--distill", type=cli.boolean("distill"), default=False,
                        help="after compare, distill the champion into a student, evaluate it and compare again")
    parser.add_argument("--student", default="", help="distill's student model; default: the champion's base model")
    cli.add_distill_arguments(parser)
    parser.add_argument("--reuse", type=cli.boolean("reuse"), default=True,
                        help="reuse finished runs with the same parameters, code and inputs; false: run everything")
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


class Steps:
    """Launches children, or reuses a finished run with the same parameters, code and inputs (`-P reuse`).
    `inputs` is the input key the step's runs tag (cache.INPUT_TAG), or a function computing it: only called when
    reusing (hashing a model folder the first time takes seconds)."""

    def __init__(self, reuse: bool):
        self.reuse, self.reused = reuse, {}

    def run(self, entry_point: str, run_name: str, parameters: dict, inputs: str | Callable[[], str] = "") -> str:
        if not self.reuse:
            return _child(entry_point, run_name, parameters)
        experiment = mlflow.active_run().info.experiment_id
        found = cache.find(experiment, entry_point, parameters, inputs() if callable(inputs) else inputs)
        if found is None:
            return _child(entry_point, run_name, parameters)
        log.info("reusing run %s for %r: same parameters, code and inputs", found, run_name)
        self.reused.setdefault(entry_point, []).append(found)
        mlflow.set_tag(f"agnews.reused.{entry_point}", ",".join(self.reused[entry_point]))
        return found


def run_pipeline(args: argparse.Namespace) -> None:
    names = cli.model_list(args.models)
    seeds = cli.seed_list(args.seeds, args.seed)
    # Unknown names fail before any child starts; two checkpoints with one short name get distinct names.
    specs = models.distinct_names([models.resolve_model(name) for name in names])
    tracking.log_params({**vars(args), "seeds": ",".join(map(str, seeds)),
                         **tracking.data_option_params(cli.data_options(args))})
    steps = Steps(args.reuse)
    data = {**{k: getattr(args, k) for k in ("data", "train_size", "val_size", "test_size", "gate_size", "seed")},
            **tracking.data_option_params(cli.data_options(args))}  # how the source is read: part of the reuse key
    data_run_id = steps.run("prepare_data", "prepare_data", data, functools.partial(cache.input_digest, args.data))
    machine = functools.cache(functools.partial(cache.machine_key, args.precision))  # evaluate's cost depends on it
    training = {k: getattr(args, k) for k in TRAINING_KEYS}
    scoring = {"data_run_id": data_run_id, "precision": args.precision, "int8": args.int8,
               "register_int8": args.register_int8, "int8_tolerance": args.int8_tolerance}
    train_run_ids = []
    for name, spec in zip(names, specs):
        for seed in seeds:
            suffix = f" seed {seed}" if len(seeds) > 1 else ""
            train_run_ids.append(steps.run("train", f"train {spec.name}{suffix}", {
                "model": name, "name": spec.name, "data_run_id": data_run_id, **data, "seed": seed, **training},
                functools.partial(cache.input_digest, spec.checkpoint)))
            steps.run("evaluate", f"evaluate {spec.name}{suffix}", {"train_run_id": train_run_ids[-1], **scoring},
                      machine)
    # Never reused: the registry's state is one of its inputs. Named runs: reused ones are not siblings.
    gate = {k: getattr(args, k) for k in ("registered_model", "min_improvement", "latency_budget_ms",
                                          "gate_data_run_id", "min_gate_rows", "int8_tolerance")}
    _child("compare", "compare", {"run_ids": ",".join(train_run_ids), **gate})
    if args.distill:  # the champion teaches; the student then faces the same gate as every candidate
        student = _child("distill", "distill", {
            "teacher": f"models:/{args.registered_model}@champion", "model": args.student,
            "data_run_id": data_run_id, "seed": args.seed, **training,
            **{k: getattr(args, k) for k in ("student_layers", "unlabeled_size", "temperature", "alpha")}})
        _child("evaluate", "evaluate distilled", {"train_run_id": student, **scoring})
        _child("compare", "compare with the distilled student", {"run_ids": ",".join([*train_run_ids, student]),
                                                                 **gate})


def main(argv: list[str] | None = None) -> None:
    with tracking.step_run("main", "main"):
        run_pipeline(parse_args(argv))


if __name__ == "__main__":
    main()
