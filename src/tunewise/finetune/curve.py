"""Learning curve: would more of the same data help?

Train on nested, seeded shares of the train split (25%, 50%, 100% by default; the 100% point is the
ladder's own adapter), score each on the eval split with a CI, fit a saturating curve and say how
many examples the target needs, or that the curve has flattened below it.

Curves, by number of points (n = training examples, y = score):
    >= 4 points:  y = a - b * n^(-c)       (power law with its own exponent, 3 parameters)
    2-3 points:   y = a - b * n^(-1/2)     (exponent fixed at 0.5: 3 points cannot pin down 3 parameters)
    fallback:     y = a + b * ln(n)        (when the power law does not fit; never flattens)
Points are weighted by their CI width. Solving y = target for n gives `examples_needed`.
For a lower-is-better metric (an error rate) the curve is fitted to the negated scores, so it falls
towards its floor, and the target is reached from above; the stored parameters are on the metric's
own scale, so the same formulas draw it.

The fit is pure numpy/scipy (`fit_curve`, `curve_verdict`); `learning_curve` trains and scores.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunewise.decision.direction import best_of, meets_target, oriented, short_of_target
from tunewise.ladder.results import CurvePoint, LearningCurve, Score

FAR_EXTRAPOLATION = 20
"""A target needing more than this many times the largest measured set is flagged as a long shot."""


@dataclass(frozen=True)
class CurveFit:
    kind: str  # "power", "power_half" or "loglinear"
    params: dict[str, float]  # on the metric's own scale: `predict` and the formula use them as they are
    formula: str
    higher_is_better: bool = True

    def predict(self, n: float | np.ndarray) -> float | np.ndarray:
        p = self.params
        if self.kind == "loglinear":
            return p["a"] + p["b"] * np.log(n)
        return p["a"] - p["b"] * np.power(n, -p["c"])

    @property
    def asymptote(self) -> float | None:
        return None if self.kind == "loglinear" else self.params["a"]

    @property
    def improves(self) -> bool:
        """Whether more data moves the score the metric's good way (up, or down for lower-is-better)."""
        return oriented(self.params["b"], self.higher_is_better) > 0

    def examples_for(self, target: float) -> float | None:
        """n where the fitted curve reaches `target` (from below, or from above for a lower-is-better
        metric); None if it never does."""
        # Oriented, a and b describe a curve that rises towards the target whatever the direction.
        hib = self.higher_is_better
        a, b, t = oriented(self.params["a"], hib), oriented(self.params["b"], hib), oriented(target, hib)
        if self.kind == "loglinear":
            return float(math.exp((t - a) / b)) if b > 0 else None
        if a <= t or b <= 0:
            return None
        return float((b / (a - t)) ** (1 / self.params["c"]))


def _sigma(ci_widths: Sequence[float] | None) -> np.ndarray | None:
    if ci_widths is None:
        return None
    # A 95% interval spans about 2 x 1.96 standard errors; floor it so one exact point cannot dominate.
    return np.maximum(np.asarray(ci_widths, dtype=float) / 3.92, 1e-3)


def _power_half(n: np.ndarray, y: np.ndarray, sigma: np.ndarray | None) -> CurveFit | None:
    # Linear in x = n^-1/2: weighted least squares for y = a - b x.
    x = np.power(n, -0.5)
    w = np.ones_like(y) if sigma is None else 1 / sigma**2
    design = np.stack([np.ones_like(x), -x], axis=1) * np.sqrt(w)[:, None]
    (a, b), *_ = np.linalg.lstsq(design, y * np.sqrt(w), rcond=None)
    if b <= 0:
        return None
    return CurveFit("power_half", {"a": float(a), "b": float(b), "c": 0.5}, "score = a - b * n^(-0.5)")


def _power(n: np.ndarray, y: np.ndarray, sigma: np.ndarray | None, upper_a: float) -> CurveFit | None:
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    def f(n, a, b, c):  # noqa: ANN001
        return a - b * np.power(n, -c)

    start = [min(max(y) + 0.05, upper_a - 1e-6), max(max(y) - min(y), 1e-3) * float(np.sqrt(n.min())), 0.5]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OptimizeWarning)
            (a, b, c), _ = curve_fit(
                f, n, y, p0=start, sigma=sigma, bounds=([-np.inf, 0.0, 0.01], [upper_a, np.inf, 3.0]), maxfev=20_000
            )
    except (RuntimeError, ValueError, OptimizeWarning):
        return None
    if b <= 0:
        return None
    return CurveFit("power", {"a": float(a), "b": float(b), "c": float(c)}, "score = a - b * n^(-c)")


