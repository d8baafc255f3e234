"""The int8 ONNX classifier as an MLflow pyfunc, logged as "model from code": MLflow stores this file beside the
ONNX model and runs it on load, so `mlflow models serve` and `mlflow.pyfunc.load_model` need neither this project
nor torch, only onnxruntime and a tokenizer. Self-contained on purpose: it must not import `agnews`."""
from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

SETTINGS_FILE = "agnews.json"  # = agnews.vocab.MODEL_SETTINGS_FILE; a literal: this file must not import agnews


class OnnxClassifier(mlflow.pyfunc.PythonModel):
    """Same inputs and outputs as the fp32 transformers pipeline: texts in, `label` (name) and `score` out."""

    def load_context(self, context) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        folder = Path(context.artifacts["onnx"])
        config = json.loads((folder / SETTINGS_FILE).read_text())
        self.labels, self.max_length = config["labels"], int(config["max_length"])
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        options = ort.SessionOptions()
        threads = os.environ.get("AGNEWS_THREADS")  # the project sets it so torch and ORT use the same cores
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def logits(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Logits in input order; batches of similar length so that little padding is computed."""
        lengths = [len(t) for t in texts]
        order = np.argsort(lengths, kind="stable")[::-1]
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        if progress:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc="predict (int8)", unit="batch")
        for start in starts:
            index = order[start:start + batch_size]
            encoded = self.tokenizer([texts[i] for i in index], truncation=True, max_length=self.max_length,
                                     padding=True, return_tensors="np")
            feed = {k: v.astype(np.int64) for k, v in encoded.items() if k in self.inputs}
            out[index] = self.session.run(["logits"], feed)[0]
        return out

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        texts = _texts(model_input)
        logits = self.logits(texts)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        return pd.DataFrame({"label": [self.labels[i] for i in best], "score": probs.max(axis=1).astype(float)})


def _texts(model_input) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        model_input = model_input.iloc[:, 0]
    if isinstance(model_input, str):
        return [model_input]
    return [str(t) for t in list(model_input)]


mlflow.models.set_model(OnnxClassifier())
