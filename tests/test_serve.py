"""The OpenAI-compatible server: wire format through the official client, batching, limits, auth,
router, graceful shutdown, and answers identical to the ladder's. Fake models only."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from click.testing import CliRunner

from conftest import ROOT, chat, write_jsonl
from tunewise.errors import TunewiseError
from tunewise.rungs.base import Prepared, Request, user_turns, with_system
from tunewise.ladder.run import RunOptions, run_ladder
from tunewise.models.base import FakeModel
from tunewise.serve.app import build_app, service_of
from tunewise.serve.config import BASE_NAME, ServedConfig, base_config, load_runs, primary_names
from tunewise.serve.router import Router
from tunewise.serve.schema import stream_pieces
from tunewise.serve.server import BackgroundServer
from tunewise.task import parse_task

KEY = "test-key-123"
SYSTEM = "Label it."


def toy_config(model: FakeModel, task: str = "toy", rung: str = "zero_shot", max_new_tokens: int = 16, **kw) -> ServedConfig:
    prepared = Prepared(model, lambda turns: Request(with_system(SYSTEM, user_turns(turns))))
    return ServedConfig(prepared, task, rung, max_new_tokens, **kw)


def client(server: BackgroundServer, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


class Gated(FakeModel):
    """A fake that records each generate call and can hold it until released."""

    def __init__(self, respond=lambda m: "ok " + m[-1]["content"], hold_first: bool = False) -> None:
        super().__init__(respond=respond)
        self.batches: list[tuple[int, int]] = []  # (conversations, max_new_tokens) per call
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def generate(self, conversations, max_new_tokens, progress=None):
        self.batches.append((len(conversations), max_new_tokens))
        self.entered.set()
        assert self.release.wait(30), "test never released the model"
        return super().generate(conversations, max_new_tokens, progress)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@pytest.fixture
def serve():
    """serve(configs, **build_app options) -> a started BackgroundServer, stopped after the test."""
    started: list[BackgroundServer] = []

    def start(configs, **options) -> BackgroundServer:
        options.setdefault("api_key", KEY)
        server = BackgroundServer(build_app(configs, **options)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# -- the wire format ----------------------------------------------------------------------------


def test_chat_completion_and_models_through_the_openai_client(serve):
    model = FakeModel(respond=lambda m: f"label for {m[-1]['content']}")
    config = toy_config(model)
    server = serve({"toy": config, "toy:zero_shot": config})
    c = client(server)

    reply = c.chat.completions.create(model="toy", messages=user("item 7"))
    assert reply.choices[0].message.content == "label for item 7"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "toy" and reply.system_fingerprint == "toy:zero_shot"
    assert reply.id.startswith("chatcmpl-") and abs(reply.created - time.time()) < 60
    # usage is the model's own count of what it saw: the configured system prompt plus the message.
    assert reply.usage.prompt_tokens == model.count_tokens(SYSTEM) + 4 + model.count_tokens("item 7") + 4
    assert reply.usage.completion_tokens == model.count_tokens("label for item 7")
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    # The configuration owns the system prompt: a caller's system message is replaced, as in the ladder.
    c.chat.completions.create(model="toy:zero_shot", messages=[{"role": "system", "content": "be rude"}, *user("x")])
    assert model.calls[-1] == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "x"}]

    assert [m.id for m in c.models.list()] == ["toy", "toy:zero_shot"]
    assert c.models.retrieve("toy:zero_shot").id == "toy:zero_shot"


def test_streaming_sends_openai_chunks_that_join_to_the_answer(serve):
    answer = "search_creative_work  is\nthe label"
    server = serve({"toy": toy_config(FakeModel(respond=lambda m: answer))})
    c = client(server)
    chunks = list(c.chat.completions.create(model="toy", messages=user("q"), stream=True, stream_options={"include_usage": True}))

    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == answer == c.chat.completions.create(model="toy", messages=user("q")).choices[0].message.content
    assert len([ch for ch in chunks if ch.choices and ch.choices[0].delta.content]) == len(stream_pieces(answer)) > 1
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert {ch.id for ch in chunks} == {chunks[0].id}

    raw = httpx.post(
        server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "toy", "messages": user("q"), "stream": True},
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize(
    "answer, max_tokens, stop, content, finish",
    [
        ("one two three", 50, None, "one two three", "stop"),  # ended on its own
        ("one two three", 3, None, "one two three", "length"),  # used every token it was allowed
        ("one two. three", 50, ["."], "one two", "stop"),  # cut at a stop sequence
    ],
)
def test_finish_reason_and_stop(serve, answer, max_tokens, stop, content, finish):
    server = serve({"toy": toy_config(FakeModel(respond=lambda m: answer))})
    reply = client(server).chat.completions.create(model="toy", messages=user("q"), max_tokens=max_tokens, stop=stop)
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == (content, finish)


# -- errors in OpenAI's shape ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, request_kwargs, error, code, in_message",
    [
        ("wrong-key", {}, openai.AuthenticationError, "invalid_api_key", "Incorrect API key"),
        (KEY, {"model": "nope"}, openai.NotFoundError, "model_not_found", "available models: toy, toy:zero_shot"),
        (KEY, {"messages": user("word " * 200)}, openai.BadRequestError, "context_length_exceeded", "prompt is 2"),
        (KEY, {"max_tokens": 5000}, openai.BadRequestError, "invalid_value", "max_tokens is too large: 5000"),
        (KEY, {"n": 2}, openai.BadRequestError, "unsupported_parameter", "n=2 is not supported"),
        (KEY, {"messages": [*user("a"), {"role": "assistant", "content": "b"}]}, openai.BadRequestError, None, "must end with a user message"),
        (KEY, {"messages": [{"role": "tool", "content": "x"}]}, openai.BadRequestError, "unsupported_parameter", "role 'tool'"),
    ],
)
def test_request_errors_map_to_openai_exceptions(serve, key, request_kwargs, error, code, in_message):
    model = FakeModel(respond=lambda m: "ok")
    config = toy_config(model)
    server = serve({"toy": config, "toy:zero_shot": config}, max_prompt_tokens=100, max_tokens_limit=64)
    with pytest.raises(error) as info:
        client(server, key).chat.completions.create(**{"model": "toy", "messages": user("hi"), **request_kwargs})
    body = info.value.body
    assert set(body) == {"message", "type", "param", "code"} and body["code"] == code
    assert in_message in body["message"]
    assert model.calls == []  # rejected before generation


def test_oversized_prompt_error_counts_the_built_prompt(serve):
    model = FakeModel(respond=lambda m: "ok")
    server = serve({"toy": toy_config(model)}, max_prompt_tokens=30)
    text = "word " * 20  # 20 tokens; with the system prompt and message overhead 31 > 30
    built = with_system(SYSTEM, user(text))
    expected = sum(model.count_tokens(m["content"]) + 4 for m in built)
    assert expected > 30
    with pytest.raises(openai.BadRequestError) as info:
        client(server).chat.completions.create(model="toy", messages=user(text))
    assert "maximum prompt length is 30 tokens" in info.value.body["message"]
    assert f"the prompt is {expected} tokens" in info.value.body["message"]
    assert client(server).chat.completions.create(model="toy", messages=user("word " * 10)).choices[0].message.content == "ok"


@pytest.mark.parametrize(
    "headers, content, status, in_message",
    [
        ({"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}, b"{not json", 400, "not valid JSON"),
        ({"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}, json.dumps({"model": "toy"}).encode(), 400, "messages: Field required"),
        ({"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}, json.dumps({"model": "toy", "messages": user("a"), "max_tokens": 0}).encode(), 400, "max_tokens"),
        ({"Content-Type": "application/json"}, b"{not json", 401, "Missing API key"),  # auth before parsing
        ({"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}, b"x" * 3000, 413, "3000 bytes"),
    ],
)
def test_malformed_requests_get_openai_error_bodies(serve, headers, content, status, in_message):
    server = serve({"toy": toy_config(FakeModel(respond=lambda m: "ok"))}, max_body_bytes=2000)
    r = httpx.post(server.url + "/v1/chat/completions", headers=headers, content=content)
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and in_message in error["message"]


def test_api_key_guards_every_endpoint(serve):
    server = serve({"toy": toy_config(FakeModel(respond=lambda m: "ok"))})
    for path in ("/health", "/v1/models", "/v1/models/toy", "/anything"):
        assert httpx.get(server.url + path).status_code == 401
        assert httpx.get(server.url + path, headers={"Authorization": "Bearer " + KEY[:-1]}).status_code == 401
    ok = httpx.get(server.url + "/health", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and ok.json()["status"] == "ok"
    open_server = serve({"toy": toy_config(FakeModel(respond=lambda m: "ok"))}, api_key=None)
    assert httpx.get(open_server.url + "/v1/models").status_code == 200


# -- batching and back-pressure -----------------------------------------------------------------


def post_in_thread(server: BackgroundServer, results: list, **body) -> threading.Thread:
    def send() -> None:
        try:
            reply = client(server).chat.completions.create(**{"model": "toy", "messages": user("q"), **body})
            results.append(reply.choices[0].message.content)
        except Exception as err:  # noqa: BLE001 - surfaced by the assertions
            results.append(err)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


@pytest.mark.parametrize("max_batch, queued, expected_batches", [(8, 7, [1, 7]), (4, 9, [1, 4, 4, 1])])
def test_concurrent_requests_share_generate_calls(serve, max_batch, queued, expected_batches):
    model = Gated(hold_first=True)
    server = serve({"toy": toy_config(model)}, max_batch=max_batch, batch_wait_ms=0)
    batcher = next(iter(service_of(server.server.config.app).batchers.values()))
    results: list = []
    threads = [post_in_thread(server, results, messages=user("first"))]
    assert model.entered.wait(10)  # the first request is generating, alone
    threads += [post_in_thread(server, results, messages=user(f"q{i}")) for i in range(queued)]
    wait_until(lambda: batcher.stats()["waiting"] == queued)
    model.release.set()
    for t in threads:
        t.join(30)
    assert [n for n, _ in model.batches] == expected_batches
    assert sorted(results) == sorted(["ok first"] + [f"ok q{i}" for i in range(queued)])


def test_a_batch_is_generated_per_max_tokens_value(serve):
    model = Gated(hold_first=True)
    server = serve({"toy": toy_config(model)}, max_batch=16, batch_wait_ms=0)
    batcher = next(iter(service_of(server.server.config.app).batchers.values()))
    results: list = []
    threads = [post_in_thread(server, results)]
    assert model.entered.wait(10)
    threads += [post_in_thread(server, results, max_tokens=n) for n in (5, 7, 5, 5)]
    wait_until(lambda: batcher.stats()["waiting"] == 4)
    model.release.set()
    for t in threads:
        t.join(30)
    # The first request used the configuration's default (16); then one call per distinct max_tokens.
    assert model.batches == [(1, 16), (3, 5), (1, 7)]
    assert len(results) == 5 and all(r == "ok q" for r in results)


def test_full_queue_answers_429_at_once_with_retry_after(serve):
    model = Gated(hold_first=True)
    server = serve({"toy": toy_config(model)}, max_queue=1, max_batch=1, batch_wait_ms=0)
    batcher = next(iter(service_of(server.server.config.app).batchers.values()))
    results: list = []
    threads = [post_in_thread(server, results)]
    assert model.entered.wait(10)  # generating
    threads.append(post_in_thread(server, results))
    wait_until(lambda: batcher.stats()["waiting"] == 1)  # the queue is full

    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as info:
        client(server).chat.completions.create(model="toy", messages=user("third"))
    assert time.monotonic() - started < 5  # answered, not parked behind the held model
    assert info.value.body["code"] == "queue_full" and "--max-queue 1" in info.value.body["message"]
    assert int(info.value.response.headers["Retry-After"]) >= 1

    model.release.set()
    for t in threads:
        t.join(30)
    assert results == ["ok q", "ok q"]


def test_generation_failure_is_a_500_and_the_worker_survives(serve):
    answers = iter([RuntimeError("CUDA out of memory"), "fine"])

    def respond(messages):
        item = next(answers)
        if isinstance(item, Exception):
            raise item
        return item

    server = serve({"toy": toy_config(FakeModel(respond=respond))})
    with pytest.raises(openai.InternalServerError) as info:
        client(server).chat.completions.create(model="toy", messages=user("a"))
    # The exception text stays in the server's log (it can carry paths); the client gets a request id.
    assert "CUDA" not in info.value.body["message"] and info.value.response.headers["x-request-id"] in info.value.body["message"]
    assert client(server).chat.completions.create(model="toy", messages=user("b")).choices[0].message.content == "fine"


# -- router -------------------------------------------------------------------------------------


class BagOfWords:
    """A deterministic fake embedder: hashed word counts, L2-normalised."""

    name = "fake-bag-of-words"

    def encode(self, texts):
        out = np.zeros((len(texts), 512), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().replace("?", " ").split():
                out[i, zlib.crc32(word.encode()) % 512] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@pytest.mark.parametrize(
    "question, route, fallback",
    [
        ("what is the weather in paris tomorrow", "weather", False),
        ("play some jazz by miles davis", "music", False),
        ("translate this invoice into german", BASE_NAME, True),
    ],
)
def test_router_picks_the_matching_configuration_or_falls_back(serve, question, route, fallback):
    base = FakeModel(respond=lambda m: "base model: " + ("configured" if m[0]["role"] == "system" else "plain"))
    weather = FakeModel(respond=lambda m: "weather answer")
    music = FakeModel(respond=lambda m: "music answer")
    configs = {
        "weather": toy_config(weather, "weather", train_inputs=["weather in london today", "is it raining in paris", "weather forecast tomorrow"]),
        "music": toy_config(music, "music", "few_shot", train_inputs=["play jazz", "play songs by miles davis", "put on some rock music"]),
        BASE_NAME: base_config(base, 16),
    }
    router = Router(BagOfWords(), {n: configs[n].train_inputs for n in primary_names(configs)}, fallback=BASE_NAME, threshold=0.35)
    server = serve(configs, router=router)

    raw = client(server).chat.completions.with_raw_response.create(model="router", messages=user(question))
    reply = raw.parse()
    assert reply.model == route and raw.headers["x-tunewise-route"] == route
    assert reply.system_fingerprint == configs[route].fingerprint
    similarity = float(raw.headers["x-tunewise-route-similarity"])
    assert (similarity < 0.35) == fallback
    expected = {"weather": "weather answer", "music": "music answer", BASE_NAME: "base model: plain"}[route]
    assert reply.choices[0].message.content == expected
    assert "router" in [m.id for m in client(server).models.list()]


def test_router_votes_over_neighbours_not_just_the_nearest():
    embedder = BagOfWords()
    router = Router(embedder, {"a": ["red apple pie", "red apple tart", "red apple jam"], "b": ["red apple"]}, fallback="base", k=3)
    # "red apple" itself is b's only example (similarity 1.0), but a's three close neighbours outvote it.
    route = router.route("red apple")
    assert route.similarity == pytest.approx(1.0)
    assert route.votes["a"] > route.votes["b"] and route.name == "a"
    assert Router(embedder, {"a": ["red apple pie"], "b": ["red apple"]}, fallback="base", k=1).route("red apple").name == "b"


# -- graceful shutdown --------------------------------------------------------------------------

SLOW_SERVER = """
import sys, time
from tunewise.rungs.base import Prepared, Request
from tunewise.models.base import FakeModel
from tunewise.serve.app import build_app
from tunewise.serve.config import ServedConfig
from tunewise.serve.server import run_server

