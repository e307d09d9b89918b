"""Render report.html and report.md from a run's results.json alone.

    render_report(load_results(run_dir), run_dir)  # -> (run_dir/report.html, run_dir/report.md)

The HTML is one self-contained file: styles, charts (inline SVG) and a few lines of script are
inline, nothing is fetched, and it prints. Formatting lives here, layout in the Jinja templates,
charts in charts.py.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

import tunewise.report.charts as charts  # the module, not `from tunewise.report import`: the package imports this one
from tunewise import __version__
from tunewise.cost.model import amortised_monthly_cost
from tunewise.cost.money import DASH, currency_symbol, fmt_money
from tunewise.decision.direction import best_of
from tunewise.decision.explain import how_sure
from tunewise.eval.stats import fmt_p
from tunewise.ladder.results import (
    SCHEMA_VERSION,
    Decision,
    Disagreement,
    LearningCurve,
    Results,
    RungResult,
    TrainingSummary,
    atomic_write_text,
)

TEMPLATES = Path(__file__).resolve().parent / "templates"
_DISAGREE = re.compile(r"\b(disagree|differ|contradict|conflict|overrule)", re.I)
_UNMEASURED = re.compile(r"\bdoes not measure\b", re.I)  # decide(): "...which the ladder does not measure directly."


# --- number formatting --------------------------------------------------------------------------


def fmt_count(value: float | None) -> str:
    """fmt_count(20000) == '20,000'; fmt_count(751.4) == '751'."""
    return DASH if value is None else f"{value:,.0f}"


def fmt_approx(value: float, digits: int = 2) -> str:
    """Estimates to `digits` significant figures: fmt_approx(2816.3) == '2,800', fmt_approx(103627, 3) == '104,000'."""
    if value <= 0:
        return "0"
    rounded = round(value, digits - 1 - math.floor(math.log10(value)))
    return f"{rounded:,.0f}" if rounded >= 10 else f"{rounded:g}"


def fmt_latency(p50: float | None, p95: float | None) -> str:
    """Both figures in one unit, chosen by the slower: '180 / 310 ms' or '0.91 / 1.37 s'."""
    known = [v for v in (p50, p95) if v is not None]
    if not known:
        return DASH
    if max(known) < 1:
        return " / ".join(DASH if v is None else f"{v * 1000:.0f}" for v in (p50, p95)) + " ms"
    return " / ".join(DASH if v is None else f"{v:.2f}" for v in (p50, p95)) + " s"


def fmt_tokens(value: float | None) -> str:
    """Mean tokens per request: fmt_tokens(841.6) == '842', fmt_tokens(9.43) == '9.4', fmt_tokens(52.0) == '52'."""
    if value is None:
        return DASH
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}".removesuffix(".0")


def fmt_number(value: Any) -> str:
    """Generic cells (audit): ints with separators, floats with 3 significant figures."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return DASH if value is None else str(value)


def score_decimals(widths: list[float]) -> int:
    """Enough decimals to show the narrowest CI: width 0.11 -> 2, width 0.02 -> 3."""
    positive = [w for w in widths if w > 0]
    if not positive:
        return 3
    return min(4, max(2, 1 - math.floor(math.log10(min(positive)))))


def humanize(key: str) -> str:
    """audit keys for people: humanize('exact_duplicates') == 'exact duplicates'."""
    return str(key).replace("_", " ")


# --- the view: everything the templates show, already formatted ----------------------------------


@dataclass
class CiBar:
    """Geometry of the small CI bar in the rung table (SVG user units)."""

    width: int
    height: int
    x_low: float
    x_high: float
    x_value: float
    x_target: float | None
    colour: str
    axis_low: str
    axis_high: str


