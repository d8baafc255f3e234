"""report.md and the comparison table, written from synthetic frames: every sentence follows the numbers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agnews.data.ag_news import LABELS
from agnews.data.task import AG_NEWS
from agnews.decide import report, training_notes, wording

METRICS = ["accuracy", "f1_macro", "precision_macro", "recall_macro"]
GATE = {"candidate_model": "distilbert", "candidate_version": "5", "incumbent_model": "tinybert",
        "incumbent_version": "3", "gate_rows": 480, "gate_excluded": 20, "gate_mcnemar_p": 0.21,
        "candidate_gate_f1_macro": 0.9, "incumbent_gate_f1_macro": 0.912, "min_improvement": 0.0}


def frames(models: list[str], seeds: int = 1, evaluated: bool = True, delta_ci: tuple[float, float] = (0.004, 0.03),
           holm: float = 0.01, gap: float = 0.017) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ranked, runs) like the compare step's; every non-leader gets the same paired interval and Holm p."""
    ranked, runs = [], []
    for k, model in enumerate(models):
        best = 0.91 - k * gap
        row = {"model": model, "base_model": f"org/{model}", "registered_model": "agnews-classifier",
               "registered_version": str(k + 1), "train_run_id": f"run{k}", "seed": 42, "n_seeds": seeds,
               "best_epoch": 2, "num_parameters": 4_400_000 * (k + 1), "train_seconds": 61.04 + k}
        for split, shift in (("val", 0.0), ("test", -0.01)):
            for metric in METRICS:
                row[f"{split}_{metric}"] = best + shift if split == "val" or evaluated else np.nan
            for metric in ("accuracy", "f1_macro"):
                value = row[f"{split}_{metric}"]
                std = 0.004 if seeds > 1 else np.nan
                row |= {f"{split}_{metric}_ci_low": value - 0.02, f"{split}_{metric}_ci_high": value + 0.02,
                        f"{split}_{metric}_mean": value - 0.003, f"{split}_{metric}_std": std}
        lead = k > 0
        row |= {"delta_f1_macro": k * gap if lead else np.nan, "delta_ci_low": delta_ci[0] if lead else np.nan,
                "delta_ci_high": delta_ci[1] if lead else np.nan, "mcnemar_p": holm / 2 if lead else np.nan,
                "mcnemar_p_holm": holm if lead else np.nan}
        ranked.append(row)
        runs += [{"model": model, "seed": 42 + s, "train_run_id": f"run{k}{s}", "registered_version": str(k + 1),
                  "val_accuracy": best - 0.003 * s, "val_f1_macro": best - 0.003 * s,
                  "test_accuracy": best - 0.01 if evaluated else np.nan,
                  "test_f1_macro": best - 0.01 if evaluated else np.nan} for s in range(seeds)]
    return pd.DataFrame(ranked), pd.DataFrame(runs)


def confusion() -> pd.DataFrame:
    """500 validation rows; Business <-> Sci/Tech (15 + 8) and World <-> Business (6 + 5) are the top pairs."""
    counts = [[110, 2, 6, 3],
              [1, 120, 0, 2],
              [5, 1, 100, 15],
              [4, 0, 8, 123]]
    return pd.DataFrame(counts, index=list(LABELS), columns=list(LABELS))


def render(models=("distilbert", "tinybert"), decision=None, **kwargs) -> str:
    ranked, runs = frames(list(models), **kwargs)
    return report.render(ranked, runs, decision or {"decision": "first_champion", "candidate_model": models[0],
                                                    "candidate_version": "1"}, confusion())


def test_to_markdown_shows_intervals_and_drops_internal_columns():
    ranked, _ = frames(["distilbert", "tinybert"])
    table = report.to_markdown(ranked)
    assert "0.9100 [0.8900, 0.9300]" in table  # leader's val accuracy with its bootstrap interval
    assert "0.0170 [0.0040, 0.0300]" in table and "| 0.0050 | 0.0100 |" in table  # delta, raw and Holm p
    assert "—" in table.splitlines()[2]  # leader's delta cells are empty
    for hidden in ("train_run_id", "base_model", "registered_model", "_ci_low", "_std"):
        assert hidden not in table.splitlines()[0]
    assert "mean ± std" not in table  # one seed each: no seed columns
    assert "| 61.0 |" in table  # seconds to one decimal


