"""`tunewise run TASK.yaml`: climb the ladder, print the table and the decision."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from tunewise.cost.money import currency_symbol, fmt_money
from tunewise.decision.direction import target_phrase
from tunewise.decision.explain import how_sure
from tunewise.eval.stats import fmt_p
from tunewise.ladder.results import Results, RungResult
from tunewise.ui import console, print_json


def vs_best_cell(r: RungResult) -> str:
    """The rung against the best within the margin (schema 2), or the p-value (schema 1 runs).

    >>> print(vs_best_cell(RungResult(name="a", title="A", vs_best="worse", diff_vs_best=-0.1651, diff_vs_best_low=-0.2, diff_vs_best_high=-0.1)))
    worse -0.165
    [-0.200, -0.100]
    """
    if r.vs_best == "best" or (r.vs_best is None and r.p_value_vs_best is None):
        return "best"
    if r.vs_best is None:
        return f"{'worse' if r.significantly_worse_than_best else 'n.s.'} {fmt_p(r.p_value_vs_best)}"
    cell = f"{r.vs_best} {r.diff_vs_best:+.3f}"
    if r.vs_best in ("inconclusive", "worse"):
        cell += f"\n[{r.diff_vs_best_low:+.3f}, {r.diff_vs_best_high:+.3f}]"
    return cell


def results_table(results: Results) -> Table:
    table = Table(title=f"{results.task}: {results.metric} on {results.eval_examples} held-out examples ({results.model})")
    symbol = currency_symbol(results.currency)
    lower = not results.higher_is_better  # say so: a lower-is-better best reads as the smallest number
    for col, justify in [
        ("rung", "left"),
        (f"{results.metric} [95% CI]" + ("\nlower is better" if lower else ""), "right"),
        ("vs best", "right"),
        ("target" + (f"\n{target_phrase(results.target, False)}" if lower and results.target is not None else ""), "center"),
        ("latency p50/p95", "right"),
        ("tokens in/out", "right"),
        (f"{symbol}/1k req", "right"),
        (f"{symbol}/month @{results.calls_per_month:,}", "right"),
        ("one-off", "right"),
    ]:
        table.add_column(col, justify=justify)
    chosen = results.decision.rung if results.decision else None
    for r in results.rungs:
        if r.status != "done" or r.score is None:
            table.add_row(r.title, f"[dim]{r.status}[/dim]", "", "", "", "", "", "", "", style="dim")
            continue
        s = r.score
        score = f"{s.value:.3f} [{s.ci_low:.3f}, {s.ci_high:.3f}]"
        if r.retrieval_recall is not None:
            score += f"\nrecall@k {r.retrieval_recall:.2f}"
        if r.scored_examples is not None and r.scored_examples < results.eval_examples:
            score += f"\nscored {r.scored_examples}/{results.eval_examples}"
        vs = vs_best_cell(r)
        target = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "-"}[r.meets_target]
        table.add_row(
            ("[bold]> " if r.name == chosen else "") + r.title,
            score,
            vs,
            target,
            f"{r.latency_p50_s:.2f}s/{r.latency_p95_s:.2f}s",
            f"{r.prompt_tokens:.0f}/{r.output_tokens:.0f}",
            fmt_money(r.cost_per_1k, symbol),
            fmt_money(r.monthly_cost, symbol),
            fmt_money(r.upfront_cost, symbol) if r.upfront_cost else "-",
        )
    return table


def extra_metrics_table(results: Results) -> Table | None:
    """The metrics reported beside the task's own, one column each; None when there are none."""
    names = results.extra_metric_names()
    if not names:
        return None
    table = Table(title="Also measured (reported only)", title_justify="left")
    table.add_column("rung")
    for name in names:
        table.add_column(f"{name} [95% CI]", justify="right")
    for r in (r for r in results.rungs if r.extra_scores):
        cells = [r.extra_scores.get(n) for n in names]
        table.add_row(r.title, *(f"{s.value:.3f} [{s.ci_low:.3f}, {s.ci_high:.3f}]" if s else "-" for s in cells))
    return table