@dataclass
class RungRow:
    name: str
    title: str
    status: str
    note: str | None
    colour: str
    chosen: bool
    best: bool
    score: str = DASH
    ci: str = ""
    bar: CiBar | None = None
    significance: str = DASH
    significance_class: str = ""
    significance_title: str = ""
    meets: str = DASH
    meets_class: str = ""
    latency: str = DASH
    tokens: str = DASH
    cost_per_1k: str = DASH
    monthly: str = DASH
    upfront: str = DASH
    horizon: str = DASH
    recall: str = DASH
    predictions: str | None = None


@dataclass
class TrainingView:
    rungs: list[str]
    facts: list[tuple[str, str]]
    overfitting_warning: str | None
    underfitting_note: str | None
    chart: Markup | None
    chart_id: str


@dataclass
class AnswerView:
    rung: str
    title: str
    answer: str
    score: str
    background: str  # light, behind the answer text
    chip: str  # saturated, the small square in the summary line
    verdict: str  # right, partial, wrong


@dataclass
class DisagreementView:
    index: int
    input: str
    gold: str
    answers: list[AnswerView]
    right: list[str]
    wrong: list[str]

    @property
    def by_rung(self) -> dict[str, AnswerView]:
        return {a.rung: a for a in self.answers}


@dataclass
class AuditView:
    verdict: str | None
    errors: int | None
    warnings: int | None
    rest: dict[str, Any] = field(default_factory=dict)  # everything but the badges, in file order

    @property
    def scalars(self) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in self.rest.items() if not isinstance(v, (dict, list, tuple))]

    @property
    def sections(self) -> list[tuple[str, dict]]:
        return [(k, v) for k, v in self.rest.items() if isinstance(v, dict)]

    @property
    def lists(self) -> list[tuple[str, list]]:
        return [(k, v) for k, v in self.rest.items() if isinstance(v, (list, tuple))]


def _link(path: str | None, out_dir: Path) -> str | None:
    """Predictions files as links relative to the report, so the run folder can move."""
    if not path:
        return None
    p = Path(path)
    if p.is_absolute():
        try:
            return os.path.relpath(p, out_dir.resolve()).replace(os.sep, "/")
        except ValueError:  # another drive on Windows
            return p.as_posix()
    return p.as_posix()


def _best_rung(rungs: list[RungResult], higher_is_better: bool = True) -> RungResult | None:
    scored = [r for r in rungs if r.status == "done" and r.score is not None]
    marked = [r for r in scored if r.vs_best == "best"]  # schema 2 records which rung the verdict took as best
    if marked:
        return marked[0]
    return best_of(scored, higher_is_better, key=lambda r: r.score.value) if scored else None


VS_BEST_CLASS = {"best": "best", "better": "best", "equivalent": "tie", "non-inferior": "tie", "worse": "worse", "inconclusive": "open"}


def vs_best_text(r: RungResult, decimals: int = 3) -> str:
    """The rung against the best within the margin, with the difference's bounds.

    >>> vs_best_text(RungResult(name="a", title="A", vs_best="inconclusive", diff_vs_best=-0.05, diff_vs_best_low=-0.11, diff_vs_best_high=0.004))
    'inconclusive: -0.050 (-0.110 to +0.004)'
    """
    if r.vs_best == "best" or r.diff_vs_best is None:
        return r.vs_best or DASH
    return (
        f"{r.vs_best}: {r.diff_vs_best:+.{decimals}f} "
        f"({r.diff_vs_best_low:+.{decimals}f} to {r.diff_vs_best_high:+.{decimals}f})"
    )


def _bar_axis(rungs: list[RungResult], target: float | None) -> tuple[float, float]:
    values = [v for r in rungs if r.score for v in (r.score.ci_low, r.score.ci_high, r.score.value)]
    if target is not None:
        values.append(target)
    if not values:
        return 0.0, 1.0
    low = min(0.0, min(values))
    high = 1.0 if low >= 0 and max(values) <= 1 else charts.nice_upper(max(values))
    return low, high