def test_to_markdown_adds_mean_std_with_seeds_and_dashes_missing_test():
    ranked, _ = frames(["distilbert", "tinybert"], seeds=3, evaluated=False)
    table = report.to_markdown(ranked)
    assert "val_f1_macro mean ± std" in table and "0.9070 ± 0.0040 (3 seeds)" in table
    leader = table.splitlines()[2]
    assert "nan" not in table.lower() and leader.count("—") >= 4


def test_significant_and_not_significant_wording_follow_the_interval():
    significant = render(delta_ci=(0.004, 0.03))
    assert "**distilbert**'s lead over **tinybert** is significant" in significant
    assert "not significant" not in significant
    noise = render(delta_ci=(-0.006, 0.03))
    assert "is not significant: the paired interval [-0.0060, 0.0300] includes 0." in noise
    assert "may be noise" in noise  # the two validation intervals (±0.02 around a 0.017 gap) overlap


def test_holm_p_alone_makes_a_lead_not_significant():
    text = render(delta_ci=(0.004, 0.03), holm=0.2)
    assert "the Holm-adjusted McNemar p = 0.2000 is not below 0.05" in text


def test_leader_sentence_and_seeds():
    text = render(seeds=3)
    assert ("**distilbert** (version 1) leads on mean validation macro F1 with 0.9070 ± 0.0040 over its 3 seeds "
            "(mean ± std); its best seed, seed 42, represents it with 0.9100 [0.8900, 0.9300]") in text
    assert "Ranking by mean validation macro F1 over each model's seeds, not its best seed: distilbert 0.9070" in text
    runs = text.split("## Runs (every seed)")[1]
    assert runs.count("| distilbert | 4") == 3 and runs.index("| distilbert |") < runs.index("| tinybert |")


def test_confused_pairs_from_a_hand_made_matrix():
    assert report.confused_pairs(confusion()) == [("Business", "Sci/Tech", 15, 8), ("World", "Business", 6, 5)]
    text = render()
    assert "- Business ↔ Sci/Tech: 23 of 500 validation rows (4.6%)" in text
    assert "- World ↔ Business: 11 of 500 validation rows" in text and "World ↔ Sci/Tech" not in text


def test_missing_test_scores_say_not_evaluated():
    text = render(evaluated=False)
    assert text.count("not evaluated") == 2 and "nan" not in text.lower()
    assert "By test macro F1" not in text


def test_single_model_has_no_paired_comparisons():
    text = render(models=("distilbert",))
    assert "Only one model (distilbert) was compared, so there are no paired comparisons." in text
    assert "| McNemar p |" not in text


def test_first_champion_and_already_champion_wording():
    first = wording.decision_sentence({"decision": "first_champion", "candidate_model": "distilbert",
                                      "candidate_version": 5.0})
    assert first == ("`first_champion`: there was no `champion` yet, so version 5 (distilbert) takes `champion` "
                     "without a gate comparison.")
    already = wording.decision_sentence({"decision": "already_champion", "candidate_version": "5"})
    assert already.startswith("`already_champion`: the candidate version 5 is the incumbent's own version")
    assert "nothing changed" in already


def test_kept_incumbent_wording_from_the_gate_numbers():
    decision = GATE | {"decision": "kept_incumbent", "gate_delta_f1_macro": -0.012, "gate_delta_ci_low": "-0.041",
                       "gate_delta_ci_high": 0.015}
    text = wording.decision_sentence(decision)
    assert text.startswith("`kept_incumbent`: on 480 gate rows (20 excluded because either model trained, "
                           "validated or distilled on them) the candidate's macro F1 lead over version 3 (tinybert) is "
                           "-0.012 [-0.041, 0.015]")
    assert ("its lower end -0.041 is not above min_improvement 0.000, so version 3 (tinybert) keeps `champion` "
            "and version 5 (distilbert) gets `challenger`.") in text
    assert "macro F1 0.900 vs 0.912 on the gate rows; McNemar p = 0.2100" in text
    assert "decision" not in text.split("lead over")[0]  # a record from before decisions were counted


