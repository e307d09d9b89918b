"""`tunewise advise`: recommend an approach from the decision framework (instant, no model)."""

from __future__ import annotations

import csv
import dataclasses
import sys
from pathlib import Path

import click
from click.core import ParameterSource
from rich.markup import escape
from rich.table import Table

from tunewise.advise import Advice, Situation, advise, ask, situation_from_task
from tunewise.task import Change, Goal, Task, load_task
from tunewise.ui import console, err_console, print_json

# Options that answer a question; each is named after the Situation field it fills.
ANSWER_OPTIONS = [f.name for f in dataclasses.fields(Situation)]


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def count_examples(task: Task) -> int | None:
    """Training rows in a JSONL or CSV data file (not audited); None for other formats or no file."""
    path: Path | None = task.data.train or task.data.file
    try:
        if path is None or not path.is_file():
            return None
        # errors="replace": a count, not an audit; a bad byte must not stop the advice
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8", errors="replace") as f:
                rows = sum(1 for line in f if line.strip())
        elif path.suffix == ".csv":
            with path.open(encoding="utf-8", errors="replace", newline="") as f:
                rows = max(sum(1 for _ in csv.reader(f)) - 1, 0)  # minus the header
        else:
            return None
    except (OSError, csv.Error):  # unreadable, or a field over csv's limit: `tunewise audit` says which
        return None
    if task.data.file is not None:
        rows = round(rows * (1 - task.data.eval_fraction))
    return rows


@click.command("advise")
@click.option(
    "--goal",
    "goals",
    multiple=True,
    type=click.Choice([g.value for g in Goal], case_sensitive=False),
    help="What customisation must achieve; repeat for several (replaces the task file's goals).",
)
@click.option("--examples", "n_examples", type=click.IntRange(min=0), help="Quality examples you have.")
@click.option("--calls-per-month", type=click.IntRange(min=0), help="Expected requests per month.")
@click.option(
    "--changes",
    "requirements_change",
    type=click.Choice([c.value for c in Change], case_sensitive=False),
    help="How often facts, rules or labels change.",
)
@click.option("--fresh/--no-fresh", "needs_fresh_facts", default=None, help="Answers need up-to-date facts.")
@click.option("--corpus/--no-corpus", "has_corpus", default=None, help="Documents holding the knowledge exist.")
@click.option(
    "--latency-ms", "latency_budget_ms", type=click.FloatRange(min=0, min_open=True), help="p95 latency budget."
)
@click.option("--smaller", "want_smaller_faster", is_flag=True, help="You want a smaller or faster model.")
@click.option("--new-language", "new_language_or_modality", is_flag=True, help="A language or modality the base model barely knows.")
@click.option("--multi-task", "multiple_distinct_tasks", is_flag=True, help="Several distinct specialised tasks behind one endpoint.")
@click.option(
    "--style-critical/--style-not-critical", "style_critical", default=None, help="A voice or house style must be matched."
)
@click.option("--task", "task_path", type=click.Path(dir_okay=False), help="Take the answers from a task file.")
@click.option("-i", "--interactive", is_flag=True, help="Ask the questions (default with no flags on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the advice as JSON.")
def command(task_path: str | None, interactive: bool, as_json: bool, **answers: object) -> None:
    """Recommend prompting, few-shot, RAG, fine-tuning or something else, from explicit rules.

    Every rule that fires is cited by id (docs/advise.md lists them). Flags override a task file.
    """
    ctx = click.get_current_context()
    given = {k: v for k, v in answers.items() if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    if given.get("needs_fresh_facts") is False and "freshness" in (given.get("goals") or ()):
        raise click.UsageError("--goal freshness contradicts --no-fresh; keep one of them")
    if interactive and task_path:
        raise click.UsageError("use --task or --interactive, not both")
    notes: list[str] = []

    no_flags = not given and task_path is None and not as_json
    if interactive or (no_flags and stdin_is_terminal()):
        situation = ask(known=given)
    else:
        if task_path:
            task = load_task(task_path)  # the checks `run` makes: a task advised on is one that runs
            n_examples = given.get("n_examples", count_examples(task))
            if "n_examples" not in given and n_examples is not None:
                notes.append(f"examples: counted {n_examples:,} training rows in the task's data (not audited; "
                             "--examples overrides)")
            situation = dataclasses.replace(situation_from_task(task, n_examples), **given)
        else:
            situation = Situation(**given)
            if no_flags:
                notes.append("no answers given and stdin is not a terminal: advising on defaults (every "
                             "question unknown or no); pass flags, --task TASK.yaml or --interactive")

    advice = advise(situation)
    for note in notes:
        err_console.print(f"[yellow]Note:[/yellow] {escape(note)}")
    if as_json:
        print_json(advice.to_dict())
    else:
        render(advice)


def render(advice: Advice) -> None:
    c = console
    c.print(f"[bold]Recommendation:[/bold] [bold green]{escape(advice.approach.title)}[/bold green]"
            f"  (decided by {advice.decided_by})")
    c.print(f"  [bold]Try first:[/bold]     {escape(advice.try_first.how)}")
    if advice.if_that_fails:
        fails = advice.if_that_fails
        c.print(f"  [bold]If that fails:[/bold] {escape(fails.approach.title)}: {escape(fails.how)}")
    if advice.also_consider:
        c.print("  [bold]Also consider:[/bold] " + ", ".join(a.title for a in advice.also_consider))
    for approach, by_rule, forbidden_by in advice.overruled:
        c.print(f"  [bold]Set aside:[/bold]     {approach.title} ({by_rule}), forbidden by {', '.join(forbidden_by)}")

    c.print("\n[bold]Rules that fired[/bold]")
    for rule in advice.fired:
        c.print(f"  [cyan]{rule.id}[/cyan]  [dim]{escape(rule.effect)}[/dim]")
        c.print(f"      {escape(rule.reason)}")

    table = Table("Question", "Answer", title="Checklist", title_justify="left", title_style="bold")
    for _, question, answer in advice.checklist:
        table.add_row(escape(question), escape(answer))
    c.print()
    c.print(table)

    if advice.risks:
        c.print("[bold]Risks[/bold]")
        for rule_id, risk in advice.risks:
            c.print(f"  - {escape(risk)} [dim]({rule_id})[/dim]")
    c.print("\n[dim]Rules of thumb, not measurements: `tunewise run TASK.yaml` measures every rung on your "
            "held-out data.[/dim]")
