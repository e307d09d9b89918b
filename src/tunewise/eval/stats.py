"""How sure are we? Bootstrap confidence intervals and paired significance tests.

Every function resamples examples (the unit the eval set was sampled in) with numpy's
`default_rng(seed)`, so the same inputs and seed give the same numbers.

- `evaluate`: a metric's value on the eval set with a percentile-bootstrap CI.
- `compare`: system A versus system B on the same examples: the difference, its bootstrap CI and
  a p-value, from McNemar's test for 0/1 scores and the paired bootstrap otherwise.
- `holm`: adjust p-values when many comparisons are made at once.

Methods and when each is used: docs/metrics.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tunewise.data.example import Example
    from tunewise.eval.metrics import Metric
    from tunewise.ladder.results import Score

Statistic = Callable[[np.ndarray], float]
"""A statistic recomputed on a resample, given the resampled example indices (shape (n,))."""

EXACT_BELOW = 25
"""McNemar uses the exact binomial test below this many discordant pairs, chi-square from there."""


def fmt_p(p: float | None) -> str:
    """p-values people can read, and no finer than a bootstrap's resolution (1/2,001 is about 0.0005):
    fmt_p(0.0001) == 'p<0.001', fmt_p(0.0412) == 'p=0.041'; '—' when there is none."""
    if p is None or math.isnan(p):
        return "—"
    if p < 0.001:
        return "p<0.001"
    return f"p={p:.2g}"


@dataclass(frozen=True)
class MetricResult:
    value: float
    ci_low: float
    ci_high: float
    n: int
    per_example: list[float]

    def as_score(self) -> "Score":
        from tunewise.ladder.results import Score

        return Score(value=self.value, ci_low=self.ci_low, ci_high=self.ci_high, n=self.n)


@dataclass(frozen=True)
class Comparison:
    """System A minus system B on the same examples."""

    diff: float
    diff_ci_low: float
    diff_ci_high: float
    p_value: float
    method: str  # "mcnemar-exact", "mcnemar-chi2" or "paired-bootstrap"


def _as_scores(scores: Sequence[float]) -> np.ndarray:
    arr = np.asarray(scores, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"need a non-empty 1-d sequence of scores, got shape {arr.shape}")
    return arr


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_scores(a), _as_scores(b)
    if a.size != b.size:
        raise ValueError(f"paired scores need the same examples: {a.size} scores for A, {b.size} for B")
    return a, b


def _index_batches(n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Resampled index rows, a batch at a time to bound memory: (batch, n)."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    batch = max(1, min(n_resamples, (1 << 20) // n))
    for start in range(0, n_resamples, batch):
        yield rng.integers(0, n, size=(min(batch, n_resamples - start), n))


def bootstrap_replicates(
    scores: Sequence[float], n_resamples: int = 2000, seed: int = 0, statistic: Statistic | None = None
) -> np.ndarray:
    """The statistic on `n_resamples` resamples of the examples: the mean of `scores` by default,
    or `statistic(indices)` for a corpus-level metric (`scores` then only gives the number of examples)."""
    arr = _as_scores(scores)
    out = []
    for indices in _index_batches(arr.size, n_resamples, seed):
        if statistic is None:
            out.append(arr[indices].mean(axis=1))
        else:
            out.append(np.fromiter((statistic(row) for row in indices), dtype=float, count=len(indices)))
    return np.concatenate(out)


def _percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_ci(
    scores: Sequence[float],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    statistic: Statistic | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of `scores` (or for `statistic(indices)`).

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    """
    return _percentile_interval(bootstrap_replicates(scores, n_resamples, seed, statistic), confidence)


def _shift_to_null_p(observed: float, replicates: np.ndarray) -> float:
    # Centre the bootstrap distribution of the difference on 0 (the null) and count how often it
    # lands at least as far from 0 as the observed difference did; +1 counts the observed sample.
    extreme = np.count_nonzero(np.abs(replicates - observed) >= abs(observed))
    return float((extreme + 1) / (replicates.size + 1))


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    n_resamples: int = 2000,
    seed: int = 0,
    statistic: Statistic | None = None,
) -> float:
    """Two-sided p-value that systems A and B differ, by the paired bootstrap (shift to the null).

    Examples are resampled together for both systems; d* is the difference of means on a resample
    (or `statistic(indices)`, which must return A's value minus B's). p = (1 + #{|d* - d| >= |d|}) /
    (1 + n_resamples), where d is the observed difference. The smallest p it can give is 1/(1 + n_resamples).
    """
    a, b = _paired(a, b)
    diff = a - b
    observed = float(diff.mean()) if statistic is None else statistic(np.arange(diff.size))
    return _shift_to_null_p(observed, bootstrap_replicates(diff, n_resamples, seed, statistic))