class Slow(FakeModel):
    def generate(self, conversations, max_new_tokens, progress=None):
        print("GENERATING", flush=True)
        time.sleep(2.0)
        return super().generate(conversations, max_new_tokens, progress)

model = Slow(respond=lambda m: "finished after shutdown began")
config = ServedConfig(Prepared(model, lambda turns: Request(list(turns))), "slow", "zero_shot", 8)
run_server(build_app({"slow": config}), "127.0.0.1", int(sys.argv[1]), "warning")
print("EXITED CLEANLY", flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_the_request_in_flight_then_exits(tmp_path):
    script = tmp_path / "slow_server.py"
    script.write_text(SLOW_SERVER)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(url), timeout=60)
        result: dict = {}
        sender = threading.Thread(
            target=lambda: result.update(r=httpx.post(url + "/v1/chat/completions", json={"model": "slow", "messages": user("q")}, timeout=30))
        )
        sender.start()
        assert proc.stdout.readline().strip() == "GENERATING"
        proc.send_signal(signal.SIGTERM)  # mid-generation
        sender.join(30)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert result["r"].status_code == 200
    assert result["r"].json()["choices"][0]["message"]["content"] == "finished after shutdown began"
    assert proc.returncode == 0 and "EXITED CLEANLY" in out
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health")


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_background_stop_drains_queued_requests(serve):
    model = Gated(hold_first=True)
    server = serve({"toy": toy_config(model)}, max_batch=1, batch_wait_ms=0)
    results: list = []
    threads = [post_in_thread(server, results) for _ in range(3)]
    assert model.entered.wait(10)
    batcher = next(iter(service_of(server.server.config.app).batchers.values()))
    wait_until(lambda: batcher.stats()["waiting"] == 2)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    time.sleep(0.3)
    model.release.set()
    stopper.join(30)
    for t in threads:
        t.join(30)
    assert results == ["ok q"] * 3 and [n for n, _ in model.batches] == [1, 1, 1]


