"""predict: classify a CSV/Parquet of texts with a logged or registered model (default: the champion), log the
predictions table on the run, write it to `output` when asked, and score it when the input carries labels."""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from agnews import hardware, params, values, vocab
from agnews.monitoring import batches, checks
from agnews.runs import lifecycle
from agnews.serving import classifiers
from agnews.serving import predict as batch_predict

log = logging.getLogger("steps.predict")
MODEL_URI_TAG = vocab.MODEL_URI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = params.StepParser(description=__doc__)
    parser.add_argument("--input", default="", help="CSV or Parquet: 'text', or 'title'+'description', or AG News")
    parser.add_argument("--model_uri", default="models:/agnews-classifier@champion")
    parser.add_argument("--output", default="", help=".csv or .parquet; default: only the run's artifact")
    parser.add_argument("--precision", type=hardware.precision, default="auto")
    parser.add_argument("--batch_size", type=lambda v: values.whole(v, "batch_size", 1), default=32)
    parser.add_argument("--text_columns", default="",
                        help="columns joined into the text; default: the ones the model was trained on")
    parser.add_argument("--alpha", type=values.open_fraction("alpha"), default=checks.ALPHA,
                        help="family-wise false-alarm rate of the batch's drift tests (Holm over the statistics)")
    parser.add_argument("--min_batch", type=lambda v: values.whole(v, "min_batch", 2), default=checks.MIN_BATCH,
                        help="fewer rows and the batch is tagged too_small, not tested")
    parser.add_argument("--low_confidence", type=values.open_fraction("low_confidence"), default=checks.LOW_CONFIDENCE,
                        help="top-class probability under which a prediction counts as unsure")
    return parser.parse_args(argv)


def _resolve(model_uri: str) -> str:
    """Tag the registered model and version behind a models:/ URI; load that version, so the tags name the model
    that predicted even if the alias moves meanwhile."""
    resolved = classifiers.registered_version(model_uri)  # PipelineError when the alias does not resolve
    if resolved is None:
        lifecycle.set_run_name(f"predict {model_uri}")
        return model_uri
    name, version = resolved
    mlflow.set_tags({vocab.REGISTERED_MODEL: name, vocab.MODEL_VERSION: version})
    lifecycle.set_run_name(f"predict {name} v{version}")
    return f"models:/{name}/{version}"


def _log_table(table: pd.DataFrame) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / "predictions.csv", index=False)
        mlflow.log_artifact(str(Path(tmp) / "predictions.csv"), "predictions")


def predict(args: argparse.Namespace) -> pd.DataFrame:
    model_uri = args.model_uri.strip()
    mlflow.set_tag(MODEL_URI_TAG, model_uri)
    lifecycle.log_params({"input": args.input, "model_uri": model_uri, "output": args.output,
                         "precision": args.precision, "batch_size": args.batch_size,
                         "text_columns": args.text_columns, "alpha": args.alpha, "min_batch": args.min_batch,
                         "low_confidence": args.low_confidence})
    output = batch_predict.output_path(args.output)  # a bad output path fails before any work
    resolved = _resolve(model_uri)
    task = batch_predict.model_task(resolved, args.text_columns)
    batch = batch_predict.read_input(args.input, task, explicit=bool(args.text_columns))  # bad input first
    with classifiers.load(resolved, precision=args.precision, batch_size=args.batch_size) as model:
        mlflow.set_tag(vocab.MODEL_VARIANT, model.variant)
        seen = checks.profile(model, batch.texts, progress=True)  # one pass: predictions and what monitoring needs
        labels = model.labels
        table = batch_predict.predictions_table(batch, seen.probabilities, labels)
        batches.check_batch(resolved, model, seen, batch.labels, args.alpha, args.min_batch, args.low_confidence)
    scores = batch_predict.scores(table)
    mlflow.log_metrics({"rows": len(table), **scores})
    _log_table(table)
    if output:
        batch_predict.write(table, output)
    log.info("predicted %d rows with %s%s", len(table), model_uri,
             f": accuracy {scores['accuracy']:.4f}, macro F1 {scores['f1_macro']:.4f}" if scores else "")
    return table


def main(argv: list[str] | None = None) -> None:
    with lifecycle.step_run(vocab.PREDICT, vocab.PREDICT):
        args = parse_args(argv)
        hardware.configure_threads()
        predict(args)


if __name__ == "__main__":
    params.run_and_exit(main)
