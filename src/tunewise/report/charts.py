"""The report's charts: matplotlib figures rendered to inline SVG strings.

Each function takes plain numbers and returns an `<svg>` element ready to paste into HTML (or None
when there is nothing to draw). matplotlib is imported inside the functions so the decision core
imports fast, and only `matplotlib.figure.Figure` is used (never pyplot), so rendering never switches
a notebook's backend and works headless.

SVG output is deterministic: a fixed hash salt per chart, no date, text kept as text
(`svg.fonttype: none`) so it stays selectable, small and crisp when printed.
"""

from __future__ import annotations

import ast
import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tunewise.cost.model import cost_curve

# Okabe-Ito: distinguishable with the common colour-vision deficiencies, readable on white.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999", "#000000"]
INK, MUTED, GRID = "#1f2328", "#57606a", "#d0d7de"
GOOD, BAD, NEUTRAL = "#1a7f37", "#cf222e", "#6e7781"

_RC = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    # Measured with DejaVu Sans (always present with matplotlib); the browser falls back along the list.
    "font.sans-serif": ["DejaVu Sans", "Helvetica Neue", "Helvetica", "Arial", "Liberation Sans"],
    "font.size": 10,
    "axes.edgecolor": MUTED,
    "axes.labelcolor": INK,
    "axes.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": GRID,
    "grid.linewidth": 0.6,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "legend.frameon": False,
    "legend.fontsize": 9,
}


@dataclass
class CostLine:
    """One rung in the break-even chart: monthly = per_call x calls + upfront / horizon_months
    (`tunewise.cost.cost_curve`)."""

    label: str
    per_call: float  # $ per request
    upfront: float  # one-off $
    colour: str
    emphasis: bool = False  # the chosen rung: drawn thicker


@dataclass
class Crossing:
    calls_per_month: float
    monthly_cost: float
    label: str


def _plain(text: str) -> str:
    """matplotlib parses $...$ as maths; a label must show a dollar sign as a dollar sign."""
    return text.replace("$", r"\$")


