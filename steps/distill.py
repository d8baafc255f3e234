"""distill: a student learns from the labelled train rows plus the unlabelled pool soft-labelled by a teacher
(knowledge distillation; self-training when the student is the teacher's own base model). Validated each epoch
like train, best epoch kept, logged and registered like a train run: evaluate and compare treat it as one more
candidate under the same promotion gate."""
from __future__ import annotations

import argparse
import logging

import mlflow
import pandas as pd

from agnews import hardware, params, values, vocab
from agnews.data import handoff
from agnews.data.sampling import with_row_ids
from agnews.data.task import Task, check_same
from agnews.errors import PipelineError
from agnews.monitoring import references
from agnews.runs import lifecycle
from agnews.serving import classifiers
from agnews.training import distill, fine_tune, models, results

log = logging.getLogger("steps.distill")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = params.StepParser(description=__doc__)
    parser.add_argument("--teacher", default="models:/agnews-classifier@champion", help="the teacher's model URI")
    parser.add_argument("--model", default="", help="the student: preset, hub id or folder; default the teacher's "
                                                    "base model")
    parser.add_argument("--name", default="", help="default: <student>[-L<N>]-kd")
    parser.add_argument("--data_run_id", required=True, help="a prepare_data run: splits and the unlabelled pool")
    params.add_distill_arguments(parser)
    parser.add_argument("--seed", type=lambda v: values.whole(v, "seed", 0), default=42)
    params.add_training_arguments(parser)
    return parser.parse_args(argv)


def _teacher(uri: str) -> tuple[str, dict[str, str]]:
    """The URI to load (an alias pinned to its version) and what the run records about the teacher."""
    resolved = classifiers.registered_version(uri)
    if resolved is None:
        return uri, {vocab.TEACHER_URI: uri}
    name, version = resolved
    tags = mlflow.MlflowClient().get_model_version(name, version).tags
    return f"models:/{name}/{version}", {vocab.TEACHER_URI: uri, vocab.TEACHER_REGISTERED_MODEL: name,
                                         vocab.TEACHER_VERSION: version,
                                         vocab.TEACHER_MODEL: tags.get("model", ""),
                                         vocab.TEACHER_BASE_MODEL: tags.get("base_model", "")}


def _check_teacher_task(uri: str, resolved: str, task: Task) -> None:
    """A teacher of another task (other columns, other cleaning, not only other labels) teaches the wrong thing;
    checked on its training run's data run when it can be traced (its labels are checked again when loaded)."""
    run = references.training_run_of(resolved)
    data_run = run.data.tags.get(vocab.DATA_RUN_ID, "") if run is not None else ""
    if data_run:
        check_same(task, handoff.load_task(data_run), f"teacher {uri!r}",
                   "pass a teacher trained on this data run's task "
                   "(-P teacher=models:/<its registered model>@champion)")


def _pool(data_run_id: str, size: int, seed: int) -> pd.DataFrame:
    pool = handoff.load_unlabeled(data_run_id)
    if size and size < len(pool):
        pool = pool.sample(n=size, random_state=seed).reset_index(drop=True)
    return pool


