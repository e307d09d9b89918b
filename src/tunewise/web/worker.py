"""The child process that runs one ladder for the web app: `python -m tunewise.web.worker TASK EVENTS`.

It runs `run_ladder` exactly as `tunewise run` does and appends what happens to EVENTS, one JSON
object a line, which the app reads to show progress:

    {"event": "start", "run_id": ..., "run_dir": ...}
    {"event": "progress", "rung": "Few-shot (k=8, nearest)", "done": 96, "total": 200, "eta_s": 41.2}
    {"event": "loss", "step": 40, "steps": 120, "loss": 1.93, "eval_loss": 2.01}   (fine-tuning)
    {"event": "log", "message": "..."}
    {"event": "finished", "run_id": ..., "decision": "Use ..."}
    {"event": "interrupted"} | {"event": "failed", "message": "..."}

A child process makes cancel a signal: SIGTERM becomes the CLI's clean interrupt (the run is
recorded as interrupted, finished work is kept, and starting the same task again resumes it).
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

TEST_HOOK_ENV = "TUNEWISE_WEB_TEST_MODEL"
"""Tests only: `module:function` returning RunOptions fields (e.g. {"model": FakeModel(...)}).

Read from the environment of the process that starts the app, never from a request, so nothing a
user types or uploads in the web app can name code to run."""

PROGRESS_EVERY_S = 0.25


def test_hook_options() -> dict[str, Any]:
    """RunOptions fields from the test hook, or {} (the task's own model) when it is unset."""
    spec = os.environ.get(TEST_HOOK_ENV)
    if not spec:
        return {}
    module, _, function = spec.partition(":")
    return dict(getattr(importlib.import_module(module), function)())


class Events:
    """Appends one JSON line per event and flushes it, so the app sees progress at once."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")

    def emit(self, event: str, **fields: Any) -> None:
        self.file.write(json.dumps({"event": event, "t": time.time(), **fields}, ensure_ascii=False, default=str) + "\n")
        self.file.flush()


class _LogLines(io.TextIOBase):
    """A text stream that turns each printed line into a log event (training's loss lines)."""

    def __init__(self, events: Events) -> None:
        self.events, self.buffer = events, ""

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            if line.strip():
                self.events.emit("log", message=line.rstrip())
        return len(text)

    def isatty(self) -> bool:
        return False


def progress_factory(events: Events):
    """run_ladder's progress contract, (description, total) -> context yielding advance(n), as events."""

    @contextmanager
    def progress(description: str, total: int | None) -> Iterator:
        started = time.monotonic()
        state = {"done": 0, "sent": 0.0}

        def send(force: bool = False) -> None:
            now = time.monotonic()
            if not force and now - state["sent"] < PROGRESS_EVERY_S:
                return
            state["sent"] = now
            done, elapsed = state["done"], now - started
            eta = elapsed / done * (total - done) if total and done else None
            events.emit("progress", rung=description, done=done, total=total, elapsed_s=round(elapsed, 1), eta_s=None if eta is None else round(eta, 1))

        def advance(n: int = 1) -> None:
            state["done"] += n
            send(force=total is not None and state["done"] >= total)

        send(force=True)
        yield advance
        send(force=True)

    return progress


def install_training_events(events: Events) -> None:
    """Add a callback to every fine-tune in this process that reports the logged training and
    validation loss with the step count (the Trainer logs about ten times an epoch).

    `train_model` builds its callbacks with `finetune.train._callbacks`; wrapping it here, in the
    run's own child process, leaves the training code and every other caller untouched.
    """
    import tunewise.finetune.train as train

    build = train._callbacks

    def with_loss_events(progress: Any, extra: Any) -> list[Any]:
        from transformers import TrainerCallback

        class LossEvents(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
                logs = logs or {}
                values = {k: float(logs[k]) for k in ("loss", "eval_loss") if isinstance(logs.get(k), (int, float))}
                if values:
                    events.emit("loss", step=state.global_step, steps=state.max_steps, **values)

        return [*build(progress, extra), LossEvents()]

    train._callbacks = with_loss_events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunewise.web.worker")
    parser.add_argument("task")
    parser.add_argument("events")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--all", dest="all_rungs", action="store_true")
    parser.add_argument("--rungs")
    args = parser.parse_args(argv)

    from rich.console import Console

    import tunewise.ui
    from tunewise.cli import _quiet_libraries, _stop_on_sigterm
    from tunewise.errors import TunewiseError

    _quiet_libraries()
    _stop_on_sigterm()
    events = Events(Path(args.events))
    # The fine-tune rung draws its own step bar and prints its loss table through tunewise.ui (it
    # imports them when it runs): route both to the event file too.
    tunewise.ui.progress_bar = progress_factory(events)
    tunewise.ui.err_console = Console(file=_LogLines(events), width=200, highlight=False, no_color=True)
    install_training_events(events)
    try:
        from tunewise.ladder.run import RunOptions, prepare_run, run_ladder
        from tunewise.task import load_task

        task = load_task(args.task)
        options = RunOptions(
            rungs=[r.strip() for r in args.rungs.split(",") if r.strip()] if args.rungs else None,
            all_rungs=args.all_rungs,
            eval_limit=args.limit,
            **test_hook_options(),
        )
        run_id, run_dir = prepare_run(task, options)
        events.emit("start", run_id=run_id, run_dir=str(run_dir.resolve()), task=task.name)
        results = run_ladder(task, options, progress=progress_factory(events), log=lambda m: events.emit("log", message=m))
        decision = results.decision.sentence if results.decision else None
        events.emit("finished", run_id=results.run_id, decision=decision)
        return 0
    except KeyboardInterrupt:
        events.emit("interrupted")
        return 130
    except TunewiseError as err:
        events.emit("failed", message=str(err))
        return 2
    except Exception as err:  # shown to the user in the page; the full traceback is in output.log
        import traceback

        traceback.print_exc()
        events.emit("failed", message=f"{type(err).__name__}: {err}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
