"""Choose a candidate with the error rate under control, or say honestly that the data cannot tell.

Every difference here is *oriented*: positive means "a is better than b" whatever the metric's
direction. The margin m > 0 is the smallest difference that matters to the user.

For a pair (a, b) at one-sided level `level`, `lower` and `upper` are one-sided confidence bounds on
the paired difference a - b (together, a two-sided interval at 1 - 2 x level):

- a is **non-inferior** to b when lower > -m: a is at most m worse, whatever the truth;
- a is **worse by more than the margin** when upper < -m: a can never be the choice.

A candidate is **shown non-inferior to the best** when it is non-inferior to *every* other candidate
(an intersection-union test). Whichever candidate is truly best, the chosen one is then within m of
it; comparing against the observed best alone would not do, because the observed best is the one
whose luck was best (the winner's curse). Bonferroni over the K candidates (level = alpha / K) bounds
the chance that *any* candidate truly worse than the best by more than m is shown non-inferior by
alpha; adaptive evaluation spends alpha over its looks (`spending_schedule`), and a union bound over
looks keeps the total at alpha.

The decision: the cheapest candidate shown non-inferior that meets the target. When none is shown,
the verdict is **inconclusive**: it names the conservative choice (the best-scoring candidate that
meets the target), the rival it cannot be told from, and the eval size that would settle it.

>>> a = Candidate("a", "A", scores=[1.0] * 90 + [0.0] * 10, cost=10.0)
>>> b = Candidate("b", "B", scores=[1.0] * 88 + [0.0] * 12, cost=1.0)
>>> v = choose([a, b], margin=0.06)
>>> v.choice, v.confident
('b', True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import stats

from tunewise.decision.direction import meets_target, oriented, ranked, sign

Status = Literal["best", "better", "equivalent", "non-inferior", "worse", "inconclusive"]
Replicates = Callable[[str, str, int], np.ndarray]
"""(a, b, n) -> bootstrap replicates of value(a) - value(b) on the first n examples, for metrics
that are not a mean of per-example scores (macro-F1). Unoriented: the caller's raw difference."""

MAX_EXAMPLES = 1_000_000
"""`examples_needed` answers None above this: the observed difference sits on the margin."""


@dataclass(frozen=True)
class Candidate:
    """One measured option: a rung on a model, with its per-example scores in eval order."""

    name: str
    title: str
    scores: Sequence[float]
    cost: float = 0.0  # what it costs over the horizon: the cheapest acceptable candidate wins
    value: float | None = None  # the metric's value; the mean of `scores` when None

    def metric_value(self, n: int | None = None) -> float:
        if self.value is not None and (n is None or n >= len(self.scores)):
            return self.value
        return float(np.mean(np.asarray(self.scores[:n], dtype=float)))


@dataclass(frozen=True)
class PairComparison:
    """a versus b on their first n common examples, oriented (positive: a is better)."""

    a: str
    b: str
    n: int
    diff: float
    lower: float  # one-sided bound at `level`
    upper: float
    sd: float  # per-example standard deviation of the difference (for the power calculation)
    level: float

    def status(self, margin: float) -> Status:
        """better, equivalent or non-inferior within the margin, worse (measurably lower and not
        shown within the margin), or inconclusive (the interval spans both 0 and -margin)."""
        if self.lower > 0:
            return "better"
        if self.lower > -margin:
            return "equivalent" if self.upper < margin else "non-inferior"
        if self.upper < 0:
            return "worse"
        return "inconclusive"


def compare_pair(
    a: Sequence[float],
    b: Sequence[float],
    level: float,
    higher_is_better: bool = True,
    names: tuple[str, str] = ("a", "b"),
    replicates: np.ndarray | None = None,
) -> PairComparison:
    """One-sided bounds on the paired difference a - b at `level`: Agresti-Min for 0/1 scores
    (`_paired_binary`), Student t on the per-example differences otherwise, the bootstrap
    percentiles when `replicates` of the raw difference are given (corpus-level metrics).

    >>> pc = compare_pair([1, 1, 0, 1], [1, 0, 0, 1], level=0.05)
    >>> round(pc.diff, 2), pc.n
    (0.25, 4)
    """
    n = min(len(a), len(b))
    if n == 0:
        raise ValueError("compare_pair needs at least one common example")
    direction = sign(higher_is_better)
    if replicates is not None:
        reps = direction * np.asarray(replicates, dtype=float)
        diff = float(np.median(reps))
        lower, upper = (float(q) for q in np.quantile(reps, [level, 1 - level]))
        return PairComparison(*names, n, diff, lower, upper, float(np.std(reps) * math.sqrt(n)), level)
    a_arr, b_arr = np.asarray(a[:n], dtype=float), np.asarray(b[:n], dtype=float)
    if np.isin(a_arr, (0.0, 1.0)).all() and np.isin(b_arr, (0.0, 1.0)).all():
        return _paired_binary(a_arr, b_arr, level, direction, names)
    d = direction * (a_arr - b_arr)
    diff = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    if sd == 0.0:
        # Every example differs by the same amount (often 0): no spread to be unsure about. With
        # one example there is no spread to estimate at all: say nothing.
        bound = math.inf if n == 1 else 0.0
        return PairComparison(*names, n, diff, diff - bound, diff + bound, sd, level)
    half = float(stats.t.ppf(1 - level, df=n - 1)) * sd / math.sqrt(n)
    return PairComparison(*names, n, diff, diff - half, diff + half, sd, level)


