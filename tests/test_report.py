"""report.md and the comparison table, written from synthetic frames: every sentence follows the numbers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agnews import report
from agnews.data import LABELS

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
    assert "**distilbert** (version 1) leads on validation macro F1 with 0.9100 [0.8900, 0.9300]" in text
    assert "across its 3 seeds validation macro F1 is 0.9070 ± 0.0040 (mean ± std)" in text
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
    first = report.decision_sentence({"decision": "first_champion", "candidate_model": "distilbert",
                                      "candidate_version": 5.0})
    assert first == ("`first_champion`: there was no `champion` yet, so version 5 (distilbert) takes `champion` "
                     "without a gate comparison.")
    already = report.decision_sentence({"decision": "already_champion", "candidate_version": "5"})
    assert already.startswith("`already_champion`: the candidate version 5 is the incumbent's own version")
    assert "nothing changed" in already


def test_kept_incumbent_wording_from_the_gate_numbers():
    decision = GATE | {"decision": "kept_incumbent", "gate_delta_f1_macro": -0.012, "gate_delta_ci_low": "-0.041",
                       "gate_delta_ci_high": 0.015}
    text = report.decision_sentence(decision)
    assert text.startswith("`kept_incumbent`: on 480 gate rows (20 excluded because the incumbent trained or "
                           "validated on them) the candidate's macro F1 lead over version 3 (tinybert) is "
                           "-0.012 [-0.041, 0.015]")
    assert ("its lower end -0.041 is not above min_improvement 0.000, so version 3 (tinybert) keeps `champion` "
            "and version 5 (distilbert) gets `challenger`.") in text
    assert "macro F1 0.900 vs 0.912 on the gate rows; McNemar p = 0.2100" in text


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
    assert "which disagrees with the recorded decision" in report.decision_sentence(decision)
    assert "disagrees" in caplog.text


@pytest.mark.parametrize("name", [*report.DECISIONS, "something_else"])
def test_every_branch_has_its_own_sentence(name):
    decision = GATE | {"decision": name, "gate_delta_f1_macro": 0.01, "gate_delta_ci_low": 0.002,
                       "gate_delta_ci_high": 0.02}
    text = report.decision_sentence(decision)
    assert text.startswith(f"`{name}`: ") and "nan" not in text.lower()
    others = {report.decision_sentence(decision | {"decision": d}).split(": ", 1)[1]
              for d in report.DECISIONS if d != name}
    assert text.split(": ", 1)[1] not in others