def _loglinear(n: np.ndarray, y: np.ndarray) -> CurveFit:
    b, a = np.polyfit(np.log(n), y, 1)
    return CurveFit("loglinear", {"a": float(a), "b": float(b)}, "score = a + b * ln(n)")


def fit_curve(
    examples: Sequence[float],
    scores: Sequence[float],
    ci_widths: Sequence[float] | None = None,
    higher_is_better: bool = True,
) -> CurveFit | None:
    """The curve through (examples, scores); None with fewer than 2 distinct sizes.

    A lower-is-better metric is fitted on the negated scores (a curve rising towards the target),
    and the parameters are turned back onto the metric's scale.

    >>> n = [100, 200, 400]
    >>> fit = fit_curve(n, [0.9 - 2 / x**0.5 for x in n])
    >>> fit.kind, round(fit.params["a"], 3), round(fit.examples_for(0.8))
    ('power_half', 0.9, 400)
    """
    n = np.asarray(examples, dtype=float)
    raw = np.asarray(scores, dtype=float)
    if len(set(n.tolist())) < 2:
        return None
    sigma = _sigma(ci_widths)
    y = oriented(raw, higher_is_better)  # rises with a better score
    # A 0-1 metric cannot pass 1, nor an error rate fall below 0 (oriented: -error <= 0): bound the asymptote there.
    upper_a = (1.0 if higher_is_better else 0.0) if np.all((raw >= 0) & (raw <= 1)) else np.inf
    fit = (_power(n, y, sigma, upper_a) if len(n) >= 4 else _power_half(n, y, sigma)) or _loglinear(n, y)
    if higher_is_better:
        return fit
    params = {**fit.params, "a": -fit.params["a"], "b": -fit.params["b"]}  # back onto the metric's scale
    return CurveFit(fit.kind, params, fit.formula, higher_is_better=False)


def curve_verdict(
    examples: Sequence[int],
    scores: Sequence[float],
    fit: CurveFit | None,
    target: float | None,
    higher_is_better: bool = True,
) -> tuple[float | None, str]:
    """(examples_needed, verdict in words); the target is met from above for a lower-is-better metric."""
    pairs = sorted(zip(examples, scores))
    largest = pairs[-1][0]
    caveat = ""
    if fit is not None and fit.kind == "power_half":
        caveat = (
            f" With {len(pairs)} points the exponent is fixed at 0.5 rather than fitted: "
            "read the extrapolation as a rough guide."
        )
    if target is not None:
        met = next((n for n, s in pairs if meets_target(s, target, higher_is_better)), None)
        if met is not None:
            return float(met), f"target {target:g} already met at {met} training examples."
    if fit is None:
        return None, f"one training size only ({largest} examples, score {pairs[-1][1]:.2f}): no curve to fit."
    if fit.kind == "loglinear" and not fit.improves:
        return None, (
            f"the score did not {'rise' if higher_is_better else 'fall'} with more data ({pairs[0][0]} -> {largest} examples: "
            f"{pairs[0][1]:.2f} -> {pairs[-1][1]:.2f}): more of the same data will not help; "
            "look at data quality or the approach."
        )
    if target is None:
        level = f"; the fitted curve levels off near {fit.asymptote:.2f}" if fit.asymptote is not None else ""
        (n1, s1), (n2, s2) = pairs[-2], pairs[-1]
        return None, f"no target set: going from {n1} to {n2} examples changed the score by {s2 - s1:+.2f}{level}.{caveat}"
    needed = fit.examples_for(target)
    if needed is None:
        return None, (
            f"the curve has flattened at ~{fit.asymptote:.2f}, {short_of_target(higher_is_better)} the {target:g} target: more of the same data "
            f"will not get there.{caveat}"
        )
    far = (
        f" That is {needed / largest:.0f}x the largest set measured: a long extrapolation."
        if needed > FAR_EXTRAPOLATION * largest
        else ""
    )
    return needed, (
        f"About {needed:,.0f} training examples should reach the {target:g} target "
        f"(measured up to {largest}, best {best_of((s for _, s in pairs), higher_is_better):.2f}).{far}{caveat}"
    )