def _paired_binary(a: np.ndarray, b: np.ndarray, level: float, sign: float, names: tuple[str, str]) -> PairComparison:
    """Agresti and Min's (2005) interval for a difference of matched proportions: half an example
    is added to each cell of the paired 2x2 table before the Wald interval.

    The plain t interval is far too narrow when two systems rarely disagree (and has zero width
    when they never do): at a first adaptive look of 25 examples, two rungs right on nested sets
    0.05 apart agree everywhere 28% of the time, and the t interval called them equivalent.
    The simulation study (bench/sim_decision.py) found that; this interval keeps the bound.

    >>> pc = _paired_binary(np.ones(25), np.ones(25), 0.025, 1.0, ("a", "b"))
    >>> pc.diff, round(pc.lower, 3), round(pc.upper, 3)
    (0.0, -0.073, 0.073)
    """
    n = a.size
    only_a = float(np.count_nonzero((a == 1) & (b == 0)))
    only_b = float(np.count_nonzero((a == 0) & (b == 1)))
    p_a, p_b = (only_a + 0.5) / (n + 2), (only_b + 0.5) / (n + 2)
    adjusted = sign * (p_a - p_b)
    sd = math.sqrt(max(p_a + p_b - (p_a - p_b) ** 2, 0.0))  # per-example, for the power calculation
    half = float(stats.norm.ppf(1 - level)) * sd / math.sqrt(n + 2)
    diff = sign * (only_a - only_b) / n
    # A difference of 0/1 scores lies in [-1, 1]; the normal bound can overshoot at extreme levels.
    return PairComparison(*names, n, diff, max(adjusted - half, -1.0), min(adjusted + half, 1.0), sd, level)


def examples_needed(pc: PairComparison, margin: float, power: float = 0.8) -> int | None:
    """Eval examples at which the pair's question (is a within the margin of b?) would be settled
    with probability `power`, if the observed difference and spread are the truth.

    The bound must clear -m on the side the observed difference is on:
    n = ((z_(1-level) + z_power) x sd / |diff + m|)^2. None when the difference sits on the margin.

    >>> pc = PairComparison("a", "b", 100, diff=-0.01, lower=-0.08, upper=0.06, sd=0.35, level=0.025)
    >>> examples_needed(pc, margin=0.05)
    601
    """
    gap = abs(pc.diff + margin)
    if pc.sd == 0.0 or gap < 1e-12:
        return None
    z = float(stats.norm.ppf(1 - pc.level) + stats.norm.ppf(power))
    n = math.ceil((z * pc.sd / gap) ** 2)
    return n if n <= MAX_EXAMPLES else None


def spending_schedule(alpha: float, looks: Sequence[float]) -> list[float]:
    """The alpha each adaptive look may spend: Lan-DeMets' O'Brien-Fleming-type spending function
    2 x (1 - Phi(z_(1 - alpha/2) / sqrt(t))) at the looks' information fractions t, as increments.

    Each look tests at its increment; by the union bound the chance of any false claim over all
    looks is at most alpha. O'Brien-Fleming-type keeps most of alpha for the last look, so a close
    call at the end is nearly as sure as without looks, while a clear loser (a rung far below the
    others) is still dropped early: its difference dwarfs even the first look's strict bound.
    (Pocock-type spending, alpha x ln(1 + (e - 1) t), stops more often at the first look but left the
    last look 0.0086 of 0.05 and doubled the inconclusive verdicts in the simulation study.)

    >>> [round(x, 5) for x in spending_schedule(0.05, [0.25, 0.5, 0.75, 1.0])]
    [9e-05, 0.00549, 0.01805, 0.02637]
    """
    fractions = [min(1.0, max(0.0, t)) for t in looks]
    if fractions != sorted(fractions) or not fractions or fractions[-1] != 1.0:
        raise ValueError(f"looks must rise to 1.0, got {list(looks)}")
    z = float(stats.norm.ppf(1 - alpha / 2))
    spent = [2 * (1 - float(stats.norm.cdf(z / math.sqrt(t)))) if t > 0 else 0.0 for t in fractions]
    spent[-1] = alpha  # exactly, whatever the floating point
    return [b - a for a, b in zip([0.0] + spent[:-1], spent)]


