"""The web app through FastAPI's TestClient: every route, the token, uploads, the run queue (real
child processes with a fake model), cancel and resume, the playground. No browser, no real model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from conftest import EXAMPLES
from tunewise.ladder.store import RunStore
from tunewise.task import load_task
from tunewise.web.app import build_web_app

TOKEN = "test-token-abc"
INTENT = EXAMPLES / "intent"
TESTS = Path(__file__).resolve().parent
FINAL = ("finished", "failed", "cancelled", "interrupted")


@pytest.fixture
def fake_model(monkeypatch):
    """Runs and the playground use the fake intent model (tests/test_web_fakes.py) via the test hook."""
    monkeypatch.setenv("TUNEWISE_WEB_TEST_MODEL", "test_web_fakes:fake_run_options")
    monkeypatch.setenv("PYTHONPATH", str(TESTS))


@pytest.fixture
def client(isolated, fake_model, tmp_path):
    app = build_web_app(TOKEN, max_upload_bytes=4096, cwd=tmp_path)
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        assert c.get(f"/new?token={TOKEN}", follow_redirects=False).status_code == 303
        yield c


def intent_form(**overrides) -> dict:
    form = {
        "train": str(INTENT / "train.jsonl"),
        "eval": str(INTENT / "eval.jsonl"),
        "corpus": "",
        "goals": ["format"],
        "calls_per_month": "200000",
        "requirements_change": "yearly",
        "latency_budget_ms": "",
        "metric": "accuracy",
        "rungs": ["zero_shot", "few_shot"],
        "name": "intent-web",
        "target": "0.8",
    }
    form.update(overrides)
    return form


def wait_for(client: TestClient, job_url: str, statuses=FINAL, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = client.get(job_url + "/state").json()
        if state["status"] in statuses:
            return state
        assert time.monotonic() < deadline, f"job stuck: {state}"
        time.sleep(0.2)


def start(client: TestClient, task: str, limit: str = "40") -> str:
    r = client.post("/run/start", data={"task": task, "limit": limit}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return r.headers["location"]


# -- the token -------------------------------------------------------------------------------------


def test_every_request_needs_the_token(isolated, tmp_path):
    app = build_web_app(TOKEN, cwd=tmp_path)
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        for method, url in [("get", "/new"), ("get", "/static/htmx.min.js"), ("get", "/runs"), ("post", "/upload?name=a.jsonl"), ("get", "/nope")]:
            assert getattr(c, method)(url).status_code == 403, url
        assert c.get("/new?token=wrong").status_code == 403
        assert "tunewise ui" in c.get("/new").text  # the refusal says where the link is
        r = c.get(f"/runs?x=1&token={TOKEN}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/runs?x=1"  # token leaves the address bar
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert c.get("/runs").status_code == 200  # the cookie now
        assert c.get("/static/htmx.min.js").status_code == 200
        c.cookies.clear()
        c.cookies.set("tunewise_ui_8765", "forged")
        assert c.get("/runs").status_code == 403


def test_cross_origin_posts_are_refused(client):
    r = client.post("/new/advice", data=intent_form(), headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert client.post("/new/advice", data=intent_form(), headers={"Origin": "http://127.0.0.1:8765"}).status_code == 200


def test_ui_command_is_registered():
    from click.testing import CliRunner

    from tunewise.cli import cli

    result = CliRunner().invoke(cli, ["ui", "--help"])
    assert result.exit_code == 0 and "127.0.0.1" in result.output


# -- uploads ---------------------------------------------------------------------------------------


def test_uploads_are_size_limited_and_kept_in_the_apps_folder(client, isolated):
    r = client.post("/upload?name=../../my data.jsonl", content=b'{"prompt": "a", "completion": "b"}\n')
    assert r.status_code == 200
    stored = Path(r.json()["path"])
    assert stored.is_file() and stored.name == "my-data.jsonl"
    assert stored.resolve().is_relative_to((isolated / "web" / "uploads").resolve())
    too_big = client.post("/upload?name=big.jsonl", content=b"x" * 5000)
    assert too_big.status_code == 413 and "upload limit" in too_big.json()["error"]
    streamed = client.post("/upload?name=big.jsonl", content=iter([b"x" * 3000, b"x" * 3000]))  # no Content-Length
    assert streamed.status_code == 413
    assert sorted(p.name for p in (isolated / "web" / "uploads").rglob("*") if p.is_file()) == ["my-data.jsonl"]
    code = client.post("/upload?name=metric.py", content=b"import os")
    assert code.status_code == 400 and ".jsonl" in code.json()["error"]


def test_an_uploaded_file_feeds_the_setup_page(client):
    text = (INTENT / "train.jsonl").read_text()[:4000].rsplit("\n", 1)[0] + "\n"
    path = client.post("/upload?name=small.jsonl", content=text.encode()).json()["path"]
    r = client.get("/new/setup", params={"train": path})
    assert r.status_code == 200
    assert "no eval file" in r.text
    assert "small.jsonl (uploaded)" in r.text and 'id="name" name="name" type="text" value="small"' in r.text


# -- new decision ----------------------------------------------------------------------------------


def test_new_decision_pages(client):
    assert client.get("/", follow_redirects=False).headers["location"] == "/new"
    page = client.get("/new").text
    assert 'id="use-example"' in page and str(INTENT / "train.jsonl") in page
    setup = client.get("/new/setup", params={"train": str(INTENT / "train.jsonl"), "eval": str(INTENT / "eval.jsonl")})
    assert setup.status_code == 200
    assert "493 examples" in setup.text and "200 held out" in setup.text  # the audit
    assert 'value="accuracy" selected' in setup.text  # the suggested metric, with why
    assert "look like labels" in setup.text
    assert 'id="recommendation"' in setup.text and 'id="estimate"' in setup.text
    assert "needs knowledge documents" in setup.text  # RAG rungs without a corpus say why they are off


def test_advice_and_cost_follow_the_answers(client):
    low = client.post("/new/advice", data=intent_form(calls_per_month="100", goals=["format"]))
    high = client.post("/new/advice", data=intent_form(calls_per_month="50000000", goals=["format", "cost"]))
    assert low.status_code == high.status_code == 200
    assert "Cost at 100 calls/month" in low.text and "Cost at 50,000,000 calls/month" in high.text
    assert low.text.split('id="recommendation"')[1][:200] != high.text.split('id="recommendation"')[1][:200]
    bad = client.post("/new/advice", data=intent_form(calls_per_month="lots"), headers={"HX-Request": "true"})
    assert 'class="error"' in bad.text and "expected a number" in bad.text


def test_save_writes_a_task_file_that_loads(client, isolated):
    r = client.post("/new/save", data=intent_form(), follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/run?task=web:intent-web&saved=1"
    path = isolated / "web" / "tasks" / "intent-web.yaml"
    task = load_task(path)
    assert (task.metric, task.target, task.ladder.rungs) == ("accuracy", 0.8, ["zero_shot", "few_shot"])
    assert task.business.calls_per_month == 200000 and task.business.requirements_change.value == "yearly"
    assert path.read_text().startswith("# tunewise run ")
    run_page = client.get(r.headers["location"])
    assert 'id="saved"' in run_page.text and "intent-web (created here)" in run_page.text


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("metric", "evil.py:score", "unknown metric"),
        ("rungs", ["zero_shot", "telepathy"], "unknown rung"),
        ("name", "../escape", "task name"),
        ("train", "/no/such/file.jsonl", "no such file"),
    ],
)
def test_bad_form_values_are_refused_with_a_reason(client, isolated, field, value, message):
    r = client.post("/new/save", data=intent_form(**{field: value}), follow_redirects=False)
    assert r.status_code == 400 and message in r.text
    assert not list((isolated / "web" / "tasks").glob("*.yaml"))


def test_setup_with_a_missing_file_shows_the_form_again(client):
    r = client.get("/new/setup", params={"train": "/no/such.jsonl"})
    assert r.status_code == 400 and 'id="error"' in r.text and "no such file" in r.text and 'id="data-form"' in r.text


# -- runs ------------------------------------------------------------------------------------------


def test_only_registered_metrics_and_known_task_files_run(client, isolated):
    folder = isolated / "web" / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    raw = yaml.safe_load((INTENT / "task.yaml").read_text())
    raw["data"] = {"train": str(INTENT / "train.jsonl"), "eval": str(INTENT / "eval.jsonl")}
    marker = isolated / "imported"
    (isolated / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef score(prediction, example):\n    return 1.0\n")
    raw["metric"] = str(isolated / "evil.py") + ":score"
    (folder / "sneaky.yaml").write_text(yaml.safe_dump(raw))
    r = client.post("/run/start", data={"task": "web:sneaky"})
    assert r.status_code == 400 and "not registered" in r.text
    assert not marker.exists()  # refused without importing the file
    for key in ("web:../../etc/passwd", "file:/tmp/x", "example:nope"):
        assert client.post("/run/start", data={"task": key}).status_code == 400


def test_a_run_from_the_form_to_the_playground(client, isolated):
    client.post("/new/save", data=intent_form())
    first = start(client, "web:intent-web")
    second = start(client, "example:intent", limit="16")  # waits: one run at a time
    waiting = client.get(second + "/state").json()
    assert waiting["status"] == "queued" and waiting["position"] == 1  # the first takes seconds to start
    assert 'hx-trigger="every 2s"' in client.get("/run").text  # the queue refreshes itself while busy
    state = wait_for(client, first)
    assert state["status"] == "finished", state
    assert state["run_id"].startswith("intent-web-") and state["decision"]
    assert state["done"] == state["total"] and state["total"] > 0 and state["rung"]
    page = client.get(first)
    assert 'id="job-status"' in page.text and "finished" in page.text

    events = client.get(first + "/events").text  # a finished job: its state, then the end
    assert "event: state" in events and events.rstrip().endswith("event: end\ndata: {}")
    client.post(second + "/cancel")  # no need to train LoRA on the bundled example here
    assert wait_for(client, second)["status"] == "cancelled"
    assert 'hx-trigger="every 2s"' not in client.get("/run").text  # and stops when nothing is left

    run_id = state["run_id"]
    runs = client.get("/runs").text
    assert run_id in runs and "finished" in runs and state["decision"][:40] in runs
    detail = client.get(f"/runs/{run_id}")
    assert detail.status_code == 200 and 'id="report-frame"' in detail.text
    report = client.get(f"/runs/{run_id}/files/report.html")
    assert report.status_code == 200 and 'id="verdict"' in report.text and 'id="errors"' in report.text
    assert client.get(f"/runs/{run_id}/files/predictions/zero_shot.jsonl").status_code == 200
    for name in ("config.yaml", "../../../etc/passwd", "predictions/../config.yaml"):
        assert client.get(f"/runs/{run_id}/files/{name}").status_code in (400, 404)
    assert client.get("/runs/not-a-run").status_code == 400

    answers = client.get(f"/runs/{run_id}/answers", params={"a": "zero_shot", "b": "few_shot", "only": "all"})
    assert answers.status_code == 200
    rows = [json.loads(line) for line in (Path(RunStore().get(run_id)["run_dir"]) / "predictions" / "zero_shot.jsonl").read_text().splitlines()]
    assert rows[0]["gold"] in answers.text and f"{len(rows)} of {len(rows)} examples" in answers.text
    compared = client.get("/compare", params={"a": run_id, "b": run_id})
    assert compared.status_code == 200 and 'id="compare"' in compared.text

    playground = client.get("/playground", params={"run": run_id})
    assert playground.status_code == 200 and 'id="chat-form"' in playground.text
    reply = client.post("/playground/send", data={"run": run_id, "rung": "few_shot", "message": "will it rain in Paris tomorrow", "history": "[]"})
    assert '<div class="turn assistant" data-rung="few_shot">get_weather</div>' in reply.text
    history = json.loads(reply.text.split('value="')[-1].split('"')[0].replace("&#34;", '"').replace("&#39;", "'"))
    assert history[-1] == {"role": "assistant", "content": "get_weather"}
    bad = client.post("/playground/send", data={"run": run_id, "rung": "few_shot", "message": "hi", "history": '[{"role": "system", "content": "x"}]'}, headers={"HX-Request": "true"})
    assert "could not be read" in bad.text


def test_cancel_is_a_signal_and_starting_again_resumes(client, isolated, monkeypatch):
    monkeypatch.setenv("TUNEWISE_WEB_TEST_MODEL", "test_web_fakes:slow_run_options")
    client.post("/new/save", data=intent_form(target=""))
    job = start(client, "web:intent-web", limit="")
    wait_for(client, job, statuses=("running",))
    deadline = time.monotonic() + 60
    while client.get(job + "/state").json()["done"] < 5:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    r = client.post(job + "/cancel", follow_redirects=False)
    assert r.status_code == 303
    state = wait_for(client, job)
    assert state["status"] == "cancelled"
    row = RunStore().get(state["run_id"])
    assert row["status"] == "interrupted"  # the child's clean interrupt, recorded by the ladder
    assert Path(row["run_dir"], "config.yaml").is_file()

    monkeypatch.setenv("TUNEWISE_WEB_TEST_MODEL", "test_web_fakes:fake_run_options")
    page = client.get(job).text
    assert 'id="resume-form"' in page and 'id="resume-form" hidden' not in page
    resumed = client.post(job + "/resume", follow_redirects=False).headers["location"]
    assert resumed != job
    final = wait_for(client, resumed)
    assert final["status"] == "finished" and final["run_id"] == state["run_id"]  # the same run, resumed
    assert RunStore().get(state["run_id"])["status"] == "finished"


def test_empty_pages_say_what_to_do_first(client):
    assert "No runs yet" in client.get("/runs").text
    assert "No finished run yet" in client.get("/playground").text
    assert "No runs started in this session" in client.get("/run").text
    assert client.get("/jobs/nope").status_code == 400


def test_fine_tuning_reports_loss_and_steps(tmp_path, monkeypatch):
    """The run's child process adds a Trainer callback that reports each logged loss with the step count."""
    from types import SimpleNamespace

    pytest.importorskip("transformers")
    import tunewise.finetune.train as train
    from tunewise.web.jobs import Job
    from tunewise.web.worker import Events, install_training_events, progress_factory

    monkeypatch.setattr(train, "_callbacks", train._callbacks)  # restored after the test
    job = Job("j", tmp_path / "t.yaml", "t", tmp_path)
    events = Events(job.events_path)
    install_training_events(events)
    callbacks = train._callbacks(None, [])
    reporter = callbacks[-1]
    with progress_factory(events)("Fine-tuning (lora) steps", None) as advance:
        advance(3)
        time.sleep(0.3)
        advance(1)  # throttled sends: a second one after the interval
        reporter.on_log(None, SimpleNamespace(global_step=4, max_steps=10), None, logs={"loss": 1.2345, "learning_rate": 1e-4})
        reporter.on_log(None, SimpleNamespace(global_step=4, max_steps=10), None, logs={"eval_loss": 1.5})
        state = job.state()
    assert state["rung"] == "Fine-tuning (lora) steps" and state["done"] == 4
    assert state["total"] == 10 and state["eta_s"] is not None and state["eta_s"] > 0
    assert state["loss"] == "step 4/10: training loss 1.234, validation loss 1.500"
    losses = [e for e in map(json.loads, job.events_path.read_text().splitlines()) if e["event"] == "loss"]
    assert [(e.get("loss"), e.get("eval_loss")) for e in losses] == [(1.2345, None), (None, 1.5)]


def test_the_command_prints_a_private_url_and_stops_on_sigterm(isolated):
    import re
    import signal
    import subprocess
    import sys

    import httpx

    process = subprocess.Popen([sys.executable, "-m", "tunewise.cli", "ui", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:(\d+)/)\?token=(\S+)", line)
        assert url, line
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get(url.group(0), follow_redirects=True, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert page.status_code == 200 and 'id="data-form"' in page.text
        assert httpx.get(url.group(1) + "new").status_code == 403  # the URL without its token
        # The same port again: one clear line, and no URL that would not work.
        busy = subprocess.run([sys.executable, "-m", "tunewise.cli", "ui", "--port", url.group(2)], capture_output=True, text=True, timeout=60)
        assert busy.returncode == 1 and "in use" in busy.stderr and "token=" not in busy.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