def _rung_rows(results: Results, colours: dict[str, str], out_dir: Path, symbol: str) -> list[RungRow]:
    best = _best_rung(results.rungs, results.higher_is_better)
    chosen = results.decision.rung if results.decision else None
    decimals = score_decimals([r.score.ci_high - r.score.ci_low for r in results.rungs if r.score])
    axis_low, axis_high = _bar_axis(results.rungs, results.target)
    width, height, pad = 132, 18, 4

    def x(v: float) -> float:
        share = (v - axis_low) / (axis_high - axis_low) if axis_high > axis_low else 0.0
        return round(pad + min(max(share, 0.0), 1.0) * (width - 2 * pad), 2)

    rows = []
    for r in results.rungs:
        row = RungRow(
            name=r.name,
            title=r.title,
            status=r.status,
            note=r.note,
            colour=colours[r.name],
            chosen=r.name == chosen,
            best=best is not None and r.name == best.name,
            predictions=_link(r.predictions_file, out_dir),
        )
        rows.append(row)
        if r.status != "done":
            continue
        if r.score:
            s = r.score
            row.score = f"{s.value:.{decimals}f}"
            row.ci = f"{s.ci_low:.{decimals}f}–{s.ci_high:.{decimals}f}"
            row.bar = CiBar(
                width=width, height=height, x_low=x(s.ci_low), x_high=x(s.ci_high), x_value=x(s.value),
                x_target=None if results.target is None else x(results.target), colour=row.colour,
                axis_low=f"{axis_low:g}", axis_high=f"{axis_high:g}",
            )
        if r.scored_examples is not None and r.scored_examples < results.eval_examples:
            row.ci += f" · {r.scored_examples} of {results.eval_examples} scored"
        if r.vs_best is not None:  # schema 2: against the best within the margin
            row.significance, row.significance_class = vs_best_text(r, decimals), VS_BEST_CLASS.get(r.vs_best, "")
            if r.stopped:
                row.significance_title = r.stopped
        elif row.best:
            row.significance, row.significance_class = "best", "best"
        elif r.significantly_worse_than_best is True:
            row.significance, row.significance_class = f"worse ({fmt_p(r.p_value_vs_best)})", "worse"
        elif r.significantly_worse_than_best is False:
            row.significance, row.significance_class = f"not significantly worse ({fmt_p(r.p_value_vs_best)})", "tie"
        elif r.p_value_vs_best is not None:
            row.significance = fmt_p(r.p_value_vs_best)
        if r.p_value_vs_previous is not None and not row.significance_title:
            row.significance_title = f"vs the previous rung: {fmt_p(r.p_value_vs_previous)}"
        if r.meets_target is not None:
            row.meets, row.meets_class = ("yes", "yes") if r.meets_target else ("no", "no")
        row.latency = fmt_latency(r.latency_p50_s, r.latency_p95_s)
        if r.latency_p50_ci is not None and r.latency_requests:
            low, high = r.latency_p50_ci
            row.latency += f" (p50 {fmt_latency(low, high).replace(' / ', '–')}, {r.latency_requests} requests)"
        if r.prompt_tokens is not None or r.output_tokens is not None:
            row.tokens = f"{fmt_tokens(r.prompt_tokens)} / {fmt_tokens(r.output_tokens)}"
        row.cost_per_1k = fmt_money(r.cost_per_1k, symbol)
        row.monthly = fmt_money(r.monthly_cost, symbol)
        row.upfront = fmt_money(r.upfront_cost, symbol)
        row.horizon = fmt_money(r.horizon_cost, symbol)
        if r.retrieval_recall is not None:
            row.recall = f"{r.retrieval_recall:.0%}"
    return rows


