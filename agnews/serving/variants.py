"""Which model `-P variant` serves for a registered version: `fp32`, the model as trained (bf16 where
`precision=auto` resolves to it), or `int8`, its int8 ONNX variant. The int8 variant is the version evaluate
registered beside it (`-P register_int8=true`, registered only when it agreed with fp32), else the int8 model an
evaluate run logged and accepted; a version with neither is refused in one line that names the evaluate to run."""
from __future__ import annotations

import mlflow

from agnews import vocab
from agnews.errors import PipelineError

VARIANTS = ("fp32", "int8")
INT8 = "int8"


def variant_uri(registered_model: str, version: str, variant: str) -> str:
    """The model URI to load for `variant` of one registered version."""
    if variant not in VARIANTS:
        raise PipelineError(f"-P variant={variant} is not a variant; use {' or '.join(VARIANTS)}")
    own = f"models:/{registered_model}/{version}"
    if variant != INT8:
        return own
    model_version = mlflow.MlflowClient().get_model_version(registered_model, version)
    if model_version.tags.get("variant") == INT8:
        return own  # the alias already names an int8 version (a budget pick can promote one)
    return (_registered_int8(registered_model, model_version.run_id) or _accepted_int8(model_version.run_id)
            or _refuse(registered_model, version, model_version.run_id))


def _registered_int8(registered_model: str, train_run_id: str) -> str | None:
    """The newest int8 version registered from this training run (evaluate's register_int8)."""
    client = mlflow.MlflowClient()
    found = [v for v in client.search_model_versions(f"name = '{registered_model}'")
             if v.tags.get("variant") == INT8 and v.tags.get("train_run_id") == train_run_id]
    newest = max(found, key=lambda v: int(v.version), default=None)
    return f"models:/{registered_model}/{newest.version}" if newest else None


def _accepted_int8(train_run_id: str) -> str | None:
    """The int8 model of the newest evaluate run of this training run that accepted it (logged, not registered)."""
    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`{vocab.STEP}` = '{vocab.EVALUATE}' and "
                                           f"tags.`{vocab.TRAIN_RUN_ID}` = '{train_run_id}' and "
                                           f"tags.`{vocab.INT8_ACCEPTED}` = 'true' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].data.tags.get(vocab.INT8_MODEL_URI) if runs else None


def _refuse(registered_model: str, version: str, train_run_id: str) -> str:
    raise PipelineError(f"{registered_model} version {version} has no int8 variant that evaluate accepted; run "
                        f"`mlflow run . -e evaluate -P train_run_id={train_run_id} -P register_int8=true` first, or "
                        "serve it without -P variant=int8")
