"""evaluate: score a train run's logged model on the test split (reported only, never used to choose)."""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import mlflow

from agnews import cli, metrics, plots, tracking, training
from agnews.data import LABELS, with_row_ids

log = logging.getLogger("steps.evaluate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.StepParser(description=__doc__)
    parser.add_argument("--train_run_id", required=True)
    parser.add_argument("--data_run_id", default="", help="default: the data the train run used")
    parser.add_argument("--batch_size", type=lambda v: cli.whole(v, "batch_size", 1), default=32)
    parser.add_argument("--precision", type=cli.precision, default="auto")
    return parser.parse_args(argv)


def evaluate(args: argparse.Namespace) -> dict[str, float]:
    train_run = tracking.get_run(args.train_run_id, "train")
    data_run_id = args.data_run_id or train_run.data.tags["agnews.data_run_id"]
    data_run = tracking.get_run(data_run_id, "prepare_data", "train")
    test = with_row_ids(tracking.load_splits(data_run_id, ("test",))["test"])
    model_name = train_run.data.tags[tracking.MODEL_TAG]
    mlflow.set_tags({"mlflow.runName": f"evaluate {model_name}", tracking.MODEL_TAG: model_name,
                     "agnews.train_run_id": args.train_run_id, "agnews.data_run_id": data_run_id})
    tracking.log_params({"train_run_id": args.train_run_id, "data_run_id": data_run_id, "batch_size": args.batch_size})
    tracking.log_lineage({"test": test}, tracking.data_uri(data_run))

    components = mlflow.transformers.load_model(train_run.data.tags["agnews.model_uri"], return_type="components")
    # Params are logged as the user typed them (`-P max_length=64.0`): read back with the CLI's own parsing.
    max_length = cli.whole(train_run.data.params.get("max_length", 128), "max_length", 3)
    config = training.TrainConfig(batch_size=args.batch_size, precision=args.precision, max_length=max_length)
    logits = training.predict_logits(components["model"], components["tokenizer"], test["text"].tolist(), config)
    predicted, labels = logits.argmax(axis=-1), test["label"].to_numpy()

    scores = {**metrics.summary(labels, predicted, "test"), **metrics.per_class(labels, predicted, "test")}
    mlflow.log_metrics(scores)
    counts = metrics.confusion(labels, predicted)
    with tempfile.TemporaryDirectory() as tmp:
        counts.to_csv(Path(tmp) / "confusion_matrix.csv")
        normalized = metrics.confusion(labels, predicted, normalize=True).round(4)
        normalized.to_csv(Path(tmp) / "confusion_matrix_normalized.csv")
        table = metrics.predictions_table(test, logits)
        table.insert(4, "true_label", [LABELS[i] for i in table["label"]])
        table.insert(5, "predicted_label", [LABELS[i] for i in table["predicted"]])
        table.to_csv(Path(tmp) / "predictions.csv", index=False)
        mlflow.log_artifacts(tmp, "evaluation")
    tracking.log_plot(plots.confusion_matrix(model_name, counts))
    log.info("%s on test: accuracy %.4f, macro F1 %.4f", model_name, scores["test_accuracy"], scores["test_f1_macro"])
    return scores


def main(argv: list[str] | None = None) -> None:
    with tracking.step_run("evaluate", "evaluate", plots=True):
        args = parse_args(argv)
        training.configure_threads()
        evaluate(args)


if __name__ == "__main__":
    main()
