"""`tunewise audit DATA [--eval EVAL]`: every problem in a data file at once, with line numbers."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import click
from rich.table import Table

from tunewise.data.audit import DEFAULT_PRICE_PER_1M, MAX_KEPT_PER_KIND, AuditReport, audit
from tunewise.data.formats import FORMATS
from tunewise.ui import console, print_json

MAX_WARNINGS_PER_KIND = 50
"""The terminal shows this many errors and warnings of each kind; --json has the first
MAX_KEPT_PER_KIND of each, and every count."""


@click.command("audit")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--eval", "eval_path", type=click.Path(dir_okay=False), help="Held-out file: checked for leakage too.")
@click.option(
    "--format",
    "data_format",
    type=click.Choice(["auto", *FORMATS]),
    default="auto",
    show_default=True,
    help="Data format; auto detects it from the first records.",
)
@click.option(
    "--context-limit", type=click.IntRange(min=1), default=2048, show_default=True, help="Tokens an example may use."
)
@click.option("--tokenizer", help="Local tokenizer folder or .gguf file for exact counts (default: an estimate).")
@click.option(
    "--price-per-1m",
    type=click.FloatRange(min=0),
    default=DEFAULT_PRICE_PER_1M,
    show_default=True,
    help="Hosted fine-tuning $ per 1M training tokens.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
def command(
    data: str,
    eval_path: str | None,
    data_format: str,
    context_limit: int,
    tokenizer: str | None,
    price_per_1m: float,
    as_json: bool,
) -> None:
    """Check DATA: format, bad lines, duplicates, conflicts, leakage, lengths, labels, volume, cost.

    Exits 1 when any line has an error; warnings alone exit 0.
    """
    report = audit(data, eval_path, data_format, context_limit, tokenizer, price_per_1m)
    if as_json:
        print_json(report.to_dict())
    else:
        render(report)
    if not report.ok:
        raise SystemExit(1)


def render(r: AuditReport) -> None:
    files = f"{r.train_path} ({r.formats['train']}, {r.train_examples:,} examples)"
    if r.eval_path:
        files += f" + eval {r.eval_path} ({r.formats['eval']}, {r.eval_examples:,} examples)"
    console.print(f"[bold]Audit[/bold] of {files}")

    if r.errors:
        table = Table(title=f"Errors ({r.error_count:,})", title_style="bold red", show_lines=False)
        for col in ("file", "line", "problem", "fix"):
            table.add_column(col, overflow="fold", justify="right" if col == "line" else "left")
        shown: dict[str, int] = defaultdict(int)
        for p in r.errors:
            shown[p.kind] += 1
            if shown[p.kind] <= MAX_WARNINGS_PER_KIND:
                table.add_row(Path(p.path).name if p.path else "", str(p.line) if p.line else "", p.what, p.fix)
        hidden = r.error_count - sum(min(n, MAX_WARNINGS_PER_KIND) for n in shown.values())
        if hidden:
            kinds = ", ".join(f"{kind} {n:,}" for kind, n in r.error_counts.items())
            more = f"... {hidden:,} more (all errors by kind: {kinds})"
            table.add_row("", "", more, f"--json lists the first {MAX_KEPT_PER_KIND:,} of each kind")
        console.print(table)

    if r.warnings:
        by_kind: dict[str, list] = defaultdict(list)
        for w in r.warnings:
            by_kind[w.kind].append(w)
        table = Table(title=f"Warnings ({sum(r.warning_counts.values()):,})", title_style="bold yellow")
        for col in ("kind", "warning", "fix"):
            table.add_column(col, overflow="fold")
        for kind, items in by_kind.items():
            for w in items[:MAX_WARNINGS_PER_KIND]:
                table.add_row(kind, w.message, w.fix)
            total = r.warning_counts.get(kind, len(items))
            if total > MAX_WARNINGS_PER_KIND:
                table.add_row(kind, f"... {total - MAX_WARNINGS_PER_KIND:,} more (see --json)", "")
        console.print(table)

    stats = Table(title="Stats", show_header=False, title_style="bold")
    stats.add_column(style="bold")
    stats.add_column(overflow="fold")
    for role, t in r.tokens.items():
        stats.add_row(
            f"{role} tokens",
            f"min {t.min:,}  p50 {t.p50:,.0f}  p95 {t.p95:,.0f}  max {t.max:,}  (total {t.total:,})",
        )
    counter = r.token_counter + (f" — {r.token_note}" if r.token_note else "")
    stats.add_row("token counts", counter)
    count = r.warning_counts.get
    stats.add_row("over context limit", f"{count('too_long', 0):,} example(s) > {r.context_limit:,} tokens")
    if r.labels:
        counts = ", ".join(f"{label} {n}" for label, n in r.labels.counts.items())
        stats.add_row("labels", f"{len(r.labels.counts)} classes, max/min {r.labels.imbalance:.1f}x: {counts}")
    groups = f"{count('duplicate', 0):,} / {count('near_duplicate', 0):,} / {count('conflict', 0):,} group(s)"
    stats.add_row("duplicates / near / conflicts", groups)
    if r.eval_path:
        stats.add_row("train/eval leakage", f"{count('leakage', 0):,} eval example(s)")
    t = r.training
    stats.add_row(
        "hosted training",
        f"{t.training_tokens:,} tokens ({t.tokens_per_epoch:,} x {t.epochs} default epochs) "
        f"x ${t.price_per_1m:.2f}/1M = ${t.cost:,.2f}",
    )
    stats.add_row("volume", r.volume.advice)
    console.print(stats)

    if not r.ok:
        console.print(
            f"[bold red]✗ {r.error_count:,} error(s) on {r.error_lines:,} line(s)[/]: fix them and rerun the audit."
        )
    else:
        warnings = sum(r.warning_counts.values())
        console.print(f"[bold green]✓ no errors[/] ({warnings:,} warning(s)); verdict: {r.volume.level}.")