# -- the served answers are the ladder's predictions ----------------------------------------------

LABELS = ["alpha", "beta", "gamma"]


def make_task(tmp_path: Path):
    rows = lambda n, off: [chat(f"item {i + off} kind {LABELS[(i + off) % 3]}", LABELS[(i + off) % 3], system=SYSTEM) for i in range(n)]  # noqa: E731
    raw = {
        "name": "toy",
        "data": {"train": str(write_jsonl(tmp_path / "train.jsonl", rows(30, 0))), "eval": str(write_jsonl(tmp_path / "eval.jsonl", rows(24, 1000)))},
        "metric": "accuracy",
        "target": 0.8,
        "ladder": {"rungs": ["zero_shot", "few_shot"], "few_shot": {"k": 3, "selection": "nearest"}, "batch_size": 4, "max_new_tokens": 12},
    }
    return parse_task(raw, tmp_path / "task.yaml")


def conversation_sensitive(messages) -> str:
    """Right more often with examples; the answer also carries a digest of everything the model saw,
    so any difference in system prompt, chosen examples or their order changes the answer."""
    text = messages[-1]["content"]
    gold = text.split("kind ")[-1]
    index = int(text.split()[1])
    shots = sum(m["role"] == "assistant" for m in messages)
    right = (index * 7919 % 100) < (95 if shots else 40)
    label = gold if right else LABELS[(LABELS.index(gold) + 1) % 3]
    digest = hashlib.sha256(json.dumps(messages).encode()).hexdigest()[:6]
    return label if right else f"{label} {digest}"