@dataclass
class Verdict:
    """What `choose` concluded, with everything the explanation needs."""

    best: str  # the best observed score
    choice: str | None  # what to use (the conservative choice when not confident)
    confident: bool  # the choice is shown within the margin of the best, error rate controlled
    meets_target: bool | None  # the choice's score against the target; None without a target
    margin: float
    level: float  # one-sided level of every comparison (alpha / K, or a look's share of it)
    n: int
    status: dict[str, Status] = field(default_factory=dict)  # each candidate against the best
    vs_best: dict[str, PairComparison] = field(default_factory=dict)
    noninferior: list[str] = field(default_factory=list)  # shown within the margin of every rival
    excluded: list[str] = field(default_factory=list)  # shown worse than some rival by more than m
    excluded_by: dict[str, str] = field(default_factory=dict)  # ...and the rival that shows it
    # The question the data leaves open: a candidate cheaper than the choice (or the choice itself
    # when not confident) that cannot be told from its rival, and the eval size that would tell.
    open_candidate: str | None = None
    open_rival: str | None = None
    open_comparison: PairComparison | None = None
    examples_needed: int | None = None
    higher_is_better: bool = True  # the metric's direction: the sentences say "above the target" when False

    @property
    def settled(self) -> bool:
        """Nothing more data could change: a confident choice and no cheaper candidate left open."""
        return self.confident and self.open_candidate is None


def choose(
    candidates: Sequence[Candidate],
    margin: float,
    alpha: float = 0.05,
    target: float | None = None,
    higher_is_better: bool = True,
    level: float | None = None,
    replicates: Replicates | None = None,
    power: float = 0.8,
) -> Verdict:
    """The cheapest candidate shown within `margin` of the best that meets `target` (module doc).

    `level` overrides alpha / K for one adaptive look. Candidates' scores may have different
    lengths (adaptive evaluation stops scoring some early): each pair uses its common prefix.
    """
    if not candidates:
        raise ValueError("choose needs at least one candidate")
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names must be unique, got {names}")
    by_name = {c.name: c for c in candidates}
    level = alpha / len(candidates) if level is None else level
    n_max = max(len(c.scores) for c in candidates)

    def value(c: Candidate) -> float:  # oriented: higher is better whatever the metric's direction
        return oriented(c.metric_value(), higher_is_better)

    def meets(c: Candidate) -> bool | None:
        return meets_target(c.metric_value(), target, higher_is_better)

    pairs: dict[tuple[str, str], PairComparison] = {}

    def pair(a: str, b: str) -> PairComparison:
        if (a, b) not in pairs:
            ca, cb = by_name[a], by_name[b]
            n = min(len(ca.scores), len(cb.scores))
            reps = replicates(a, b, n) if replicates is not None else None
            pairs[(a, b)] = compare_pair(ca.scores, cb.scores, level, higher_is_better, (a, b), reps)
        return pairs[(a, b)]

    by_score = ranked(candidates, higher_is_better, key=lambda c: c.metric_value())
    best = by_score[0]
    rivals = {c.name: [o.name for o in candidates if o.name != c.name] for c in candidates}
    noninferior = [c.name for c in candidates if all(pair(c.name, r).lower > -margin for r in rivals[c.name])]
    excluded_by = {
        c.name: min(rivals[c.name], key=lambda r: pair(c.name, r).upper)
        for c in candidates
        if any(pair(c.name, r).upper < -margin for r in rivals[c.name])
    }

    def cheapest(cs: list[Candidate]) -> Candidate:
        return min(cs, key=lambda c: (c.cost, -value(c)))

    def blocking_rival(c: Candidate) -> str | None:
        """The rival that keeps c from being shown non-inferior (the lowest lower bound)."""
        blocking = [r for r in rivals[c.name] if pair(c.name, r).lower <= -margin]
        return min(blocking, key=lambda r: pair(c.name, r).lower) if blocking else None

    eligible = [by_name[n] for n in noninferior if meets(by_name[n]) is not False]
    if eligible:
        choice, confident = cheapest(eligible), True
    else:
        reaching = [c for c in by_score if meets(c) is not False]
        shown = [by_name[n] for n in noninferior]
        if not reaching and shown:  # nothing reaches the target; the closest option is still shown
            choice, confident = cheapest(shown), True
        else:
            choice, confident = (reaching or by_score)[0], False

    verdict = Verdict(
        best=best.name,
        choice=choice.name,
        confident=confident,
        meets_target=meets(choice),
        margin=margin,
        level=level,
        n=n_max,
        noninferior=noninferior,
        excluded=list(excluded_by),
        excluded_by=excluded_by,
        higher_is_better=higher_is_better,
    )
    for c in candidates:
        if c is best:
            verdict.status[c.name] = "best"
        else:
            verdict.vs_best[c.name] = pair(c.name, best.name)
            verdict.status[c.name] = verdict.vs_best[c.name].status(margin)

    # The open question: the choice itself when not confident; otherwise the cheapest candidate
    # that is cheaper than the choice, could reach the target, and is neither shown nor excluded.
    if not confident:
        open_candidate: Candidate | None = choice
    else:
        cheaper = [
            c
            for c in candidates
            if c.cost < choice.cost
            and c.name not in noninferior
            and c.name not in excluded_by
            and (meets(c) is not False or meets(choice) is False)
        ]
        open_candidate = cheapest(cheaper) if cheaper else None
    if open_candidate is not None:
        rival = blocking_rival(open_candidate)
        if rival is not None:
            verdict.open_candidate, verdict.open_rival = open_candidate.name, rival
            verdict.open_comparison = pair(open_candidate.name, rival)
            verdict.examples_needed = examples_needed(verdict.open_comparison, margin, power)
    return verdict
