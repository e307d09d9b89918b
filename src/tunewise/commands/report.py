"""`tunewise report RUN`: (re-)render report.html and report.md from a run's results.json."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError

from tunewise.errors import TunewiseError
from tunewise.ladder.results import load_results
from tunewise.ui import console, print_json


def _problems(err: ValidationError) -> str:
    lines = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in err.errors()]
    shown = "\n  ".join(lines[:10]) + (f"\n  ... and {len(lines) - 10} more" if len(lines) > 10 else "")
    return f"{len(lines)} problem(s):\n  {shown}"


@click.command("report")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), help="folder for the reports (default: the run folder)")
@click.option("--json", "as_json", is_flag=True, help="print the written paths as JSON")
def command(run: Path, out_dir: Path | None, as_json: bool) -> None:
    """Write report.html and report.md for RUN (a run folder, or its results.json)."""
    from tunewise.report import render_report
    from tunewise.report.render import results_problems

    results_file = run / "results.json" if run.is_dir() else run
    try:
        results = load_results(run)
    except TunewiseError as err:
        raise click.ClickException(str(err)) from None
    except ValidationError as err:
        raise click.ClickException(
            f"{results_file} is not a valid results.json ({_problems(err)}); rerun the task or fix the file"
        ) from None
    except ValueError as err:  # not JSON at all
        raise click.ClickException(f"{results_file} is not valid JSON ({err}); rerun the task to rewrite it") from None
    problems = results_problems(results)
    if problems:  # refuse rather than draw a NaN bar or a verdict for a rung that is not there
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise click.ClickException(
            f"{results_file} does not add up ({len(problems)} problem(s): {shown}); "
            "rerun the task to rewrite it, or fix the file"
        )
    html, markdown = render_report(results, out_dir or results_file.parent)
    if as_json:
        print_json({"html": str(html), "markdown": str(markdown)})
        return
    # markup=False: a sentence or path with [brackets] prints as written; soft_wrap: paths stay copyable.
    console.print(results.decision.sentence if results.decision else "No decision recorded.", style="bold", markup=False)
    console.print(f"report: {html}", markup=False, soft_wrap=True)
    console.print(f"markdown: {markdown}", markup=False, soft_wrap=True)
