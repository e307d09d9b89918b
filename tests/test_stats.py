"""Statistics: bootstrap intervals, paired tests, McNemar against hand-computed binomials, Holm."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunewise.data.example import Example
from tunewise.eval.metrics import get_metric
from tunewise.eval.stats import (
    EXACT_BELOW,
    bootstrap_ci,
    bootstrap_replicates,
    compare,
    compare_predictions,
    evaluate,
    holm,
    mcnemar,
    paired_bootstrap,
)


def ex(answer: str) -> Example:
    return Example([{"role": "user", "content": "q"}], answer)


def paired_binary(only_a: int, only_b: int, both: int = 0, neither: int = 0) -> tuple[list[int], list[int]]:
    a = [1] * only_a + [0] * only_b + [1] * both + [0] * neither
    b = [0] * only_a + [1] * only_b + [1] * both + [0] * neither
    return a, b


# -- bootstrap_ci -----------------------------------------------------------------------------


def test_ci_contains_the_true_mean_and_shrinks_with_n():
    rng = np.random.default_rng(11)
    widths = []
    for n in (100, 1000):
        low, high = bootstrap_ci(rng.binomial(1, 0.3, n).astype(float))
        assert low < 0.3 < high
        widths.append(high - low)
    # Width falls like 1/sqrt(n): about 3.2x narrower with 10x the examples.
    assert 2.5 < widths[0] / widths[1] < 4.0


def test_ci_coverage_is_near_nominal():
    rng = np.random.default_rng(5)
    covered = 0
    for trial in range(200):
        low, high = bootstrap_ci(rng.normal(1.0, 2.0, 60), n_resamples=500, seed=trial)
        covered += low <= 1.0 <= high
    assert 0.88 <= covered / 200 <= 0.99


@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.99])
def test_ci_widens_with_confidence(confidence):
    scores = np.random.default_rng(0).normal(size=80)
    low, high = bootstrap_ci(scores, confidence=confidence)
    wider_low, wider_high = bootstrap_ci(scores, confidence=(1 + confidence) / 2)
    assert wider_low < low < scores.mean() < high < wider_high


def test_ci_is_deterministic_for_a_seed():
    scores = np.random.default_rng(1).normal(size=50)
    assert bootstrap_ci(scores, seed=7) == bootstrap_ci(scores, seed=7)
    assert bootstrap_ci(scores, seed=7) != bootstrap_ci(scores, seed=8)


def test_a_statistic_sees_the_same_resamples_as_the_mean():
    scores = np.random.default_rng(2).normal(size=40)
    assert bootstrap_ci(scores, statistic=lambda idx: float(scores[idx].mean())) == pytest.approx(bootstrap_ci(scores))


def test_replicates_batches_do_not_change_the_numbers():
    # 3000 examples force several index batches; the first replicates must not depend on the total.
    scores = np.random.default_rng(4).normal(size=3000)
    np.testing.assert_array_equal(bootstrap_replicates(scores, 400)[:300], bootstrap_replicates(scores, 300))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"scores": []}, "non-empty"), ({"scores": [1.0], "confidence": 1.0}, "confidence"), ({"scores": [1.0], "n_resamples": 0}, "n_resamples")],
)
def test_ci_input_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(**kwargs)


# -- McNemar ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "only_a, only_b, both, expected",
    [
        (1, 6, 5, 2 * (1 + 7) / 2**7),  # 0.125
        (0, 5, 0, 2 * 1 / 2**5),
        (2, 10, 3, 2 * (1 + 12 + 66) / 2**12),  # 0.0386
        (3, 3, 10, 1.0),
        (0, 0, 10, 1.0),
        (10, 25, 0, 0.017960),  # chi-square: (|10 - 25| - 1)^2 / 35 = 5.6, 1 dof
    ],
)
def test_mcnemar_hand_values(only_a, only_b, both, expected):
    a, b = paired_binary(only_a, only_b, both)
    assert mcnemar(a, b) == pytest.approx(expected, rel=1e-4)
    assert mcnemar(b, a) == pytest.approx(expected, rel=1e-4)  # two-sided


def test_mcnemar_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for only_a, only_b in [(4, 11), (12, 12), (30, 45), (3, 21)]:
        a, b = paired_binary(only_a, only_b, both=7, neither=5)
        n = only_a + only_b
        if n < EXACT_BELOW:
            expected = stats.binomtest(only_a, n).pvalue
        else:
            expected = stats.chi2.sf(max(0, abs(only_a - only_b) - 1) ** 2 / n, 1)
        assert mcnemar(a, b) == pytest.approx(expected)


def test_mcnemar_refuses_scores_that_are_not_0_or_1():
    with pytest.raises(ValueError, match=r"0/1 scores; system B has \[0.5\]"):
        mcnemar([1, 0], [0.5, 1])


# -- paired bootstrap -------------------------------------------------------------------------


def test_paired_bootstrap_small_p_for_a_clearly_better_system():
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 1, 150)
    a = np.clip(b + rng.normal(0.2, 0.1, 150), 0, 1)
    assert paired_bootstrap(a, b) == pytest.approx(1 / 2001)  # smallest p the test can give
    assert paired_bootstrap(a, b, n_resamples=200) == pytest.approx(1 / 201)


def test_paired_bootstrap_p_is_one_for_identical_systems():
    scores = np.random.default_rng(1).uniform(size=100)
    assert paired_bootstrap(scores, scores) == 1.0


def test_paired_bootstrap_large_p_for_systems_from_the_same_distribution():
    rng = np.random.default_rng(2)
    assert paired_bootstrap(rng.uniform(size=100), rng.uniform(size=100)) > 0.1


def test_paired_bootstrap_rejects_at_about_alpha_under_the_null():
    rng = np.random.default_rng(9)
    rejections = sum(paired_bootstrap(rng.normal(size=50), rng.normal(size=50), 500, seed=t) < 0.05 for t in range(200))
    assert 0.01 <= rejections / 200 <= 0.10


def test_paired_bootstrap_is_deterministic_and_needs_paired_scores():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(size=60), rng.uniform(size=60) + 0.05
    assert paired_bootstrap(a, b, seed=4) == paired_bootstrap(a, b, seed=4)
    with pytest.raises(ValueError, match="same examples: 3 scores for A, 2 for B"):
        paired_bootstrap([1, 2, 3], [1, 2])


# -- compare ----------------------------------------------------------------------------------


def test_compare_uses_mcnemar_for_binary_scores():
    a, b = paired_binary(only_a=15, only_b=3, both=50, neither=32)
    result = compare(a, b, binary=True)
    assert result.method == "mcnemar-exact"
    assert result.p_value == pytest.approx(mcnemar(a, b))
    assert result.diff == pytest.approx(12 / 100)
    assert 0 < result.diff_ci_low < result.diff < result.diff_ci_high


def test_compare_switches_to_chi_square_at_25_discordant_pairs():
    assert compare(*paired_binary(12, 12), binary=True).method == "mcnemar-exact"
    assert compare(*paired_binary(12, 13), binary=True).method == "mcnemar-chi2"


def test_compare_uses_the_paired_bootstrap_otherwise():
    rng = np.random.default_rng(6)
    a, b = rng.uniform(size=80), rng.uniform(size=80)
    result = compare(a, b, binary=False, seed=3)
    assert result.method == "paired-bootstrap"
    assert result.p_value == paired_bootstrap(a, b, seed=3)
    assert result.diff == pytest.approx(np.mean(a) - np.mean(b))
    assert result.diff_ci_low < 0 < result.diff_ci_high  # same distribution: no clear winner


def test_compare_refuses_a_statistic_with_mcnemar():
    with pytest.raises(ValueError, match="binary=False"):
        compare([1, 0], [0, 1], binary=True, statistic=lambda idx: 0.0)


# -- evaluate ---------------------------------------------------------------------------------


def test_evaluate_a_mean_metric():
    examples = [ex(label) for label in ["a", "b"] * 50]
    predictions = [e.answer if i % 4 else "zz" for i, e in enumerate(examples)]  # 75 right
    result = evaluate(get_metric("accuracy"), predictions, examples)
    assert result.value == 0.75 and result.n == 100 and len(result.per_example) == 100
    assert result.ci_low < 0.75 < result.ci_high and result.ci_high - result.ci_low < 0.25
    assert result == evaluate(get_metric("accuracy"), predictions, examples)
    score = result.as_score()
    assert (score.value, score.ci_low, score.ci_high, score.n) == (result.value, result.ci_low, result.ci_high, 100)


def test_evaluate_recomputes_a_corpus_metric_per_resample():
    rng = np.random.default_rng(8)
    gold = rng.choice(list("abc"), 120, p=[0.7, 0.2, 0.1]).tolist()
    predicted = [g if rng.uniform() < 0.8 else "a" for g in gold]
    examples = [ex(g) for g in gold]
    metric = get_metric("macro_f1")
    result = evaluate(metric, predicted, examples)
    assert result.value == pytest.approx(metric.aggregate(predicted, examples))
    assert result.value != pytest.approx(np.mean(result.per_example))
    assert result.ci_low < result.value < result.ci_high


def test_compare_predictions_on_a_corpus_metric_uses_the_bootstrap():
    gold = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    examples = [ex(g) for g in gold]
    good = list(gold)
    lazy = ["a"] * 100  # majority class: high accuracy, poor macro-F1
    metric = get_metric("macro_f1")
    result = compare_predictions(metric, good, lazy, examples)
    assert result.method == "paired-bootstrap"
    assert result.diff == pytest.approx(metric.aggregate(good, examples) - metric.aggregate(lazy, examples))
    assert result.p_value < 0.01 and result.diff_ci_low > 0
    assert compare_predictions(get_metric("accuracy"), good, lazy, examples).method == "mcnemar-chi2"


# -- holm -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p_values, expected",
    [
        ([0.01, 0.04, 0.03], [0.03, 0.06, 0.06]),  # 3 x 0.01; 2 x 0.03; max(0.06, 1 x 0.04)
        ([0.5, 0.01], [0.5, 0.02]),
        ([0.6, 0.7], [1.0, 1.0]),
        ([0.02], [0.02]),
        ([], []),
    ],
)
def test_holm(p_values, expected):
    assert holm(p_values) == pytest.approx(expected)


def test_holm_never_lowers_a_p_value_and_keeps_the_order():
    p = np.random.default_rng(0).uniform(0, 0.2, 12)
    adjusted = np.array(holm(p))
    assert (adjusted >= p).all()
    order = np.argsort(p)
    assert (np.diff(adjusted[order]) >= 0).all()
    assert math.isclose(adjusted[order[0]], min(1.0, 12 * p[order[0]]))