def _extra_metrics_view(results: Results) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Metric names and one (rung title, cells) row per finished rung, for the "Also measured" table."""
    done = [r for r in results.rungs if r.extra_scores]
    names = results.extra_metric_names()
    decimals = score_decimals([s.ci_high - s.ci_low for r in done for s in r.extra_scores.values()])
    rows = []
    for r in done:
        cells = []
        for n in names:
            s = r.extra_scores.get(n)
            cells.append(f"{s.value:.{decimals}f} ({s.ci_low:.{decimals}f}–{s.ci_high:.{decimals}f})" if s else DASH)
        rows.append((r.title, cells))
    return names, rows


def _confusion_views(results: Results) -> list[tuple[str, list[str], list[tuple[str, list[int]]]]]:
    """(rung title, predicted-label columns, (gold label, counts) rows) per label rung with a
    confusion matrix; "(other)" is a column only where some answer was no gold label."""
    out = []
    for r in results.rungs:
        if not r.confusion:
            continue
        columns = list(r.confusion) + sorted({p for row in r.confusion.values() for p in row} - set(r.confusion))
        out.append((r.title, columns, [(gold, [row.get(c, 0) for c in columns]) for gold, row in r.confusion.items()]))
    return out


def _cost_lines(results: Results, colours: dict[str, str]) -> list[charts.CostLine]:
    chosen = results.decision.rung if results.decision else None
    return [
        charts.CostLine(label=r.title, per_call=r.cost_per_1k / 1000, upfront=r.upfront_cost, colour=colours[r.name], emphasis=r.name == chosen)
        for r in results.rungs
        if r.status == "done" and r.cost_per_1k is not None
    ]


def monthly_cost(rung: RungResult, calls_per_month: float, horizon_months: int) -> float:
    """A rung's monthly cost with its training amortised over the horizon (`amortised_monthly_cost`)."""
    return amortised_monthly_cost(rung.upfront_cost, (rung.cost_per_1k or 0.0) / 1000, calls_per_month, horizon_months)


def break_even_sentences(results: Results) -> list[str]:
    """One line per break-even pair, e.g. 'LoRA costs less than RAG above about 750 calls/month'."""
    lines = []
    volume = f"{results.calls_per_month:,}"
    for be in results.break_even:
        upfront, per_call = results.rung(be.cheaper_upfront), results.rung(be.cheaper_per_call)
        a = upfront.title if upfront else be.cheaper_upfront
        b = per_call.title if per_call else be.cheaper_per_call
        if be.calls_per_month is None:
            lines.append(f"{b} never costs less than {a} at any volume.")
            continue
        winner = b if results.calls_per_month > be.calls_per_month else a
        lines.append(
            f"{b} costs less than {a} above about {fmt_approx(be.calls_per_month)} calls/month, "
            f"so at your {volume} calls/month {winner} is the cheaper of the two."
        )
    return lines


def _break_even_chart(results: Results, colours: dict[str, str], symbol: str) -> Markup | None:
    crossings = []
    for be in results.break_even:
        rung = results.rung(be.cheaper_upfront)
        if be.calls_per_month is None or rung is None or rung.cost_per_1k is None or be.calls_per_month <= 0:
            continue
        crossings.append(
            charts.Crossing(
                calls_per_month=be.calls_per_month,
                monthly_cost=monthly_cost(rung, be.calls_per_month, results.horizon_months),
                label=f"{fmt_approx(be.calls_per_month)}/mo",
            )
        )
    svg = charts.break_even_chart(_cost_lines(results, colours), results.horizon_months, results.calls_per_month, crossings, symbol)
    return Markup(svg) if svg else None


def _learning_curve_chart(curve: LearningCurve, colour: str, metric: str, higher_is_better: bool = True) -> Markup | None:
    svg = charts.learning_curve_chart(
        examples=[p.examples for p in curve.points],
        scores=[p.score.value for p in curve.points],
        ci_low=[p.score.ci_low for p in curve.points],
        ci_high=[p.score.ci_high for p in curve.points],
        colour=colour,
        metric=metric,
        target=curve.target,
        fit_formula=curve.fit_formula,
        fit=curve.fit,
        examples_needed=curve.examples_needed,
        higher_is_better=higher_is_better,
    )
    return Markup(svg) if svg else None


