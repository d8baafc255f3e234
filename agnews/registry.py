"""The Model Registry: models logged first and registered last (undone if the step then fails). The champion /
challenger policy that moves aliases lives in `agnews.gate`."""
from __future__ import annotations

import importlib.metadata as md
import logging
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from agnews import tracking

log = logging.getLogger(__name__)


def _signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string")]),
                          outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]))


def _requirements(*packages: str) -> list[str]:
    # Explicit: MLflow's inferred ones pull torchvision, which does not import beside this torch.
    return [f"{pkg}=={md.version(pkg).split('+')[0]}" for pkg in packages]


_EXAMPLE = ["Stocks rallied after the central bank held interest rates steady."]


def _undo_on_failure(info):
    client = mlflow.MlflowClient()
    tracking.on_failure(f"logged model {info.model_id}", lambda: client.delete_logged_model(info.model_id))
    return info


def log_model(pipeline, max_length: int):
    """A text-classification pipeline servable by `mlflow models serve`; not registered yet (see `register`)."""
    return _undo_on_failure(mlflow.transformers.log_model(
        transformers_model=pipeline, name="model", task="text-classification", signature=_signature(),
        input_example=_EXAMPLE, pip_requirements=_requirements("mlflow", "torch", "transformers", "tokenizers",
                                                               "safetensors"),
        model_config={"truncation": True, "max_length": max_length}))


def log_int8_model(folder: Path):
    """The int8 ONNX variant as a pyfunc (model from code: agnews/int8_model.py travels with it), same signature
    as the fp32 pipeline; `mlflow models serve` needs onnxruntime and a tokenizer, not torch."""
    return _undo_on_failure(mlflow.pyfunc.log_model(
        name="model_int8", python_model=str(Path(__file__).with_name("int8_model.py")),
        artifacts={"onnx": str(folder)}, signature=_signature(), input_example=_EXAMPLE,
        pip_requirements=_requirements("mlflow", "onnxruntime", "transformers", "tokenizers", "numpy", "pandas")))


def log_probe_model(folder: Path):
    """A linear probe (agnews.probe.save's folder) as a pyfunc from code (agnews/probe_model.py travels with it),
    same signature as a fine-tuned pipeline; serving needs torch and transformers, not scikit-learn."""
    return _undo_on_failure(mlflow.pyfunc.log_model(
        name="model", python_model=str(Path(__file__).with_name("probe_model.py")), artifacts={"probe": str(folder)},
        signature=_signature(), input_example=_EXAMPLE,
        pip_requirements=_requirements("mlflow", "torch", "transformers", "tokenizers", "safetensors", "numpy",
                                       "pandas")))


def register(model_uri: str, registered_model: str, tags: dict[str, str]) -> str:
    """The step's last act: a new version of `registered_model`, deleted again if the step fails after all."""
    client = mlflow.MlflowClient()
    existed = _exists(client, registered_model)
    version = str(mlflow.register_model(model_uri, registered_model, tags=tags).version)

    def undo() -> None:
        client.delete_model_version(registered_model, version)
        if not existed and not client.search_model_versions(f"name = '{registered_model}'"):
            client.delete_registered_model(registered_model)  # we created it: leave no empty entry behind

    tracking.on_failure(f"{registered_model} version {version}", undo)
    return version


def _exists(client: mlflow.MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False
