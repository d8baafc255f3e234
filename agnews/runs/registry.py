"""The Model Registry: models logged first and registered last (undone if the step then fails). The champion /
challenger policy that moves aliases lives in `agnews.decide.promotion`; the pyfuncs from code (int8, probe) in
`agnews.serving.packaged`."""
from __future__ import annotations

import importlib.metadata as md
import logging

import mlflow
from mlflow.exceptions import MlflowException

from agnews.runs import lifecycle

log = logging.getLogger(__name__)


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string")]),
                          outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]))


def requirements(*packages: str) -> list[str]:
    # Explicit: MLflow's inferred ones pull torchvision, which does not import beside this torch.
    return [f"{pkg}=={md.version(pkg).split('+')[0]}" for pkg in packages]


EXAMPLE = ["Stocks rallied after the central bank held interest rates steady."]


def undo_on_failure(info):
    client = mlflow.MlflowClient()
    lifecycle.on_failure(f"logged model {info.model_id}", lambda: client.delete_logged_model(info.model_id))
    return info


def log_model(pipeline, max_length: int):
    """A text-classification pipeline servable by `mlflow models serve`; not registered yet (see `register`)."""
    return undo_on_failure(mlflow.transformers.log_model(
        transformers_model=pipeline, name="model", task="text-classification", signature=signature(),
        input_example=EXAMPLE, pip_requirements=requirements("mlflow", "torch", "transformers", "tokenizers",
                                                               "safetensors"),
        model_config={"truncation": True, "max_length": max_length}))


def register(model_uri: str, registered_model: str, tags: dict[str, str]) -> str:
    """The step's last act: a new version of `registered_model`, deleted again if the step fails after all."""
    client = mlflow.MlflowClient()
    existed = _exists(client, registered_model)
    version = str(mlflow.register_model(model_uri, registered_model, tags=tags).version)

    def undo() -> None:
        client.delete_model_version(registered_model, version)
        if not existed and not client.search_model_versions(f"name = '{registered_model}'"):
            client.delete_registered_model(registered_model)  # we created it: leave no empty entry behind

    lifecycle.on_failure(f"{registered_model} version {version}", undo)
    return version


def _exists(client: mlflow.MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False
