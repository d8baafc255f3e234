"""train: fine-tune one model, log per-epoch metrics, curves and the best epoch's validation predictions,
then log the model and, as the very last act, register it.

Runs alone (`mlflow run . -e train`), as a child of `main`, or data-parallel under torchrun:
    torchrun --nproc_per_node N -m steps.train -- --model tinybert --data_run_id <id>
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pandas as pd
import torch

from agnews import hardware, metrics, params, vocab
from agnews.data import handoff
from agnews.data.sampling import Sample, sample_splits, with_row_ids
from agnews.data.task import Task
from agnews.errors import PipelineError
from agnews.runs import lifecycle, reuse
from agnews.serving import packaged
from agnews.training import distill, fine_tune, models, probe, results

log = logging.getLogger("steps.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = params.StepParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tinybert", help=f"preset ({', '.join(models.PRESETS)}), hub id or folder")
    parser.add_argument("--name", default="", help="short name in runs, plots and tables; default: from the model")
    parser.add_argument("--data_run_id", default="", help="prepare_data run to read splits from; empty: prepare here")
    params.add_data_arguments(parser)
    params.add_training_arguments(parser)
    parser.add_argument("--run_name", default="", help="default: 'train <model>'")
    argv = sys.argv[1:] if argv is None else argv
    return parser.parse_args([a for a in argv if a != "--"])  # torchrun ... -m steps.train -- <args>


@dataclasses.dataclass
class _Data:
    splits: dict[str, pd.DataFrame]  # train, validation
    data_run_id: str
    task: Task
    sample: Sample | None = None  # drawn here, logged once the model has loaded (nothing logged for a bad model)


def _load_data(args: argparse.Namespace) -> _Data:
    """Splits and task from a prepare_data run, or drawn inside this run (rank 0 only)."""
    if args.data_run_id:
        lifecycle.get_run(args.data_run_id, vocab.PREPARE_DATA, vocab.TRAIN)
        loaded = handoff.load_splits(args.data_run_id, ("train", "validation"))
        splits = {name: with_row_ids(frame) for name, frame in loaded.items()}
        return _Data(splits, args.data_run_id, handoff.load_task(args.data_run_id))
    sample = sample_splits(args.data, params.sample_sizes(args), args.seed, params.data_options(args))
    return _Data(sample.splits, mlflow.active_run().info.run_id, sample.task, sample)


def _log_data(args: argparse.Namespace, data: _Data) -> None:
    if data.sample is None:
        handoff.log_lineage(data.splits, handoff.data_uri(mlflow.get_run(data.data_run_id)))
    else:
        handoff.log_sample(args.data, params.sample_sizes(args), args.seed, params.data_options(args), data.sample)


def run_training(args: argparse.Namespace, rank: int) -> None:
    spec = models.resolve_model(args.model)
    if args.name:
        spec = dataclasses.replace(spec, name=models.safe_name(args.name))
    config = fine_tune.config_from_args(args, args.learning_rate or spec.default_learning_rate)
    precision = hardware.resolve_precision(config.precision)
    if spec.probe:
        return _train_probe(args, spec, config, precision)
    data = fine_tune.from_rank_zero(lambda: _load_data(args))  # other ranks never open the store
    splits, data_run_id = data.splits, data.data_run_id
    tokenizer, model = models.load_tokenizer_and_model(spec, data.task)  # model problems: before data is logged
    models.check_max_length(spec, model, config.max_length)
    distill.reinit_top_layers(model, config.reinit_top_k, config.seed)  # checks k against the layers: before logging
    threads = hardware.configure_threads()
    if rank == 0:
        _log_data(args, data)
        _tag(spec, data_run_id)
        lifecycle.log_params({"model": args.model, "base_model": spec.checkpoint, "epochs": config.epochs,
                             "epochs_planned": fine_tune.planned_epochs(config, len(splits["train"]),
                                                                       fine_tune.world()[1],
                                                                       fine_tune.rarest_class(splits["train"])),
                             "learning_rate": config.learning_rate, "batch_size": config.batch_size,
                             "max_length": config.max_length, "seed": config.seed, "precision": precision,
                             "early_stopping_patience": config.early_stopping_patience,
                             "weight_decay": config.weight_decay, "warmup_ratio": config.warmup_ratio,
                             "layer_decay": config.layer_decay, "label_smoothing": config.label_smoothing,
                             "reinit_top_k": config.reinit_top_k,
                             "max_grad_norm": config.max_grad_norm, "torch_threads": threads,
                             "world_size": fine_tune.world()[1], "data_run_id": data_run_id})
    log.info("training %s (%s) for %d epochs%s, lr %g, %s, %d thread(s)", spec.name, spec.checkpoint,
             fine_tune.planned_epochs(config, len(splits["train"]), fine_tune.world()[1],
                                     fine_tune.rarest_class(splits["train"])),
             "" if config.epochs else " (auto: by optimizer steps)", config.learning_rate, precision, threads)
    result = fine_tune.train(model, tokenizer, splits["train"], splits["validation"], config,
                            on_epoch=lambda epoch, row: mlflow.log_metrics(row, step=epoch))
    if rank != 0:
        return
    results.publish(spec.name, model, tokenizer, result, splits["validation"], config.max_length,
                    args.registered_model, {"model": spec.name, "preset": spec.preset or "none",
                                            "base_model": spec.checkpoint, "data_run_id": data_run_id}, data.task)


def _tag(spec: models.ModelSpec, data_run_id: str) -> None:
    mlflow.set_tags({lifecycle.MODEL_TAG: spec.name, vocab.PRESET: spec.preset, vocab.BASE_MODEL: spec.checkpoint,
                     vocab.DATA_RUN_ID: data_run_id, reuse.INPUT_TAG: reuse.input_digest(spec.checkpoint),
                     **({vocab.PROBE: "true"} if spec.probe else {})})


def _train_probe(args: argparse.Namespace, spec: models.ModelSpec, config: fine_tune.TrainConfig,
                 precision: str) -> None:
    """probe:<model>: the frozen encoder's embeddings and a logistic regression (agnews.training.probe), left on the run
    as a fine-tune leaves itself (one "epoch" of validation metrics, validation predictions, a registered version)."""
    if fine_tune.world()[1] > 1:
        raise PipelineError(f"{args.model} is a linear probe: it trains in one process; run it without torchrun")
    data = _load_data(args)
    tokenizer, encoder = models.load_encoder(spec, data.task)  # model problems: before data is logged
    models.check_max_length(spec, encoder, config.max_length)
    threads = hardware.configure_threads()
    _log_data(args, data)
    _tag(spec, data.data_run_id)
    lifecycle.log_params({"model": args.model, "base_model": spec.checkpoint, "max_length": config.max_length,
                         "batch_size": config.batch_size, "seed": config.seed, "precision": precision,
                         "torch_threads": threads, "world_size": 1, "data_run_id": data.data_run_id,
                         "probe_c_grid": ",".join(f"{c:g}" for c in probe.C_GRID)})
    log.info("linear probe on the frozen %s (%s): %s, %d thread(s)", spec.checkpoint, spec.name, precision, threads)
    result, fitted = _fit_probe(encoder, tokenizer, data, config, precision)
    lifecycle.log_params({"probe_c": f"{fitted.c:g}"})
    mlflow.log_table(pd.DataFrame({"c": list(fitted.val_f1_by_c), "val_f1_macro": list(fitted.val_f1_by_c.values())}),
                     "probe_grid.json")
    served = torch.nn.Sequential(encoder, torch.nn.Linear(*fitted.weight.shape[::-1]))  # what it holds: num_parameters
    with tempfile.TemporaryDirectory(prefix="agnews-probe-") as tmp:
        folder = probe.save(Path(tmp) / "probe", encoder, tokenizer, fitted, list(data.task.labels), config.max_length)
        results.publish(spec.name, served, tokenizer, result, data.splits["validation"], config.max_length,
                        args.registered_model, {"model": spec.name, "preset": spec.preset or "none", "variant": "probe",
                                                "base_model": spec.checkpoint, "data_run_id": data.data_run_id},
                        data.task, log_model=lambda: packaged.log_probe_model(folder))


def _fit_probe(encoder, tokenizer, data: _Data, config: fine_tune.TrainConfig,
               precision: str) -> tuple[fine_tune.TrainResult, probe.Probe]:
    """Embed both splits, choose C on validation; the result as a one-epoch training (logged at step 1)."""
    start = time.perf_counter()
    train, val = data.splits["train"], data.splits["validation"]
    x_train, x_val = (probe.embed(encoder, tokenizer, frame["text"].tolist(), config.max_length, config.batch_size,
                                  precision) for frame in (train, val))
    y_train, y_val = train["label"].to_numpy(), val["label"].to_numpy()
    fitted = probe.fit(x_train, y_train, x_val, y_val, data.task.num_labels, seed=config.seed)
    val_logits = fitted.logits(x_val)
    row = {"train_loss": probe.log_loss(fitted.logits(x_train), y_train), "val_loss": probe.log_loss(val_logits, y_val),
           **metrics.summary(y_val, val_logits.argmax(axis=1), "val", data.task.num_labels)}
    mlflow.log_metrics(row, step=1)
    seconds = time.perf_counter() - start
    log.info("probe: C=%g, val macro F1 %.4f; %.1f s (regressions %.1f s)", fitted.c, row["val_f1_macro"], seconds,
             fitted.fit_seconds)
    mlflow.log_metrics({"probe_fit_seconds": fitted.fit_seconds})
    return fine_tune.TrainResult([{"epoch": 1, **row}], 1, seconds, precision, row, val_logits), fitted


def main(argv: list[str] | None = None) -> None:
    rank = fine_tune.world()[0]
    if rank != 0:  # DDP workers train in lockstep but never touch the tracking store
        logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s")
        os.environ.pop("MLFLOW_RUN_ID", None)
        try:
            run_training(parse_args(argv), rank)
        except PipelineError:
            raise SystemExit(1) from None  # rank 0 reports the same error in its one line
        return
    with lifecycle.step_run(vocab.TRAIN, plots=True):
        args = parse_args(argv)
        name = models.safe_name(args.name) if args.name else models.short_name(args.model)
        lifecycle.set_run_name(args.run_name or f"train {name}")
        run_training(args, rank)


if __name__ == "__main__":
    params.run_and_exit(main)
