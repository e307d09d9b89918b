"""How often the verdict is confidently wrong, and what honesty costs: the simulation study of issue 10.

    nice -n 19 .venv/bin/python bench/sim_decision.py                  # the full grid, ~1 min
    nice -n 19 .venv/bin/python bench/sim_decision.py --quick          # a small grid, seconds
    nice -n 19 .venv/bin/python bench/sim_decision.py --markdown sim.md --trials 500 --seed 0

Every grid point draws `trials` eval sets with a known truth: K candidates in cost order, the
cheapest truly `gap` below the best, the others spread evenly between (so the dearest is the best);
paired per-example scores share a latent difficulty per example (`CORRELATIONS`). Binary scores
are 0/1 (the best is right 85% of the time); continuous scores are a clipped normal in [0, 1]
(the best's mean is 0.70), like token-F1. The margin is 0.03 and alpha 0.05, the task defaults.

Two procedures decide on the same draws:
- one look: `choose` on all n examples at alpha / K;
- adaptive: `sequential` with the ladder's looks (`look_sizes`: quarters from 100 examples).

`decide` below is a vectorised copy of `sequential` + `choose` (no target, a mean metric), so the
grid runs in minutes; `--check N` (default 3) replays the first N trials of every point through the
real `choose` and `sequential` and stops with an error if any verdict, choice or number of scored
examples differs (tests/test_decision_sim.py does the same on every trial of four points).

Reported per point and procedure, in % of trials:
- wrong: a confident choice truly worse than the best by more than the margin (issue 10 bounds it at 5%);
- inconclusive: no confident choice;
- cheapest: a confident choice of the cheapest candidate, shown where it is truly within the margin
  (the power: the price of honesty is 100 minus it);
- scored: the adaptive procedure's mean share of the K x n eval scores it needed.
`--old` (on by default, `--no-old` skips it) adds issue 10's "old rule": the cheapest candidate not
significantly worse (p < 0.05, `eval.stats.compare`) than the best-scoring one, on a few points.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from scipy import optimize, stats

from tunewise.decision import Candidate, choose, sequential, spending_schedule
from tunewise.ladder.run import look_sizes

ALPHA = 0.05
MARGIN = 0.03
BEST = {"binary": 0.85, "continuous": 0.70}  # the best candidate's true mean
SPREAD = 0.35  # continuous: the normal's sd before clipping to [0, 1]
# Share of each latent score that is the example's difficulty, shared by every candidate. "nested": all
# of it, so a candidate is right wherever a cheaper one is (a rung that fixes some answers and breaks none).
CORRELATIONS = {"low": 0.3, "high": 0.8, "very high": 0.95, "nested": 1.0}
EPS = 1e-9  # "worse by more than the margin": a gap equal to the margin (0.03) is not an error

FULL_GRID = dict(
    metrics=("binary", "continuous"),
    correlations=("low", "high", "very high", "nested"),
    ks=(2, 3, 6),
    sizes=(50, 100, 200, 300, 500, 1000),
    gaps=(0.0, 0.02, 0.03, 0.05, 0.08, 0.10, 0.15),
)
QUICK_GRID = dict(
    metrics=("binary", "continuous"),
    correlations=("low", "high", "nested"),
    ks=(2, 6),
    sizes=(100, 300),
    gaps=(0.0, 0.03, 0.05, 0.15),
)
OLD_RULE_POINTS = dict(sizes=(100, 200, 300), gaps=(0.03, 0.05, 0.08, 0.12))  # issue 10's table


@dataclass(frozen=True)
class Point:
    metric: str  # "binary" or "continuous"
    correlation: str  # a key of CORRELATIONS
    k: int  # candidates
    n: int  # eval examples
    gap: float  # true gap between the best and the cheapest

    def truth(self) -> np.ndarray:
        """True means in cost order: the cheapest `gap` below the best, the rest evenly between. (K,)"""
        return BEST[self.metric] - self.gap * np.linspace(1.0, 0.0, self.k)

    def seed(self, seed: int) -> np.random.SeedSequence:
        # From the point itself, so a point's numbers do not depend on which grid it is run in.
        return np.random.SeedSequence(
            [seed, ("binary", "continuous").index(self.metric), round(CORRELATIONS[self.correlation] * 100), self.k, self.n, round(self.gap * 1000)]
        )


@dataclass(frozen=True)
class Outcome:
    """What a procedure concluded in each trial."""

    confident: np.ndarray  # (trials,) bool
    choice: np.ndarray  # (trials,) index in cost order (the conservative choice when not confident)
    used: np.ndarray  # (trials, K) eval examples each candidate had scored


@dataclass(frozen=True)
class Rates:
    trials: int
    wrong: float
    inconclusive: float
    cheapest: float
    right: float  # a confident choice truly within the margin of the best
    scored: float


def clipped_normal_mean(loc: float, sd: float = SPREAD) -> float:
    """E[clip(X, 0, 1)] for X ~ N(loc, sd^2)."""
    a, b = (0 - loc) / sd, (1 - loc) / sd
    inside = loc * (stats.norm.cdf(b) - stats.norm.cdf(a)) + sd * (stats.norm.pdf(a) - stats.norm.pdf(b))
    return float(inside + stats.norm.sf(b))


def clipped_normal_loc(mean: float, sd: float = SPREAD) -> float:
    """The location whose clipped normal has this mean (0 < mean < 1)."""
    return float(optimize.brentq(lambda loc: clipped_normal_mean(loc, sd) - mean, -3.0, 4.0, xtol=1e-13))


def draw(point: Point, trials: int, rng: np.random.Generator) -> np.ndarray:
    """Per-example scores with the point's true means: (trials, K, n).

    Each example has a difficulty shared by all candidates, the correlation's share of a standard
    normal latent score; a candidate is right (binary) when its latent score falls below its
    threshold, or scores loc + SPREAD x latent clipped to [0, 1] (continuous)."""
    rho = CORRELATIONS[point.correlation]
    latent = math.sqrt(rho) * rng.standard_normal((trials, 1, point.n))
    latent = latent + math.sqrt(1 - rho) * rng.standard_normal((trials, point.k, point.n))
    truth = point.truth()
    if point.metric == "binary":
        return (latent < stats.norm.ppf(truth)[None, :, None]).astype(float)
    locs = np.array([clipped_normal_loc(m) for m in truth])
    return np.clip(locs[None, :, None] + SPREAD * latent, 0.0, 1.0)


def paired_bound(a: np.ndarray, b: np.ndarray, level: np.ndarray, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """compare_pair's bound, per trial: the centre and the half-width at one-sided `level`.
    a, b: (trials, n); level: (trials,). 0/1 scores: Agresti-Min (half an example added to each
    cell of the paired table, normal quantile); otherwise Student t on the differences."""
    n = a.shape[1]
    if binary:
        p_a = (np.count_nonzero((a == 1) & (b == 0), axis=1) + 0.5) / (n + 2)
        p_b = (np.count_nonzero((a == 0) & (b == 1), axis=1) + 0.5) / (n + 2)
        sd = np.sqrt(np.maximum(p_a + p_b - (p_a - p_b) ** 2, 0.0))
        return p_a - p_b, stats.norm.ppf(1 - level) * sd / math.sqrt(n + 2)
    d = a - b
    diff, sd = d.mean(axis=1), d.std(axis=1, ddof=1)
    return diff, stats.t.ppf(1 - level, df=n - 1) * sd / math.sqrt(n)  # sd == 0: zero width, as compare_pair


def decide(scores: np.ndarray, sizes: Sequence[int], alpha: float = ALPHA, margin: float = MARGIN) -> Outcome:
    """`sequential(..., alpha, margin)` over these looks, with `choose` at each, for every trial at once.

    scores: (trials, K, n), candidates in cost order (index 0 the cheapest). One size is the
    one-look decision at alpha / K. Same arithmetic as compare_pair, so the same bounds to the bit.
    """
    trials, k, _ = scores.shape
    binary = bool(np.isin(scores, (0.0, 1.0)).all())
    spend = spending_schedule(alpha, [s / sizes[-1] for s in sizes])
    live = np.ones((trials, k), dtype=bool)
    running = np.ones(trials, dtype=bool)
    confident = np.zeros(trials, dtype=bool)
    choice = np.full(trials, -1)
    used = np.zeros((trials, k), dtype=int)
    rival = ~np.eye(k, dtype=bool)
    for look, size in enumerate(sizes):
        rows = np.flatnonzero(running)
        x = scores[rows, :, :size]  # (m, K, size)
        lv = live[rows]
        used[rows] = np.where(lv, size, used[rows])
        level = spend[look] / lv.sum(axis=1)  # each comparison's one-sided level, (m,)
        lower = np.zeros((rows.size, k, k))  # lower[t, a, b]: one-sided bound on a - b
        upper = np.zeros((rows.size, k, k))
        for a in range(k):
            for b in range(a + 1, k):
                diff, half = paired_bound(x[:, a], x[:, b], level, binary)
                lower[:, a, b], upper[:, a, b] = diff - half, diff + half
                lower[:, b, a], upper[:, b, a] = -diff - half, -diff + half
        others = lv[:, None, :] & rival  # (m, K, K): b is a live rival of a
        shown = lv & np.all((lower > -margin) | ~others, axis=2)  # non-inferior to every live rival
        excluded = lv & np.any((upper < -margin) & others, axis=2)
        sure = shown.any(axis=1)
        best = np.argmax(np.where(lv, x.mean(axis=2), -np.inf), axis=1)
        pick = np.where(sure, np.argmax(shown, axis=1), best)  # the cheapest shown, else the best
        open_cheaper = lv & ~excluded & (np.arange(k)[None, :] < pick[:, None])
        stop = (sure & ~open_cheaper.any(axis=1)) | (look == len(sizes) - 1)
        confident[rows[stop]], choice[rows[stop]] = sure[stop], pick[stop]
        running[rows[stop]] = False
        live[rows[~stop]] &= ~excluded[~stop]
        if not running.any():
            break
    return Outcome(confident, choice, used)


def decide_with_core(scores: np.ndarray, sizes: Sequence[int]) -> Outcome:
    """The same trials through the real `choose` / `sequential`, one at a time (slow; for checks)."""
    trials, k, n = scores.shape
    names = [f"c{i}" for i in range(k)]
    confident, choice, used = np.zeros(trials, bool), np.zeros(trials, int), np.zeros((trials, k), int)
    for t in range(trials):
        def measure(name: str, size: int) -> Candidate:
            i = names.index(name)
            return Candidate(name, name, scores[t, i, :size], cost=float(i))

        if len(sizes) == 1:
            v = choose([measure(name, n) for name in names], MARGIN, ALPHA)
            used[t] = n
        else:
            out = sequential(names, sizes, measure, alpha=ALPHA, margin=MARGIN)
            v = out.verdict
            used[t] = [out.used.get(name, 0) for name in names]
        confident[t], choice[t] = v.confident, names.index(v.choice)
    return Outcome(confident, choice, used)


def mismatches(a: Outcome, b: Outcome) -> int:
    """Trials where the two outcomes differ in verdict, choice or examples scored."""
    return int(np.count_nonzero((a.confident != b.confident) | (a.choice != b.choice) | (a.used != b.used).any(axis=1)))


def rates(point: Point, outcome: Outcome) -> Rates:
    truth = point.truth()
    bad = truth < truth.max() - MARGIN - EPS  # (K,) truly worse than the best by more than the margin
    sure = outcome.confident
    return Rates(
        trials=sure.size,
        wrong=float(np.mean(sure & bad[outcome.choice])),
        inconclusive=float(np.mean(~sure)),
        cheapest=float(np.mean(sure & (outcome.choice == 0))),
        right=float(np.mean(sure & ~bad[outcome.choice])),
        scored=float(np.mean(outcome.used.sum(axis=1) / (point.k * point.n))),
    )


def simulate(point: Point, trials: int, seed: int = 0, check: int = 0) -> tuple[Rates, Rates, int]:
    """(one look, adaptive, mismatches with the real core on the first `check` trials)."""
    scores = draw(point, trials, np.random.default_rng(point.seed(seed)))
    one = decide(scores, [point.n])
    sizes = look_sizes(point.n, True)
    adaptive = decide(scores, sizes)
    bad = 0
    if check:
        few = scores[:check]
        for outcome, looks in ((one, [point.n]), (adaptive, sizes)):
            mine = Outcome(outcome.confident[:check], outcome.choice[:check], outcome.used[:check])
            bad += mismatches(mine, decide_with_core(few, looks))
    return rates(point, one), rates(point, adaptive), bad


def old_rule(point: Point, trials: int, seed: int = 0, resamples: int = 2000) -> tuple[float, Rates, Rates]:
    """Issue 10's old rule on the point's draws: the cheapest candidate that is the best-scoring one
    or not significantly worse than it (p < 0.05 from `eval.stats.compare`: McNemar for 0/1 scores,
    the paired bootstrap otherwise). Returns how often it chose the cheapest, and the new rule's rates."""
    from tunewise.eval.stats import compare

    scores = draw(point, trials, np.random.default_rng(point.seed(seed)))
    binary = point.metric == "binary"
    cheapest = 0
    for t in range(trials):
        means = [float(np.mean(scores[t, i])) for i in range(point.k)]
        best = int(np.argmax(means))
        for i in range(point.k):
            if i == best:
                break
            # McNemar's p does not use the bootstrap: one resample keeps the binary case fast.
            p = compare(scores[t, i], scores[t, best], binary, n_resamples=1 if binary else resamples, seed=0).p_value
            if not (p < ALPHA and means[i] < means[best]):
                break
        cheapest += i == 0
    one, adaptive = decide(scores, [point.n]), decide(scores, look_sizes(point.n, True))
    return cheapest / trials, rates(point, one), rates(point, adaptive)