@pytest.mark.parametrize("rung", [None, "zero_shot", "few_shot"])
def test_served_answers_equal_the_ladder_predictions(serve, tmp_path, rung):
    task = make_task(tmp_path)
    embedder = BagOfWords()
    ladder_model = FakeModel(respond=conversation_sensitive)
    results = run_ladder(
        task,
        RunOptions(model=ladder_model, embedder=embedder, rungs=["zero_shot", "few_shot"], all_rungs=True, evidence=False, report=False, out_dir=tmp_path / "runs"),
        log=lambda m: None,
    )
    assert results.decision.rung == "few_shot"
    run_dir = tmp_path / "runs" / results.run_id
    served_model = FakeModel(respond=conversation_sensitive)
    configs = load_runs([run_dir], rung, model=served_model, embedder=embedder, log=lambda m: None)
    served_rung = rung or "few_shot"
    assert sorted(configs) == ["toy", f"toy:{served_rung}"]

    server = serve(configs, max_batch=8)
    rows = [json.loads(line) for line in (run_dir / "predictions" / f"{served_rung}.jsonl").read_text().splitlines()]
    c = client(server)
    answers = [c.chat.completions.create(model="toy", messages=user(row["input"])).choices[0].message.content for row in rows]
    assert answers == [row["prediction"] for row in rows]
    assert any(" " in a for a in answers)  # some answers carry a digest, so the comparison has teeth
    # The model saw exactly the conversations the ladder sent for this rung (the ladder also times a
    # few requests alone, which repeats some of them: the first one per input is the one to compare).
    shots = 3 if served_rung == "few_shot" else 0
    ladder_sent: dict[str, list] = {}
    for conversation in ladder_model.calls:
        if sum(m["role"] == "assistant" for m in conversation) == shots:
            ladder_sent.setdefault(conversation[-1]["content"], conversation)
    assert served_model.calls == [ladder_sent[row["input"]] for row in rows]