def test_the_report_says_how_many_decisions_the_gate_rows_made():
    decision = GATE | {"decision": "kept_incumbent", "gate_delta_f1_macro": -0.012, "gate_delta_ci_low": -0.041,
                       "gate_delta_ci_high": 0.015, "gate_decision_number": 3, "gate_confidence": 0.9875}
    text = wording.decision_sentence(decision)
    assert "decision 3 made on these gate rows, so a 98.75% interval)" in text


def test_an_undecided_gate_says_why_and_what_to_pass():
    decision = {"decision": "undecided", "candidate_model": "m", "candidate_version": "4",
                "reason": "not decided, version 2 keeps champion: only 3 gate rows neither model saw (37 excluded), "
                          "fewer than the 30 a decision needs; ... or pass -P gate_data_run_id=<...>"}
    text = wording.decision_sentence(decision)
    assert text.startswith("`undecided`: version 4 (m) is not compared") and "-P gate_data_run_id=" in text


def test_promoted_wording_and_min_improvement_from_the_decision():
    decision = GATE | {"decision": "promoted", "gate_delta_f1_macro": 0.03, "gate_delta_ci_low": 0.012,
                       "gate_delta_ci_high": 0.05, "gate_excluded": 0, "min_improvement": 0.01}
    text = report.render(*frames(["distilbert", "tinybert"]), decision, confusion(), min_improvement=0.0)
    assert "on 480 gate rows (none excluded)" in text
    assert ("its lower end 0.012 is above min_improvement 0.010, so version 5 (distilbert) takes `champion` from "
            "version 3 (tinybert).") in text
    assert "disagrees" not in text


def test_a_decision_that_contradicts_its_numbers_is_flagged(caplog):
    decision = GATE | {"decision": "promoted", "gate_delta_f1_macro": 0.01, "gate_delta_ci_low": -0.01,
                       "gate_delta_ci_high": 0.03}
    assert "which disagrees with the recorded decision" in wording.decision_sentence(decision)
    assert "disagrees" in caplog.text


@pytest.mark.parametrize("name", [*report.DECISIONS, "something_else"])
def test_every_branch_has_its_own_sentence(name):
    decision = GATE | {"decision": name, "gate_delta_f1_macro": 0.01, "gate_delta_ci_low": 0.002,
                       "gate_delta_ci_high": 0.02}
    text = wording.decision_sentence(decision)
    assert text.startswith(f"`{name}`: ") and "nan" not in text.lower()
    others = {wording.decision_sentence(decision | {"decision": d}).split(": ", 1)[1]
              for d in report.DECISIONS if d != name}
    assert text.split(": ", 1)[1] not in others


# --- the per-model section: written from hand-built per-epoch histories ---

def history(f1, val_loss=None, train_loss=None, accuracy=None, ci=(0.85, 0.90), matrix=None, seed=42, version="1"):
    epochs = list(range(1, len(f1) + 1))
    return training_notes.ModelHistory(epochs=epochs, val_accuracy=accuracy or [v + 0.01 for v in f1], val_f1_macro=f1,
                               val_loss=val_loss or [], train_loss=train_loss or [], seed=seed, version=version,
                               val_f1_ci=ci, confusion=confusion() if matrix is None else matrix)


def world_sports_matrix() -> pd.DataFrame:
    """World <-> Sports (9 + 7) is the top pair; Business <-> Sci/Tech only 3 + 2."""
    counts = [[110, 9, 1, 0],
              [7, 120, 0, 1],
              [1, 0, 100, 3],
              [0, 1, 2, 123]]
    return pd.DataFrame(counts, index=list(LABELS), columns=list(LABELS))


