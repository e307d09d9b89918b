"""Real token streaming through the server (fake models that stream word by word, with a pause):
the first words reach the client before the answer is complete, stop sequences cut the stream where
the non-streamed answer is cut, and a client that leaves stops the generation."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from test_serve import KEY, client, serve, toy_config, user  # noqa: F401 - serve is a fixture
from tunewise.models.base import FakeModel

AUTH = {"Authorization": f"Bearer {KEY}"}


class Counting(FakeModel):
    """Streams word by word with a pause, and records how many pieces it produced per stream."""

    def __init__(self, answer: str, seconds_per_piece: float) -> None:
        super().__init__(respond=lambda m: answer, seconds_per_piece=seconds_per_piece)
        self.produced: list[int] = []
        self.finished = threading.Event()

    def stream(self, messages, max_new_tokens):
        count = 0
        self.produced.append(0)
        try:
            for piece in super().stream(messages, max_new_tokens):
                count += 1
                self.produced[-1] = count
                yield piece
        finally:
            self.finished.set()
        return self.generate([messages], max_new_tokens)[0]


def timed_chunks(server, **body) -> list[tuple[float, dict]]:
    """(seconds since the request, event) for every SSE data event, [DONE] excluded."""
    started = time.monotonic()
    out = []
    payload = {"model": "toy", "messages": user("q"), "stream": True, **body}
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers=AUTH, json=payload, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append((time.monotonic() - started, json.loads(line[6:])))
    return out


def content_of(events) -> list[tuple[float, str]]:
    return [(t, e["choices"][0]["delta"]["content"]) for t, e in events if e.get("choices") and e["choices"][0]["delta"].get("content")]


def test_the_first_words_arrive_before_the_answer_is_complete(serve):
    answer = "one two three four five six seven eight"
    model = FakeModel(respond=lambda m: answer, seconds_per_piece=0.15)  # 8 pieces: 1.2 s in all
    server = serve({"toy": toy_config(model)})
    pieces = content_of(timed_chunks(server))
    first, last = pieces[0][0], pieces[-1][0]
    assert len(pieces) == 8 and last - first > 0.7, pieces
    assert "".join(p for _, p in pieces) == answer
    assert client(server).chat.completions.create(model="toy", messages=user("q")).choices[0].message.content == answer


@pytest.mark.parametrize("stop", [["four"], ["ur fi", "xyz"], ["\n"], ["eight"]])
def test_a_stop_sequence_cuts_the_stream_where_the_plain_answer_is_cut(serve, stop):
    answer = "one two three four five six seven eight"
    model = Counting(answer, seconds_per_piece=0.05)
    server = serve({"toy": toy_config(model)})
    events = timed_chunks(server, stop=stop)
    streamed = "".join(p for _, p in content_of(events))
    plain = client(server).chat.completions.create(model="toy", messages=user("q"), stop=stop)
    assert streamed == plain.choices[0].message.content
    finish = [e["choices"][0]["finish_reason"] for _, e in events if e.get("choices") and e["choices"][0]["finish_reason"]]
    assert finish == [plain.choices[0].finish_reason]
    if stop == ["four"]:
        assert streamed == "one two three " and model.produced[0] < 8  # generation stopped early


def test_a_client_that_leaves_mid_stream_stops_the_generation(serve):
    model = Counting(" ".join(f"w{i}" for i in range(40)), seconds_per_piece=0.1)  # 4 s if left alone
    server = serve({"toy": toy_config(model)})
    payload = {"model": "toy", "messages": user("q"), "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers=AUTH, json=payload, timeout=30) as r:
        for line in r.iter_lines():
            if '"w2' in line:
                break  # hang up after a few words
    assert model.finished.wait(5)
    assert model.produced[0] < 40


def test_stream_usage_and_errors_keep_their_shape(serve):
    def broken(messages):
        raise RuntimeError("boom at /secret/path")

    server = serve({"toy": toy_config(FakeModel(respond=broken)), "ok": toy_config(FakeModel(respond=lambda m: "fine"), task="ok")})
    events = timed_chunks(server)
    assert events[-1][1]["error"]["type"] == "server_error" and "secret" not in json.dumps(events[-1][1])
    ok = timed_chunks(server, model="ok", stream_options={"include_usage": True})
    assert ok[-1][1]["choices"] == [] and ok[-1][1]["usage"]["completion_tokens"] == 1
