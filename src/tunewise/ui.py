"""Shared console and progress bars (rich)."""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

def _width(stream) -> int | None:
    """Terminals report their own width; logs and pipes get room for the rung table."""
    return None if stream.isatty() or os.environ.get("COLUMNS") else 160


console = Console(stderr=False, highlight=False, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, width=_width(sys.stderr))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def progress_layout(disable: bool = False) -> Progress:
    """tunewise's one progress layout: description, bar, count, elapsed, ETA. Quiet off a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
        disable=disable or not err_console.is_terminal,
    )


@contextmanager
def progress_bar(description: str, total: int | None) -> Iterator:
    """A rich progress bar with count and ETA; yields advance(n). Quiet when not a terminal."""
    progress = progress_layout()
    with progress:
        task_id = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task_id, n)