def _binary_counts(a: Sequence[float], b: Sequence[float]) -> tuple[int, int]:
    a, b = _paired(a, b)
    for name, arr in (("A", a), ("B", b)):
        if not np.isin(arr, (0.0, 1.0)).all():
            other = sorted(set(arr.tolist()) - {0.0, 1.0})[:5]
            raise ValueError(f"McNemar needs 0/1 scores; system {name} has {other}")
    return int(np.count_nonzero((a == 1) & (b == 0))), int(np.count_nonzero((a == 0) & (b == 1)))


def _mcnemar(a: Sequence[float], b: Sequence[float]) -> tuple[float, str]:
    only_a, only_b = _binary_counts(a, b)
    discordant = only_a + only_b
    if discordant < EXACT_BELOW:
        # Under the null each discordant pair favours A with probability 1/2: two-sided binomial test.
        tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1))
        return min(1.0, 2 * tail / 2**discordant), "mcnemar-exact"
    # Edwards' continuity correction, floored at 0 so that equal counts give p = 1.
    chi2 = max(0, abs(only_a - only_b) - 1) ** 2 / discordant
    return math.erfc(math.sqrt(chi2 / 2)), "mcnemar-chi2"  # survival function of chi-square, 1 dof


def mcnemar(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of McNemar's test on paired 0/1 scores.

    Only discordant examples count (A right and B wrong, or the reverse). Exact binomial test below
    25 discordant pairs, chi-square with continuity correction from there; 1.0 with none.

    >>> mcnemar([1, 0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1, 1])  # 1 vs 6: 2 * (1 + 7) / 2**7
    0.125
    """
    return _mcnemar(a, b)[0]


def compare(
    a: Sequence[float],
    b: Sequence[float],
    binary: bool,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    statistic: Statistic | None = None,
) -> Comparison:
    """System A versus B on the same examples: McNemar for 0/1 scores, paired bootstrap otherwise.

    The difference's CI is always the paired percentile bootstrap. `statistic(indices)` (A's value
    minus B's) is for corpus-level metrics, which are never binary.
    """
    if binary and statistic is not None:
        raise ValueError("a corpus-level statistic cannot be tested with McNemar; pass binary=False")
    a, b = _paired(a, b)
    diff = a - b
    observed = float(diff.mean()) if statistic is None else statistic(np.arange(diff.size))
    replicates = bootstrap_replicates(diff, n_resamples, seed, statistic)
    low, high = _percentile_interval(replicates, confidence)
    if binary:
        p_value, method = _mcnemar(a, b)
    else:
        p_value, method = _shift_to_null_p(observed, replicates), "paired-bootstrap"
    return Comparison(observed, low, high, p_value, method)


def evaluate(
    metric: "Metric",
    predictions: Sequence[str],
    examples: Sequence["Example"],
    seed: int = 0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
) -> MetricResult:
    """Score predictions: the metric's value with a bootstrap CI, and the per-example scores."""
    per_example = metric.scores(predictions, examples)
    statistic = metric.corpus_statistic(predictions, examples)
    value = float(np.mean(per_example)) if statistic is None else statistic(np.arange(len(examples)))
    low, high = bootstrap_ci(per_example, n_resamples, confidence, seed, statistic)
    return MetricResult(value, low, high, len(per_example), per_example)


def compare_predictions(
    metric: "Metric",
    predictions_a: Sequence[str],
    predictions_b: Sequence[str],
    examples: Sequence["Example"],
    seed: int = 0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
) -> Comparison:
    """`compare` from two systems' predictions, recomputing a corpus-level metric on each resample."""
    statistic_a = metric.corpus_statistic(predictions_a, examples)
    statistic_b = metric.corpus_statistic(predictions_b, examples)
    difference = None if statistic_a is None else (lambda indices: statistic_a(indices) - statistic_b(indices))
    return compare(
        metric.scores(predictions_a, examples),
        metric.scores(predictions_b, examples),
        metric.binary,
        n_resamples,
        confidence,
        seed,
        difference,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (controls the family-wise error rate).

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        running = max(running, min(1.0, (p.size - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
