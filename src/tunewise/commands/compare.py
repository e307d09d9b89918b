"""`tunewise compare RUN A B [--metric M]`: a paired test between any two rungs of a finished run.

The run table tests every rung against the best one; this answers the other questions ("does RAG
beat the closed-book adapter?") from the saved answers, with any metric, without generating again.
"""

from __future__ import annotations

from pathlib import Path

import click

from tunewise.errors import TunewiseError
from tunewise.ui import console, print_json


def comparison_metric(task, run_dir: Path, metric_name: str | None, trust_metric_code: bool):
    """The metric to compare with. Custom metric code runs only when the user named it: given with
    --metric (a relative path is relative to the current folder), or, when the run's own config names
    it, with --trust-metric-code. A run folder copied from elsewhere cannot run code on `compare`."""
    from tunewise.eval.metrics import METRICS, get_metric
    from tunewise.ladder.run import task_metric

    custom = lambda name: name not in METRICS and ":" in name  # noqa: E731
    if metric_name is not None and custom(metric_name):
        return get_metric(metric_name, base_dir=Path.cwd())
    if metric_name is None and custom(task.metric) and not trust_metric_code:
        raise TunewiseError(
            f"{run_dir / 'config.yaml'} names custom metric code ({task.metric}), which would run as Python on your "
            "machine; pass --trust-metric-code if you trust this run folder, or --metric NAME for a built-in metric"
        )
    return task_metric(task, metric_name)


def compare_two(run_dir: Path, a: str, b: str, metric_name: str | None = None, trust_metric_code: bool = False) -> dict:
    """A minus B on the run's eval examples: both scores with CIs, the difference with its CI, p."""
    from tunewise.eval.stats import compare, compare_predictions, evaluate
    from tunewise.ladder.run import DamagedRunError, answered, open_run, read_predictions

    task, ctx, results = open_run(run_dir)
    metric = comparison_metric(task, run_dir, metric_name, trust_metric_code)
    predictions = {}
    for rung in (a, b):
        result = results.rung(rung)
        if result is None or result.status != "done":
            finished = ", ".join(r.name for r in results.rungs if r.status == "done") or "none"
            raise TunewiseError(f"rung {rung!r} did not finish in {run_dir}; finished rungs: {finished}")
        try:
            rows = read_predictions(run_dir, result.predictions_file or f"predictions/{rung}.jsonl", answered(result, ctx.eval))
        except DamagedRunError as err:
            raise TunewiseError(f"{run_dir}: {err}; rerun the task to recompute {rung}") from None
        predictions[rung] = [r["prediction"] for r in rows]
    # Every rung answers the eval examples in the same seeded order; one whose evaluation stopped
    # early answered a prefix of it, so the pair is compared on the examples both answered.
    n = min(len(predictions[a]), len(predictions[b]))
    predictions = {r: p[:n] for r, p in predictions.items()}
    examples = ctx.eval[:n]
    seed = task.data.seed
    scored = {r: evaluate(metric, predictions[r], examples, seed=seed) for r in (a, b)}
    if metric.corpus is not None:
        test = compare_predictions(metric, predictions[a], predictions[b], examples, seed=seed)
    else:
        test = compare(scored[a].per_example, scored[b].per_example, metric.binary, seed=seed)
    titles = {r.name: r.title for r in results.rungs}
    return {
        "metric": metric.name,
        "higher_is_better": metric.higher_is_better,
        "examples": len(examples),
        "rungs": {
            r: {"title": titles[r], "value": scored[r].value, "ci_low": scored[r].ci_low, "ci_high": scored[r].ci_high}
            for r in (a, b)
        },
        "difference": test.diff,
        "difference_ci": [test.diff_ci_low, test.diff_ci_high],
        "p_value": test.p_value,
        "test": test.method,
    }


@click.command("compare")
@click.argument("run")
@click.argument("rung_a")
@click.argument("rung_b")
@click.option("--metric", help="score with this metric instead of the task's (e.g. contains, exact_match)")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="significance level for the verdict")
@click.option(
    "--trust-metric-code",
    is_flag=True,
    help="run the custom metric code (file.py:function) that RUN's config names; only for run folders you trust",
)
@click.option("--json", "as_json", is_flag=True, help="print the comparison as JSON")
def command(run: str, rung_a: str, rung_b: str, metric: str | None, alpha: float, trust_metric_code: bool, as_json: bool) -> None:
    """Paired test between two rungs of RUN on the same eval examples, from their saved answers.

    A custom --metric path.py:function is the caller's code, relative to the current folder.
    """
    from tunewise.decision.direction import better
    from tunewise.eval.stats import fmt_p
    from tunewise.paths import resolve_run

    out = compare_two(resolve_run(run), rung_a, rung_b, metric, trust_metric_code)
    if as_json:
        print_json(out)
        return
    a, b = out["rungs"][rung_a], out["rungs"][rung_b]
    for r in (a, b):
        console.print(f"{r['title']}: {out['metric']} {r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]", markup=False)
    low, high = out["difference_ci"]
    if out["p_value"] < alpha:  # the difference is A minus B: A is better when it is higher, or lower for lower-is-better
        verdict = f"{(a if better(out['difference'], 0.0, out['higher_is_better']) else b)['title']} is measurably better"
    else:
        verdict = "no measurable difference"
    console.print(
        f"difference {out['difference']:+.3f} [95% CI {low:+.3f}, {high:+.3f}] on {out['examples']} examples, "
        f"{out['test']} {fmt_p(out['p_value'])}: {verdict}",
        markup=False,
    )
