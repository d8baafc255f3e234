import numpy as np
import pandas as pd
import pytest
import torch

from agnews import hardware, metrics
from agnews.data.sampling import SampleSizes, sample_splits
from agnews.data.task import AG_NEWS
from agnews.errors import PipelineError
from agnews.training import fine_tune
from agnews.training.models import load_tokenizer_and_model, resolve_model


@pytest.fixture(scope="module")
def splits(fixture_csv):
    return sample_splits(str(fixture_csv), SampleSizes(80, 40, 40, gate=0), seed=0).splits


def _fresh(tiny_model):
    return load_tokenizer_and_model(resolve_model(str(tiny_model)), AG_NEWS)


def test_training_learns_and_keeps_the_best_epoch(tiny_model, splits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tokenizer, model = _fresh(tiny_model)
    logged = []
    config = fine_tune.TrainConfig(epochs=4, learning_rate=1e-2, batch_size=8, precision="fp32",
                                  early_stopping_patience=0)
    result = fine_tune.train(model, tokenizer, splits["train"], splits["validation"], config,
                            on_epoch=lambda epoch, row: logged.append((epoch, row)))
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert [epoch for epoch, _ in logged] == [1, 2, 3, 4]
    assert set(logged[0][1]) == {"train_loss", "val_loss", "val_accuracy", "val_f1_macro",
                                 "val_precision_macro", "val_recall_macro"}
    best = max(result.history, key=lambda row: row["val_f1_macro"])
    assert result.best_epoch == best["epoch"] and result.best == best
    assert best["val_accuracy"] > 0.6  # 4 classes with class-specific words: far above chance
    # The returned model is the best epoch's, not the last one's: scoring it again reproduces the best row.
    logits = fine_tune.predict_logits(model, tokenizer, splits["validation"]["text"].tolist(), config)
    again = metrics.summary(splits["validation"]["label"], logits.argmax(-1), "val")
    assert again["val_f1_macro"] == pytest.approx(best["val_f1_macro"])
    assert list(tmp_path.iterdir()) == []  # no checkpoints or Trainer output folders left behind


def test_early_stopping_stops_after_patience(tiny_model, splits):
    tokenizer, model = _fresh(tiny_model)
    config = fine_tune.TrainConfig(epochs=6, learning_rate=1e-9, batch_size=16, precision="fp32",
                                  early_stopping_patience=1)  # a learning rate that cannot improve anything
    result = fine_tune.train(model, tokenizer, splits["train"], splits["validation"], config)
    assert len(result.history) == 2 and result.best_epoch == 1


def test_auto_epochs_schedule_by_optimizer_steps():
    """epochs=0 (the default) plans by steps: few rows get many short epochs, many rows few long ones; an explicit
    -P epochs is obeyed. At 1000 rows it plans today's 3 (no slower); at 100, 28 epochs x 7 steps (was 21 steps)."""
    auto = fine_tune.TrainConfig()
    assert auto.epochs == 0
    plans = {rows: fine_tune.planned_epochs(auto, rows) for rows in (100, 120, 1000, 10_000, 1)}
    assert plans == {100: 26, 120: 23, 1000: 3, 10_000: 3, 1: fine_tune.MAX_AUTO_EPOCHS}
    for rows in (100, 1000):  # enough optimizer steps either way
        assert plans[rows] * -(-rows // auto.batch_size) >= fine_tune.MIN_STEPS
    assert plans[10_000] * -(-10_000 // auto.batch_size) == 3 * 625  # many rows: the floor of 3 epochs, 1875 steps
    assert fine_tune.planned_epochs(fine_tune.TrainConfig(epochs=2), 100) == 2  # explicit: obeyed
    assert fine_tune.planned_epochs(auto, 100, world_size=2) == 30  # DDP: each step sees two batches
    # an imbalanced set (250/100/50/25 rows): by steps alone 7 epochs; its rarest class needs 300 / 25 = 12 passes
    assert fine_tune.planned_epochs(auto, 425) == 7 and fine_tune.planned_epochs(auto, 425, rarest=25) == 12
    assert fine_tune.planned_epochs(auto, 1000, rarest=250) == 3  # balanced 1000 rows: today's 3, no slower
    frame = pd.DataFrame({"label": [0] * 5 + [1] * 2 + [-100] * 9})  # distillation's unlabelled rows aside
    assert fine_tune.rarest_class(frame) == 2


def test_auto_epochs_reach_the_trainer(tiny_model, splits, monkeypatch):
    monkeypatch.setattr(fine_tune, "MIN_STEPS", 9)  # 80 rows of 40: 2 steps an epoch, so 5 epochs
    monkeypatch.setattr(fine_tune, "MIN_CLASS_PASSES", 1)
    tokenizer, model = _fresh(tiny_model)
    config = fine_tune.TrainConfig(learning_rate=1e-9, batch_size=40, precision="fp32", early_stopping_patience=0)
    result = fine_tune.train(model, tokenizer, splits["train"], splits["validation"], config)
    assert len(result.history) == fine_tune.planned_epochs(config, len(splits["train"]), rarest=20) == 5


def test_predict_logits_keeps_input_order(tiny_model):
    tokenizer, model = _fresh(tiny_model)
    texts = ["game", "stocks market profit shares company earnings investors bank the a of", "space chip"]
    config = fine_tune.TrainConfig(batch_size=2, precision="fp32")
    logits = fine_tune.predict_logits(model, tokenizer, texts, config)
    model.eval()
    with torch.no_grad():
        expected = np.stack([model(**tokenizer(t, return_tensors="pt")).logits[0].numpy() for t in texts])
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_bf16_autocast_runs_and_precision_is_resolved(tiny_model, splits):
    tokenizer, model = _fresh(tiny_model)
    config = fine_tune.TrainConfig(epochs=1, learning_rate=1e-2, batch_size=16, precision="bf16")
    result = fine_tune.train(model, tokenizer, splits["train"], splits["validation"], config)
    assert result.precision == "bf16" and np.isfinite(result.history[0]["val_loss"])
    assert hardware.resolve_precision("auto") == ("bf16" if hardware.cpu_has_native_bf16() else "fp32")
    with pytest.raises(PipelineError, match="unknown precision 'fp8'"):
        hardware.resolve_precision("fp8")


def test_tokenize_unpadded_and_truncated(tiny_model):
    tokenizer, _ = _fresh(tiny_model)
    frame = pd.DataFrame({"text": ["game", "game team season", " ".join(["stocks"] * 50)], "label": [1, 1, 2]})
    dataset = fine_tune.tokenize(tokenizer, frame, max_length=8)
    assert dataset["length"] == [3, 5, 8]  # [CLS] ... [SEP], no padding; truncated at max_length
    assert dataset["labels"] == [1, 1, 2]


def test_reinit_top_k_renews_only_the_top_layers_and_the_pooler_seeded(tiny_model):
    from agnews.training import distill

    _, before = _fresh(tiny_model)
    _, model = _fresh(tiny_model)
    distill.reinit_top_layers(model, 1, seed=3)
    old, new = before.state_dict(), model.state_dict()
    changed = {k for k in new if not torch.equal(old[k], new[k])}
    assert changed and all(k.startswith(("bert.encoder.layer.1.", "bert.pooler.")) for k in changed), changed
    assert "bert.encoder.layer.1.attention.self.query.weight" in changed and "bert.pooler.dense.weight" in changed
    std = float(new["bert.encoder.layer.1.output.dense.weight"].std())
    assert std == pytest.approx(model.config.initializer_range, rel=0.3)  # BERT's init, not the trained weights
    _, again = _fresh(tiny_model)
    distill.reinit_top_layers(again, 1, seed=3)
    assert all(torch.equal(new[k], again.state_dict()[k]) for k in changed)  # the same seed, the same weights
    _, untouched = _fresh(tiny_model)
    distill.reinit_top_layers(untouched, 0, seed=3)
    assert all(torch.equal(old[k], v) for k, v in untouched.state_dict().items())


def test_config_from_args_carries_every_tunable_and_label_smoothing_reaches_the_trainer(tmp_path):
    import argparse

    from agnews import params

    parser = argparse.ArgumentParser()
    params.add_training_arguments(parser)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(["--warmup_ratio", "0.2", "--weight_decay", "0.05", "--layer_decay", "0.8",
                              "--label_smoothing", "0.1", "--reinit_top_k", "1", "--epochs", "5"])
    config = fine_tune.config_from_args(args, learning_rate=3e-5)
    assert (config.warmup_ratio, config.weight_decay, config.layer_decay, config.label_smoothing,
            config.reinit_top_k, config.epochs, config.learning_rate) == (0.2, 0.05, 0.8, 0.1, 1, 5, 3e-5)
    arguments = fine_tune.training_arguments(config, str(tmp_path), "fp32")
    assert (arguments.label_smoothing_factor, arguments.weight_decay, arguments.warmup_steps) == (0.1, 0.05, 0.2)
