"""The web app's run queue: runs wait in order and execute one at a time, each in a child process.

One at a time because a run uses the whole machine (the model, the CPU cores or the GPU). A child
process makes cancel a signal (SIGTERM, which the run turns into a clean interrupt) and keeps a
crashing run from taking the app down. Starting the same task again resumes it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FINAL = ("finished", "failed", "cancelled", "interrupted")
LOSS_LABELS = {"loss": "training loss", "eval_loss": "validation loss"}


@dataclass
class Job:
    id: str
    task_path: Path
    task_name: str
    folder: Path
    limit: int | None = None
    all_rungs: bool = False
    status: str = "queued"  # queued | running | cancelling | finished | failed | cancelled | interrupted
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    process: subprocess.Popen | None = None
    cancel_requested: bool = False

    @property
    def events_path(self) -> Path:
        return self.folder / "events.jsonl"

    @property
    def log_path(self) -> Path:
        return self.folder / "output.log"

    def state(self) -> dict[str, Any]:
        """The job as the page shows it: status, current rung, examples done, ETA, last loss line."""
        out: dict[str, Any] = {
            "id": self.id,
            "task": self.task_name,
            "status": self.status,
            "limit": self.limit,
            "rung": None,
            "done": 0,
            "total": None,
            "eta_s": None,
            "elapsed_s": None,
            "loss": None,
            "log": [],
            "run_id": None,
            "decision": None,
            "message": None,
            "rungs_seen": [],
        }
        train_steps, losses = None, {}
        for event in read_events(self.events_path):
            kind = event.get("event")
            if kind == "start":
                out["run_id"] = event.get("run_id")
            elif kind == "progress":
                out.update(rung=event.get("rung"), done=event.get("done", 0), total=event.get("total"), eta_s=event.get("eta_s"), elapsed_s=event.get("elapsed_s"))
                if out["rung"] not in out["rungs_seen"]:
                    out["rungs_seen"].append(out["rung"])
            elif kind == "loss":
                losses.update({k: event[k] for k in LOSS_LABELS if isinstance(event.get(k), (int, float))})
                parts = [f"{label} {losses[key]:.3f}" for key, label in LOSS_LABELS.items() if key in losses]
                out["loss"] = f"step {event.get('step')}/{event.get('steps')}: " + ", ".join(parts)
                train_steps = event.get("steps")
            elif kind == "log":
                message = str(event.get("message", ""))
                out["log"] = (out["log"] + [message])[-12:]
            elif kind == "finished":
                out.update(run_id=event.get("run_id"), decision=event.get("decision"))
            elif kind == "failed":
                out["message"] = event.get("message")
        if out["total"] is None and train_steps and out["done"]:
            # The fine-tune's step bar has no total; the Trainer's logs know it.
            out["total"] = train_steps
            if out["elapsed_s"]:
                out["eta_s"] = round(out["elapsed_s"] / out["done"] * max(train_steps - out["done"], 0), 1)
        if self.status == "failed" and not out["message"]:
            out["message"] = f"the run stopped unexpectedly; see {self.log_path}"
        if self.status in ("cancelled", "interrupted"):
            out["eta_s"] = None
            out["message"] = "Stopped. Finished work is kept: Resume continues where it stopped." if out["run_id"] else "Cancelled before it started."
        return out


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            break
    return events


class JobQueue:
    """Jobs in submission order; one worker thread starts each child process in turn."""

    def __init__(self, folder: Path, cwd: Path | None = None) -> None:
        self.folder = folder
        self.cwd = cwd
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="tunewise-web-queue", daemon=True)
        self._thread.start()

    def submit(self, task_path: Path, task_name: str, limit: int | None = None, all_rungs: bool = False) -> Job:
        job_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        folder = self.folder / job_id
        folder.mkdir(parents=True, exist_ok=True)
        job = Job(job_id, task_path, task_name, folder, limit, all_rungs)
        with self._lock:
            self.jobs[job_id] = job
            self._lock.notify_all()
        return job

    def list(self) -> list[Job]:
        return sorted(self.jobs.values(), key=lambda j: j.created, reverse=True)

    def position(self, job: Job) -> int:
        """1 for the next job to start; 0 when not waiting."""
        waiting = [j for j in sorted(self.jobs.values(), key=lambda j: j.created) if j.status == "queued"]
        return waiting.index(job) + 1 if job in waiting else 0

    def cancel(self, job_id: str) -> Job | None:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            job.cancel_requested = True
            if job.status == "queued":
                job.status, job.ended = "cancelled", time.time()
            elif job.status == "running" and job.process is not None:
                job.status = "cancelling"
                job.process.send_signal(signal.SIGTERM)
        return job

    def _next(self) -> Job | None:
        with self._lock:
            while not self._closed:
                waiting = sorted((j for j in self.jobs.values() if j.status == "queued"), key=lambda j: j.created)
                if waiting:
                    job = waiting[0]
                    job.status, job.started = "running", time.time()
                    job.process = self._start(job)
                    return job
                self._lock.wait()
        return None

    def _start(self, job: Job) -> subprocess.Popen:
        command = [sys.executable, "-m", "tunewise.web.worker", str(job.task_path), str(job.events_path)]
        if job.limit:
            command += ["--limit", str(job.limit)]
        if job.all_rungs:
            command.append("--all")
        log = job.log_path.open("ab")
        try:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.cwd, env=os.environ.copy())
        finally:
            log.close()

    def _work(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            code = job.process.wait()
            with self._lock:
                job.ended = time.time()
                if job.cancel_requested:
                    job.status = "cancelled"
                elif code == 0:
                    job.status = "finished"
                elif code == 130:
                    job.status = "interrupted"
                else:
                    job.status = "failed"

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; interrupt the running one (its finished work is kept) and wait for it."""
        with self._lock:
            self._closed = True
            running = [j for j in self.jobs.values() if j.status in ("running", "cancelling") and j.process]
            for job in running:
                job.cancel_requested = True
                job.process.send_signal(signal.SIGTERM)
            self._lock.notify_all()
        for job in running:
            try:
                job.process.wait(timeout)
            except subprocess.TimeoutExpired:
                job.process.kill()
        self._thread.join(timeout)
