"""The verdict in words: the decision sentence, a reason per rung, and the advisor's agreement.

Pure: reads a `Verdict` and the rungs' results (plain data), opens nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunewise.cost.money import fmt_money
from tunewise.decision.direction import short_of_target, target_phrase
from tunewise.decision.verdict import PairComparison, Verdict, examples_needed
from tunewise.ladder.results import Decision, RungResult

@dataclass(frozen=True)
class Context:
    """What the sentences need from the task."""

    metric: str
    target: float | None
    calls_per_month: int
    horizon_months: int
    eval_examples: int
    approaches: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Each candidate -> the advisor approaches its rung measures (the rung registry's, passed in)."""


def fmt_diff(pc: PairComparison) -> str:
    """The difference with its bounds.

    >>> fmt_diff(PairComparison("a", "b", 100, -0.0512, -0.1, -0.002, 0.3, 0.025))
    '-0.051 [-0.100, -0.002]'
    """
    return f"{pc.diff:+.3f} [{pc.lower:+.3f}, {pc.upper:+.3f}]"


def needed_words(n: int | None, have: int) -> str:
    if n is None:
        return "more eval examples would not settle it (the difference sits on the margin): choose on cost, or revisit the margin"
    if n <= have:
        return f"about {n:,} eval examples would settle it at 80% power; this run scored fewer on this pair, so run with --full"
    return f"about {n:,} eval examples would settle it (80% power, if the observed difference holds; this run has {have:,})"


def _cost_clause(r: RungResult, ctx: Context) -> str:
    clause = f"{fmt_money(r.monthly_cost or 0)}/month"
    return clause + (f" + {fmt_money(r.upfront_cost)} one-off" if r.upfront_cost else "")


def _score(r: RungResult) -> str:
    assert r.score is not None
    return f"{r.score.value:.3f} [{r.score.ci_low:.3f}, {r.score.ci_high:.3f}]"


