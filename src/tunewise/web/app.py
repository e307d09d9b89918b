"""`tunewise ui`: the whole decision in a local web app (FastAPI, server-rendered Jinja2 pages, htmx).

Pages: New decision (data -> audit -> questions -> advice and cost -> metric and rungs -> task file),
Run (the queue, live progress over server-sent events, cancel, resume), Runs (status, verdict,
report, answers side by side, two runs compared), Playground (chat with a rung of a finished run
through `tunewise serve`'s own code).

The pages call the same core the CLI calls: `commands.init` writes the task file, the advisor and
the cost model answer, `run_ladder` runs in a child process (`web.worker`), `report.render` draws
the report, and `serve.config.load_runs` + `serve.app.ChatService` answer the playground.

Security: the app binds 127.0.0.1, every request needs the token (`web.security`), uploads are
size-limited and kept under $TUNEWISE_HOME/web/uploads, and nothing a user types or uploads is ever
executed: the metric is chosen from the registry, and only task files written by this app or the
bundled examples can be run from it.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from tunewise import paths
from tunewise.errors import TunewiseError
from tunewise.web.jobs import FINAL, JobQueue
from tunewise.web.security import TokenGuard

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
DEFAULT_MAX_UPLOAD_BYTES = 100 << 20
MAX_FORM_BYTES = 1 << 20
UPLOAD_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv")
"""Data files only: an upload is read as data, never imported or executed."""
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def web_home() -> Path:
    """The app's own folder: uploads, task files it wrote, job logs."""
    folder = paths.home() / "web"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class WebState:
    token: str
    max_upload_bytes: int
    queue: JobQueue
    templates: Environment
    playground: dict[tuple[str, str], Any] = field(default_factory=dict)
    playground_lock: threading.Lock = field(default_factory=threading.Lock)
    splits: dict[tuple, Any] = field(default_factory=dict)


class UserError(TunewiseError):
    """Something in a form the page shows back to the user in one line."""


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters["money"] = _money
    env.filters["duration"] = _duration
    env.filters["score"] = lambda v: "-" if v is None else f"{v:.3f}"
    env.filters["q"] = lambda v: quote(str(v), safe="")
    return env


def _money(value: float | None) -> str:
    from tunewise.cost.money import fmt_money

    return fmt_money(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds} s"


# -- helpers -------------------------------------------------------------------------------------


