"""The run store: migrations on an in-memory database, and runs killed with SIGKILL shown as interrupted."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

from click.testing import CliRunner

from tunewise.cli import cli
from tunewise.ladder.store import MIGRATIONS, RunStore, migrate


def test_migrations_are_named_forward_only_and_reach_an_old_database():
    db = sqlite3.connect(":memory:")
    old = [m for m in MIGRATIONS if m.__name__ in ("m001_runs", "m002_rung_progress")]
    db.execute("create table _migrations (name text primary key, applied text not null)")
    for fn in old:  # a store written by a tunewise that knew only the first two
        fn(db)
        db.execute("insert into _migrations values (?, 'then')", (fn.__name__,))
    db.execute("insert into runs (id, task, run_dir, status, created, updated) values ('a', 't', '/r', 'running', 'x', 'x')")
    applied = migrate(db)
    assert applied == [m.__name__ for m in MIGRATIONS[2:]] and "m003_run_owner" in applied
    assert migrate(db) == []
    columns = {r[1] for r in db.execute("pragma table_info(runs)")}
    assert {"pid", "host", "process_started"} <= columns
    assert [m.__name__ for m in MIGRATIONS] == sorted(m.__name__ for m in MIGRATIONS)


def _killed_child_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child.send_signal(signal.SIGKILL)
    child.wait()
    return child.pid


def test_a_run_whose_process_is_gone_is_listed_as_interrupted(tmp_path):
    store = RunStore(tmp_path / "store.db")
    store.start("alive", "t", tmp_path, "m", "accuracy", "h1")  # this process: still running
    store.start("dead", "t", tmp_path, "m", "accuracy", "h2", pid=_killed_child_pid())
    store.start("done", "t", tmp_path, "m", "accuracy", "h3", pid=_killed_child_pid())
    store.finish("done", "finished")
    status = {r["id"]: r["status"] for r in store.runs()}
    assert status == {"alive": "running", "dead": "interrupted", "done": "finished"}
    assert store.get("alive")["pid"] == os.getpid()
    store.close()


def test_tunewise_runs_shows_a_sigkilled_run_as_interrupted():
    """The real thing: a process starts a run in the store and dies by SIGKILL, no cleanup at all."""
    code = textwrap.dedent(
        """
        import os, signal
        from pathlib import Path
        from tunewise.ladder.store import RunStore
        RunStore().start("toy-killed", "toy", Path("runs/toy-killed"), "fake", "accuracy", "killed")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    child = subprocess.run([sys.executable, "-c", code], env=os.environ.copy())  # TUNEWISE_HOME is the test's
    assert child.returncode == -signal.SIGKILL
    out = CliRunner().invoke(cli, ["runs"])
    assert out.exit_code == 0, out.output
    line = next(line for line in out.output.splitlines() if "toy-killed" in line)
    assert "interrupted" in line and "running" not in line
