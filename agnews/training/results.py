"""What a training step (train, distill) leaves on its run: summary metrics, the per-epoch history, the best
epoch's validation predictions, the curves, the logged model and, as the very last act, its registered version."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Callable

import mlflow
import pandas as pd

from agnews import metrics, vocab
from agnews.data.task import Task
from agnews.runs import lifecycle, registry
from agnews.training import curves, fine_tune, models

log = logging.getLogger(__name__)


def _log_validation_predictions(frame: pd.DataFrame, logits, task: Task) -> None:
    """The best epoch's validation predictions, by stable row id: compare pairs models row by row."""
    with tempfile.TemporaryDirectory() as tmp:
        table = metrics.predictions_table(frame, logits, task).drop(columns="text")
        table.to_csv(Path(tmp) / "validation.csv", index=False)
        mlflow.log_artifact(str(Path(tmp) / "validation.csv"), "predictions")


def _log_pipeline(model, tokenizer, max_length: int):
    from transformers import pipeline  # the served artefact: labels by name, one call per text list

    return registry.log_model(pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu"),
                              max_length)


def publish(name: str, model, tokenizer, result: fine_tune.TrainResult, validation: pd.DataFrame,
            max_length: int, registered_model: str, version_tags: dict[str, str], task: Task,
            log_model: Callable[[], object] | None = None) -> str:
    """Log everything a trained model leaves, then register it; the registered version. `log_model`: logs the
    served model itself (a linear probe's pyfunc) instead of a transformers pipeline of `model` and `tokenizer`."""
    mlflow.log_metrics({"best_epoch": result.best_epoch, "num_parameters": models.count_parameters(model),
                        "train_seconds": result.train_seconds, "epochs_run": len(result.history),
                        **{f"best_{k}": v for k, v in result.best.items() if k.startswith("val_")}})
    history = pd.DataFrame(result.history)
    mlflow.log_table(history, "history.json")
    _log_validation_predictions(validation, result.best_val_logits, task)
    for path in curves.training_curves(name, history, result.best_epoch):
        lifecycle.log_plot(path)
    info = log_model() if log_model is not None else _log_pipeline(model, tokenizer, max_length)
    mlflow.set_tags({vocab.MODEL_URI: info.model_uri, vocab.REGISTERED_MODEL: registered_model})
    version = registry.register(info.model_uri, registered_model, {
        **{k: v for k, v in version_tags.items() if v}, "train_run_id": mlflow.active_run().info.run_id})
    mlflow.set_tag(vocab.REGISTERED_VERSION, version)  # a failure from here on deletes the version again
    log.info("best epoch %d: val macro F1 %.4f; registered %s version %s", result.best_epoch,
             result.best["val_f1_macro"], registered_model, version)
    return version
