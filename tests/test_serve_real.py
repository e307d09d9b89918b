"""End to end on the real embedded model: what the server answers is what the ladder measured.

Slow (2 to 5 minutes on 2 shared CPU cores): `python -m pytest -q -m slow tests/test_serve_real.py`.
"""

from __future__ import annotations

import json
import threading

import pytest

from conftest import EXAMPLES

pytest.importorskip("torch")
pytest.importorskip("transformers")
openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow


def test_served_intent_answers_equal_the_ladder_predictions(tmp_path):
    from tunewise.ladder.run import RunOptions, run_ladder
    from tunewise.serve.app import build_app, service_of
    from tunewise.serve.config import load_runs
    from tunewise.serve.server import BackgroundServer
    from tunewise.task import load_task

    task = load_task(EXAMPLES / "intent" / "task.yaml")
    options = RunOptions(eval_limit=8, rungs=["zero_shot", "few_shot"], evidence=False, report=False, out_dir=tmp_path / "runs")
    results = run_ladder(task, options, log=lambda m: None)
    rung = results.decision.rung
    run_dir = tmp_path / "runs" / results.run_id
    rows = [json.loads(line) for line in (run_dir / "predictions" / f"{rung}.jsonl").read_text().splitlines()]
    assert len(rows) == 8

    configs = load_runs([run_dir], log=lambda m: None)  # loads the model the way the ladder did
    assert configs["intent"].rung == rung
    app = build_app(configs, max_batch=8, batch_wait_ms=50)
    with BackgroundServer(app) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)

        def ask(text: str) -> str:
            reply = client.chat.completions.create(model="intent", messages=[{"role": "user", "content": text}])
            return reply.choices[0].message.content

        # One at a time: every request is a batch of one, unpadded.
        sequential = [ask(row["input"]) for row in rows]

        # All at once: the server batches them its own way (left-padded, grouped differently from the ladder).
        concurrent: list[str | None] = [None] * len(rows)
        threads = [threading.Thread(target=lambda i=i: concurrent.__setitem__(i, ask(rows[i]["input"]))) for i in range(len(rows))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        batch_sizes = [r.size for r in next(iter(service_of(app).batchers.values())).history]

        stream = client.chat.completions.create(model="intent", messages=[{"role": "user", "content": rows[0]["input"]}], stream=True)
        streamed = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)

    predictions = [row["prediction"] for row in rows]
    assert sequential == predictions
    assert max(batch_sizes) > 1  # the concurrent requests really were batched
    assert concurrent == predictions
    assert streamed == predictions[0]


def test_streamed_tokens_reach_the_client_before_the_answer_is_complete():
    """Real token streaming on the embedded model: the first words arrive long before the last, and
    they join to exactly the non-streamed answer."""
    import time

    import httpx

    from tunewise.models.resolve import load_model
    from tunewise.serve.app import build_app
    from tunewise.serve.config import base_config
    from tunewise.serve.server import BackgroundServer

    model = load_model("embedded", bf16="off")
    app = build_app({"base": base_config(model, 48)})
    messages = [{"role": "user", "content": "Write a short story about a cat who learns to swim."}]
    with BackgroundServer(app) as server:
        url = server.url + "/v1/chat/completions"
        plain = httpx.post(url, json={"model": "base", "messages": messages, "max_tokens": 48}, timeout=300).json()
        started = time.monotonic()
        pieces: list[tuple[float, str]] = []
        body = {"model": "base", "messages": messages, "max_tokens": 48, "stream": True}
        with httpx.stream("POST", url, json=body, timeout=300) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
                    if delta:
                        pieces.append((time.monotonic() - started, delta))
    answer = plain["choices"][0]["message"]["content"]
    assert plain["usage"]["completion_tokens"] > 20, "the test needs a long answer"
    assert "".join(p for _, p in pieces) == answer
    first, last = pieces[0][0], pieces[-1][0]
    assert len(pieces) > 10 and first < 0.5 * last, f"first piece at {first:.2f} s, last at {last:.2f} s"