def print_results(results: Results, run_dir: Path | None = None) -> None:
    console.print(results_table(results))
    extra = extra_metrics_table(results)
    if extra is not None:
        console.print(extra)
    timed = [r for r in results.rungs if r.status == "done" and r.latency_p50_ci is not None and r.latency_requests]
    if timed:
        spans = ", ".join(f"{r.title} {r.latency_p50_ci[0]:.2f}-{r.latency_p50_ci[1]:.2f}s" for r in timed)
        console.print(
            f"  latency: {timed[0].latency_requests} single requests a rung, interleaved across rungs; "
            f"p50 95% CI: {spans}"
        )
    skipped = [r for r in results.rungs if r.status != "done"]
    for r in skipped:
        console.print(f"  [dim]{r.title}: {r.status} - {r.note}[/dim]")
    for r in results.rungs:
        if r.tuning is not None:
            from tunewise.ladder.tuning import describe

            console.print(f"  tuned on dev: {r.title}: {describe(r.tuning)}")
        if r.facts:
            console.print(f"  {r.title}: {'; '.join(f.text for f in r.facts.values())}")
    if results.models:
        priced = {r.name.partition("@")[2]: r.pricing for r in results.rungs if r.pricing}
        console.print("  models: " + "; ".join(f"{key} = {spec} ({priced.get(key, 'not run')})" for key, spec in results.models.items()))
    for be in results.break_even:
        a, b = results.rung(be.cheaper_upfront), results.rung(be.cheaper_per_call)
        if a and b:
            if be.calls_per_month is None:
                console.print(f"  break-even: {b.title} is never cheaper than {a.title}")
            else:
                console.print(f"  break-even: {b.title} is cheaper than {a.title} above {be.calls_per_month:,.0f} calls/month")
    if results.learning_curve:
        console.print(f"  learning curve: {results.learning_curve.verdict}")
    if results.forgetting:
        console.print(f"  forgetting check: {results.forgetting.verdict}")
    d = results.decision
    if d:
        console.print(f"\n[bold]Decision:[/bold] {d.sentence}")
        for reason in d.reasons:
            console.print(f"  - {reason}")
        for warning in d.warnings:
            console.print(f"  [yellow]! {warning}[/yellow]")
        sure = how_sure(d, results.eval_examples)
        if sure:
            console.print(f"  [dim]How sure: {sure}.[/dim]")
        if d.agreement:
            console.print(f"[bold]Framework:[/bold] {d.agreement}")
    if run_dir is not None:
        console.print(f"\nrun folder: {run_dir}")
        report = run_dir / "report.html"
        if report.exists():
            console.print(f"report: {report}")


@click.command("run")
@click.argument("task_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--all", "all_rungs", is_flag=True, help="Climb every rung that applies (RAG rungs need a corpus), even past a good-enough one.")
@click.option("--rungs", help="Comma-separated rungs to run instead of the task's list.")
@click.option("--limit", type=int, help="Score only the first N eval examples (quick look).")
@click.option("--fresh", is_flag=True, help="Start a new run instead of resuming the last one with this config.")
@click.option("--no-evidence", is_flag=True, help="Skip the learning curve and forgetting check.")
@click.option("--full", is_flag=True, help="Score every eval example with every rung (no adaptive stopping).")
@click.option("--tune", is_flag=True, help="Choose each rung's k on a dev split carved from train when the task has no ladder.tune (few-shot k 2/4/8, RAG k 1/3/5).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Folder for run folders (default ./runs).")
@click.option("--json", "as_json", is_flag=True, help="Print results.json instead of the table.")
def command(task_file, all_rungs, rungs, limit, fresh, no_evidence, full, tune, out, as_json):
    """Climb the customisation ladder on TASK_FILE's held-out data and decide.

    Rungs run cheapest first; climbing stops when a rung meets the target and no further rung
    could be cheaper (--all measures every rung). Rerunning the same task resumes it.
    """
    from tunewise.ladder.run import RunOptions, prepare_run, run_ladder
    from tunewise.task import load_task

    task = load_task(task_file)
    if tune and task.ladder.tune is None:
        from tunewise.ladder.tuning import with_default_grid

        task = with_default_grid(task)
    options = RunOptions(
        rungs=[r.strip() for r in rungs.split(",") if r.strip()] if rungs else None,
        all_rungs=all_rungs,
        fresh=fresh,
        eval_limit=limit,
        evidence=not no_evidence,
        full=full,
        out_dir=out,
    )
    log = (lambda m: None) if as_json else (lambda m: console.print(f"[dim]{m}[/dim]"))
    results = run_ladder(task, options, log=log)
    if as_json:
        print_json(results.model_dump(mode="json"))
        return
    _, run_dir = prepare_run(task, options) if not fresh else (None, None)
    print_results(results, run_dir or (out or Path("runs")) / results.run_id)
