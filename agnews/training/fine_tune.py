"""Fine-tuning with the transformers Trainer: dynamic padding, length-grouped batches, bf16 where the
CPU has it, best-epoch weights kept in memory (no checkpoints on disk), early stopping, DDP under torchrun."""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

from agnews import metrics
from agnews.hardware import resolve_precision
from agnews.params import TrainConfig as TrainConfig  # declared there, with its `-P` knobs: parsing imports no torch

log = logging.getLogger(__name__)
EpochHook = Callable[[int, dict[str, float]], None]
T = TypeVar("T")


# `epochs=0` (the default): schedule by optimizer steps, not epochs. 3 epochs suit 1000 rows (189 steps of 16), but
# 120 rows get 24 steps in 3 epochs and stop under-trained (issue 24: 0.70-0.78 accuracy where 15 epochs gave 0.85).
# Auto plans enough epochs for MIN_STEPS steps and for the rarest class's rows to be seen MIN_CLASS_PASSES times in all
# (an imbalanced set's rare class learns slowest: 250/100/50/25 rows planned 7 epochs by steps alone and lost 0.06
# macro F1 to 12), at least MIN_AUTO_EPOCHS and at most MAX_AUTO_EPOCHS; early stopping on validation still picks the
# epoch. At 1000 balanced rows it plans 3, as before. benchmarks/bench_small_data.py measures it (RESULTS.md).
MIN_STEPS, MIN_CLASS_PASSES, MIN_AUTO_EPOCHS, MAX_AUTO_EPOCHS = 180, 300, 3, 30


def planned_epochs(config: TrainConfig, train_rows: int, world_size: int = 1, rarest: int = 0) -> int:
    """The epochs a training runs: `config.epochs` when given; auto (0): enough for MIN_STEPS optimizer steps and
    for MIN_CLASS_PASSES passes over the `rarest` class's rows (0: not known)."""
    if config.epochs:
        return config.epochs
    steps_per_epoch = max(1, math.ceil(train_rows / (config.batch_size * world_size)))
    by_class = math.ceil(MIN_CLASS_PASSES / rarest) if rarest else 0
    return min(MAX_AUTO_EPOCHS, max(MIN_AUTO_EPOCHS, math.ceil(MIN_STEPS / steps_per_epoch), by_class))


def rarest_class(frame: pd.DataFrame) -> int:
    """Rows of the rarest class among the labelled rows (distillation's unlabelled rows, label -100, aside)."""
    counts = frame.loc[frame["label"] >= 0, "label"].value_counts()
    return int(counts.min()) if len(counts) else 0


def config_from_args(args, learning_rate: float) -> TrainConfig:
    """The TrainConfig of a step's parsed arguments (cli.add_training_arguments); `learning_rate` resolved."""
    knobs = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if "parameter" in f.metadata}
    return TrainConfig(**{**knobs, "learning_rate": learning_rate}, seed=args.seed)


@dataclass
class TrainResult:
    history: list[dict[str, float]]  # one dict per epoch: epoch, train_loss, val_loss, val_accuracy, ...
    best_epoch: int
    train_seconds: float
    precision: str
    best: dict[str, float] = field(default_factory=dict)
    best_val_logits: np.ndarray | None = None  # validation logits of the best epoch, rows in val_frame order


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def from_rank_zero(load: Callable[[], T]) -> T:
    """`load()` on rank 0 only, its result broadcast to every rank under torchrun (a plain call otherwise):
    what rank 0 reads from the tracking store reaches ranks on nodes that cannot reach the store."""
    if world()[1] == 1:
        return load()
    import torch.distributed as dist

    if not dist.is_initialized():  # the Trainer (accelerate) reuses this group
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    payload = [load() if world()[0] == 0 else None]
    dist.broadcast_object_list(payload, src=0)
    return payload[0]


