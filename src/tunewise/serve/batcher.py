"""Dynamic batching: concurrent requests for one model share one `model.generate` call.

One worker thread per model. A request waits in a bounded queue; the worker takes the first one,
waits at most `batch_wait_ms` for more (up to `max_batch`), and generates. Requests queued while
the model is busy are taken at once, so under load batches fill without any extra wait.

Requests in one batch that ask for different `max_tokens` are generated in separate calls, one per
distinct value (largest group first). Generating with the largest value and cutting the others
afterwards would need token-level truncation of decoded text, which does not round-trip; grouping
keeps every answer exactly what `generate(conversation, its own max_tokens)` returns.

A job may name its own model: several adapters on one copy of a base model (serve/adapters.py) share
one worker, and a batch is then grouped by adapter too. A streamed job (`on_piece` set) is generated
alone through `stream()`, its pieces handed to `on_piece` as they come.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from tunewise.models.base import ChatModel, Generation, Messages, stream

log = logging.getLogger("tunewise.serve")


class QueueFull(Exception):
    """The queue holds `max_queue` waiting requests; the caller should retry after `retry_after_s`."""

    def __init__(self, waiting: int, retry_after_s: int) -> None:
        super().__init__(f"{waiting} requests are already waiting")
        self.waiting = waiting
        self.retry_after_s = retry_after_s


class Stopped(Exception):
    """The server is shutting down and takes no new requests."""


@dataclass
class Job:
    messages: Messages  # the built request, exactly what the ladder would send
    max_new_tokens: int
    model: ChatModel | None = None  # None: the batcher's model
    on_piece: Callable[[str], None] | None = None  # set: stream the answer, piece by piece
    cancel: threading.Event = field(default_factory=threading.Event)  # a streaming client went away
    future: Future = field(default_factory=Future)  # resolves to a Generation
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class BatchRecord:
    """One `model.generate` call, for /health and tests."""

    size: int
    max_new_tokens: int
    seconds: float


_STOP = object()


class Batcher:
    """Collects jobs for one model and generates them in batches on a worker thread.

    >>> b = Batcher(FakeModel(respond=lambda m: "hi"), max_queue=8, max_batch=4, batch_wait_ms=5)  # doctest: +SKIP
    >>> b.start(); b.submit(Job([{"role": "user", "content": "x"}], 8)).result().text  # doctest: +SKIP
    'hi'
    """

    def __init__(
        self, model: ChatModel, max_queue: int = 64, max_batch: int = 16, batch_wait_ms: float = 10.0, name: str | None = None
    ) -> None:
        self.model = model
        self.name = name or model.name
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_ms / 1000
        self.history: list[BatchRecord] = []  # the last 1,000 generate calls
        self._queue: queue.Queue = queue.Queue()  # unbounded: the bound is enforced in submit()
        self._lock = threading.Lock()
        self._waiting = 0
        self._running = 0  # jobs inside the current generate call
        self._closed = False
        self._seconds_per_batch = 0.0  # moving average, for Retry-After
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"batcher-{self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new jobs, finish every job already queued, then end the worker (waiting at most
        `timeout` seconds: the worker is a daemon thread, so an unfinished one ends with the process)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_STOP)  # FIFO: everything queued before it is still generated
        if self._thread is not None:
            self._thread.join(timeout)

    # -- producer side --------------------------------------------------------------------------

    def submit(self, job: Job) -> Future:
        """Queue a job; raises QueueFull at once when `max_queue` jobs are waiting, never blocks."""
        with self._lock:
            if self._closed:
                raise Stopped()
            if self._waiting >= self.max_queue:
                raise QueueFull(self._waiting, self.retry_after_s())
            self._waiting += 1
        self._queue.put(job)
        return job.future

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained a batch's worth: queued batches x batch time."""
        batches_ahead = self._waiting / self.max_batch + 1
        return max(1, math.ceil(batches_ahead * self._seconds_per_batch))

    def stats(self) -> dict[str, float | int]:
        recent = self.history[-100:]
        return {
            "waiting": self._waiting,
            "generating": self._running,
            "max_queue": self.max_queue,
            "max_batch": self.max_batch,
            "batches": len(self.history),
            "mean_batch_size": (sum(r.size for r in recent) / len(recent)) if recent else 0.0,
        }

    # -- worker ---------------------------------------------------------------------------------

    def _take(self, block: bool, timeout: float | None = None) -> object:
        item = self._queue.get(block=block, timeout=timeout)
        if item is not _STOP:
            with self._lock:
                self._waiting -= 1
        return item

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._take(block=True)
            if first is _STOP:
                break
            batch = [first]
            deadline = time.perf_counter() + self.batch_wait_s
            while len(batch) < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    # Jobs already queued are taken without waiting, even past the deadline.
                    item = self._take(block=True, timeout=remaining) if remaining > 0 else self._take(block=False)
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        # A job whose caller went away (cancelled future) is not generated.
        live = [j for j in batch if j.future.set_running_or_notify_cancel()]
        groups: dict[tuple[int, int], list[Job]] = {}
        for job in live:
            if job.on_piece is None:
                groups.setdefault((id(job.model or self.model), job.max_new_tokens), []).append(job)
        for (_, max_new_tokens), group in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            model = group[0].model or self.model
            self._running = len(group)
            started = time.perf_counter()
            try:
                generations = model.generate([j.messages for j in group], max_new_tokens)
                if len(generations) != len(group):
                    raise RuntimeError(f"model returned {len(generations)} generations for {len(group)} conversations")
            except Exception as err:  # one failing batch must not kill the worker
                log.exception("generation failed for a batch of %d", len(group))
                for job in group:
                    job.future.set_exception(err)
                continue
            finally:
                self._running = 0
            seconds = time.perf_counter() - started
            self._record(BatchRecord(len(group), max_new_tokens, seconds))
            for job, generation in zip(group, generations):
                job.future.set_result(generation)
        for job in live:
            if job.on_piece is not None:
                self._stream(job)

    def _stream(self, job: Job) -> None:
        """Generate one job through the model's streaming path, handing each piece on as it comes.
        The future resolves to the final Generation; a cancelled job stops the model early."""
        model = job.model or self.model
        self._running = 1
        started = time.perf_counter()
        pieces: list[str] = []
        if job.cancel.is_set():  # the client left while the job waited
            self._running = 0
            job.future.set_result(Generation("", 0, 0, 0.0))
            return
        try:
            it = stream(model, job.messages, job.max_new_tokens)
        except Exception as err:
            self._running = 0
            log.exception("streamed generation failed to start")
            job.future.set_exception(err)
            return
        try:
            generation = None
            while generation is None:
                try:
                    piece = next(it)
                except StopIteration as end:
                    generation = end.value
                    break
                if piece:
                    pieces.append(piece)
                    job.on_piece(piece)  # type: ignore[misc]
                if job.cancel.is_set():
                    break
            if generation is None:  # cancelled, or a backend that returned no Generation
                text = "".join(pieces)
                generation = Generation(text, 0, model.count_tokens(text), time.perf_counter() - started)
        except Exception as err:  # one failing stream must not kill the worker
            log.exception("streamed generation failed")
            job.future.set_exception(err)
            return
        finally:
            it.close()  # stops the backend's generation when the stream ended early
            self._running = 0
        self._record(BatchRecord(1, job.max_new_tokens, time.perf_counter() - started))
        job.future.set_result(generation)

    def _record(self, record: BatchRecord) -> None:
        self.history.append(record)
        del self.history[:-1000]
        alpha = 0.3
        previous = self._seconds_per_batch or record.seconds
        self._seconds_per_batch = (1 - alpha) * previous + alpha * record.seconds