RISING = history([0.80, 0.84, 0.875], val_loss=[0.60, 0.50, 0.45], train_loss=[0.90, 0.60, 0.40],
                 accuracy=[0.81, 0.85, 0.88])
OVERFIT = history([0.80, 0.86, 0.87, 0.86, 0.85], val_loss=[0.50, 0.40, 0.42, 0.47, 0.46],
                  train_loss=[0.80, 0.50, 0.30, 0.20, 0.10])
FLAT = history([0.80, 0.86, 0.87, 0.86], val_loss=[0.40, 0.40, 0.40, 0.40], train_loss=[0.80, 0.50, 0.30, 0.20])


def section(training: dict) -> str:
    return "\n".join(training_notes.training_section(list(training), training))


def model_part(text: str, model: str) -> str:
    return text.split(f"### {model}")[1].split("###")[0]


def test_a_still_rising_model_says_more_epochs_may_help():
    assert (training_notes.still_rising(RISING) and not training_notes.still_rising(OVERFIT)
            and not training_notes.still_rising(FLAT))
    text = section({"distilbert": RISING})
    assert "### distilbert (seed 42, version 1)" in text
    assert ("Validation accuracy 0.8100 → 0.8800 and macro F1 0.8000 → 0.8750 from epoch 1 to the best epoch, "
            "best epoch 3 of 3.") in text
    assert ("Still rising at the last epoch: macro F1 +0.0350 from epoch 2 to 3, the best epoch being the last, "
            "less than the width of its validation interval (0.0500)") in text
    assert "more epochs may help" in text
    wide = section({"distilbert": history([0.70, 0.80], ci=(0.78, 0.82))})
    assert "+0.1000 from epoch 1 to 2, the best epoch being the last, more than the width of its validation " \
           "interval (0.0400); more epochs may help." in wide


def test_a_model_past_its_best_epoch_does_not_ask_for_more_epochs():
    text = section({"distilbert": OVERFIT})
    assert "best epoch 3 of 5" in text and "more epochs may help" not in text
    assert "Not rising at the end: the best epoch (3) came before the last (5), which changed macro F1 by -0.0100." \
        in text


def test_val_loss_rising_two_epochs_after_its_minimum_while_train_loss_falls_is_overfitting():
    assert training_notes.overfitting(OVERFIT) == (2, 2, 4)
    text = section({"distilbert": OVERFIT})
    assert ("Overfitting: validation loss rose for 2 consecutive epochs after its minimum at epoch 2 "
            "(0.4000 at epoch 2 → 0.4700 at epoch 4) while training loss fell (0.5000 → 0.2000).") in text


def test_flat_or_single_rises_or_rising_train_loss_are_not_overfitting():
    assert training_notes.overfitting(FLAT) is None
    text = section({"distilbert": FLAT})
    assert "Overfitting:" not in text
    assert ("No sign of overfitting: validation loss (lowest at epoch 1, 0.4000) did not rise for 2 or more "
            "consecutive epochs after its minimum while training loss fell.") in text
    zigzag = history([0.8, 0.85, 0.86, 0.86, 0.87], val_loss=[0.5, 0.4, 0.42, 0.41, 0.43],
                     train_loss=[0.8, 0.5, 0.3, 0.2, 0.1])
    assert training_notes.overfitting(zigzag) is None  # rises one epoch at a time
    both_rise = history([0.8, 0.85, 0.84, 0.83], val_loss=[0.5, 0.4, 0.45, 0.5], train_loss=[0.8, 0.5, 0.6, 0.7])
    assert training_notes.overfitting(both_rise) is None  # training loss rose too: not the overfitting pattern
    later = history([0.8] * 6, val_loss=[0.5, 0.4, 0.45, 0.43, 0.46, 0.49], train_loss=[0.9, 0.7, 0.5, 0.4, 0.3, 0.2])
    assert training_notes.overfitting(later) == (2, 4, 6)  # the 2-epoch rise starts after a dip
    assert "after its minimum at epoch 2 (0.4000), from epoch 4 (0.4300 at epoch 4 → 0.4900 at epoch 6)" in \
        section({"m": later})
    unlogged = section({"m": history([0.8, 0.85])})
    assert "Validation loss was not logged for enough epochs to check for overfitting." in unlogged