def grid(spec: dict) -> Iterator[Point]:
    for metric in spec["metrics"]:
        for corr in spec["correlations"]:
            for k in spec["ks"]:
                for n in spec["sizes"]:
                    for gap in spec["gaps"]:
                        yield Point(metric, corr, k, n, gap)


def trials_for(point: Point, trials: int) -> int:
    """Fewer trials where nothing can be wrong (every candidate within the margin) and the question
    is only the power; the full count where the 5% bound is tested."""
    return trials if point.gap > MARGIN + EPS else max(100, trials // 2)


def score_correlation(metric: str, correlation: str, n: int = 200_000) -> float:
    """Pearson correlation of two equal candidates' per-example scores, for the docs."""
    scores = draw(Point(metric, correlation, 2, n, 0.0), 1, np.random.default_rng(0))[0]
    return float(np.corrcoef(scores[0], scores[1])[0, 1])


# -- tables -----------------------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def flag(rate: float, trials: int) -> str:
    """The wrong rate, in bold where it is above 5% beyond chance (binomial, one-sided 1%)."""
    text = pct(rate)
    return f"**{text}**" if rate * trials > stats.binom.ppf(0.99, trials, ALPHA) else text


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def tables(results: dict[Point, tuple[Rates, Rates, int]], spec: dict) -> list[tuple[str, str]]:
    """(title, Markdown table) pairs: the digest first, then the full grid."""
    gaps, bad_gaps = spec["gaps"], [g for g in spec["gaps"] if g > MARGIN + EPS]
    out = []

    rows = []
    for corr in spec["correlations"]:
        for n in spec["sizes"]:
            row = [corr, str(n)]
            for gap in bad_gaps:
                at = [r for p, r in results.items() if p.correlation == corr and p.n == n and p.gap == gap]
                worst = [max(at, key=lambda r: r[i].wrong)[i] for i in (0, 1)]
                row.append(" / ".join(flag(r.wrong, r.trials) for r in worst))
            rows.append(row)
    out.append(
        (
            "Confidently wrong: the worst over metric and K at each correlation, eval size and gap (% of trials, "
            "one look / adaptive; at gaps up to the margin no candidate is worse by more than it)",
            markdown(["corr.", "eval examples"] + [f"gap {g:g}" for g in bad_gaps], rows),
        )
    )

    rows = []
    for p, (one, ada, _) in results.items():
        for name, r in (("one look", one), ("adaptive", ada)):
            if r.wrong * r.trials > stats.binom.ppf(0.99, r.trials, ALPHA):
                rows.append([p.metric, p.correlation, str(p.k), str(p.n), f"{p.gap:g}", name, pct(r.wrong), pct(r.inconclusive), str(r.trials)])
    worst = {m: max(max(r[0].wrong, r[1].wrong) for p, r in results.items() if p.metric == m) for m in spec["metrics"]}
    out.append(
        (
            "Where the bound fails: confidently wrong above 5% beyond chance (binomial, 1%); worst anywhere: "
            + ", ".join(f"{m} {pct(w)}%" for m, w in worst.items()),
            markdown(["metric", "corr.", "K", "n", "gap", "procedure", "wrong", "inconcl.", "trials"], rows) if rows else "none",
        )
    )

    for metric in spec["metrics"]:
        for corr in spec["correlations"]:
            rows = []
            for k in spec["ks"]:
                for n in spec["sizes"]:
                    row = [str(k), str(n)]
                    for gap in gaps:
                        one, ada, _ = results[Point(metric, corr, k, n, gap)]
                        cell = f"{pct(one.inconclusive)} / {pct(ada.inconclusive)}"
                        if gap <= MARGIN + EPS:
                            cell += f" ({pct(one.cheapest)} / {pct(ada.cheapest)})"
                        row.append(cell)
                    rows.append(row)
            out.append(
                (
                    f"Inconclusive, {metric} scores, {corr} correlation (% of trials, one look / adaptive; "
                    "in brackets where the cheapest is truly within the margin: how often it is confidently chosen)",
                    markdown(["K", "eval examples"] + [f"gap {g:g}" for g in gaps], rows),
                )
            )

    rows = []
    for p, (one, ada, _) in results.items():
        rows.append(
            [
                p.metric,
                p.correlation,
                str(p.k),
                str(p.n),
                f"{p.gap:g}",
                str(one.trials),
                flag(one.wrong, one.trials),
                pct(one.inconclusive),
                pct(one.cheapest) if p.gap <= MARGIN + EPS else "—",
                flag(ada.wrong, ada.trials),
                pct(ada.inconclusive),
                pct(ada.cheapest) if p.gap <= MARGIN + EPS else "—",
                pct(ada.scored),
            ]
        )
    header = ["metric", "corr.", "K", "n", "gap", "trials"]
    header += ["one look: wrong", "inconcl.", "cheapest"]
    header += ["adaptive: wrong", "inconcl.", "cheapest", "scored"]
    out.append(("Every grid point (% of trials)", markdown(header, rows)))
    return out


def old_rule_table(trials: int, seed: int, quick: bool) -> tuple[str, str]:
    rows = []
    sizes = OLD_RULE_POINTS["sizes"][::2] if quick else OLD_RULE_POINTS["sizes"]
    for metric, corr, tr in (("binary", "high", trials), ("binary", "low", trials), ("continuous", "high", max(100, trials // 4))):
        if quick and metric == "continuous":
            continue
        for n in sizes:
            row = [metric, corr, str(n)]
            for gap in OLD_RULE_POINTS["gaps"]:
                old, one, ada = old_rule(Point(metric, corr, 2, n, gap), tr, seed)
                row.append(f"{pct(old)} · {pct(one.cheapest)} / {pct(ada.cheapest)} ({pct(one.inconclusive)} / {pct(ada.inconclusive)})")
            rows.append(row)
    return (
        "Issue 10's old rule against the new one, K = 2, the cheaper candidate truly worse by the gap: how often "
        "the cheaper one is chosen (% of trials: old rule · new rule confidently, one look / adaptive (new rule "
        f"inconclusive)); continuous points use {max(100, trials // 4)} trials",
        markdown(["metric", "corr.", "eval examples"] + [f"gap {g:g}" for g in OLD_RULE_POINTS["gaps"]], rows),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small grid (seconds)")
    parser.add_argument("--trials", type=int, default=None, help="trials where the bound is tested (default 500; 200 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", type=int, default=3, help="trials a point replayed through the real choose/sequential")
    parser.add_argument("--no-old", dest="old", action="store_false", help="skip the old-rule table")
    parser.add_argument("--markdown", help="also write the tables as Markdown to this file")
    args = parser.parse_args(argv)
    spec = QUICK_GRID if args.quick else FULL_GRID
    trials = args.trials or (200 if args.quick else 500)

    started, cpu = time.perf_counter(), time.process_time()
    results, bad = {}, 0
    for point in grid(spec):
        results[point] = simulate(point, trials_for(point, trials), args.seed, args.check)
        bad += results[point][2]
    sections = tables(results, spec)
    if args.old:
        sections.insert(1, old_rule_table(trials, args.seed, args.quick))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu

    command = "python bench/sim_decision.py " + " ".join(sys.argv[1:] if argv is None else argv)
    correlations = ", ".join(
        f"{corr} (latent {CORRELATIONS[corr]}: score correlation {score_correlation('binary', corr):.2f} binary, "
        f"{score_correlation('continuous', corr):.2f} continuous)"
        for corr in spec["correlations"]
    )
    preamble = [
        f"`{command.strip()}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: {len(results)} grid points, "
        f"{trials} trials where a candidate is truly worse than the best by more than the margin "
        f"({max(100, trials // 2)} elsewhere), seed {args.seed}; {elapsed:.0f} s wall, {cpu:.0f} s CPU.",
        f"Margin {MARGIN}, alpha {ALPHA}; correlations: {correlations}. Bold: above 5% beyond chance (binomial, 1%).",
        f"Replayed through the real choose/sequential: {args.check} trials a point, {bad} mismatches.",
    ]
    text = "\n\n".join(preamble + [f"**{title}**\n\n{table}" for title, table in sections]) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text)
    if bad:
        print(f"error: {bad} trials where the vectorised decision differs from the real core", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