def _to_svg(fig, chart_id: str) -> str:
    """Figure -> an inline `<svg>`: no XML header, no doctype, no metadata, scales to its container."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"tunewise-{chart_id}", "svg.id": f"{chart_id}-svg"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight", pad_inches=0.08)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, count=1, flags=re.S)
    # The same group ids (figure_1, axes_1, ...) would repeat in every chart of one HTML page.
    svg = re.sub(r'<g id="[^"]*">', "<g>", svg)
    # Replace the fixed size in pt by "fill the column, but never beyond natural size" (1 pt = 4/3 px),
    # so every chart shows its 10 pt text at the same size; the viewBox keeps the aspect ratio.
    head_end = svg.index(">")
    width_pt = float(re.search(r'\swidth="([\d.]+)pt"', svg[:head_end]).group(1))
    head = re.sub(r'\s(width|height)="[^"]*"', "", svg[:head_end])
    style = f"max-width: {width_pt * 4 / 3:.0f}px"
    return head + f' role="img" class="chart" style="{style}" preserveAspectRatio="xMidYMid meet"' + svg[head_end:]


def _figure(width_in: float, height_in: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained")


def _money_formatter(symbol: str) -> Callable[[float, int], str]:
    def fmt(value: float, _pos: int) -> str:
        if value <= 0:
            return ""
        if value >= 1000:
            return f"{symbol}{value / 1000:g}k"
        return f"{symbol}{value:g}"

    return lambda v, p: _plain(fmt(v, p))


def short_count(value: float) -> str:
    """Axis labels for volumes: short_count(20000) == '20k', short_count(1.5e6) == '1.5M'."""
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:g}{suffix}"
    return f"{value:g}"


def break_even_chart(
    lines: Sequence[CostLine],
    horizon_months: int,
    volume: float,
    crossings: Sequence[Crossing],
    currency_symbol: str = "$",
) -> str | None:
    """Monthly cost against calls per month (log-log), one line per rung, volume and crossings marked."""
    if not lines:
        return None
    import numpy as np
    from matplotlib.ticker import FuncFormatter, LogLocator

    marks = [c.calls_per_month for c in crossings if c.calls_per_month > 0]
    centre = volume if volume > 0 else 10_000
    low = min([centre / 100, *(m / 4 for m in marks)])
    high = max([centre * 100, *(m * 4 for m in marks)])
    calls = np.geomspace(max(low, 1.0), high, 240)

    from matplotlib import rc_context

    with rc_context(_RC):
        fig = _figure(10.0, 4.4)  # wider than the others: the legend sits outside, on the right
        ax = fig.add_subplot()
        ax.set_xscale("log")
        ax.set_yscale("log")
        floor = None
        for line in lines:
            monthly = np.asarray(cost_curve(line.upfront, line.per_call, calls, horizon_months))
            label = line.label + ("  (chosen)" if line.emphasis else "")
            positive = monthly[monthly > 0]
            if not positive.size:  # a free rung has no place on a log axis; keep it in the legend
                monthly, label = np.full_like(calls, np.nan), f"{label}: {currency_symbol}0, not drawn"
            else:
                floor = positive.min() if floor is None else min(floor, positive.min())
            ax.plot(
                calls,
                monthly,
                color=line.colour,
                linewidth=2.6 if line.emphasis else 1.6,
                label=_plain(label),
                zorder=3 if line.emphasis else 2,
            )
        if volume > 0:
            ax.axvline(volume, color=INK, linestyle=(0, (4, 3)), linewidth=1.0, zorder=1)
            ax.annotate(
                f"your volume: {volume:,.0f}/month",
                xy=(volume, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(5, -4),
                textcoords="offset points",
                va="top",
                fontsize=9,
                color=INK,
            )
        for crossing in crossings:
            ax.plot(
                [crossing.calls_per_month],
                [crossing.monthly_cost],
                marker="o",
                markersize=7,
                markerfacecolor="white",
                markeredgecolor=INK,
                markeredgewidth=1.4,
                linestyle="none",
                zorder=4,
            )
            ax.annotate(
                _plain(crossing.label),
                xy=(crossing.calls_per_month, crossing.monthly_cost),
                xytext=(7, -13),
                textcoords="offset points",
                fontsize=8.5,
                color=INK,
                zorder=5,
            )
        if floor is not None:
            ax.set_ylim(bottom=floor / 2)
        ax.set_xlim(calls[0], calls[-1])
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: short_count(v)))
        ax.yaxis.set_major_formatter(FuncFormatter(_money_formatter(currency_symbol)))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _p: ""))
        ax.set_xlabel("calls per month (log scale)")
        ax.set_ylabel(_plain(f"monthly cost, {currency_symbol} (log scale)"))
        # Outside the axes: with a large upfront cost a flat line can run along any edge.
        ax.legend(
            loc="center left", bbox_to_anchor=(1.02, 0.5), title=f"training amortised\nover {horizon_months} months",
            title_fontsize=8.5, alignment="left",
        )
        return _to_svg(fig, "break-even")


# --- the learning curve's fitted formula ----------------------------------------------------------

_FUNCTIONS = {"exp": "exp", "log": "log", "ln": "log", "log10": "log10", "log2": "log2", "sqrt": "sqrt"}
_OPERATORS = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply", ast.Div: "divide", ast.Pow: "power"}
_SIZE_NAMES = ("n", "x", "examples")


def evaluate_fit(formula: str, params: dict[str, float], examples: Sequence[float]):
    """Evaluate a fitted curve safely (arithmetic only, no eval), vectorised over example counts.

    >>> evaluate_fit("a - b * n ** -c", {"a": 0.8, "b": 2.0, "c": 0.5}, [100, 400]).round(3).tolist()
    [0.6, 0.7]

    `score = ...` and `^` for powers are accepted. Returns None for anything else.
    """
    import numpy as np

    text = formula.split("=", 1)[1] if "=" in formula else formula
    try:
        tree = ast.parse(text.replace("^", "**").strip(), mode="eval")
    except SyntaxError:
        return None
    n = np.asarray(examples, dtype=float)

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id in _SIZE_NAMES:
                return n
            if node.id in params:
                return float(params[node.id])
            raise ValueError(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return getattr(np, _OPERATORS[type(node.op)])(walk(node.left), walk(node.right))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS
            and len(node.args) == 1
            and not node.keywords
        ):
            return getattr(np, _FUNCTIONS[node.func.id])(walk(node.args[0]))
        raise ValueError(ast.dump(node))

    try:
        with np.errstate(all="ignore"):
            values = np.broadcast_to(walk(tree), n.shape).astype(float)
    except (ValueError, TypeError, ZeroDivisionError):
        return None
    return values if np.isfinite(values).any() else None


def learning_curve_chart(
    examples: Sequence[int],
    scores: Sequence[float],
    ci_low: Sequence[float],
    ci_high: Sequence[float],
    colour: str,
    metric: str,
    target: float | None = None,
    fit_formula: str | None = None,
    fit: dict[str, float] | None = None,
    examples_needed: float | None = None,
    higher_is_better: bool = True,
) -> str | None:
    """Score against training examples (log x): measured points with CIs, the fit, the target.
    For a lower-is-better metric the curve falls towards the target, and the labels say so."""
    if not examples:
        return None
    import numpy as np
    from matplotlib import rc_context
    from matplotlib.ticker import FuncFormatter

    low = min(examples) / 1.6
    high = max(examples) * 3
    if examples_needed and examples_needed > 0:
        high = max(high, examples_needed * 2.5)
    with rc_context(_RC):
        fig = _figure(9.4, 3.8)
        ax = fig.add_subplot()
        ax.set_xscale("log")
        values = np.asarray(scores, dtype=float)
        errors = np.vstack([values - np.asarray(ci_low, dtype=float), np.asarray(ci_high, dtype=float) - values])
        ax.errorbar(
            examples, values, yerr=np.clip(errors, 0, None), fmt="o", color=colour, ecolor=colour,
            elinewidth=1.4, capsize=4, markersize=6, label="measured (95% CI)", zorder=3,
        )
        if fit_formula and fit:
            grid = np.geomspace(low, high, 200)
            curve = evaluate_fit(fit_formula, fit, grid)
            if curve is not None:
                ax.plot(grid, curve, color=colour, linestyle=(0, (5, 3)), linewidth=1.5, label=_plain(f"fit: {fit_formula}"), zorder=2)
        if target is not None:
            ax.axhline(target, color=GOOD, linewidth=1.2, zorder=1)
            ax.annotate(
                f"target {target:g}" if higher_is_better else f"target ≤ {target:g}", xy=(0.0, target), xycoords=("axes fraction", "data"),
                xytext=(4, 4), textcoords="offset points", color=GOOD, fontsize=9,
            )
        if examples_needed and examples_needed > 0:
            ax.axvline(examples_needed, color=INK, linestyle=(0, (1, 2)), linewidth=1.2, zorder=1)
            ax.annotate(
                f"≈{_three_figures(examples_needed)} examples", xy=(examples_needed, 0.03),
                xycoords=("data", "axes fraction"), xytext=(-5, 0), textcoords="offset points",
                ha="right", fontsize=9, color=INK,
            )
        ax.set_xlim(low, high)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: short_count(v)))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _p: ""))
        ax.set_xlabel("training examples (log scale)")
        ax.set_ylabel(_plain(metric if higher_is_better else f"{metric} (lower is better)"))
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2)
        return _to_svg(fig, "learning-curve")


def loss_chart(
    epochs_train: Sequence[float],
    train_loss: Sequence[float],
    epochs_val: Sequence[float],
    val_loss: Sequence[float],
    best_epoch: float | None,
    chart_id: str,
) -> str | None:
    """Training and validation loss against epochs; the kept checkpoint marked."""
    if not train_loss and not val_loss:
        return None
    from matplotlib import rc_context

    with rc_context(_RC):
        fig = _figure(9.4, 3.2)
        ax = fig.add_subplot()
        if train_loss:
            ax.plot(epochs_train, train_loss, color=PALETTE[0], linewidth=1.4, label="training loss")
        if val_loss:
            ax.plot(epochs_val, val_loss, color=PALETTE[5], linewidth=1.8, marker="o", markersize=4.5, label="validation loss")
        if best_epoch is not None:
            ax.axvline(best_epoch, color=INK, linestyle=(0, (4, 3)), linewidth=1.0)
            ax.annotate(
                f"kept: epoch {best_epoch:g}", xy=(best_epoch, 1.0), xycoords=("data", "axes fraction"),
                xytext=(5, -4), textcoords="offset points", va="top", fontsize=9, color=INK,
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_xlim(left=0)
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2)
        return _to_svg(fig, chart_id)


def forgetting_chart(
    probes: Sequence[str], delta: Sequence[float], ci_low: Sequence[float], ci_high: Sequence[float]
) -> str | None:
    """Fine-tuned minus base score per probe set, with 95% CIs; red where the CI is wholly below 0."""
    if not probes:
        return None
    from matplotlib import rc_context

    with rc_context(_RC):
        fig = _figure(9.4, 0.9 + 0.45 * len(probes))
        ax = fig.add_subplot()
        rows = list(range(len(probes)))[::-1]  # first probe on top
        for y, d, lo, hi in zip(rows, delta, ci_low, ci_high):
            colour = BAD if hi < 0 else GOOD if lo > 0 else NEUTRAL
            ax.errorbar([d], [y], xerr=[[max(d - lo, 0)], [max(hi - d, 0)]], fmt="o", color=colour, ecolor=colour, elinewidth=1.6, capsize=4, markersize=6)
        ax.axvline(0, color=INK, linewidth=1.0)
        ax.set_yticks(rows, [_plain(p) for p in probes])
        ax.set_ylim(-0.6, len(probes) - 0.4)
        span = max([abs(v) for v in (*ci_low, *ci_high)] + [0.01]) * 1.15
        ax.set_xlim(-span, span)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("fine-tuned minus base score (95% CI)")
        return _to_svg(fig, "forgetting")


def _three_figures(value: float) -> str:
    """_three_figures(103627) == '104,000'."""
    digits = 2 - math.floor(math.log10(value)) if value > 0 else 0
    return f"{round(value, digits):,.0f}"


def nice_upper(value: float) -> float:
    """A round axis end at or above value: nice_upper(0.83) == 1.0, nice_upper(37) == 40.0."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude
