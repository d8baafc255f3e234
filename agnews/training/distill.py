"""Distillation and self-training with unlabelled text: the student's loss on a teacher's soft labels, the Trainer
that applies it, cutting a model to its first N layers, and layer-wise learning-rate decay."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer

from agnews.errors import PipelineError

log = logging.getLogger(__name__)
IGNORE = -100  # the label of an unlabelled row: only the teacher's soft label teaches on it


def soft_label_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float,
                    alpha: float) -> torch.Tensor:
    """The mean over the batch's rows of each row's loss: alpha * cross-entropy (0 on an unlabelled row, label
    IGNORE) + (1 - alpha) * T^2 * KL(teacher_T || student_T).

    Defined per row, so a row's weight does not depend on which other rows share its batch: a labelled row counts
    the same alone among pool rows as among labelled rows (a mean of the cross-entropy over the labelled rows
    only would give a lone labelled row in a batch of 16 sixteen times the weight of one in an all-labelled
    batch). T^2 keeps the soft term's gradients on the scale of the hard term's as T grows (Hinton et al. 2015)."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student.float() / t, dim=-1), F.log_softmax(teacher.float() / t, dim=-1),
                    reduction="none", log_target=True).sum(dim=-1) * t * t
    hard = F.cross_entropy(student.float(), labels, ignore_index=IGNORE, reduction="none")  # 0 where IGNORE
    return (alpha * hard + (1 - alpha) * soft).mean()


class DistillTrainer(Trainer):
    """Rows carry `teacher_logits`; evaluation rows do not and get the plain cross-entropy."""

    def __init__(self, *args, temperature: float, alpha: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.temperature, self.alpha = temperature, alpha

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        inputs.pop("length", None)  # kept for length grouping (remove_unused_columns=False)
        teacher, labels = inputs.pop("teacher_logits", None), inputs.pop("labels")
        outputs = model(**inputs)
        if teacher is None:
            loss = F.cross_entropy(outputs.logits.float(), labels, ignore_index=IGNORE)
        else:
            loss = soft_label_loss(outputs.logits, teacher, labels, self.temperature, self.alpha)
        return (loss, outputs) if return_outputs else loss


def _layers(model: nn.Module) -> nn.ModuleList:
    """The transformer block list of a BERT-family encoder (BERT, DistilBERT, RoBERTa, ...)."""
    base = getattr(model, model.base_model_prefix, model)
    for path in ("encoder.layer", "transformer.layer", "layers"):
        found = base
        for part in path.split("."):
            found = getattr(found, part, None)
        if isinstance(found, nn.ModuleList):
            return found
    raise PipelineError(f"cannot find the transformer layers of {type(model).__name__}; -P student_layers works for "
                        "BERT-family encoders (BERT, DistilBERT, RoBERTa); pass student_layers=0")


def cut_layers(model: nn.Module, n: int) -> nn.Module:
    """Keep the first `n` transformer layers (embeddings and head untouched), in place; the config follows."""
    layers = _layers(model)
    if not 1 <= n <= len(layers):
        raise PipelineError(f"-P student_layers={n}: the student has {len(layers)} layers; pass 1 to {len(layers)} "
                            "(0 keeps them all)")
    if n < len(layers):
        kept = nn.ModuleList(list(layers)[:n])
        parent = getattr(model, model.base_model_prefix, model)
        owner = parent.encoder if hasattr(parent, "encoder") else parent.transformer
        owner.layer = kept
        for key in ("num_hidden_layers", "n_layers"):
            if hasattr(model.config, key):
                setattr(model.config, key, n)
    return model


def reinit_top_layers(model: nn.Module, k: int, seed: int) -> nn.Module:
    """Re-initialise the top `k` transformer layers and the pooler, in place, as BERT initialises them (normal
    weights with the config's initializer_range, zero biases, unit LayerNorms): the top pre-trained layers are the
    most specific to pre-training, and few-sample fine-tuning does better from fresh ones (Zhang et al. 2021,
    "Revisiting Few-sample BERT Fine-tuning"). Seeded: the same `seed`, the same weights."""
    layers = _layers(model)
    if not 0 <= k <= len(layers):
        raise PipelineError(f"-P reinit_top_k={k}: the model has {len(layers)} transformer layers; pass 0 to "
                            f"{len(layers)}")
    base = getattr(model, model.base_model_prefix, model)
    modules = list(layers)[len(layers) - k:] if k else []
    if k and getattr(base, "pooler", None) is not None:
        modules.append(base.pooler)
    std = getattr(model.config, "initializer_range", 0.02)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in (m for top in modules for m in top.modules()):
            if isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
    return model


def layer_decay_groups(model: nn.Module, learning_rate: float, decay: float, weight_decay: float) -> list[dict]:
    """Optimizer parameter groups with layer-wise learning-rate decay: the head at `learning_rate`, each layer
    below it `decay` times the one above, the embeddings lowest (Howard & Ruder 2018; Clark et al. 2020)."""
    layers = _layers(model)
    depth = len(layers) + 1  # embeddings = 0, layer k = k + 1, head = depth
    layer_of = {id(p): k + 1 for k, layer in enumerate(layers) for p in layer.parameters()}
    base = getattr(model, model.base_model_prefix, model)
    embeddings = {id(p) for name, p in base.named_parameters() if "embeddings" in name}
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        level = 0 if id(param) in embeddings else layer_of.get(id(param), depth)
        no_decay = param.ndim == 1 or name.endswith(".bias")  # biases and LayerNorm weights
        group = groups.setdefault((level, no_decay), {
            "params": [], "lr": learning_rate * decay ** (depth - level),
            "weight_decay": 0.0 if no_decay else weight_decay})
        group["params"].append(param)
    return list(groups.values())
