"""A linear probe as an MLflow pyfunc, logged as "model from code" (as agnews/serving/int8_model.py is): the frozen
encoder (safetensors), mean pooling, L2 normalisation and the logistic regression rebuilt as a linear layer from its
coefficients (head.npz, read without pickle). `mlflow models serve` and `mlflow.pyfunc.load_model` need torch and
transformers, not scikit-learn nor this project. Self-contained on purpose: it must not import `agnews` (the folder
layout it reads is written by agnews.training.probe.save).

`module` is a torch module with a transformers sequence classifier's interface (config with id2label, logits, and
hidden states on request), so the project serves, monitors and int8-exports it as it does a fine-tuned model."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

VARIANT = "probe"  # what agnews.serving recognises the loaded model by
SETTINGS_FILE = "agnews.json"  # = agnews.vocab.MODEL_SETTINGS_FILE; a literal: this file must not import agnews


def _mean_pool(hidden, mask):
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


class LinearProbe(torch.nn.Module):
    """logits = normalise(mean_pool(encoder(texts))) @ weight.T + bias."""

    def __init__(self, encoder, weight: np.ndarray, bias: np.ndarray):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(np.asarray(weight, dtype=np.float32)))
            self.head.bias.copy_(torch.from_numpy(np.asarray(bias, dtype=np.float32)))
        self.config = encoder.config  # hidden_size, and id2label / num_labels of the task

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states: bool = False):
        from transformers.modeling_outputs import SequenceClassifierOutput

        given = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        out = self.encoder(input_ids=input_ids, output_hidden_states=output_hidden_states,
                           **{k: v for k, v in given.items() if v is not None})
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        pooled = torch.nn.functional.normalize(_mean_pool(out.last_hidden_state.float(), mask), dim=-1)
        # Products and a sum, not a matmul: fp32 under bf16 autocast too, as the regression was fitted and scored.
        logits = (pooled.unsqueeze(1) * self.head.weight.float()).sum(-1) + self.head.bias.float()
        return SequenceClassifierOutput(logits=logits,
                                        hidden_states=out.hidden_states if output_hidden_states else None)


def load_folder(folder: Path) -> tuple[LinearProbe, object, dict]:
    """The module, its tokenizer and its settings (labels, max_length, C) from a folder
    agnews.training.probe.save wrote."""
    from transformers import AutoModel, AutoTokenizer

    settings = json.loads((folder / SETTINGS_FILE).read_text())
    encoder = AutoModel.from_pretrained(folder, trust_remote_code=False, use_safetensors=True)
    labels = [str(label) for label in settings["labels"]]
    encoder.config.id2label = dict(enumerate(labels))
    encoder.config.label2id = {label: i for i, label in enumerate(labels)}
    with np.load(folder / "head.npz", allow_pickle=False) as head:
        module = LinearProbe(encoder, head["weight"], head["bias"]).eval()
    return module, AutoTokenizer.from_pretrained(folder, trust_remote_code=False), settings


class ProbeClassifier(mlflow.pyfunc.PythonModel):
    """Same inputs and outputs as the fine-tuned pipeline: texts in, `label` (name) and `score` out."""

    variant = VARIANT

    def load_context(self, context) -> None:
        self.module, self.tokenizer, settings = load_folder(Path(context.artifacts["probe"]))
        self.labels, self.max_length = list(self.module.config.id2label.values()), int(settings["max_length"])

    def logits(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """Logits in input order; batches of similar length so that little padding is computed."""
        order = np.argsort([len(t) for t in texts], kind="stable")[::-1]
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                index = order[start:start + batch_size]
                encoded = self.tokenizer([texts[i] for i in index], truncation=True, max_length=self.max_length,
                                         padding=True, return_tensors="pt")
                out[index] = self.module(**encoded).logits.float().numpy()
        return out

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        logits = self.logits(_texts(model_input))
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


mlflow.models.set_model(ProbeClassifier())