def _training_views(results: Results, symbol: str) -> list[TrainingView]:
    """One view per distinct training run (rungs that share an adapter show it once)."""
    groups: list[tuple[TrainingSummary, list[str]]] = []
    for r in results.rungs:
        if r.training is None:
            continue
        for summary, names in groups:
            if summary == r.training:
                names.append(r.title)
                break
        else:
            groups.append((r.training, [r.title]))
    views = []
    for i, (t, names) in enumerate(groups):
        facts = [
            ("method", t.method),
            ("examples", f"{t.train_examples:,} train / {t.val_examples:,} validation"),
            ("epochs run", f"{t.epochs_run:g}" + ("" if t.best_epoch is None else f" (kept epoch {t.best_epoch:g})")),
            ("tokens trained", f"{t.train_tokens:,}"),
            ("throughput", f"{t.tokens_per_s:,.0f} tokens/s"),
            ("wall time", _duration(t.wall_s)),
            ("device", t.device + (", bf16" if t.bf16 else "")),
        ]
        if t.peak_memory_mb is not None:
            facts.append(("peak memory", f"{t.peak_memory_mb / 1024:.1f} GiB" if t.peak_memory_mb >= 1024 else f"{t.peak_memory_mb:.0f} MiB"))
        if t.gpu_cost_estimate is not None:
            facts.append(("training cost (own GPU)", fmt_money(t.gpu_cost_estimate, symbol)))
        if t.hosted_cost_estimate is not None:
            facts.append(("training cost (hosted)", fmt_money(t.hosted_cost_estimate, symbol)))
        if t.adapter_path:
            facts.append(("adapter", t.adapter_path))
        train = [p for p in t.loss_curve if p.train_loss is not None]
        val = [p for p in t.loss_curve if p.val_loss is not None]
        chart_id = f"loss-curve-{i + 1}"
        svg = charts.loss_chart(
            [p.epoch for p in train], [p.train_loss for p in train], [p.epoch for p in val], [p.val_loss for p in val], t.best_epoch, chart_id
        )
        views.append(TrainingView(rungs=names, facts=facts, overfitting_warning=t.overfitting_warning, underfitting_note=t.underfitting_note, chart=Markup(svg) if svg else None, chart_id=chart_id))
    return views


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _score_colour(score: float | None, higher_is_better: bool = True) -> tuple[str, str, str]:
    """(background, chip, verdict): red (wrong) through amber to green (right), plus a word for
    colour-blind readers. Right is 1 for a higher-is-better metric, 0 for a lower-is-better one.

    >>> _score_colour(0.0, higher_is_better=False)[2], _score_colour(0.0)[2]
    ('right', 'wrong')
    """
    if score is None:
        return "transparent", "#eaeef2", "unscored"
    right = score if higher_is_better else 1.0 - score  # per-example scores lie in [0, 1]
    share = min(max(right, 0.0), 1.0)
    verdict = "right" if share >= 0.999 else "wrong" if share <= 0.001 else "partial"
    hue = share * 120
    return f"hsl({hue:.0f}, 75%, 90%)", f"hsl({hue:.0f}, 55%, 46%)", verdict


def _disagreement_views(items: list[Disagreement], results: Results) -> list[DisagreementView]:
    titles = {r.name: r.title for r in results.rungs}
    order = [r.name for r in results.rungs]
    views = []
    for d in items:
        names = [n for n in order if n in d.answers or n in d.scores]
        names += [n for n in d.answers if n not in names]
        answers = []
        for name in names:
            score = d.scores.get(name)
            background, chip, verdict = _score_colour(score, results.higher_is_better)
            answers.append(
                AnswerView(
                    rung=name, title=titles.get(name, name), answer=d.answers.get(name, ""),
                    score=DASH if score is None else f"{score:.2f}", background=background, chip=chip, verdict=verdict,
                )
            )
        views.append(
            DisagreementView(
                index=d.index, input=d.input, gold=d.gold, answers=answers,
                right=[a.title for a in answers if a.verdict == "right"],
                wrong=[a.title for a in answers if a.verdict != "right"],
            )
        )
    return views


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple, dict)):
        return len(value)
    return None


