"""evaluate: score a train run's logged model on the test split (reported only, never used to choose)."""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import mlflow

from agnews import hardware, metrics, params, stats, values, vocab
from agnews.data import handoff, lineage
from agnews.data.sampling import with_row_ids
from agnews.data.task import Task, check_same
from agnews.decide import comparison
from agnews.errors import PipelineError
from agnews.monitoring import references
from agnews.runs import lifecycle, registry, reuse
from agnews.serving import classifiers, costs, int8, packaged
from agnews.training import curves

log = logging.getLogger("steps.evaluate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = params.StepParser(description=__doc__)
    parser.add_argument("--train_run_id", required=True)
    parser.add_argument("--data_run_id", default="", help="default: the data the train run used")
    parser.add_argument("--batch_size", type=lambda v: values.whole(v, "batch_size", 1), default=32)
    parser.add_argument("--precision", type=hardware.precision, default="auto")
    params.add_serving_arguments(parser)
    return parser.parse_args(argv)


def _log_table(table, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / name, index=False)
        mlflow.log_artifact(str(Path(tmp) / name), "evaluation")


def _labelled(test, logits, task: Task):
    table = metrics.predictions_table(test, logits, task)
    table.insert(4, "true_label", [task.labels[i] for i in table["label"]])
    table.insert(5, "predicted_label", [task.labels[i] for i in table["predicted"]])
    return table


def _score_fp32(model_name: str, test, logits, task: Task) -> dict[str, float]:
    predicted, labels = logits.argmax(axis=-1), test["label"].to_numpy()
    scores = {**metrics.summary(labels, predicted, "test", task.num_labels),
              **metrics.per_class(labels, predicted, "test", task)}
    mlflow.log_metrics(scores)
    counts = metrics.confusion(labels, predicted, task)
    with tempfile.TemporaryDirectory() as tmp:
        counts.to_csv(Path(tmp) / "confusion_matrix.csv")
        normalized = metrics.confusion(labels, predicted, task, normalize=True).round(4)
        normalized.to_csv(Path(tmp) / "confusion_matrix_normalized.csv")
        mlflow.log_artifacts(tmp, "evaluation")
    _log_table(_labelled(test, logits, task), "predictions.csv")
    lifecycle.log_plot(curves.confusion_matrix(model_name, counts))
    log.info("%s on test: accuracy %.4f, macro F1 %.4f", model_name, scores["test_accuracy"], scores["test_f1_macro"])
    return scores


def _int8(args, train_run, splits, fp32_predicted, folder: Path, task: Task) -> None:
    """Log the exported int8 variant, score it on the same test rows (paired against fp32) and on validation,
    measure its cost the same way, and register it when asked."""
    info = packaged.log_int8_model(folder)
    mlflow.set_tag(vocab.INT8_MODEL_URI, info.model_uri)
    test, validation = splits["test"], splits["validation"]
    with costs.peak_memory() as peak, classifiers.load(info.model_uri, args.precision, args.batch_size) as model:
        logits = model.logits(test["text"].tolist(), progress=True)
        val_predicted = model.logits(validation["text"].tolist()).argmax(axis=-1)
        cost = costs.cost(model, test["text"].tolist())
        cost.update(peak_memory_mb=peak(), model_size_mb=model.size_mb)
    labels, predicted = test["label"].to_numpy(), logits.argmax(axis=-1)
    classes = task.num_labels
    paired = stats.paired(labels, predicted, fp32_predicted, "f1_macro", classes=classes)
    low, high = stats.bootstrap_ci(labels, predicted, "f1_macro", classes=classes)
    mlflow.log_metrics({f"int8_{k}": v for k, v in {
        **metrics.summary(labels, predicted, "test", classes),
        **metrics.summary(validation["label"], val_predicted, "val", classes),
        **cost, "test_f1_macro_ci_low": low, "test_f1_macro_ci_high": high,
        "agreement": float((predicted == fp32_predicted).mean()), "delta_f1_macro": paired.delta,
        "delta_ci_low": paired.ci_low, "delta_ci_high": paired.ci_high, "mcnemar_p": paired.mcnemar_p}.items()})
    _log_table(_labelled(test, logits, task), "predictions_int8.csv")
    log.info("int8: test macro F1 %+.4f vs fp32 [%+.4f, %+.4f], p50 %.1f ms, %.1f MB", paired.delta, paired.ci_low,
             paired.ci_high, cost["latency_p50_ms"], cost["model_size_mb"])
    accepted = comparison.int8_accepted(paired.ci_low, args.int8_tolerance)
    mlflow.set_tag(vocab.INT8_ACCEPTED, str(accepted).lower())
    if not accepted:
        why = (f"int8 does not agree with fp32: the lower end of its paired test macro-F1 difference "
               f"{paired.ci_low:+.4f} is not above -P int8_tolerance={args.int8_tolerance:g}")
        mlflow.set_tag(vocab.INT8_REJECTED, why + ("; not registered" if args.register_int8 else ""))
        log.warning("%s; it is kept out of the budget pick%s", why, " and not registered" if args.register_int8 else "")
    if args.register_int8 and accepted:
        name = train_run.data.tags[lifecycle.MODEL_TAG]
        version = registry.register(info.model_uri, train_run.data.tags[vocab.REGISTERED_MODEL], {
            "model": f"{name}-int8", "variant": "int8", "base_model": train_run.data.tags.get(vocab.BASE_MODEL, ""),
            "train_run_id": train_run.info.run_id, "evaluate_run_id": mlflow.active_run().info.run_id,
            "data_run_id": train_run.data.tags.get(vocab.DATA_RUN_ID, "")})
        mlflow.set_tag(vocab.INT8_REGISTERED_VERSION, version)


def _check_unseen(test, train_run, data_run_id: str) -> None:
    """Test rows must be rows the model never trained, validated or distilled on (by row id)."""
    seen = lineage.seen_rows(train_run, partial=True) or set()
    overlap = test[test["row_id"].isin(seen)]
    if len(overlap):
        raise PipelineError(
            f"{len(overlap)} test rows of data run {data_run_id} are rows train run {train_run.info.run_id} trained "
            f"or validated on (e.g. row_id {overlap['row_id'].iloc[0]}); evaluate it on its own data run (leave "
            "-P data_run_id empty) or on a prepare_data run drawn from other rows")


def _task(train_run, data_run_id: str) -> Task:
    """The test data's label set; it must be the one the model was trained on (ids mean the same classes)."""
    task = handoff.load_task(data_run_id)
    trained_on = train_run.data.tags.get(vocab.DATA_RUN_ID, "")
    if trained_on and trained_on != data_run_id:
        check_same(handoff.load_task(trained_on), task, f"data run {data_run_id}",
                   f"evaluate train run {train_run.info.run_id} on data of its own task (leave -P data_run_id "
                   "empty for its own data run)")
    return task


def evaluate(args: argparse.Namespace) -> dict[str, float]:
    if args.register_int8 and not args.int8:
        raise PipelineError("-P register_int8=true needs the int8 variant; pass -P int8=true (the default)")
    train_run = lifecycle.get_run(args.train_run_id, vocab.TRAIN, vocab.DISTILL)
    data_run_id = args.data_run_id or train_run.data.tags[vocab.DATA_RUN_ID]
    data_run = lifecycle.get_run(data_run_id, vocab.PREPARE_DATA, vocab.TRAIN)
    task = _task(train_run, data_run_id)
    splits = {k: with_row_ids(v) for k, v in handoff.load_splits(data_run_id, ("test", "validation")).items()}
    test = splits["test"]
    _check_unseen(test, train_run, data_run_id)  # before anything is logged as a result
    model_name = train_run.data.tags[lifecycle.MODEL_TAG]
    mlflow.set_tags({"mlflow.runName": f"evaluate {model_name}", lifecycle.MODEL_TAG: model_name,
                     vocab.TRAIN_RUN_ID: args.train_run_id, vocab.DATA_RUN_ID: data_run_id,
                     vocab.CPU: hardware.cpu_description()})
    mlflow.set_tag(reuse.INPUT_TAG, reuse.machine_key(args.precision))  # what main reuses by
    lifecycle.log_params({"train_run_id": args.train_run_id, "data_run_id": data_run_id, "batch_size": args.batch_size,
                         "int8": args.int8, "register_int8": args.register_int8,
                         "int8_tolerance": args.int8_tolerance})
    handoff.log_lineage({"test": test}, handoff.data_uri(data_run))

    texts, threads = test["text"].tolist(), hardware.configure_threads()
    with tempfile.TemporaryDirectory(prefix="agnews-int8-") as tmp:
        with costs.peak_memory() as peak, classifiers.load(train_run.data.tags[vocab.MODEL_URI], args.precision,
                                                         args.batch_size) as model:
            logits = model.logits(texts, progress=True)
            cost = costs.cost(model, texts)  # in the precision `auto` resolved to, as predict runs it
            cost.update(peak_memory_mb=peak(), model_size_mb=model.size_mb)
            lifecycle.log_params({"serving_precision": model.precision, "torch_threads": threads})
            reference = references.record_reference(model, splits, f"validation+test rows of data run {data_run_id}")
            export_seconds = int8.export_int8(model, Path(tmp) / "onnx") if args.int8 else None
        scores = _score_fp32(model_name, test, logits, task)
        low, high = reference.test_accuracy_ci  # what predict's `degraded` compares a labelled batch with
        mlflow.log_metrics({"test_accuracy_ci_low": low, "test_accuracy_ci_high": high})
        mlflow.log_metrics({**cost, "num_parameters": train_run.data.metrics.get("num_parameters", float("nan"))})
        if export_seconds is not None:
            mlflow.log_metric("int8_export_seconds", export_seconds)
            _int8(args, train_run, splits, logits.argmax(axis=-1), Path(tmp) / "onnx", task)
    return scores


def main(argv: list[str] | None = None) -> None:
    with lifecycle.step_run(vocab.EVALUATE, vocab.EVALUATE, plots=True):
        evaluate(parse_args(argv))


if __name__ == "__main__":
    params.run_and_exit(main)