def tokenize(tokenizer, frame: pd.DataFrame, max_length: int) -> Dataset:
    """Tokenize once, unpadded: the collator pads each batch to its own longest row."""
    encoded = tokenizer(frame["text"].tolist(), truncation=True, max_length=max_length)
    columns = {key: encoded[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded}
    columns["length"] = [len(ids) for ids in encoded["input_ids"]]  # lets the sampler group without re-reading
    return Dataset.from_dict({**columns, "labels": frame["label"].astype(int).tolist()})


class BestEpochKeeper(TrainerCallback):
    """Collects per-epoch metrics, keeps the best epoch's weights in RAM and stops after `patience` bad epochs.

    transformers' EarlyStoppingCallback needs load_best_model_at_end, which writes a full checkpoint
    (weights + optimizer state, ~750 MB for DistilBERT) every epoch; this keeps one state dict in memory.
    """

    def __init__(self, patience: int, on_epoch: EpochHook | None = None):
        self.patience, self.on_epoch = patience, on_epoch
        self.history: list[dict[str, float]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch, self.best_f1, self._train_loss = 0, -1.0, float("nan")
        self.last_logits: np.ndarray | None = None  # set by compute_metrics, which runs just before on_evaluate
        self.best_logits: np.ndarray | None = None

    def compute_metrics(self, prediction) -> dict[str, float]:
        self.last_logits = np.asarray(prediction.predictions)
        classes = self.last_logits.shape[-1]  # the model's head: the task's label count
        return metrics.summary(prediction.label_ids, np.argmax(prediction.predictions, axis=-1), classes=classes)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:  # logging_strategy="epoch": the mean training loss of the epoch
            self._train_loss = float(logs["loss"])

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        epoch = int(round(state.epoch or 0))
        row = {"epoch": epoch, "train_loss": self._train_loss, "val_loss": float(metrics["eval_loss"])}
        row.update({f"val_{k}": float(metrics[f"eval_{k}"]) for k in ("accuracy", "f1_macro",
                                                                      "precision_macro", "recall_macro")})
        self.history.append(row)
        if row["val_f1_macro"] > self.best_f1:
            self.best_f1, self.best_epoch = row["val_f1_macro"], epoch
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            self.best_logits = self.last_logits
        elif self.patience and epoch - self.best_epoch >= self.patience:
            log.info("early stopping at epoch %d: no better val macro F1 since epoch %d", epoch, self.best_epoch)
            control.should_training_stop = True
        if self.on_epoch and state.is_world_process_zero:
            self.on_epoch(epoch, {k: v for k, v in row.items() if k != "epoch"})


def training_arguments(config: TrainConfig, output_dir: str, precision: str, **overrides) -> TrainingArguments:
    on_cpu = not torch.cuda.is_available()
    kwargs = dict(
        output_dir=output_dir, num_train_epochs=config.epochs, learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=2 * config.batch_size,
        weight_decay=config.weight_decay, warmup_steps=config.warmup_ratio, lr_scheduler_type="linear",
        max_grad_norm=config.max_grad_norm, seed=config.seed, data_seed=config.seed,
        label_smoothing_factor=config.label_smoothing,
        train_sampling_strategy="group_by_length", eval_strategy="epoch", logging_strategy="epoch",
        save_strategy="no", report_to="none", bf16=precision == "bf16", use_cpu=on_cpu,
        ddp_backend="gloo" if on_cpu and world()[1] > 1 else None, dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


@dataclass
class Teacher:
    """Soft labels for the training rows (logits, rows in train_frame order) and how the student learns them."""

    logits: np.ndarray
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the labelled rows' cross-entropy; 1 - alpha on the soft labels (scaled by T^2)


def _trainer(model, tokenizer, config: TrainConfig, scratch: str, precision: str, train_ds: Dataset,
             val_ds: Dataset, keeper: BestEpochKeeper, callbacks: list, teacher: Teacher | None) -> Trainer:
    from agnews.training import distill

    kwargs = dict(model=model, train_dataset=train_ds, eval_dataset=val_ds, processing_class=tokenizer,
                  data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=keeper.compute_metrics,
                  callbacks=[keeper, *callbacks])
    if config.layer_decay != 1.0:
        groups = distill.layer_decay_groups(model, config.learning_rate, config.layer_decay, config.weight_decay)
        kwargs["optimizers"] = (torch.optim.AdamW(groups, lr=config.learning_rate), None)  # the Trainer's schedule
    if teacher is None:
        return Trainer(args=training_arguments(config, scratch, precision), **kwargs)
    kwargs["train_dataset"] = train_ds.add_column("teacher_logits", teacher.logits.astype(np.float32).tolist())
    args = training_arguments(config, scratch, precision, remove_unused_columns=False)  # keep teacher_logits
    return distill.DistillTrainer(args=args, temperature=teacher.temperature, alpha=teacher.alpha, **kwargs)


def train(model, tokenizer, train_frame: pd.DataFrame, val_frame: pd.DataFrame, config: TrainConfig,
          on_epoch: EpochHook | None = None, callbacks: list[TrainerCallback] | None = None,
          teacher: Teacher | None = None) -> TrainResult:
    """Fine-tune in place; on return `model` holds the weights of the epoch with the best val macro F1.
    With a teacher, rows labelled -100 learn from its soft labels only (distillation, self-training)."""
    precision = resolve_precision(config.precision)
    config = dataclasses.replace(config, epochs=planned_epochs(config, len(train_frame), world()[1],
                                                               rarest_class(train_frame)))
    train_ds, val_ds = (tokenize(tokenizer, frame, config.max_length) for frame in (train_frame, val_frame))
    keeper = BestEpochKeeper(config.early_stopping_patience, on_epoch)
    with tempfile.TemporaryDirectory(prefix="agnews-trainer-") as scratch:  # save_strategy="no": stays empty
        trainer = _trainer(model, tokenizer, config, scratch, precision, train_ds, val_ds, keeper, callbacks or [],
                           teacher)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    model.load_state_dict(keeper.best_state)
    best = next(row for row in keeper.history if row["epoch"] == keeper.best_epoch)
    logits = keeper.best_logits
    labels = val_frame["label"].to_numpy()
    if logits is None or len(logits) != len(labels) or not np.isclose(
            (logits.argmax(axis=-1) == labels).mean(), best["val_accuracy"]):
        # Gathered out of order (some DDP layouts): score the kept weights again, in order.
        logits = predict_logits(model, tokenizer, val_frame["text"].tolist(), config)
    return TrainResult(keeper.history, keeper.best_epoch, seconds, precision, best, logits)


def predict_logits(model, tokenizer, texts: list[str], config: TrainConfig) -> np.ndarray:
    """Logits in input order; the Trainer batches by length (sorted, dynamically padded)."""
    precision = resolve_precision(config.precision)
    frame = pd.DataFrame({"text": texts, "label": 0})
    dataset = tokenize(tokenizer, frame, config.max_length)
    with tempfile.TemporaryDirectory(prefix="agnews-predict-") as scratch:
        args = training_arguments(config, scratch, precision, eval_strategy="no", logging_strategy="no",
                                  train_sampling_strategy="sequential")  # keep our sorted order
        trainer = Trainer(model=model, args=args, processing_class=tokenizer,
                          data_collator=DataCollatorWithPadding(tokenizer))
        order = np.argsort(dataset["length"], kind="stable")[::-1]  # longest first: memory peak up front
        logits = trainer.predict(dataset.select(order)).predictions
    out = np.empty_like(logits)
    out[order] = logits
    return out
