"""Where tunewise keeps things. Tests redirect all of them with environment variables."""

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


def resolve_run(ref: str | Path) -> Path:
    """A run folder as given, else a run id under the runs folder, else a run id in the run store."""
    from tunewise.errors import TunewiseError

    path = Path(ref)
    if path.is_dir():
        return path
    if (runs_dir() / str(ref)).is_dir():
        return runs_dir() / str(ref)
    from tunewise.ladder.store import RunStore

    store = RunStore()
    try:
        row = store.get(str(ref))
    finally:
        store.close()
    if row is not None and Path(row["run_dir"]).is_dir():
        return Path(row["run_dir"])
    raise TunewiseError(f"no run folder or run id {str(ref)!r} (runs folder: {runs_dir()}); list runs with `tunewise runs`")
