"""The online server's health windows as runs `-e monitor` reads with the predict runs: each window
(agnews/serving/windows.py) gets the health check a predict batch gets (the same reference, the same tests,
`too_small` under min_batch rows) and is logged as a finished run with predict's step tag and the registered model and
version that served it, so `agnews.monitoring.batches.predict_runs` finds it. The run is named `serve window <model>
v<version>`, its `input` parameter says when the window was open, and it carries the shadow's agreement (metrics
`shadow_*`) when one ran. Texts are logged only with `log_inputs` (`-P log_inputs=true`); otherwise the predictions
table has empty texts and only the statistics say what was served."""
from __future__ import annotations

import functools
import logging
import os
import time
from typing import Callable

import mlflow
import numpy as np
import pandas as pd

from agnews import metrics, vocab
from agnews.monitoring import batches, checks
from agnews.runs import store
from agnews.runs.experiment import EXPERIMENT
from agnews.serving import predict as batch_predict
from agnews.serving.traffic import NO_LABEL
from agnews.serving.windows import Window

log = logging.getLogger(__name__)


def sink(alpha: float = checks.ALPHA, min_batch: int = checks.MIN_BATCH,
         low_confidence: float = checks.LOW_CONFIDENCE) -> Callable[[Window], dict]:
    """What steps/serve.py hands the server's Windows: log one window, return its run id and health."""
    return functools.partial(log_window, alpha=alpha, min_batch=min_batch, low_confidence=low_confidence)


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def log_window(window: Window, alpha: float = checks.ALPHA, min_batch: int = checks.MIN_BATCH,
               low_confidence: float = checks.LOW_CONFIDENCE) -> dict:
    """A run of its own, created with the client (not the fluent API: under `mlflow run -e serve` the fluent one
    would resume the serve run named by MLFLOW_RUN_ID), then filled in as predict fills its run."""
    model, info = window.served.model, window.served.info
    name, version = info.get("registered_model", ""), info.get("version", "")
    model_uri = f"models:/{name}/{version}" if name and version else info.get("model_uri", "")
    tags = {vocab.STEP: vocab.PREDICT, vocab.MODEL_URI: info.get("model_uri", model_uri),
            vocab.MODEL_VARIANT: getattr(model, "variant", ""),
            **({vocab.REGISTERED_MODEL: name, vocab.MODEL_VERSION: version} if name and version else {})}
    experiment = os.environ.get("MLFLOW_EXPERIMENT_ID") or store.experiment_id(
        os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
    run = mlflow.MlflowClient().create_run(experiment, tags=tags,
                                           run_name=f"serve window {name or model_uri} v{version}")
    with mlflow.start_run(run_id=run.info.run_id):
        health = _fill(window, model, model_uri, alpha, min_batch, low_confidence)
    log.info("health window of %d rows (%s v%s, closed by %s): %s, run %s", window.rows, name, version,
             window.closed_by, health.status, run.info.run_id)
    return {"run_id": run.info.run_id, "health": health.status}


def _fill(window: Window, model, model_uri: str, alpha: float, min_batch: int,
          low_confidence: float) -> checks.Health:
    probabilities, true, embeddings = window.arrays()
    mlflow.log_params({"input": f"serve window {_when(window.opened)} to {_when(window.closed)}",
                       "model_uri": model_uri, "window_closed_by": window.closed_by, "alpha": alpha,
                       "min_batch": min_batch, "low_confidence": low_confidence, "log_inputs": window.log_inputs})
    length, unknown, split = checks.token_stats(model.tokenizer_for_monitoring, window.texts)
    seen = checks.Profile(probabilities, length, unknown, split, embeddings)
    labelled = true != NO_LABEL
    health = batches.check_batch(model_uri, model, seen, true if labelled.all() else None, alpha, min_batch,
                                 low_confidence)
    labels = tuple(model.labels)
    scores = metrics.summary(true[labelled], seen.predicted[labelled], classes=len(labels)) if labelled.any() else {}
    mlflow.log_metrics({"rows": window.rows, "labelled_rows": int(labelled.sum()), **scores,
                        **_shadow_metrics(window.shadow)})
    texts = window.texts if window.log_inputs else [""] * window.rows
    known = true if window.log_inputs and labelled.all() else None
    table = batch_predict.predictions_table(batch_predict.Batch(texts, known, labels), probabilities, labels)
    _log_table(table)
    return health


def _shadow_metrics(shadow: dict | None) -> dict[str, float]:
    """shadow_rows, shadow_agreement, shadow_accuracy, shadow_served_accuracy (over the same labelled rows), ...
    and the challenger's version, as metrics."""
    if not shadow:
        return {}
    out = {f"shadow_{key.removeprefix('shadow_')}": float(value) for key, value in shadow.items()
           if key not in ("alias", "version") and value is not None and np.isfinite(value)}
    if str(shadow.get("version", "")).isdigit():
        out["shadow_version"] = float(shadow["version"])
    return out


def _log_table(table: pd.DataFrame) -> None:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        table.to_csv(Path(tmp) / "predictions.csv", index=False)
        mlflow.log_artifact(str(Path(tmp) / "predictions.csv"), "predictions")
