"""A linear probe: a frozen encoder's mean-pooled, L2-normalised embeddings and a scikit-learn logistic regression
whose regularisation (C) is the one of a small grid with the best validation macro F1. No MLflow here: steps/train.py
logs what this returns, agnews/serving/probe_model.py serves it (the encoder plus the regression as a linear layer)."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agnews import metrics, vocab

log = logging.getLogger(__name__)
# Inverse regularisation strengths tried, weakest regularisation last. Unit-length embeddings have small
# coordinates (~1/sqrt(hidden) each), so the useful C sit higher than for standardised features.
C_GRID = (0.1, 1.0, 10.0, 100.0, 1000.0)
MAX_ITER = 2000


def mean_pool(hidden, mask):
    """The attention-masked mean of token vectors (padding does not pull it), as torch tensors."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def embed(encoder, tokenizer, texts: list[str], max_length: int, batch_size: int = 32,
          precision: str = "fp32") -> np.ndarray:
    """Unit-length mean-pooled last-layer embeddings (float32), rows in input order; batches of similar length."""
    import torch

    encoder.eval()
    device = next(encoder.parameters()).device
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")[::-1]
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        for start in range(0, len(texts), batch_size):
            index = order[start:start + batch_size]
            encoded = tokenizer([texts[i] for i in index], truncation=True, max_length=max_length, padding=True,
                                return_tensors="pt").to(device)
            hidden = encoder(**encoded).last_hidden_state.float()
            pooled = torch.nn.functional.normalize(mean_pool(hidden, encoded["attention_mask"]), dim=-1)
            out[index] = pooled.cpu().numpy()
    return out


@dataclass
class Probe:
    """The chosen regression as a linear layer over the task's classes: logits = x @ weight.T + bias."""

    weight: np.ndarray  # (classes, hidden), float32
    bias: np.ndarray  # (classes,), float32
    c: float
    val_f1_by_c: dict[float, float] = field(default_factory=dict)
    fit_seconds: float = 0.0

    def logits(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.weight.T + self.bias).astype(np.float32)


def choose_c(val_f1_by_c: dict[float, float]) -> float:
    """The C with the best validation macro F1; a tie goes to the smaller C (the stronger regularisation)."""
    return min(val_f1_by_c, key=lambda c: (-round(val_f1_by_c[c], 12), c))


def linear_layer(model, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted LogisticRegression as (weight, bias) over all `classes` class ids, so that softmax(x @ W.T + b) is
    its predict_proba: a binary fit's one decision row z becomes [-z/2, z/2]; a class absent from the training
    rows gets weight 0 and a bias far below the others (never predicted)."""
    coef, intercept = np.asarray(model.coef_, dtype=np.float64), np.asarray(model.intercept_, dtype=np.float64)
    if len(model.classes_) == 2:
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    weight = np.zeros((classes, coef.shape[1]))
    bias = np.full(classes, intercept.min() - 1e4)
    for row, label in enumerate(model.classes_):
        weight[int(label)], bias[int(label)] = coef[row], intercept[row]
    return weight.astype(np.float32), bias.astype(np.float32)


def fit(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, classes: int,
        grid: tuple[float, ...] = C_GRID, seed: int = 0) -> Probe:
    """One logistic regression per C on the training rows, scored on the validation rows; the chosen one."""
    from sklearn.linear_model import LogisticRegression

    start, fitted, scores = time.perf_counter(), {}, {}
    for c in grid:
        model = LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed).fit(train_x, train_y)
        fitted[c] = linear_layer(model, classes)
        predicted = (val_x @ fitted[c][0].T + fitted[c][1]).argmax(axis=1)
        scores[c] = metrics.summary(val_y, predicted, classes=classes)["f1_macro"]
        log.info("probe C=%g: val macro F1 %.4f", c, scores[c])
    chosen = choose_c(scores)
    return Probe(*fitted[chosen], c=chosen, val_f1_by_c=scores, fit_seconds=time.perf_counter() - start)


def log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of the labels under softmax(logits): the probe's `train_loss` / `val_loss`."""
    probs = metrics.probabilities(logits.astype(np.float64))
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def save(folder: Path, encoder, tokenizer, probe: Probe, labels: list[str], max_length: int) -> Path:
    """The folder agnews/serving/probe_model.py serves: the encoder and tokenizer (save_pretrained, safetensors), the
    linear layer as head.npz (no pickle) and agnews.json (the task's labels in logit order, max_length,
    the chosen C)."""
    folder.mkdir(parents=True, exist_ok=True)
    encoder.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    np.savez(folder / "head.npz", weight=probe.weight, bias=probe.bias)
    (folder / vocab.MODEL_SETTINGS_FILE).write_text(json.dumps({"labels": list(labels), "max_length": int(max_length),
                                                    "c": probe.c}))
    return folder
