"""agnews.stats checked against answers known by other means: hand counts, closed forms, scikit-learn."""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from agnews import stats


def exact_mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar from binomial tail sums, independent of scipy."""
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def correctness_rows(both_right: int, only_a: int, only_b: int, both_wrong: int) -> tuple[list, list, list]:
    """Labels and two prediction lists with the given correctness counts (wrong answers vary in class)."""
    labels, a, b = [], [], []
    for count, a_right, b_right in ((both_right, 1, 1), (only_a, 1, 0), (only_b, 0, 1), (both_wrong, 0, 0)):
        for i in range(count):
            y = i % 4
            labels.append(y)
            a.append(y if a_right else (y + 1) % 4)
            b.append(y if b_right else (y + 2) % 4)  # both wrong but on different classes: still concordant
    return labels, a, b


def mostly_right(n: int, n_right: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n labels and predictions with exactly n_right correct rows at shuffled positions."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    wrong = rng.permutation(n)[: n - n_right]
    predictions = labels.copy()
    predictions[wrong] = (labels[wrong] + 1) % 4
    return labels, predictions


@pytest.mark.parametrize("b, c", [(0, 6), (6, 0), (3, 3), (1, 9), (7, 2), (0, 1), (12, 30)])
def test_mcnemar_matches_binomial_tail(b, c):
    labels, a, pred_b = correctness_rows(both_right=20, only_a=b, only_b=c, both_wrong=5)
    assert stats.mcnemar_p(labels, a, pred_b) == pytest.approx(exact_mcnemar(b, c), rel=1e-12)
    assert stats.paired(labels, a, pred_b, metric="accuracy").discordant == b + c


def test_mcnemar_hand_values():
    assert exact_mcnemar(0, 6) == pytest.approx(2 / 64)  # 2 * (1/2)^6
    labels, a, b = correctness_rows(10, 0, 6, 3)
    assert stats.mcnemar_p(labels, a, b) == pytest.approx(0.03125)
    labels, a, b = correctness_rows(10, 3, 3, 3)
    assert stats.mcnemar_p(labels, a, b) == 1.0  # symmetric disagreement


def test_identical_predictions():
    labels, predictions = mostly_right(200, 150)
    assert stats.mcnemar_p(labels, predictions, predictions) == 1.0
    assert stats.paired_bootstrap_delta(labels, predictions, predictions) == (0.0, 0.0, 0.0)
    result = stats.paired(labels, predictions, predictions)
    assert (result.delta, result.ci_low, result.ci_high, result.discordant) == (0.0, 0.0, 0.0, 0)
    assert not result.significant


def test_mcnemar_one_when_no_discordant_rows_but_different_wrong_answers():
    labels, a, b = correctness_rows(10, 0, 0, 8)  # predictions differ, correctness never does
    assert stats.mcnemar_p(labels, a, b) == 1.0


def test_bootstrap_accuracy_matches_normal_approximation():
    labels, predictions = mostly_right(500, 400)
    low, high = stats.bootstrap_ci(labels, predictions, metric="accuracy")
    expected_half_width = 1.96 * math.sqrt(0.8 * 0.2 / 500)
    assert (high - low) / 2 == pytest.approx(expected_half_width, rel=0.15)
    assert low < 0.8 < high


@pytest.mark.parametrize("metric", stats.METRICS)
def test_bootstrap_contains_estimate_and_is_seeded(metric):
    labels, predictions = mostly_right(500, 400)
    low, high = stats.bootstrap_ci(labels, predictions, metric=metric, seed=3)
    assert low < stats.score(metric, labels, predictions) < high
    assert stats.bootstrap_ci(labels, predictions, metric=metric, seed=3) == (low, high)
    others = [stats.bootstrap_ci(labels, predictions, metric=metric, seed=s) for s in (4, 5, 6)]
    assert any(other != (low, high) for other in others)  # accuracy steps by 1/n, so one seed may tie
    assert all(other == pytest.approx((low, high), abs=0.02) for other in others)


def test_bootstrap_widens_as_n_shrinks():
    widths = []
    for n in (1000, 250, 60):
        low, high = stats.bootstrap_ci(*mostly_right(n, int(0.8 * n)), metric="accuracy")
        widths.append(high - low)
    assert widths[0] < widths[1] < widths[2]


@pytest.mark.parametrize("metric", stats.METRICS)
def test_bootstrap_degenerate_all_correct(metric):
    labels = np.arange(100) % 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stats.bootstrap_ci(labels, labels, metric=metric) == (1.0, 1.0)


def test_vectorised_metrics_equal_sklearn():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, (300, 40))
    predictions = rng.integers(0, 4, (300, 40))
    predictions[:100] = rng.integers(0, 2, (100, 40))  # never predict classes 2 and 3
    predictions[100:150] = 1  # a single class
    labels[150:200] = rng.integers(1, 4, (50, 40))  # class 0 absent from labels
    labels[200:210], predictions[200:210] = 3, 3  # one class everywhere, all right
    f1 = stats._batch_score("f1_macro", labels, predictions)
    accuracy = stats._batch_score("accuracy", labels, predictions)
    for i in range(len(labels)):
        expected = f1_score(labels[i], predictions[i], labels=[0, 1, 2, 3], average="macro", zero_division=0)
        assert f1[i] == pytest.approx(expected, abs=1e-12)
        assert accuracy[i] == pytest.approx(accuracy_score(labels[i], predictions[i]), abs=1e-12)
        assert stats.score("f1_macro", labels[i], predictions[i]) == pytest.approx(expected, abs=1e-12)


def superset_errors(n: int = 500, errors_a: int = 60, errors_b: int = 100) -> tuple[np.ndarray, ...]:
    """b is wrong on errors_b rows; a is wrong on the first errors_a of those only."""
    labels, b = mostly_right(n, n - errors_b)
    a = labels.copy()
    wrong_b = np.flatnonzero(b != labels)
    a[wrong_b[:errors_a]] = b[wrong_b[:errors_a]]
    return labels, a, b


def test_paired_delta_sign_and_interval():
    labels, a, b = superset_errors()
    delta, low, high = stats.paired_bootstrap_delta(labels, a, b, metric="accuracy")
    assert delta == pytest.approx(0.08)
    assert 0 < low < delta < high
    delta, low, high = stats.paired_bootstrap_delta(labels, b, a, metric="accuracy")
    assert delta == pytest.approx(-0.08)
    assert low < delta < high < 0
    result = stats.paired(labels, a, b, metric="accuracy")
    assert result.significant and result.n == 500 and result.discordant == 40
    assert result.mcnemar_p == pytest.approx(exact_mcnemar(40, 0))
    f1_result = stats.paired(labels, a, b)  # default metric: macro F1
    assert f1_result.delta == pytest.approx(stats.score("f1_macro", labels, a) - stats.score("f1_macro", labels, b))
    assert f1_result.ci_low > 0


def test_pairing_narrows_the_interval():
    labels, a, b = superset_errors()
    _, low, high = stats.paired_bootstrap_delta(labels, a, b, metric="accuracy")
    widths = [np.subtract(*stats.bootstrap_ci(labels, p, metric="accuracy", seed=s))[()] for p, s in ((a, 1), (b, 2))]
    unpaired_width = math.hypot(*widths)  # width of a difference of two independent intervals
    assert high - low < 0.75 * unpaired_width


def test_holm_hand_example():
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_properties():
    rng = np.random.default_rng(0)
    p = rng.random(12) ** 3
    adjusted = np.array(stats.holm(p))
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)  # monotone in the raw p order
    assert np.all(adjusted >= p) and np.all(adjusted <= 1.0)
    assert stats.holm([0.6, 0.7]) == [1.0, 1.0]
    assert stats.holm([0.042]) == [0.042]
    assert stats.holm([]) == []


def test_holm_nan_passthrough():
    adjusted = stats.holm([0.01, float("nan"), 0.04])
    assert math.isnan(adjusted[1])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)  # m = 2 non-NaN tests


def test_paired_result_significance_and_frozen():
    assert stats.PairedResult(10, 0.1, 0.01, 0.2, 0.03, 4).significant
    assert stats.PairedResult(10, -0.1, -0.2, -0.01, 0.03, 4).significant
    assert not stats.PairedResult(10, 0.1, -0.01, 0.2, 0.3, 4).significant
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.PairedResult(10, 0.1, 0.01, 0.2, 0.03, 4).delta = 0.0


@pytest.mark.parametrize("call", [
    lambda: stats.score("accuracy", [0, 1], [0]),
    lambda: stats.score("f1_macro", [], []),
    lambda: stats.bootstrap_ci([0, 1, 2], [0, 1]),
    lambda: stats.bootstrap_ci([], []),
    lambda: stats.paired_bootstrap_delta([0, 1], [0, 1], [0]),
    lambda: stats.mcnemar_p([0, 1], [0, 1, 2], [0, 1]),
    lambda: stats.mcnemar_p([], [], []),
    lambda: stats.paired([0, 1], [1], [0, 1]),
    lambda: stats.score("precision", [0], [0]),
    lambda: stats.score("accuracy", [[0, 1]], [[0, 1]]),
    lambda: stats.score("accuracy", [0, 5], [0, 1]),
])
def test_bad_input_raises(call):
    with pytest.raises(ValueError) as error:
        call()
    assert "\n" not in str(error.value)
