"""The server against hostile or careless clients (issue 16): slow clients, a bounded shutdown, lone
surrogates, strict types, no internals in responses. Fake models only; every wait is bounded."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from click.testing import CliRunner

from conftest import ROOT
from test_serve import KEY, client, free_port, serve, toy_config, user, wait_until  # noqa: F401 - serve is a fixture
from tunewise.models.base import FakeModel

AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


def raw_connection(server) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.settimeout(10)
    return sock


def closed_after(sock: socket.socket, limit_s: float) -> tuple[float, bytes]:
    """Seconds until the server closed the connection (reading whatever it answered first)."""
    started = time.monotonic()
    received = b""
    sock.settimeout(limit_s)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                break
            received += data
    except (TimeoutError, socket.timeout):
        return float("inf"), received
    except ConnectionResetError:
        pass
    return time.monotonic() - started, received


# -- slow clients -------------------------------------------------------------------------------


def test_a_body_that_stops_short_is_answered_408_and_closed_within_the_read_timeout(serve):
    model = FakeModel(respond=lambda m: "ok")
    server = serve({"toy": toy_config(model)}, read_timeout_s=1.0)
    sock = raw_connection(server)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"model": ')  # 10 of the 100 declared bytes, then nothing
    seconds, answer = closed_after(sock, limit_s=8)
    assert seconds < 4, "the server held a connection whose body stopped arriving"
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
    assert model.calls == []
    # The server still answers everyone else.
    assert client(server).chat.completions.create(model="toy", messages=user("a")).choices[0].message.content == "ok"


def test_trickled_headers_are_cut_off_at_the_read_timeout(serve):
    server = serve({"toy": toy_config(FakeModel(respond=lambda m: "ok"))}, read_timeout_s=1.0)
    sock = raw_connection(server)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    closed = False
    # One header byte every 0.2 s: each arrives well within any idle timeout, the headers never end.
    while time.monotonic() - started < 6:
        try:
            sock.sendall(b"X")
        except OSError:  # broken pipe / reset: the server closed it
            closed = True
            break
        sock.settimeout(0.2)
        try:
            if sock.recv(4096) == b"":
                closed = True
                break
        except (TimeoutError, socket.timeout):
            pass
        except ConnectionResetError:
            closed = True
            break
    assert closed and time.monotonic() - started < 4, "trickled headers held the connection"


def test_a_silent_connection_is_closed_at_the_read_timeout(serve):
    server = serve({"toy": toy_config(FakeModel(respond=lambda m: "ok"))}, read_timeout_s=1.0)
    seconds, _ = closed_after(raw_connection(server), limit_s=8)
    assert seconds < 4


STALLED_SERVER = """
import sys
from tunewise.rungs.base import Prepared, Request
from tunewise.models.base import FakeModel
from tunewise.serve.app import build_app
from tunewise.serve.config import ServedConfig
from tunewise.serve.server import run_server