def test_most_confused_pair_is_named_with_class_names():
    assert training_notes.most_confused(confusion()) == [("Business", "Sci/Tech", 15, 8)]
    text = section({"distilbert": RISING})
    assert ("Most confused: Business ↔ Sci/Tech, 23 of 500 validation rows (15 Business predicted as Sci/Tech, "
            "8 Sci/Tech predicted as Business).") in text
    tie = pd.DataFrame([[10, 3, 0, 0], [2, 10, 0, 0], [0, 0, 10, 4], [0, 0, 1, 10]], index=list(LABELS),
                       columns=list(LABELS))
    assert [p[:2] for p in training_notes.most_confused(tie)] == [("World", "Sports"), ("Business", "Sci/Tech")]
    perfect = pd.DataFrame(np.diag([5, 5, 5, 5]), index=list(LABELS), columns=list(LABELS))
    assert "No validation row of 20 was misclassified." in section({"m": history([0.9], matrix=perfect)})


def test_a_pair_shared_by_every_model_and_one_that_is_not():
    shared = section({"distilbert": RISING, "tinybert": OVERFIT, "bert-mini": FLAT})
    assert "Business ↔ Sci/Tech is the most-confused pair shared by every model (3 of 3)." in shared
    split = section({"distilbert": RISING, "tinybert": history([0.8, 0.82], matrix=world_sports_matrix())})
    assert "is the most-confused pair shared" not in split
    assert ("No most-confused pair is shared by every model (distilbert: Business ↔ Sci/Tech; tinybert: "
            "World ↔ Sports).") in split
    assert "shared by every model" not in section({"distilbert": RISING})  # one model: nothing to share


def test_render_adds_the_training_section_in_ranked_order():
    ranked, runs = frames(["distilbert", "tinybert"])
    text = report.render(ranked, runs, {"decision": "first_champion", "candidate_version": "1"}, confusion(),
                         training={"tinybert": OVERFIT, "distilbert": RISING})
    assert "## Training, model by model" in text
    assert text.index("### distilbert") < text.index("### tinybert") < text.index("## Test set")
    assert "more epochs may help" in model_part(text, "distilbert") and "Overfitting:" in model_part(text, "tinybert")
    assert "nan" not in text.lower()
    assert "## Training, model by model" not in render()  # no histories given: no section


def test_training_histories_reads_the_representing_run_epoch_by_epoch(store):
    import mlflow

    from agnews.decide import comparison

    with mlflow.start_run() as run:
        for epoch, (acc, f1, vl, tl) in enumerate([(0.8, 0.79, 0.6, 0.9), (0.85, 0.84, 0.5, 0.6)], start=1):
            mlflow.log_metrics({"val_accuracy": acc, "val_f1_macro": f1, "val_loss": vl, "train_loss": tl},
                               step=epoch)
    ranked = pd.DataFrame([{"model": "distilbert", "train_run_id": run.info.run_id, "best_epoch": 2, "seed": 42,
                            "registered_version": "3", "val_f1_macro_ci_low": 0.8, "val_f1_macro_ci_high": 0.88}])
    predictions = {run.info.run_id: pd.DataFrame({"row_id": [1, 2, 3], "label": [2, 3, 3], "predicted": [3, 3, 2]})}
    got = comparison.training_histories(ranked, predictions, AG_NEWS)["distilbert"]
    assert got.epochs == [1, 2] and got.val_f1_macro == pytest.approx([0.79, 0.84])
    assert got.val_loss == pytest.approx([0.6, 0.5]) and got.train_loss == pytest.approx([0.9, 0.6])
    assert (got.best_epoch, got.seed, got.version, got.val_f1_ci) == (2, 42, "3", (0.8, 0.88))
    assert training_notes.most_confused(got.confusion) == [("Business", "Sci/Tech", 1, 1)]
