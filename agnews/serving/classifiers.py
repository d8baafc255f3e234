"""A trained classifier as one interface, whatever it is: the transformers model (fp32, or bf16 where the CPU has
it), its int8 ONNX variant or a linear probe, loaded from a `models:/` URI, a run or a folder."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException

from agnews import metrics, values
from agnews.errors import PipelineError, cause
from agnews.serving import costs

log = logging.getLogger(__name__)
LATENCY_TEXTS, WARMUP = 100, 5  # batch-1 latency over 100 test texts (cycled when fewer) after 5 warm-up calls
THROUGHPUT_BATCH, THROUGHPUT_BATCHES = 32, 4
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class Classifier:
    """Texts in, logits out (input order, length-sorted batches, truncated at the model's max_length)."""

    variant = ""
    size_mb = float("nan")
    batch_size = 32

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names in logit order, as the model carries them (its data run's label set)."""
        raise NotImplementedError

    def logits(self, texts: list[str], progress: bool = False, batch_size: int | None = None) -> np.ndarray:
        raise NotImplementedError

    def probabilities(self, texts: list[str], progress: bool = False) -> np.ndarray:
        return metrics.probabilities(self.logits(texts, progress))

    @property
    def tokenizer_for_monitoring(self):
        """The tokenizer the model reads its texts with (monitoring counts tokens and unknown words with it)."""
        raise NotImplementedError

    def logits_and_embeddings(self, texts: list[str], progress: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and the mean-pooled last hidden layer per text; None where the variant has no hidden states
        (the int8 ONNX graph outputs logits only)."""
        return self.logits(texts, progress), None


@dataclass
class TorchClassifier(Classifier):
    model: object
    tokenizer: object
    max_length: int
    precision: str  # fp32 or bf16 (autocast): what `auto` resolved to on this machine
    batch_size: int = 32
    variant: str = "fp32"
    size_mb: float = float("nan")

    def logits(self, texts: list[str], progress: bool = False, batch_size: int | None = None) -> np.ndarray:
        return self._forward(texts, progress, batch_size or self.batch_size, pooled=False)[0]

    def logits_and_embeddings(self, texts: list[str], progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        return self._forward(texts, progress, self.batch_size, pooled=True)

    def _forward(self, texts: list[str], progress: bool, batch_size: int,
                 pooled: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits, and with `pooled` the attention-masked mean of the last hidden layer (same pass)."""
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(device).eval()
        out = np.zeros((len(texts), self.model.config.num_labels), dtype=np.float32)
        means = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32) if pooled else None
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            for index in _batches(texts, batch_size, progress, self.precision):
                encoded = self.tokenizer([texts[i] for i in index], truncation=True, max_length=self.max_length,
                                         padding=True, return_tensors="pt").to(device)
                output = self.model(**encoded, output_hidden_states=pooled)
                out[index] = output.logits.float().cpu().numpy()
                if pooled:
                    mask = encoded["attention_mask"].unsqueeze(-1).float()  # padding must not pull the mean
                    total = (output.hidden_states[-1].float() * mask).sum(1)
                    means[index] = (total / mask.sum(1).clamp(min=1)).cpu().numpy()
        return out, means

    @property
    def tokenizer_for_monitoring(self):
        return self.tokenizer

    @property
    def labels(self) -> tuple[str, ...]:
        id2label = self.model.config.id2label
        return tuple(str(id2label[i]) for i in range(self.model.config.num_labels))


@dataclass
class OnnxClassifier(Classifier):
    python_model: object  # agnews/serving/int8_model.py's OnnxClassifier, as MLflow loaded it
    batch_size: int = 32
    variant: str = "int8"
    size_mb: float = float("nan")

    def logits(self, texts: list[str], progress: bool = False, batch_size: int | None = None) -> np.ndarray:
        return self.python_model.logits(texts, batch_size or self.batch_size, progress)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.python_model.labels)

    @property
    def tokenizer_for_monitoring(self):
        return self.python_model.tokenizer


def _batches(texts: list[str], size: int, progress: bool, what: str) -> Iterator[np.ndarray]:
    """Row indices, longest texts first (the memory peak comes early), in batches of similar length."""
    order = np.argsort([len(t) for t in texts], kind="stable")[::-1]
    starts = range(0, len(texts), size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc=f"predict ({what})", unit="batch")
    for start in starts:
        yield order[start:start + size]


def registered_version(model_uri: str) -> tuple[str, str] | None:
    """(registered model, version) behind a models:/name@alias or models:/name/N URI; None for other URIs."""
    match = _MODELS_URI.match(model_uri.strip())
    if not match:
        return None
    name, alias, version = match.group("name", "alias", "version")
    if alias:
        try:
            version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
        except MlflowException as exc:
            raise _unresolved(model_uri, exc) from exc
    return name, str(version)


def _unresolved(model_uri: str, exc: BaseException) -> PipelineError:
    return PipelineError(f"model URI {model_uri!r} does not resolve ({cause(exc)}); run main (or train) first, or "
                         "pass -P model_uri=models:/<registered model>@champion, models:/<name>/<version> or "
                         "runs:/<run id>/model")


@contextlib.contextmanager
def load(model_uri: str, precision: str = "auto", batch_size: int = 32) -> Iterator[Classifier]:
    """A logged or registered model (fp32 transformers, int8 ONNX pyfunc or linear-probe pyfunc), downloaded for the
    block's duration."""
    with tempfile.TemporaryDirectory(prefix="agnews-model-") as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        except (MlflowException, OSError, ValueError) as exc:
            raise _unresolved(model_uri, exc) from exc
        classifier = _open(local, precision, batch_size, model_uri)
        classifier.size_mb = costs.folder_mb(local)
        yield classifier


def predict_registered(registered_model: str, version: str, texts: list[str]) -> np.ndarray:
    """Class ids predicted by one registered version (fp32 or int8), at the max_length it was logged with: the gate's
    scorer (agnews.decide gets it from the compare step, so it imports no serving code)."""
    with load(f"models:/{registered_model}/{version}") as model:
        return model.logits(texts).argmax(axis=1)


def _open(local: Path, precision: str, batch_size: int, model_uri: str) -> Classifier:
    from mlflow.models import Model

    from agnews.hardware import resolve_precision

    if not (local / "MLmodel").is_file():
        raise PipelineError(f"{model_uri!r} is not an MLflow model (no MLmodel file); pass the URI of a model "
                            "logged by train or evaluate, e.g. models:/agnews-classifier@champion")
    flavors = Model.load(str(local)).flavors
    if "transformers" in flavors:
        components = mlflow.transformers.load_model(str(local), return_type="components")
        max_length = flavors.get("python_function", {}).get("config", {}).get("max_length", 128)
        return TorchClassifier(components["model"], components["tokenizer"], values.whole(max_length, "max_length", 1),
                               resolve_precision(precision), batch_size)
    import torch

    os.environ["AGNEWS_THREADS"] = str(torch.get_num_threads())  # ONNX Runtime on the cores torch uses
    python_model = mlflow.pyfunc.load_model(str(local)).unwrap_python_model()
    if getattr(python_model, "variant", "") == "probe":  # agnews/serving/probe_model.py: encoder + linear layer
        # in torch
        return TorchClassifier(python_model.module, python_model.tokenizer, python_model.max_length,
                               resolve_precision(precision), batch_size, variant="probe")
    if not hasattr(python_model, "logits"):
        raise PipelineError(f"{model_uri!r} is not an AG News classifier of this project (flavors: "
                            f"{', '.join(flavors)}); pass a model logged by train or evaluate")
    return OnnxClassifier(python_model, batch_size)