config = ServedConfig(Prepared(FakeModel(respond=lambda m: "ok"), lambda turns: Request(list(turns))), "toy", "zero_shot", 8)
# A read timeout far longer than the test: only the bounded shutdown can end the stalled request.
app = build_app({"toy": config}, read_timeout_s=600)
run_server(app, "127.0.0.1", int(sys.argv[1]), "warning", read_timeout_s=600, shutdown_timeout_s=2)
print("EXITED", flush=True)
"""


def test_sigterm_ends_the_server_within_the_shutdown_timeout_despite_a_stalled_body(tmp_path):
    script = tmp_path / "stalled_server.py"
    script.write_text(STALLED_SERVER)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(url), timeout=60)
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b'{"model": ')
        time.sleep(0.5)  # the request is in the app, waiting for the other 90 bytes
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("the server was still running 15 s after SIGTERM")
        seconds = time.monotonic() - started
        sock.close()
    finally:
        proc.kill()
    assert seconds < 8 and proc.returncode == 0 and "EXITED" in out


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# -- hostile content ----------------------------------------------------------------------------


def test_a_lone_surrogate_is_a_400_not_a_500(serve):
    def tokenizer_like(messages):
        for m in messages:
            m["content"].encode("utf-8")  # what a real tokenizer trips over
        return "ok"

    model = FakeModel(respond=tokenizer_like)
    server = serve({"toy": toy_config(model)})
    for body in (
        b'{"model": "toy", "messages": [{"role": "user", "content": "hi \\ud800 there"}]}',
        b'{"model": "toy", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}',
        b'{"model": "toy", "messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud800"]}',
    ):
        r = httpx.post(server.url + "/v1/chat/completions", headers=AUTH, content=body)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_request" and "surrogate" in error["message"]
    assert model.calls == []


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"max_tokens": "5"}, "max_tokens"),
        ({"messages": [{"role": "user", "content": None}]}, "messages.0.content"),
        ({"messages": [{"role": "user"}]}, "messages.0.content"),
        ({"stream": "true"}, "stream"),
        ({"n": 1.0}, "n"),
        ({"temperature": "0"}, "temperature"),
    ],
)
def test_strict_types_reject_what_json_did_not_say(serve, fields, param):
    model = FakeModel(respond=lambda m: "ok")
    server = serve({"toy": toy_config(model)})
    r = httpx.post(server.url + "/v1/chat/completions", headers=AUTH, json={"model": "toy", "messages": user("a"), **fields})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert model.calls == []


def test_numbers_json_does_say_are_still_accepted(serve):
    server = serve({"toy": toy_config(FakeModel(respond=lambda m: "ok"))})
    r = httpx.post(server.url + "/v1/chat/completions", headers=AUTH, json={"model": "toy", "messages": user("a"), "temperature": 0, "top_p": 1, "max_tokens": 5})
    assert r.status_code == 200, r.text


# -- small things (issue 16, item 9) --------------------------------------------------------------


def test_head_health_is_200(serve):
    server = serve({"toy": toy_config(FakeModel(respond=lambda m: "ok"))})
    r = httpx.head(server.url + "/health", headers=AUTH)
    assert r.status_code == 200 and r.content == b""


def test_models_show_the_run_name_not_its_path(serve, tmp_path):
    run_dir = tmp_path / "secret-home" / "runs" / "toy-1a2b3c"
    server = serve({"toy": toy_config(FakeModel(respond=lambda m: "ok"), run_dir=run_dir)})
    r = httpx.get(server.url + "/v1/models", headers=AUTH)
    assert r.json()["data"][0]["tunewise"]["run"] == "toy-1a2b3c"
    assert "secret-home" not in r.text and str(tmp_path) not in r.text


def test_a_500_logs_the_error_and_answers_a_generic_message_with_a_request_id(serve, caplog):
    def broken(messages):
        raise RuntimeError("disk /home/alice/.cache/weights is corrupt")

    server = serve({"toy": toy_config(FakeModel(respond=broken))})
    with caplog.at_level(logging.ERROR, logger="tunewise.serve"):
        r = httpx.post(server.url + "/v1/chat/completions", headers=AUTH, json={"model": "toy", "messages": user("a")})
        streamed = httpx.post(server.url + "/v1/chat/completions", headers=AUTH, json={"model": "toy", "messages": user("a"), "stream": True})
    assert r.status_code == 500
    error = r.json()["error"]
    assert "alice" not in r.text and "RuntimeError" not in r.text
    request_id = r.headers["x-request-id"]
    assert request_id in error["message"] and error["type"] == "server_error"
    assert "alice" not in streamed.text and streamed.headers["x-request-id"] in streamed.text
    logged = caplog.text
    assert "alice" in logged and request_id in logged


def test_a_crash_outside_generation_is_generic_too(serve, caplog):
    from tunewise.rungs.base import Prepared

    def build(turns):
        raise KeyError("/srv/private/index.faiss")

    config = toy_config(FakeModel(respond=lambda m: "ok"))
    config.prepared = Prepared(config.prepared.model, build)
    server = serve({"toy": config})
    with caplog.at_level(logging.ERROR, logger="tunewise.serve"):
        r = httpx.post(server.url + "/v1/chat/completions", headers=AUTH, json={"model": "toy", "messages": user("a")})
    assert r.status_code == 500 and "private" not in r.text and r.headers["x-request-id"] in r.json()["error"]["message"]
    assert "private" in caplog.text


def test_api_key_flag_warns_and_help_names_the_environment_variable_first(tmp_path, monkeypatch):
    from test_serve import BagOfWords, conversation_sensitive, make_task

    from tunewise.cli import cli
    from tunewise.ladder.run import RunOptions, run_ladder

    task = make_task(tmp_path)
    results = run_ladder(
        task,
        RunOptions(model=FakeModel(respond=conversation_sensitive), embedder=BagOfWords(), rungs=["zero_shot"], evidence=False, report=False, out_dir=tmp_path / "runs"),
        log=lambda m: None,
    )
    monkeypatch.setattr("tunewise.serve.config._load_model", lambda spec, trust, cache: FakeModel(respond=conversation_sensitive))
    monkeypatch.setattr("tunewise.serve.server.run_server", lambda *a, **k: None)
    run = str(tmp_path / "runs" / results.run_id)

    monkeypatch.delenv("TUNEWISE_API_KEY", raising=False)
    flagged = CliRunner().invoke(cli, ["serve", run, "--api-key", "s3cret"])
    assert flagged.exit_code == 0, flagged.output
    assert "visible" in flagged.output and "TUNEWISE_API_KEY" in flagged.output and "s3cret" not in flagged.output

    monkeypatch.setenv("TUNEWISE_API_KEY", "s3cret")
    from_env = CliRunner().invoke(cli, ["serve", run])
    assert from_env.exit_code == 0 and "visible" not in from_env.output and "auth: API key" in from_env.output

    help_text = " ".join(CliRunner().invoke(cli, ["serve", "--help"]).output.split())
    assert help_text.index("TUNEWISE_API_KEY") < help_text.index("--api-key")