def test_load_runs_explains_what_cannot_be_served(tmp_path):
    task = make_task(tmp_path)
    results = run_ladder(
        task,
        RunOptions(model=FakeModel(respond=conversation_sensitive), rungs=["zero_shot"], evidence=False, report=False, out_dir=tmp_path / "runs"),
        log=lambda m: None,
    )
    run_dir = tmp_path / "runs" / results.run_id
    with pytest.raises(TunewiseError, match=r"rung 'few_shot' was not measured in this run \(measured: zero_shot\)"):
        load_runs([run_dir], "few_shot", model=FakeModel(), log=lambda m: None)
    with pytest.raises(TunewiseError, match="unknown rung 'fewshot'; valid rungs"):
        load_runs([run_dir], "fewshot", model=FakeModel(), log=lambda m: None)
    with pytest.raises(TunewiseError) as info:
        load_runs([run_dir, run_dir, tmp_path / "nowhere"], model=FakeModel(), log=lambda m: None)
    message = str(info.value)
    assert "already served from" in message and "not a run folder" in message  # every problem, once


def test_build_app_rejects_inconsistent_settings():
    config = toy_config(FakeModel(), max_new_tokens=2048)
    with pytest.raises(TunewiseError) as info:
        build_app({"toy": config}, max_tokens_limit=1024, max_batch=0)
    assert "max_new_tokens=2048 > max_tokens_limit=1024" in str(info.value) and "max_batch must be >= 1 (got 0)" in str(info.value)


