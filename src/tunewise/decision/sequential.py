"""Adaptive evaluation: score in looks, stop scoring what cannot change the verdict.

The driver is pure: `measure(name, size)` hands it a candidate scored on the first `size` eval
examples (the ladder generates them then; the simulation study slices arrays it drew). At look k
every comparison is made at the look's share of alpha (`spending_schedule`) divided by the number
of candidates still scored. A candidate shown worse than a rival by more than the margin is no
longer scored; once the verdict is settled (a confident choice and no cheaper candidate left open),
scoring stops. By the union bound over looks and candidates, the chance of any false claim in the
whole procedure, and so of confidently choosing a candidate worse than the best by more than the
margin, stays at most alpha.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> good, bad = rng.random(400) < 0.9, rng.random(400) < 0.3
>>> def measure(name, size):
...     scores = {"cheap_bad": bad, "dear_good": good}[name][:size].astype(float)
...     return Candidate(name, name, scores, cost={"cheap_bad": 1.0, "dear_good": 9.0}[name])
>>> out = sequential(["cheap_bad", "dear_good"], [100, 200, 300, 400], measure, alpha=0.05, margin=0.03)
>>> out.verdict.choice, out.verdict.confident, [look.examples for look in out.looks]
('dear_good', True, [100])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tunewise.decision.verdict import Candidate, PairComparison, Replicates, Verdict, choose, spending_schedule


@dataclass(frozen=True)
class LookRecord:
    examples: int  # eval examples each remaining candidate had scored
    level: float  # one-sided level of each comparison at this look
    dropped: list[str]  # shown worse than a rival by more than the margin: no longer scored
    settled: bool  # the verdict could no longer change: scoring stopped


@dataclass(frozen=True)
class Stopped:
    look: int  # from 0
    examples: int
    rival: str  # the candidate it was shown worse than
    vs_best: PairComparison | None


@dataclass
class Sequential:
    verdict: Verdict | None
    looks: list[LookRecord] = field(default_factory=list)
    used: dict[str, int] = field(default_factory=dict)  # eval examples each candidate's verdict rests on
    stopped: dict[str, Stopped] = field(default_factory=dict)


def sequential(
    names: Sequence[str],
    sizes: Sequence[int],
    measure: Callable[[str, int], Candidate | None],
    *,
    alpha: float,
    margin: float | Callable[[list[Candidate]], float],
    target: float | None = None,
    higher_is_better: bool = True,
    replicates: Replicates | None = None,
    on_look: Callable[[LookRecord], None] | None = None,
) -> Sequential:
    """Run the looks (module doc). `sizes` grow to the whole eval set; one size is plain evaluation
    at the full alpha. `measure` returns None for a candidate that cannot be scored (skipped)."""
    if not sizes or list(sizes) != sorted(sizes):
        raise ValueError(f"look sizes must grow, got {list(sizes)}")
    n = sizes[-1]
    spend = spending_schedule(alpha, [s / n for s in sizes])
    active = list(names)
    out = Sequential(verdict=None)
    for k, size in enumerate(sizes):
        live = []
        for name in list(active):
            candidate = measure(name, size)
            if candidate is None:
                active.remove(name)
                continue
            live.append(candidate)
            out.used[name] = size
        if not live:
            break
        level = spend[k] / len(live)
        m = margin(live) if callable(margin) else margin
        verdict = choose(live, m, alpha, target, higher_is_better, level=level, replicates=replicates)
        last = k == len(sizes) - 1
        dropped = [] if last or verdict.settled else [c for c in verdict.excluded]
        record = LookRecord(size, level, dropped, verdict.settled)
        out.looks.append(record)
        out.verdict = verdict
        for name in dropped:
            out.stopped[name] = Stopped(k, size, verdict.excluded_by[name], verdict.vs_best.get(name))
            active.remove(name)
        if on_look is not None:
            on_look(record)
        if verdict.settled or last:
            break
    if out.verdict is not None:  # dropped candidates stay "worse", as shown at their look
        for name, info in out.stopped.items():
            if info.vs_best is not None:
                out.verdict.vs_best[name] = info.vs_best
                out.verdict.status[name] = "worse"
    return out
