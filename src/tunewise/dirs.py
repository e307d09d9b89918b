"""Where tunewise keeps things. Tests redirect all of them with environment variables.

The leaf every other module may import: it imports nothing from tunewise. `tunewise.paths` re-exports
these and adds `resolve_run`, which looks run ids up in the run store (`tunewise.ladder.store`, which
itself needs `home()` from here).
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The run store and caches: $TUNEWISE_HOME, else ~/.tunewise."""
    return Path(os.environ.get("TUNEWISE_HOME") or Path.home() / ".tunewise")


def cache_dir(kind: str) -> Path:
    """A cache folder, e.g. cache_dir("embeddings"). Safe to delete."""
    path = home() / "cache" / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Run folders: $TUNEWISE_RUNS, else ./runs."""
    return Path(os.environ.get("TUNEWISE_RUNS") or "runs")