def explain(
    verdict: Verdict | None, results: list[RungResult], ctx: Context, advice: dict[str, Any] | None
) -> Decision:
    """The Decision recorded in results.json and printed by the CLI and the report."""
    done = {r.name: r for r in results if r.status == "done" and r.score is not None}
    if verdict is None or verdict.choice is None or not done:
        return Decision(rung=None, sentence="No rung finished, so there is nothing to decide.", reasons=[])
    choice, best = done[verdict.choice], done[verdict.best]
    m = verdict.margin
    missed = short_of_target(verdict.higher_is_better)  # "below" the target, or "above" it for lower-is-better
    # The target as the sentences name it: "0.85", or "≤ 0.2" when lower is better (never ambiguous).
    goal = "" if ctx.target is None else f"{ctx.target:g}" if verdict.higher_is_better else target_phrase(ctx.target, False)
    reasons: list[str] = []
    open_q = None
    if verdict.open_candidate and verdict.open_comparison is not None:
        pc = verdict.open_comparison
        cand, rival = done[verdict.open_candidate], done[verdict.open_rival or verdict.best]
        open_q = (
            f"Cannot tell {cand.title} from {rival.title} at {pc.n:,} examples: the difference "
            f"{fmt_diff(pc)} reaches past the margin -{m:g}; {needed_words(verdict.examples_needed, pc.n)}."
        )

    reaches = verdict.meets_target is not False
    if verdict.confident and reaches:
        sentence = f"Use {choice.title}: {ctx.metric} {_score(choice)}"
        if choice is best:
            sentence += " is the best measured"
        else:
            pc = verdict.vs_best[choice.name]
            sentence += f" is within {m:g} of the best ({best.title}, {best.score.value:.3f}; difference {fmt_diff(pc)})"
        sentence += f", and it is the cheapest such option at {ctx.calls_per_month:,} calls/month ({_cost_clause(choice, ctx)})."
        if ctx.target is not None:
            reasons.append(f"{choice.title} meets the target {goal} ({choice.score.value:.3f}).")
    elif reaches:
        sentence = (
            f"Inconclusive: {open_q or 'the data cannot show any rung within the margin of the best.'} "
            f"The conservative choice is {choice.title} ({ctx.metric} {_score(choice)}), the best-scoring "
            f"option{' that meets the target' if ctx.target is not None else ''}."
        )
    else:
        sentence = (
            f"No rung reaches the target {goal}: the best is {best.title} at {_score(best)}; "
            + (
                "it is the closest option. "
                if choice is best
                else f"{choice.title}, within {m:g} of it and cheaper, is the closest option. "
            )
            + "Collect more data, try a stronger model, or revisit the target."
        )
    if open_q and not (reaches and not verdict.confident):
        reasons.append(open_q)

    for r in results:
        if r.name == choice.name:
            continue
        if r.name in done:
            status = verdict.status.get(r.name)
            pc = verdict.vs_best.get(r.name)
            if r.stopped:
                reasons.append(f"{r.title} scores {r.score.value:.3f}: {r.stopped}.")
            elif status == "worse" and pc is not None and pc.upper < -m:
                reasons.append(
                    f"{r.title} scores {r.score.value:.3f}, worse than {best.title} by more than the margin "
                    f"{m:g} (difference {fmt_diff(pc)})."
                )
            elif status == "worse" and pc is not None and r.meets_target is not False:
                reasons.append(
                    f"{r.title} scores {r.score.value:.3f}, measurably worse than {best.title} (difference "
                    f"{fmt_diff(pc)}), perhaps by less than the margin {m:g}."
                )
            elif r.meets_target is False and status == "inconclusive" and pc is not None and r.name != verdict.open_candidate:
                reasons.append(
                    f"{r.title} scores {r.score.value:.3f}, {missed} the target {ctx.target:g}; cannot tell whether it is "
                    f"within {m:g} of {best.title} (difference {fmt_diff(pc)}); {needed_words(examples_needed(pc, m), pc.n)}."
                )
            elif r.meets_target is False:
                reasons.append(f"{r.title} scores {r.score.value:.3f}, {missed} the target {ctx.target:g}.")
            elif status == "inconclusive" and pc is not None and r.name != verdict.open_candidate:
                reasons.append(
                    f"{r.title} scores {r.score.value:.3f}: cannot tell whether it is within {m:g} of "
                    f"{best.title} (difference {fmt_diff(pc)}); {needed_words(examples_needed(pc, m), pc.n)}."
                )
            elif r.name in verdict.noninferior and (r.horizon_cost or 0) > (choice.horizon_cost or 0):
                reasons.append(
                    f"{r.title} is as good within the margin ({r.score.value:.3f}) but costs more: "
                    f"{fmt_money(r.horizon_cost or 0)} vs {fmt_money(choice.horizon_cost or 0)} over {ctx.horizon_months} months."
                )
        elif r.status != "done":
            reasons.append(f"{r.title} was {r.status}: {r.note}")

    approach, rules, agreement, kind = None, [], None, None
    if advice:
        approach = advice.get("approach")
        rules = [f"{f['id']}: {f['reason']}" for f in advice.get("rules", [])]
        measuring = [name for name, approaches in ctx.approaches.items() if approach in approaches]
        if not measuring:
            kind = "unmeasured"
            agreement = f"The framework recommends {approach}, which the ladder does not measure directly."
        elif choice.name in measuring:
            kind = "agree"
            agreement = f"Measurement and the framework agree: {choice.title}."
        else:
            kind = "disagree"
            measured = next((done[name] for name in measuring if name in done), None)
            what = f"it scored {measured.score.value:.3f} here" if measured else "it was not measured in this run"
            agreement = (
                f"Measurement and the framework disagree: the rules suggest {approach} ({what}); "
                f"the evidence on your data favours {choice.title}."
            )
    return Decision(
        rung=choice.name,
        sentence=sentence,
        reasons=reasons,
        advisor_approach=approach,
        advisor_rules=rules,
        agreement=agreement,
        agreement_kind=kind,
        confident=verdict.confident,
        margin=m,
        level=verdict.level,
        open_question=open_q,
        examples_needed=verdict.examples_needed if open_q else None,
    )


def how_sure(decision: Decision, eval_examples: int) -> str | None:
    """One line on the error control behind a verdict; None for results written before it existed.

    >>> how_sure(Decision(rung="a", sentence="", reasons=[], margin=0.03, level=0.0167, alpha=0.05), 200)
    'margin 0.03; every comparison at one-sided level 0.017, so the chance of confidently choosing a rung worse than the best by more than the margin is at most 0.05'
    """
    if decision.margin is None or decision.level is None or decision.alpha is None:
        return None
    line = (
        f"margin {decision.margin:.3g}; every comparison at one-sided level {decision.level:.2g}, so the chance of "
        f"confidently choosing a rung worse than the best by more than the margin is at most {decision.alpha:g}"
    )
    looks = decision.looks
    if len(looks) > 1 or (looks and looks[-1].examples < eval_examples):
        steps = ", ".join(
            f"{look.examples}" + (" (settled)" if look.settled else "") + (f" (dropped {', '.join(look.dropped)})" if look.dropped else "")
            for look in looks
        )
        line += f"; adaptive evaluation looked at {steps} of {eval_examples} examples"
    return line