def test_cli_prints_url_models_and_snippets_and_warns_on_open_bind(tmp_path, monkeypatch):
    from tunewise.cli import cli

    task = make_task(tmp_path)
    results = run_ladder(
        task,
        RunOptions(model=FakeModel(respond=conversation_sensitive), embedder=BagOfWords(), evidence=False, report=False, out_dir=tmp_path / "runs"),
        log=lambda m: None,
    )
    served: dict = {}
    monkeypatch.setattr("tunewise.serve.config._load_model", lambda spec, trust, cache: FakeModel(respond=conversation_sensitive))
    monkeypatch.setattr("tunewise.retrieval.embed.load_embedder", lambda *a, **k: BagOfWords())
    monkeypatch.setattr("tunewise.serve.server.run_server", lambda app, host, port, level: served.update(app=app, host=host, port=port))
    monkeypatch.delenv("TUNEWISE_API_KEY", raising=False)

    out = CliRunner().invoke(cli, ["serve", results.run_id, "--host", "0.0.0.0", "--port", "8123"])
    assert out.exit_code == 0, out.output
    assert "http://127.0.0.1:8123/v1" in out.output and "WARNING: binding 0.0.0.0 without an API key" in out.output
    assert "model toy (alias toy:few_shot)" in out.output
    assert "curl -s http://127.0.0.1:8123/v1/chat/completions" in out.output and "OpenAI(base_url=" in out.output
    assert served["host"] == "0.0.0.0" and served["port"] == 8123

    out = CliRunner().invoke(cli, ["serve", str(tmp_path / "runs" / results.run_id), "--api-key", "s3cret", "--router"])
    assert out.exit_code == 0, out.output
    assert "WARNING" not in out.output and "s3cret" not in out.output and "Bearer $TUNEWISE_API_KEY" in out.output
    assert "model router" in out.output

    out = CliRunner().invoke(cli, ["serve", "no-such-run"])
    assert out.exit_code != 0 and "no run folder or run id 'no-such-run'" in str(out.exception)


def test_pickled_adapter_weights_are_refused(tmp_path):
    from tunewise.serve.config import refuse_pickled_weights

    adapter = tmp_path / "train" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(TunewiseError, match=r"pickled weights found \(train/adapter/adapter_model.bin\)"):
        refuse_pickled_weights(tmp_path)
    (adapter / "adapter_model.safetensors").write_bytes(b"")  # peft prefers safetensors when both exist
    refuse_pickled_weights(tmp_path)