async def form_data(request: Request) -> dict[str, list[str]]:
    """An urlencoded form (htmx and plain forms send these); no multipart parser is needed."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise UserError(f"form too large ({len(body)} bytes; at most {MAX_FORM_BYTES})")
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def one(form: dict[str, list[str]], key: str, default: str = "") -> str:
    return (form.get(key) or [default])[0].strip()


def data_path(raw: str, what: str, required: bool = True) -> Path | None:
    if not raw:
        if required:
            raise UserError(f"{what}: give a file path or upload a file")
        return None
    path = Path(raw).expanduser()
    if not path.exists():
        raise UserError(f"{what}: no such file: {path}")
    if what != "corpus" and not path.is_file():
        raise UserError(f"{what}: {path} is a folder; give a data file (.jsonl, .json, .csv, .tsv)")
    return path.resolve()


def data_label(path: Path) -> str:
    """How a data file is named on the page: `intent/train.jsonl`, or `train.jsonl (uploaded)`."""
    if path.is_relative_to((web_home() / "uploads").resolve()):
        return f"{path.name} (uploaded)"
    return f"{path.parent.name}/{path.name}"


def tasks_dir() -> Path:
    folder = web_home() / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def runnable_tasks() -> list[dict[str, str]]:
    """Task files the app may run: those it wrote, and the bundled examples. Never an arbitrary path,
    so a task file naming a custom metric (`file.py:func`) cannot reach the app."""
    out = [{"key": f"web:{p.stem}", "name": p.stem, "path": str(p), "source": "created here"} for p in sorted(tasks_dir().glob("*.yaml"))]
    out += [
        {"key": f"example:{p.parent.name}", "name": p.parent.name, "path": str(p), "source": "bundled example"}
        for p in sorted(EXAMPLES.glob("*/task.yaml"))
    ]
    return out


def task_path_for(key: str) -> Path:
    kind, _, name = key.partition(":")
    if not NAME.match(name or ""):
        raise UserError(f"unknown task {key!r}")
    path = tasks_dir() / f"{name}.yaml" if kind == "web" else EXAMPLES / name / "task.yaml" if kind == "example" else None
    if path is None or not path.is_file():
        raise UserError(f"unknown task {key!r}; pick one from the list")
    return path


def check_runnable(path: Path) -> Any:
    """Load a task and refuse anything that would import code: metrics must be registered names."""
    from tunewise.eval.metrics import METRICS
    from tunewise.task import load_task

    task = load_task(path)
    custom = [m for m in [task.metric, *(task.extra_metrics or [])] if m not in METRICS]
    if custom:
        raise UserError(
            f"{path.name}: metric(s) {', '.join(custom)} are not registered; the web app runs only registered "
            f"metrics ({', '.join(METRICS)}). Run custom metrics with `tunewise run` instead"
        )
    return task


def run_row(run_id: str) -> dict[str, Any]:
    from tunewise.ladder.store import RunStore

    if not NAME.match(run_id):
        raise UserError(f"no run {run_id!r}")
    store = RunStore()
    try:
        row = store.get(run_id)
    finally:
        store.close()
    if row is None:
        raise UserError(f"no run {run_id!r}; the Runs page lists them")
    return row


def run_results(run_id: str) -> tuple[dict[str, Any], Any]:
    from tunewise.ladder.results import load_results

    row = run_row(run_id)
    run_dir = Path(row["run_dir"])
    try:
        return row, load_results(run_dir)
    except TunewiseError:
        return row, None


def read_predictions(run_dir: Path, rung: str) -> list[dict[str, Any]]:
    from tunewise.rungs import RUNGS, split_candidate

    name, model = split_candidate(rung)
    if name not in RUNGS or (model is not None and not (model and all(c.isalnum() or c in "-_." for c in model))):
        raise UserError(f"unknown rung {rung!r}; valid rungs: {', '.join(RUNGS)} (rung@model with several models)")
    path = run_dir / "predictions" / f"{rung}.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


# -- the decision draft (shared by the setup page, the live advice panel and save) -------------


def draft_from_form(form: dict[str, list[str]]) -> Any:
    from tunewise.commands.init import Business, suggest_task
    from tunewise.eval.metrics import METRICS
    from tunewise.rungs import RUNGS

    train = data_path(one(form, "train"), "data file")
    evals = data_path(one(form, "eval"), "eval file", required=False)
    corpus = data_path(one(form, "corpus"), "corpus", required=False)

    def number(key: str, kind: type) -> Any:
        raw = one(form, key).replace(",", "").replace("_", "")
        if not raw:
            return None
        try:
            value = kind(float(raw)) if kind is int else kind(raw)
        except ValueError:
            raise UserError(f"{key.replace('_', ' ')}: expected a number, got {raw!r}") from None
        if value < 0 or (key == "latency_budget_ms" and value == 0):
            raise UserError(f"{key.replace('_', ' ')}: expected a positive number, got {raw!r}")
        return value

    business = Business(
        goals=[g for g in form.get("goals", []) if g],
        calls_per_month=number("calls_per_month", int),
        requirements_change=one(form, "requirements_change") or None,
        needs_fresh_facts=one(form, "needs_fresh_facts") == "yes",
        latency_budget_ms=number("latency_budget_ms", float),
    )
    metric = one(form, "metric") or None
    if metric is not None and metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; registered metrics: {', '.join(METRICS)}")
    rungs = [r for r in form.get("rungs", []) if r]
    bad = [r for r in rungs if r not in RUNGS]
    if bad:
        raise UserError(f"unknown rung(s) {', '.join(bad)}; valid rungs: {', '.join(RUNGS)}")
    name = one(form, "name") or None
    if name is None and train.is_relative_to((web_home() / "uploads").resolve()):
        from tunewise.commands.init import GENERIC_STEMS, safe_name

        # An upload's folder is a random token: name the task after the file, or a plain default.
        stem = safe_name(train.stem)
        name = stem if stem and stem.lower() not in GENERIC_STEMS else "my-task"
    if name is not None and not NAME.match(name):
        raise UserError(f"task name {name!r}: use letters, digits, '-', '_' or '.' only")
    draft = suggest_task(train, evals, corpus, business, name=name, metric=metric, rungs=rungs or None)
    target = number("target", float)
    if target is not None:
        draft.target = target
    return draft


def task_of(draft: Any) -> tuple[str, Any]:
    """The task file's text and the Task it loads as (validated exactly as a saved file would be)."""
    from tunewise.commands.init import render_task_yaml
    from tunewise.task import parse_task, parse_yaml

    out = tasks_dir() / f"{draft.name}.yaml"
    text = render_task_yaml(draft, out)
    return text, parse_task(parse_yaml(text, out), out)


