"""train: fine-tune one model, log per-epoch metrics and curves, log and register the best epoch's model.

Runs alone (`mlflow run . -e train`), as a child of `main`, or data-parallel under torchrun:
    torchrun --nproc_per_node N -m steps.train -- --model tinybert --data_run_id <id>
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import mlflow
import pandas as pd

from agnews import models, plots, tracking, training
from steps import whole
from steps.prepare_data import add_data_arguments, prepare

log = logging.getLogger("steps.train")


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The fine-tuning knobs; `main` takes the same ones and hands them to each train child."""
    parser.add_argument("--epochs", type=whole, default=3)
    parser.add_argument("--learning_rate", type=float, default=0.0, help="0: the preset's default")
    parser.add_argument("--batch_size", type=whole, default=16)
    parser.add_argument("--max_length", type=whole, default=128)
    parser.add_argument("--precision", default="auto", choices=training.PRECISIONS)
    parser.add_argument("--early_stopping_patience", type=whole, default=2)
    parser.add_argument("--registered_model", default="agnews-classifier")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tinybert", help=f"preset ({', '.join(models.PRESETS)}), hub id or folder")
    parser.add_argument("--data_run_id", default="", help="prepare_data run to read splits from; empty: prepare here")
    add_data_arguments(parser)
    add_training_arguments(parser)
    parser.add_argument("--run_name", default="", help="default: 'train <model>'")
    argv = sys.argv[1:] if argv is None else argv
    return parser.parse_args([a for a in argv if a != "--"])  # torchrun ... -m steps.train -- <args>


def _load_data(args: argparse.Namespace, rank: int) -> tuple[dict[str, pd.DataFrame], str]:
    """Splits from a prepare_data run, or prepared (and on rank 0 logged) inside this run."""
    if args.data_run_id:
        run = tracking.get_run(args.data_run_id, "prepare_data", "train")
        splits = tracking.load_splits(args.data_run_id, ("train", "validation"))
        if rank == 0:
            tracking.log_lineage(splits, tracking.data_uri(run))
        return splits, args.data_run_id
    if rank == 0:
        splits = prepare(args)
        return splits, mlflow.active_run().info.run_id
    from agnews.data import SampleSizes, sample_splits  # other ranks draw the same seeded sample, silently
    return sample_splits(args.data, SampleSizes(args.train_size, args.val_size, args.test_size), args.seed), ""


def run_training(args: argparse.Namespace, rank: int) -> None:
    spec = models.resolve_model(args.model)
    config = training.TrainConfig(
        epochs=args.epochs, learning_rate=args.learning_rate or spec.default_learning_rate,
        batch_size=args.batch_size, max_length=args.max_length, seed=args.seed, precision=args.precision,
        early_stopping_patience=args.early_stopping_patience)
    precision = training.resolve_precision(config.precision)
    splits, data_run_id = _load_data(args, rank)
    tokenizer, model = models.load_tokenizer_and_model(spec)
    threads = training.configure_threads()
    if rank == 0:
        mlflow.set_tags({tracking.MODEL_TAG: spec.name, "agnews.preset": spec.preset,
                         "agnews.base_model": spec.checkpoint, "agnews.data_run_id": data_run_id})
        tracking.log_params({"model": args.model, "base_model": spec.checkpoint, "epochs": config.epochs,
                           "learning_rate": config.learning_rate, "batch_size": config.batch_size,
                           "max_length": config.max_length, "seed": config.seed, "precision": precision,
                           "early_stopping_patience": config.early_stopping_patience,
                           "weight_decay": config.weight_decay, "warmup_ratio": config.warmup_ratio,
                           "max_grad_norm": config.max_grad_norm, "torch_threads": threads,
                           "world_size": training.world()[1], "data_run_id": data_run_id})
    log.info("training %s (%s) for %d epochs, lr %g, %s, %d thread(s)", spec.name, spec.checkpoint,
             config.epochs, config.learning_rate, precision, threads)
    result = training.train(model, tokenizer, splits["train"], splits["validation"], config,
                            on_epoch=lambda epoch, row: mlflow.log_metrics(row, step=epoch))
    if rank != 0:
        return
    mlflow.log_metrics({"best_epoch": result.best_epoch, "num_parameters": models.count_parameters(model),
                        "train_seconds": result.train_seconds, "epochs_run": len(result.history),
                        **{f"best_{k}": v for k, v in result.best.items() if k.startswith("val_")}})
    history = pd.DataFrame(result.history)
    mlflow.log_table(history, "history.json")
    for path in plots.training_curves(spec.name, history, result.best_epoch):
        tracking.log_plot(path)
    from transformers import pipeline  # the served artefact: labels by name, one call per text list

    classifier = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    model_uri, version = tracking.log_and_register(
        classifier, args.registered_model, {"preset": spec.preset or "none", "base_model": spec.checkpoint,
                                             "train_run_id": mlflow.active_run().info.run_id},
        config.max_length)
    mlflow.set_tags({"agnews.model_uri": model_uri, "agnews.registered_model": args.registered_model,
                     "agnews.registered_version": version})
    log.info("best epoch %d: val macro F1 %.4f; registered %s version %s", result.best_epoch,
             result.best["val_f1_macro"], args.registered_model, version)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    tracking.setup()
    rank = training.world()[0]
    name = args.run_name or f"train {models.short_name(args.model)}"
    if rank != 0:  # DDP workers train in lockstep but never touch the tracking store
        os.environ.pop("MLFLOW_RUN_ID", None)
        run_training(args, rank)
        return
    with tracking.step_run("train", name):
        run_training(args, rank)


if __name__ == "__main__":
    main()
