"""Where tunewise keeps things (`tunewise.dirs`, re-exported here), and which run folder a run id names.

Tests redirect all of them with environment variables."""

from __future__ import annotations

from pathlib import Path

from tunewise.dirs import cache_dir, home, runs_dir

__all__ = ["cache_dir", "home", "resolve_run", "runs_dir"]


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