def estimate_for(state: WebState, task: Any) -> Any:
    from tunewise.cost.model import estimate, workload_from_examples
    from tunewise.data.splits import load_splits

    key = (str(task.data.train), str(task.data.eval), str(task.data.file), task.data.eval_fraction, str(task.corpus))
    if key not in state.splits:
        state.splits.clear()  # one data set at a time is what a person edits
        chunk_texts: list[str] = []
        if task.corpus is not None:  # as measure_task does: the chunks retrieval would show
            from tunewise.retrieval.corpus import chunk_documents, load_corpus

            chunks = chunk_documents(load_corpus(task.corpus), task.ladder.rag.chunk_words)
            chunk_texts = [f"{c.title}: {c.text}" if c.title else c.text for c in chunks]
        state.splits[key] = (*load_splits(task), chunk_texts)
    train, evals, chunk_texts = state.splits[key]
    from tunewise.rungs import RUNGS

    return estimate(workload_from_examples(task, train, evals, chunk_texts), RUNGS.values())


def advice_view(state: WebState, draft: Any) -> dict[str, Any]:
    from tunewise.advise import advise
    from tunewise.commands.init import situation_of

    text, task = task_of(draft)
    advice = advise(situation_of(draft))
    try:
        est = estimate_for(state, task)
        est_error = None
    except TunewiseError as err:
        est, est_error = None, str(err)
    return {"advice": advice, "estimate": est, "estimate_error": est_error, "task": task, "draft": draft}


# -- playground ----------------------------------------------------------------------------------


def playground_service(state: WebState, run_id: str, rung: str) -> tuple[str, Any]:
    """(model name, started ChatService) for one rung of a finished run, built by serve's own code."""
    from tunewise.serve.app import ChatService, Limits
    from tunewise.serve.config import load_runs
    from tunewise.web.worker import test_hook_options

    key = (run_id, rung)
    with state.playground_lock:
        if key not in state.playground:
            row = run_row(run_id)
            hooks = test_hook_options()
            configs = load_runs([Path(row["run_dir"])], rung, log=lambda m: None, **{k: v for k, v in hooks.items() if k in ("model", "embedder", "retriever")})
            service = ChatService(configs, Limits())
            service.start()
            name = next(iter(configs))
            state.playground[key] = (name, service)
        return state.playground[key]


def ask_playground(state: WebState, run_id: str, rung: str, history: list[dict[str, str]]) -> str:
    from tunewise.serve.schema import ChatCompletionRequest

    name, service = playground_service(state, run_id, rung)
    _, _, _, job, _, _ = service.admit(ChatCompletionRequest(model=name, messages=history))
    return job.future.result(timeout=600).text


# -- the app -------------------------------------------------------------------------------------


