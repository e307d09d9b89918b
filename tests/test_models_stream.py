"""Token streaming in the model contract: pieces join to exactly what generate() returns, closing a
stream stops generation, and backends that cannot stream give the whole answer as one piece."""

from __future__ import annotations

import json
import time

import pytest

torch = pytest.importorskip("torch")
httpx = pytest.importorskip("httpx")

from test_models import api, conversations, tiny_llama, tiny_tokenizer, user  # noqa: E402
from tunewise.models.base import FakeModel, Generation, StrippedPieces, stream  # noqa: E402
from tunewise.models.hf import TransformersModel  # noqa: E402
from tunewise.models.openai_http import ModelAPIError  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model():
    tok = tiny_tokenizer()
    return TransformersModel(tiny_llama(len(tok), seed=3), tok, "tiny", bf16="off")


def drain(pieces) -> tuple[list[str], Generation]:
    out = []
    while True:
        try:
            out.append(next(pieces))
        except StopIteration as end:
            return out, end.value


@pytest.mark.parametrize("max_new_tokens", [1, 6, 24])
def test_streamed_pieces_join_to_the_generated_answer(tiny_model, max_new_tokens):
    convs = conversations(6, seed=4)
    expected = tiny_model.generate(convs, max_new_tokens)
    for conv, want in zip(convs, expected):
        pieces, got = drain(tiny_model.stream(conv, max_new_tokens))
        assert "".join(pieces) == got.text == want.text
        assert (got.prompt_tokens, got.output_tokens) == (want.prompt_tokens, want.output_tokens)
        if want.output_tokens > 2:
            assert len(pieces) > 1, "a multi-token answer must arrive in more than one piece"


def test_streaming_in_bf16_matches_generate_in_bf16(tiny_model):
    model = TransformersModel(tiny_model.model, tiny_model.tokenizer, "tiny", bf16="on")
    conv = conversations(1, seed=9)[0]
    assert "".join(drain(model.stream(conv, 12))[0]) == model.generate([conv], 12)[0].text


def test_closing_a_stream_stops_generation(tiny_model):
    steps = []
    hook = tiny_model.model.register_forward_hook(lambda *a: steps.append(1))
    try:
        # A long answer: the tiny model rarely emits eos, so 200 tokens would take 200 forward passes.
        pieces = tiny_model.stream(user("play some jazz tonight"), 200)
        next(pieces)
        started = time.monotonic()
        pieces.close()  # joins the generating thread after it stops
        assert time.monotonic() - started < 10
    finally:
        hook.remove()
    full = tiny_model.generate([user("play some jazz tonight")], 200)[0]
    assert full.output_tokens > 20, "the test needs an answer long enough to cut short"
    assert len(steps) < full.output_tokens


def test_a_backend_without_stream_gives_the_whole_answer_once():
    class Plain:
        name = "plain"

        def generate(self, conversations, max_new_tokens, progress=None):
            return [Generation("whole answer", 3, 2, 0.1) for _ in conversations]

        def count_tokens(self, text):
            return 1

    pieces, generation = drain(stream(Plain(), user("q"), 8))
    assert pieces == ["whole answer"] and generation.output_tokens == 2
    pieces, generation = drain(stream(FakeModel(["one two  three"]), user("q"), 8))
    assert pieces == ["one ", "two  ", "three"] and generation.text == "one two  three"


@pytest.mark.parametrize("pieces", [["", " \n", " a", "b ", " ", "c", "  \n"], ["x"], ["  ", " "], []])
def test_stripped_pieces_join_to_the_stripped_text(pieces):
    s = StrippedPieces()
    assert "".join(s.feed(p) for p in pieces) == "".join(pieces).strip()


# -- OpenAI-compatible APIs -------------------------------------------------------------------------


def sse(*events) -> bytes:
    return b"".join(f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events)


def delta(text: str) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def test_api_stream_yields_deltas_and_reads_usage(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        body = sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}, delta(" hel"), delta("lo "), delta("world\n"),
                   {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}, "[DONE]")
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    pieces, generation = drain(api(handler).stream(user("hi"), 5))
    assert pieces == ["hel", "lo", " world"] and generation.text == "hello world"
    assert (generation.prompt_tokens, generation.output_tokens) == (9, 3)
    assert seen[0]["stream"] is True and seen[0]["stream_options"] == {"include_usage": True} and seen[0]["max_tokens"] == 5


def test_api_stream_retries_before_the_first_byte_and_fails_cleanly_mid_stream(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    statuses = [503]

    def handler(request):
        if statuses:
            return httpx.Response(statuses.pop(), json={"error": {"message": "busy"}})
        return httpx.Response(200, content=sse(delta("ok"), "[DONE]"))

    sleeps: list = []
    pieces, generation = drain(api(handler, sleeps).stream(user("hi"), 5))
    assert pieces == ["ok"] and len(sleeps) == 1 and generation.output_tokens == 1  # estimated: no usage sent

    broken = api(lambda r: httpx.Response(200, content=sse(delta("par"), {"error": {"message": "model crashed"}})))
    with pytest.raises(ModelAPIError, match="failed mid-stream: model crashed"):
        drain(broken.stream(user("hi"), 5))
