"""MLflow pyfuncs logged as "models from code": the int8 ONNX variant and the linear probe. Their model files
(int8_model.py, probe_model.py) sit beside this module and travel with every logged model, importing nothing of
agnews."""
from __future__ import annotations

from pathlib import Path

import mlflow

from agnews.runs import registry


def log_int8_model(folder: Path):
    """The int8 ONNX variant as a pyfunc (model from code: agnews/serving/int8_model.py travels with it), same signature
    as the fp32 pipeline; `mlflow models serve` needs onnxruntime and a tokenizer, not torch."""
    return registry.undo_on_failure(mlflow.pyfunc.log_model(
        name="model_int8", python_model=str(Path(__file__).with_name("int8_model.py")),
        artifacts={"onnx": str(folder)}, signature=registry.signature(), input_example=registry.EXAMPLE,
        pip_requirements=registry.requirements("mlflow", "onnxruntime", "transformers", "tokenizers", "numpy",
                                               "pandas")))


def log_probe_model(folder: Path):
    """A linear probe (agnews.training.probe.save's folder) as a pyfunc from code (agnews/serving/probe_model.py travels
    with it), same signature as a fine-tuned pipeline; serving needs torch and transformers, not scikit-learn."""
    return registry.undo_on_failure(mlflow.pyfunc.log_model(
        name="model", python_model=str(Path(__file__).with_name("probe_model.py")), artifacts={"probe": str(folder)},
        signature=registry.signature(), input_example=registry.EXAMPLE,
        pip_requirements=registry.requirements("mlflow", "torch", "transformers", "tokenizers", "safetensors", "numpy",
                                       "pandas")))