def build_web_app(token: str | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, cwd: Path | None = None) -> FastAPI:
    """The web app; `token` guards every request (a random one when None)."""
    token = token or secrets.token_urlsafe(24)
    queue = JobQueue(web_home() / "jobs", cwd=cwd)
    state = WebState(token, max_upload_bytes, queue, _environment())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await asyncio.to_thread(queue.close)
            for _, service in state.playground.values():
                await asyncio.to_thread(service.stop)

    app = FastAPI(title="tunewise ui", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.web = state
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = state.templates.get_template(template).render(request=request, path=request.url.path, **context)
        return HTMLResponse(html, status_code=status)

    @app.exception_handler(UserError)
    async def user_error(request: Request, err: UserError) -> HTMLResponse:
        if request.headers.get("hx-request"):
            return HTMLResponse(f'<p class="error">{_escape(str(err))}</p>', status_code=200)
        return page(request, "error.html", status=400, message=str(err))

    @app.exception_handler(TunewiseError)
    async def tunewise_error(request: Request, err: TunewiseError) -> HTMLResponse:
        return await user_error(request, UserError(str(err)))

    @app.get("/")
    async def home() -> RedirectResponse:
        return RedirectResponse("/new", status_code=303)

    # -- new decision --------------------------------------------------------------------------

    @app.get("/new")
    async def new(request: Request, train: str = "", eval: str = "", corpus: str = "", error: str = "") -> HTMLResponse:
        example = EXAMPLES / "intent"
        return page(
            request,
            "new.html",
            train=train,
            eval=eval,
            corpus=corpus,
            error=error,
            example={"train": str(example / "train.jsonl"), "eval": str(example / "eval.jsonl")},
            max_upload_mb=state.max_upload_bytes / (1 << 20),
        )

    @app.post("/upload")
    async def upload(request: Request, name: str = "data.jsonl") -> JSONResponse:
        """The raw file as the request body (no multipart); stored under the app's own folder."""
        filename = Path(name).name
        suffix = Path(filename).suffix.lower()
        if suffix not in UPLOAD_SUFFIXES:
            return JSONResponse({"error": f"{filename}: upload a data file ({', '.join(UPLOAD_SUFFIXES)})"}, status_code=400)
        length = request.headers.get("content-length")
        limit = state.max_upload_bytes
        too_big = {"error": f"{filename} is larger than the upload limit of {limit / (1 << 20):g} MiB; give its path instead, or start `tunewise ui --max-upload-mb N`"}
        if length and length.isdigit() and int(length) > limit:
            return JSONResponse(too_big, status_code=413)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", filename).strip("-.") or f"data{suffix}"
        folder = web_home() / "uploads" / secrets.token_hex(8)
        folder.mkdir(parents=True)
        target = folder / safe
        size = 0
        with target.open("wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    f.close()
                    target.unlink()
                    folder.rmdir()
                    return JSONResponse(too_big, status_code=413)
                f.write(chunk)
        return JSONResponse({"path": str(target), "bytes": size})

    @app.get("/new/setup")
    async def setup(request: Request, train: str = "", eval: str = "", corpus: str = "") -> Response:
        from tunewise.advise.questionnaire import QUESTIONS
        from tunewise.data.audit import audit
        from tunewise.eval.metrics import available_metrics
        from tunewise.rungs import RUNGS
        from tunewise.task import Change, Goal

        form = {"train": [train], "eval": [eval], "corpus": [corpus]}
        try:
            draft = await asyncio.to_thread(draft_from_form, form)
            report = await asyncio.to_thread(audit, draft.train, draft.eval)
        except TunewiseError as err:
            return page(request, "new.html", status=400, train=train, eval=eval, corpus=corpus, error=str(err),
                        example={"train": str(EXAMPLES / "intent" / "train.jsonl"), "eval": str(EXAMPLES / "intent" / "eval.jsonl")},
                        max_upload_mb=state.max_upload_bytes / (1 << 20))  # fmt: skip
        view = await asyncio.to_thread(advice_view, state, draft)
        return page(
            request,
            "setup.html",
            audit=report,
            data_label=data_label(draft.train),
            goals=[g.value for g in Goal],
            changes=[c.value for c in Change],
            questions={q.field: q.text.split(" (")[0] for q in QUESTIONS},
            metrics=available_metrics(),
            rungs={n: r for n, r in RUNGS.items()},
            **view,
        )

    @app.post("/new/advice")
    async def advice(request: Request) -> HTMLResponse:
        form = await form_data(request)
        draft = await asyncio.to_thread(draft_from_form, form)
        view = await asyncio.to_thread(advice_view, state, draft)
        return page(request, "advice.html", **view)

    @app.post("/new/save")
    async def save(request: Request) -> RedirectResponse:
        form = await form_data(request)
        draft = await asyncio.to_thread(draft_from_form, form)
        text, task = task_of(draft)
        out = tasks_dir() / f"{draft.name}.yaml"
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
        check_runnable(out)
        return RedirectResponse(f"/run?task=web:{quote(draft.name)}&saved=1", status_code=303)

    # -- run -------------------------------------------------------------------------------------

    @app.get("/run")
    async def run_page(request: Request, task: str = "", saved: str = "") -> HTMLResponse:
        tasks = runnable_tasks()
        selected = next((t for t in tasks if t["key"] == task), None)
        text = Path(selected["path"]).read_text(encoding="utf-8") if selected else None
        jobs = [(j, j.state(), queue.position(j)) for j in queue.list()]
        return page(request, "run.html", tasks=tasks, selected=selected, task_text=text, saved=bool(saved), jobs=jobs)

    @app.post("/run/start")
    async def start(request: Request) -> RedirectResponse:
        form = await form_data(request)
        path = task_path_for(one(form, "task"))
        task = await asyncio.to_thread(check_runnable, path)
        raw_limit = one(form, "limit")
        limit = None
        if raw_limit:
            if not raw_limit.isdigit() or int(raw_limit) < 1:
                raise UserError(f"limit: expected a whole number of examples >= 1, got {raw_limit!r}")
            limit = int(raw_limit)
        job = queue.submit(path, task.name, limit, one(form, "all") == "yes")
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    def job_or_404(job_id: str) -> Any:
        job = queue.jobs.get(job_id)
        if job is None:
            raise UserError(f"no job {job_id!r} in this session; past runs are on the Runs page")
        return job

    @app.get("/jobs/{job_id}")
    async def job_page(request: Request, job_id: str) -> HTMLResponse:
        job = job_or_404(job_id)
        return page(request, "job.html", job=job, s=job.state(), position=queue.position(job), final=FINAL)

    @app.get("/jobs/{job_id}/state")
    async def job_state(job_id: str) -> JSONResponse:
        job = job_or_404(job_id)
        return JSONResponse({**job.state(), "position": queue.position(job)})

    @app.get("/jobs/{job_id}/events")
    async def job_events(request: Request, job_id: str) -> StreamingResponse:
        """Server-sent events: the job's state whenever it changes, until it ends."""
        job = job_or_404(job_id)

        async def stream() -> AsyncIterator[str]:
            last = None
            while True:
                current = json.dumps({**job.state(), "position": queue.position(job)}, default=str)
                if current != last:
                    last = current
                    yield f"event: state\ndata: {current}\n\n"
                if job.status in FINAL:
                    yield "event: end\ndata: {}\n\n"
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.3)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/jobs/{job_id}/cancel")
    async def cancel(job_id: str) -> RedirectResponse:
        job_or_404(job_id)
        queue.cancel(job_id)
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    @app.post("/jobs/{job_id}/resume")
    async def resume(job_id: str) -> RedirectResponse:
        job = job_or_404(job_id)
        await asyncio.to_thread(check_runnable, job.task_path)
        new_job = queue.submit(job.task_path, job.task_name, job.limit, job.all_rungs)
        return RedirectResponse(f"/jobs/{new_job.id}", status_code=303)

    # -- runs --------------------------------------------------------------------------------------

    @app.get("/runs")
    async def runs(request: Request) -> HTMLResponse:
        from tunewise.ladder.store import RunStore

        store = RunStore()
        try:
            rows = store.runs(limit=200)
        finally:
            store.close()
        return page(request, "runs.html", runs=rows)

    @app.get("/runs/{run_id}")
    async def run_detail(request: Request, run_id: str) -> HTMLResponse:
        row, results = run_results(run_id)
        done = [r.name for r in results.rungs if r.status == "done"] if results else []
        return page(request, "run_detail.html", row=row, results=results, done=done)

    @app.get("/runs/{run_id}/files/{name:path}")
    async def run_file(run_id: str, name: str) -> Response:
        """The report and the predictions files it links to; nothing else of the run folder."""
        row, results = run_results(run_id)
        run_dir = Path(row["run_dir"])
        if name == "report.html":
            if not (run_dir / "report.html").is_file():
                if results is None:
                    raise UserError("this run has no results yet; its report is written when a rung finishes")
                from tunewise.report import render_report

                await asyncio.to_thread(render_report, results, run_dir)
            return FileResponse(run_dir / "report.html", media_type="text/html")
        match = re.fullmatch(r"predictions/([a-z_]+)\.jsonl", name)
        if match and (run_dir / name).is_file():
            return FileResponse(run_dir / name, media_type="text/plain; charset=utf-8")
        raise UserError(f"{name}: not a file the app shows (report.html and predictions/<rung>.jsonl only)")

    @app.get("/runs/{run_id}/answers")
    async def answers(request: Request, run_id: str, a: str = "", b: str = "", only: str = "diff", q: str = "") -> HTMLResponse:
        row, results = run_results(run_id)
        if results is None:
            raise UserError("this run has no results yet")
        done = [r.name for r in results.rungs if r.status == "done"]
        if len(done) < 1:
            raise UserError("no rung of this run finished, so there are no answers to show")
        a = a if a in done else done[0]
        b = b if b in done else (done[1] if len(done) > 1 else done[0])
        run_dir = Path(row["run_dir"])
        rows_a, rows_b = read_predictions(run_dir, a), read_predictions(run_dir, b)
        pairs = []
        for ra, rb in zip(rows_a, rows_b):
            differ = abs(float(ra.get("score", 0)) - float(rb.get("score", 0))) > 1e-9 or ra.get("prediction") != rb.get("prediction")
            if only == "diff" and not differ:
                continue
            text = f"{ra.get('input', '')} {ra.get('gold', '')} {ra.get('prediction', '')} {rb.get('prediction', '')}".lower()
            if q and q.lower() not in text:
                continue
            pairs.append((ra, rb))
        alike = only == "diff" and not pairs and not q and bool(rows_a)
        if alike:  # nothing differs: an empty table would look broken, so show them all and say why
            pairs = list(zip(rows_a, rows_b))
        titles = {r.name: r.title for r in results.rungs}
        return page(request, "answers.html", row=row, results=results, done=done, a=a, b=b, only=only, q=q,
                    pairs=pairs[:300], total=len(pairs), titles=titles, n=len(rows_a), alike=alike)  # fmt: skip

    @app.get("/compare")
    async def compare(request: Request, a: str = "", b: str = "") -> HTMLResponse:
        from tunewise.ladder.store import RunStore

        store = RunStore()
        try:
            rows = [r for r in store.runs(limit=200)]
        finally:
            store.close()
        left = right = None
        if a and b:
            left, right = run_results(a), run_results(b)
        names: list[str] = []
        titles: dict[str, str] = {}
        for side in (left, right):
            if side and side[1]:
                names += [r.name for r in side[1].rungs if r.name not in names]
                titles.update({r.name: r.title for r in side[1].rungs})
        return page(request, "compare.html", runs=rows, a=a, b=b, left=left, right=right, names=names, titles=titles)

    # -- playground ------------------------------------------------------------------------------

    @app.get("/playground")
    async def playground(request: Request, run: str = "", rung: str = "") -> HTMLResponse:
        from tunewise.ladder.store import RunStore

        store = RunStore()
        try:
            finished = [r for r in store.runs(limit=200) if r["status"] == "finished"]
        finally:
            store.close()
        results, done = None, []
        if run:
            _, results = run_results(run)
            done = [r.name for r in results.rungs if r.status == "done"] if results else []
            if not rung and results and results.decision and results.decision.rung in done:
                rung = results.decision.rung
            rung = rung if rung in done else (done[0] if done else "")
        return page(request, "playground.html", runs=finished, run=run, rung=rung, results=results, done=done)

    @app.post("/playground/send")
    async def playground_send(request: Request) -> HTMLResponse:
        form = await form_data(request)
        run, rung, message = one(form, "run"), one(form, "rung"), one(form, "message")
        if not message:
            raise UserError("type a message first")
        history = json.loads(one(form, "history") or "[]")
        if not isinstance(history, list) or not all(isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str) for m in history):
            raise UserError("the conversation could not be read; reload the page")
        history = history[-20:] + [{"role": "user", "content": message}]
        try:
            answer = await asyncio.to_thread(ask_playground, state, run, rung, history)
        except TunewiseError:
            raise
        except Exception as err:  # serve's APIError and model failures: shown in the chat
            raise UserError(f"the model could not answer: {getattr(err, 'message', None) or err}") from None
        history.append({"role": "assistant", "content": answer})
        return page(request, "chat_turn.html", message=message, answer=answer, history=json.dumps(history), rung=rung)

    app.add_middleware(TokenGuard, token=token)  # outermost: nothing runs without the token
    return app


def _escape(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))