def _audit_view(audit: dict[str, Any] | None) -> AuditView | None:
    if not audit:
        return None
    rest = {k: v for k, v in audit.items() if k not in ("verdict",)}
    errors, warnings = _count(audit.get("errors")), _count(audit.get("warnings"))
    # Plain counts are shown as badges; lists of messages stay in the body too.
    for key, value in (("errors", errors), ("warnings", warnings)):
        if value is not None and isinstance(audit.get(key), int):
            rest.pop(key, None)
    verdict = audit.get("verdict")
    return AuditView(verdict=None if verdict is None else str(verdict), errors=errors, warnings=warnings, rest=rest)


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested audit dicts as dotted keys for Markdown: {'a': {'b': 1}} -> [('a.b', '1')]."""
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(value, list):
        if all(isinstance(v, dict) for v in value) and value:
            return [(f"{prefix}[{i}]", ", ".join(f"{k}: {fmt_number(v)}" for k, v in item.items())) for i, item in enumerate(value)]
        return [(prefix, ", ".join(fmt_number(v) for v in value))]
    return [(prefix, fmt_number(value))]


def table_keys(items: list[dict[str, Any]]) -> list[str]:
    """Union of keys, in first-seen order: the columns of a list-of-dicts table."""
    keys: list[str] = []
    for item in items:
        keys += [k for k in item if k not in keys]
    return keys


def agreement_kind(decision: Decision | None) -> str:
    """How the measured choice relates to the rule-based advice: 'agree', 'disagree' (the page flags
    it) or 'unmeasured' (the advice names an approach the ladder has no rung for; shown neutral).

    Runs written before `Decision.agreement_kind` existed only have the sentence, so guess from it.
    """
    if decision is None:
        return "agree"
    if decision.agreement_kind is not None:
        return decision.agreement_kind
    text = decision.agreement or ""
    if _DISAGREE.search(text):
        return "disagree"
    return "unmeasured" if _UNMEASURED.search(text) else "agree"


def _tuning_lines(results: Results) -> list[tuple[str, str]]:
    """(rung title, how its knobs were chosen on dev) for each tuned rung (docs/decision.md)."""
    from tunewise.ladder.tuning import describe

    return [(r.title, describe(r.tuning)) for r in results.rungs if r.tuning is not None]


def build_view(results: Results, out_dir: Path) -> dict[str, Any]:
    """Everything both templates show, formatted once."""
    out_dir = Path(out_dir)
    symbol = currency_symbol(results.currency)
    colours = {r.name: charts.PALETTE[i % len(charts.PALETTE)] for i, r in enumerate(results.rungs)}
    rows = _rung_rows(results, colours, out_dir, symbol)
    done = [r for r in results.rungs if r.status == "done"]
    fine_tuned = [r for r in results.rungs if r.finetuned]
    curve = results.learning_curve
    curve_colour = colours.get(curve.rung, charts.PALETTE[0]) if curve else charts.PALETTE[0]
    curve_title = (results.rung(curve.rung).title if curve and results.rung(curve.rung) else curve.rung) if curve else None
    forgetting_chart = None
    if results.forgetting and results.forgetting.probes:
        p = results.forgetting.probes
        svg = charts.forgetting_chart([x.name for x in p], [x.delta for x in p], [x.delta_ci_low for x in p], [x.delta_ci_high for x in p])
        forgetting_chart = Markup(svg) if svg else None
    cwd = Path.cwd().resolve()
    try:
        run_arg = str(out_dir.resolve().relative_to(cwd)) or "."
    except ValueError:
        run_arg = str(out_dir)
    decision = results.decision
    extra_names, extra_rows = _extra_metrics_view(results)
    audit = _audit_view(results.audit)
    disagreements = _disagreement_views(results.disagreements, results)
    order = [r.name for r in results.rungs] + sorted({n for d in results.disagreements for n in d.answers} - {r.name for r in results.rungs})
    return {
        "r": results,
        "symbol": symbol,
        "rows": rows,
        "chosen": next((row for row in rows if row.chosen), None),
        "show_recall": any(r.retrieval_recall is not None for r in results.rungs),
        "extra_metrics": extra_names,
        "extra_rows": extra_rows,
        "confusions": _confusion_views(results),
        "tuning_lines": _tuning_lines(results),
        "fact_lines": [(r.title, [f.text for f in r.facts.values()]) for r in results.rungs if r.facts],
        "show_horizon": any(r.horizon_cost is not None for r in results.rungs),
        "any_done": bool(done),
        "decision": decision,
        "how_sure": how_sure(decision, results.eval_examples) if decision else None,
        "agreement_kind": agreement_kind(decision),
        "break_even_chart": _break_even_chart(results, colours, symbol) if done else None,
        "break_even_lines": break_even_sentences(results),
        "has_crossings": any(be.calls_per_month for be in results.break_even),
        "has_costs": any(r.cost_per_1k is not None for r in done),
        "curve": curve,
        "curve_title": curve_title,
        "curve_chart": _learning_curve_chart(curve, curve_colour, results.metric, results.higher_is_better) if curve and curve.points else None,
        "fine_tuned": fine_tuned,
        "any_fine_tuning": bool(fine_tuned or curve or results.forgetting),
        "training": _training_views(results, symbol),
        "forgetting": results.forgetting,
        "forgetting_chart": forgetting_chart,
        "audit": audit,
        "audit_lines": flatten(audit.rest) if audit else [],
        "advice": results.advice,
        "disagreements": disagreements,
        "disagreement_rungs": [n for n in order if any(n in d.by_rung for d in disagreements)],
        "titles": {r.name: r.title for r in results.rungs} | {n: n for n in order if results.rung(n) is None},
        "predictions": [(row.title, row.name, row.predictions) for row in rows if row.predictions],
        "run_arg": run_arg,
        "version": __version__,
        "schema_version": results.schema_version,
        "reader_schema": SCHEMA_VERSION,
    }


def _environment(html: bool) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=html,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        money=fmt_money, p=fmt_p, commas=fmt_count, approx=fmt_approx, number=fmt_number,
        humanize=humanize, table_keys=table_keys, md=md_text, cell=md_cell,
    )
    return env


def md_text(value: Any) -> str:
    """Text for Markdown: raw HTML in a model's answer must not become markup on a wiki."""
    text = re.sub(r"&(?=#?\w+;)", "&amp;", str(value))  # only where it would read as an entity
    return text.replace("<", "&lt;").replace(">", "&gt;")