def run(args: argparse.Namespace) -> str:
    lifecycle.get_run(args.data_run_id, vocab.PREPARE_DATA, vocab.TRAIN)
    splits = {k: with_row_ids(v) for k, v in handoff.load_splits(args.data_run_id, ("train", "validation")).items()}
    task = handoff.load_task(args.data_run_id)
    pool = _pool(args.data_run_id, args.unlabeled_size, args.seed)
    teacher_uri, teacher_tags = _teacher(args.teacher)
    _check_teacher_task(args.teacher, teacher_uri, task)
    base = args.model or teacher_tags.get(vocab.TEACHER_BASE_MODEL, "")
    if not base:
        raise PipelineError(f"teacher {args.teacher!r} names no base model; pass the student with -P model=<preset, "
                            "hub id or folder>")
    spec = models.resolve_model(base)
    if spec.probe:
        raise PipelineError(f"student {base!r} is a linear probe, which cannot learn from a teacher's soft labels; "
                            "pass a model to fine-tune (-P model=<preset, hub id or folder>)")
    name = models.safe_name(args.name) if args.name else (
        f"{spec.name}{f'-L{args.student_layers}' if args.student_layers else ''}-kd")
    if args.label_smoothing:  # DistillTrainer's loss is its own: the teacher's soft labels already smooth
        raise PipelineError(f"-P label_smoothing={args.label_smoothing} has no effect on distillation (the teacher's "
                            "soft labels take its place); pass label_smoothing=0, or tune temperature")
    config = fine_tune.config_from_args(args, args.learning_rate or spec.default_learning_rate)
    tokenizer, model = models.load_tokenizer_and_model(spec, task)
    if args.student_layers:
        distill.cut_layers(model, args.student_layers)
    models.check_max_length(spec, model, config.max_length)
    distill.reinit_top_layers(model, config.reinit_top_k, config.seed)
    lifecycle.set_run_name(f"distill {name}")
    mlflow.set_tags({lifecycle.MODEL_TAG: name, vocab.PRESET: spec.preset, vocab.BASE_MODEL: spec.checkpoint,
                     vocab.DATA_RUN_ID: args.data_run_id, **teacher_tags})
    threads = hardware.configure_threads()
    lifecycle.log_params({"teacher": args.teacher, "model": base, "base_model": spec.checkpoint,
                         "student_layers": args.student_layers, "unlabeled_size": args.unlabeled_size,
                         "unlabeled_used": len(pool), "temperature": args.temperature, "alpha": args.alpha,
                         "epochs": config.epochs,
                         "epochs_planned": fine_tune.planned_epochs(
                             config, len(splits["train"]) + len(pool), rarest=fine_tune.rarest_class(splits["train"])),
                         "learning_rate": config.learning_rate,
                         "batch_size": config.batch_size, "max_length": config.max_length, "seed": config.seed,
                         "precision": hardware.resolve_precision(config.precision),
                         "early_stopping_patience": config.early_stopping_patience, "warmup_ratio": config.warmup_ratio,
                         "weight_decay": config.weight_decay, "layer_decay": config.layer_decay,
                         "reinit_top_k": config.reinit_top_k, "torch_threads": threads,
                         "data_run_id": args.data_run_id})
    frame = pd.concat([splits["train"], pool.assign(label=distill.IGNORE)], ignore_index=True)
    with classifiers.load(teacher_uri, args.precision) as teacher_model:  # soft labels for labelled and pool rows
        if teacher_model.labels != task.labels:  # its logits would teach other classes under the same ids
            raise PipelineError(f"teacher {args.teacher!r} has labels [{', '.join(teacher_model.labels)}], not the "
                                f"data run's [{', '.join(task.labels)}]; pass a teacher trained on this label set "
                                "(-P teacher=models:/<its registered model>@champion)")
        logits = teacher_model.logits(frame["text"].tolist(), progress=True)
    log.info("distilling %s into %s (%s, %d layers) on %d labelled + %d unlabelled rows, T=%g, alpha=%g",
             teacher_uri, name, spec.checkpoint, model.config.num_hidden_layers, len(splits["train"]), len(pool),
             args.temperature, args.alpha)
    result = fine_tune.train(model, tokenizer, frame, splits["validation"], config,
                            on_epoch=lambda epoch, row: mlflow.log_metrics(row, step=epoch),
                            teacher=fine_tune.Teacher(logits, args.temperature, args.alpha))
    return results.publish(name, model, tokenizer, result, splits["validation"], config.max_length,
                           args.registered_model, {"model": name, "preset": spec.preset or "none",
                                                   "base_model": spec.checkpoint, "data_run_id": args.data_run_id,
                                                   "teacher_version": teacher_tags.get(vocab.TEACHER_VERSION, ""),
                                                   "student_layers": str(model.config.num_hidden_layers)}, task)


def main(argv: list[str] | None = None) -> None:
    with lifecycle.step_run(vocab.DISTILL, plots=True):
        run(parse_args(argv))


if __name__ == "__main__":
    params.run_and_exit(main)