def _score_cache_key(ctx: Any, metric: Any, with_rag: bool) -> str:
    h = hashlib.sha256()
    for ex in ctx.eval:
        h.update(json.dumps(ex.to_chat(), sort_keys=True, ensure_ascii=False).encode())
    h.update(f"|{metric.name}|{ctx.task.ladder.max_new_tokens}|{with_rag}|{ctx.seed}".encode())
    return h.hexdigest()[:16]


def score_adapter(ctx: Any, outcome: Any, metric: Any, with_rag: bool, progress: Callable[[int], None] | None = None) -> Score:
    """The adapter's score on the eval split, cached beside the adapter (a rerun does not regenerate)."""
    from tunewise.finetune.rung import prepared_from_adapter
    from tunewise.ladder.scoring import generate_and_score

    cache = outcome.folder / f"eval_score-{_score_cache_key(ctx, metric, with_rag)}.json"
    if cache.is_file():
        return Score.model_validate_json(cache.read_text(encoding="utf-8"))
    from tunewise.ladder.results import atomic_write_text

    prepared = prepared_from_adapter(ctx, outcome.adapter_path, outcome.summary, with_rag)
    scored = generate_and_score(prepared, ctx.eval, metric, ctx.task.ladder.max_new_tokens, progress, seed=ctx.seed)
    atomic_write_text(cache, scored.score.model_dump_json())
    return scored.score


def learning_curve(
    ctx: Any, metric: Any, fractions: Sequence[float] | None = None, with_rag: bool | None = None
) -> LearningCurve:
    """Train on each share of the train split, score on eval, fit, and give the verdict.

    `with_rag` defaults to the first training rung the task lists: with retrieval if that rung retrieves.
    With retrieval the shares are of the lora_rag rung's RAFT prompts (finetune/raft.py), trained and
    asked as that rung is.
    """
    from tunewise.errors import TunewiseError
    from tunewise.finetune.train import train_model
    from tunewise.ui import err_console, progress_bar

    task = ctx.task
    shares = sorted(set(fractions if fractions is not None else task.train.learning_curve))
    bad = [f for f in shares if not 0 < f <= 1]
    if bad or not shares:
        raise TunewiseError(f"train.learning_curve must list shares in (0, 1], e.g. [0.25, 0.5, 1.0]; got {list(shares)}")
    if with_rag is None:
        from tunewise.rungs import get_rung

        first = next((get_rung(n) for n in task.ladder.rungs if get_rung(n).trains), None)
        with_rag = first is not None and first.retrieved
    # The curve of the rung it stands for: with retrieval, the lora_rag rung's RAFT prompts in its
    # own folder (so the 100% point is that rung's adapter); without, the bare train split.
    train_task, examples, folder = task, ctx.train, ctx.train_dir
    if with_rag:
        from tunewise.finetune.raft import raft_training

        raft = raft_training(ctx)
        train_task, examples, folder = raft.task, raft.examples, raft.folder
    points = []
    for share in shares:
        with progress_bar(f"Learning curve {share:.0%}: training steps", None) as advance:
            outcome = train_model(
                train_task,
                examples,
                folder,
                subset=None if share >= 1 else share,
                progress=lambda step, steps: advance(1),
                log=lambda message: err_console.print(message),
            )
        with progress_bar(f"Learning curve {share:.0%}: scoring", len(ctx.eval)) as advance:
            score = score_adapter(ctx, outcome, metric, with_rag, advance)
        points.append(CurvePoint(examples=outcome.summary.train_examples, score=score))
    sizes = [p.examples for p in points]
    values = [p.score.value for p in points]
    higher_is_better = getattr(metric, "higher_is_better", True)
    fit = fit_curve(sizes, values, [p.score.ci_high - p.score.ci_low for p in points], higher_is_better)
    needed, verdict = curve_verdict(sizes, values, fit, task.target, higher_is_better)
    return LearningCurve(
        rung="lora_rag" if with_rag else "lora",
        points=points,
        fit=fit.params if fit else None,
        fit_formula=fit.formula if fit else None,
        target=task.target,
        examples_needed=needed,
        verdict=verdict,
    )
