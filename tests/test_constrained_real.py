"""Real embedded model (issue 17): `tunewise serve` of a run whose rung is constrained answers with a
label from the label set, as the ladder measured it, streamed or not.

Slow (a few minutes on 2 shared CPU cores): `python -m pytest -q -m slow tests/test_constrained_real.py`.
"""

from __future__ import annotations

import json

import pytest

from conftest import EXAMPLES

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("xgrammar")
openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow


def test_serve_returns_a_label_for_a_constrained_rung(tmp_path):
    from tunewise.ladder.run import RunOptions, run_ladder
    from tunewise.serve.app import build_app
    from tunewise.serve.config import load_runs
    from tunewise.serve.server import BackgroundServer
    from tunewise.task import load_task

    task = load_task(EXAMPLES / "intent" / "task.yaml")
    labels = {json.loads(line)["messages"][-1]["content"] for line in (EXAMPLES / "intent" / "train.jsonl").read_text().splitlines()}
    options = RunOptions(eval_limit=4, rungs=["zero_shot_constrained"], evidence=False, report=False, out_dir=tmp_path / "runs")
    results = run_ladder(task, options, log=lambda m: None)
    assert results.decision.rung == "zero_shot_constrained"
    run_dir = tmp_path / "runs" / results.run_id
    rows = [json.loads(line) for line in (run_dir / "predictions" / "zero_shot_constrained.jsonl").read_text().splitlines()]
    assert all(row["prediction"] in labels for row in rows)  # the free zero-shot answers sentences here

    configs = load_runs([run_dir], log=lambda m: None)
    assert configs["intent"].prepared.constraint.kind == "labels" and set(configs["intent"].prepared.constraint.labels) == labels
    with BackgroundServer(build_app(configs, max_batch=4, batch_wait_ms=20)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
        answers = [
            client.chat.completions.create(model="intent", messages=[{"role": "user", "content": row["input"]}]).choices[0].message.content
            for row in rows[:2]
        ]
        stream = client.chat.completions.create(model="intent", messages=[{"role": "user", "content": rows[0]["input"]}], stream=True)
        streamed = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert all(a in labels for a in answers) and streamed in labels
    assert answers == [row["prediction"] for row in rows[:2]] and streamed == rows[0]["prediction"]
