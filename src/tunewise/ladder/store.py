"""The run store: one SQLite file listing every run, with forward-only named migrations.

Like simonw/llm's migrations.py: each migration is a function applied once, in order, and recorded
in `_migrations`; never edit one that has shipped, add a new one.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunewise.dirs import home

MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = []


def migration(fn: Callable[[sqlite3.Connection], None]) -> Callable[[sqlite3.Connection], None]:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_runs(db: sqlite3.Connection) -> None:
    db.execute(
        """create table runs (
            id text primary key,
            task text not null,
            run_dir text not null,
            model text,
            metric text,
            status text not null,          -- running | finished | failed | interrupted
            created text not null,
            updated text not null,
            decision text,
            config_hash text
        )"""
    )


@migration
def m002_rung_progress(db: sqlite3.Connection) -> None:
    db.execute(
        """create table rungs (
            run_id text not null references runs(id),
            name text not null,
            status text not null,          -- done | skipped | failed
            score real,
            updated text not null,
            primary key (run_id, name)
        )"""
    )


@migration
def m003_run_owner(db: sqlite3.Connection) -> None:
    # Which process runs a run, so `tunewise runs` can tell a run killed with SIGKILL (which never
    # wrote "interrupted") from one still running. process_started guards against pid reuse.
    db.execute("alter table runs add column pid integer")
    db.execute("alter table runs add column host text")
    db.execute("alter table runs add column process_started text")


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the migrations this database has not seen yet; return their names."""
    db.execute("create table if not exists _migrations (name text primary key, applied text not null)")
    done = {row[0] for row in db.execute("select name from _migrations")}
    applied = []
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        with db:
            fn(db)
            db.execute("insert into _migrations values (?, ?)", (fn.__name__, _now()))
        applied.append(fn.__name__)
    return applied


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3 on of /proc/<pid>/stat (Linux), or None where unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; the fields after its last ')' are plain.
    return stat[stat.rfind(")") + 2 :].split()


def process_started(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot (Linux), or None where unknown: a pid
    the kernel has handed to a new process since has a different value."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None  # field 22, starttime


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether `pid` still names the process that started at `started` (on this host); True when
    that cannot be told."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    fields = _proc_stat(pid)
    if fields is None:
        return True
    if fields[0] == "Z":  # killed, not yet reaped by its parent
        return False
    return started is None or len(fields) <= 19 or fields[19] == started  # else the pid was reused


class RunStore:
    def __init__(self, path: Path | str | None = None) -> None:
        if path is None:
            path = home() / "store.db"
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), timeout=30)
        self.db.row_factory = sqlite3.Row
        migrate(self.db)

    def start(
        self, run_id: str, task: str, run_dir: Path, model: str, metric: str, config_hash: str, pid: int | None = None
    ) -> None:
        """Record a run as running in process `pid` (default: this one) on this host."""
        now = _now()
        pid = os.getpid() if pid is None else pid
        with self.db:
            self.db.execute(
                """insert into runs (id, task, run_dir, model, metric, status, created, updated, config_hash,
                                     pid, host, process_started)
                   values (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)
                   on conflict(id) do update set status='running', updated=excluded.updated, run_dir=excluded.run_dir,
                   pid=excluded.pid, host=excluded.host, process_started=excluded.process_started""",
                (run_id, task, str(run_dir), model, metric, now, now, config_hash, pid, socket.gethostname(), process_started(pid)),
            )

    def record_rung(self, run_id: str, name: str, status: str, score: float | None) -> None:
        with self.db:
            self.db.execute(
                """insert into rungs values (?, ?, ?, ?, ?)
                   on conflict(run_id, name) do update set status=excluded.status, score=excluded.score,
                   updated=excluded.updated""",
                (run_id, name, status, score, _now()),
            )

    def finish(self, run_id: str, status: str, decision: dict[str, Any] | None = None) -> None:
        with self.db:
            self.db.execute(
                "update runs set status=?, updated=?, decision=coalesce(?, decision) where id=?",
                (status, _now(), json.dumps(decision) if decision else None, run_id),
            )

    def runs(self, task: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        sql = "select * from runs" + (" where task=?" if task else "") + " order by updated desc limit ?"
        rows = self.db.execute(sql, ((task, limit) if task else (limit,))).fetchall()
        out = []
        for row in rows:
            item = dict(row)
            if item["status"] == "running" and self._orphaned(item):
                # Killed without cleanup (SIGKILL, power loss): nothing wrote "interrupted"; say so.
                item["status"] = "interrupted"
            item["decision"] = json.loads(item["decision"]) if item["decision"] else None
            item["rungs"] = [
                dict(r) for r in self.db.execute("select name, status, score from rungs where run_id=?", (row["id"],))
            ]
            out.append(item)
        return out

    @staticmethod
    def _orphaned(item: dict[str, Any]) -> bool:
        """A running run whose process on this host is gone. Runs on other hosts, and runs recorded
        before the store kept a pid, cannot be checked and keep their status."""
        if item.get("pid") is None or item.get("host") != socket.gethostname():
            return False
        return not process_alive(int(item["pid"]), item.get("process_started"))

    def get(self, run_id: str) -> dict[str, Any] | None:
        return next((r for r in self.runs(limit=10_000) if r["id"] == run_id), None)

    def close(self) -> None:
        self.db.close()