def md_cell(value: Any) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return re.sub(r"\s*\n\s*", " ", md_text(value)).replace("|", r"\|")


# --- results.json that does not add up ------------------------------------------------------------

_COSTS_AND_TIMES = ("latency_p50_s", "latency_p95_s", "prompt_tokens", "output_tokens", "cost_per_1k",
                    "monthly_cost", "upfront_cost", "horizon_cost")
_P_VALUES = ("p_value_vs_best", "p_value_vs_previous", "p_value_vs_zero_shot")


def _name(text: str) -> str:
    """A name from the file, safe on one line: short, newlines escaped."""
    shown = repr(text[:40]).strip("'\"")
    return shown + ("…" if len(text) > 40 else "")


def _is_mean(metric: str) -> bool:
    """Whether `metric`'s score is a mean of per-example scores, whose percentile-bootstrap interval
    always holds it. A corpus statistic's (macro-F1) may not: its resamples are biased."""
    from tunewise.eval.metrics import METRICS

    if metric not in METRICS:
        return ":" in metric  # a custom function scores each example
    try:
        return METRICS[metric]().corpus is None
    except Exception:  # noqa: BLE001 - a builder that needs options: cannot tell, so do not judge
        return False


def _score_problems(where: str, score: Any, mean: bool = True) -> list[str]:
    values = {"value": score.value, "ci_low": score.ci_low, "ci_high": score.ci_high}
    bad = [f"{where}.{k}: {v}, not a finite number" for k, v in values.items() if not math.isfinite(v)]
    if bad or not mean:
        return bad
    slack = 1e-9  # the bootstrap's rounding, not a contradiction
    if score.ci_low > score.value + slack:
        bad.append(f"{where}: ci_low {score.ci_low:g} is above the score {score.value:g}")
    if score.ci_high < score.value - slack:
        bad.append(f"{where}: ci_high {score.ci_high:g} is below the score {score.value:g}")
    if score.n < 0:
        bad.append(f"{where}.n: {score.n} examples")
    return bad


