"""`tunewise runs`: past runs from the run store."""

from __future__ import annotations

import click
from rich.table import Table

from tunewise.ui import console, print_json


@click.command("runs")
@click.option("--task", help="Only runs of this task.")
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def command(task, limit, as_json):
    """List past runs, newest first, with their status and decision."""
    from tunewise.ladder.store import RunStore

    store = RunStore()
    rows = store.runs(task=task, limit=limit)
    store.close()
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No runs yet. Start one with `tunewise run TASK.yaml`.")
        return
    table = Table()
    for col in ("run", "status", "updated", "rungs", "decision", "folder"):
        table.add_column(col)
    for r in rows:
        rungs = ", ".join(
            f"{g['name']} {g['score']:.3f}" if g["score"] is not None else f"{g['name']} ({g['status']})" for g in r["rungs"]
        )
        decision = (r["decision"] or {}).get("rung") or "-"
        table.add_row(r["id"], r["status"], r["updated"], rungs, decision, r["run_dir"])
    console.print(table)