def results_problems(results: Results) -> list[str]:
    """What in a results.json cannot be true: non-finite numbers, a score outside its own confidence
    interval, a p-value outside [0, 1], a decision naming a rung the run does not have or did not
    finish. `tunewise report` refuses such a file rather than draw it as if it were sound.

    A run never writes these (it cannot score NaN); a hand edit, a merge or a bad disk can.
    """
    problems: list[str] = []

    def finite(where: str, value: float | None) -> None:
        if value is not None and not math.isfinite(value):
            problems.append(f"{where}: {value}, not a finite number")

    finite("target", results.target)
    finite("wall_s", results.wall_s)
    means = {m: _is_mean(m) for m in {results.metric, *results.extra_metric_names()}}
    names = [r.name for r in results.rungs]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"rungs: {_name(name)!r} appears {names.count(name)} times")
    for rung in results.rungs:
        where = f"rungs.{_name(rung.name)}"
        if rung.score is not None:
            problems += _score_problems(f"{where}.score", rung.score, means[results.metric])
        for metric, score in rung.extra_scores.items():
            problems += _score_problems(f"{where}.extra_scores.{_name(metric)}", score, means[metric])
        for key in _COSTS_AND_TIMES:
            finite(f"{where}.{key}", getattr(rung, key))
        for key in (*_P_VALUES, "retrieval_recall"):
            value = getattr(rung, key)
            if value is not None and not -1e-9 <= value <= 1 + 1e-9:  # NaN fails this too
                problems.append(f"{where}.{key}: {value} is not a probability (0 to 1)")
    decision = results.decision
    if decision is not None and decision.rung is not None:
        chosen = results.rung(decision.rung)
        if chosen is None:
            problems.append(f"decision.rung: {_name(decision.rung)!r} is not a rung of this run "
                            f"(rungs: {', '.join(_name(n) for n in names[:8]) or 'none'})")
        elif chosen.status != "done":
            problems.append(f"decision.rung: {_name(decision.rung)!r} did not finish ({chosen.status})")
    for i, be in enumerate(results.break_even):
        finite(f"break_even.{i}.calls_per_month", be.calls_per_month)
    curve = results.learning_curve
    for i, point in enumerate(curve.points if curve else []):
        problems += _score_problems(f"learning_curve.points.{i}.score", point.score, means[results.metric])
    for probe in results.forgetting.probes if results.forgetting else []:
        where = f"forgetting.{_name(probe.name)}"
        problems += _score_problems(f"{where}.base", probe.base, False)  # the probe's metric is not recorded
        problems += _score_problems(f"{where}.finetuned", probe.finetuned, False)
        for key in ("delta", "delta_ci_low", "delta_ci_high"):
            finite(f"{where}.{key}", getattr(probe, key))
    return problems


def render_report(results: Results, out_dir: Path) -> tuple[Path, Path]:
    """Write report.html and report.md into out_dir (atomically); return their paths."""
    out_dir = Path(out_dir)
    view = build_view(results, out_dir)
    html = _environment(html=True).get_template("report.html.j2").render(**view)
    markdown = _environment(html=False).get_template("report.md.j2").render(**view)
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    atomic_write_text(html_path, html)
    atomic_write_text(md_path, markdown)
    return html_path, md_path
