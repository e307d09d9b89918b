"""The judge metric inside the ladder: a judge named in `models:` (its endpoint and prices), its
report on every rung (facts in the CLI and report), and its warnings in the decision, also when a
rerun reads the answers back."""

from __future__ import annotations

import pytest

from conftest import chat, write_jsonl
from tunewise.ladder.run import RunOptions, run_ladder
from tunewise.models.base import FakeModel
from tunewise.task import parse_task


def always_a(messages) -> str:
    return "A"  # a judge that always prefers the first answer shown: position-biased


def make_task(tmp_path):
    rows = [chat(f"describe place {i}", f"Place {i} is a pub.", system="Describe it.") for i in range(12)]
    write_jsonl(tmp_path / "train.jsonl", rows[:6])
    write_jsonl(tmp_path / "eval.jsonl", rows[6:])
    return parse_task(
        {
            "name": "style",
            "data": {"train": "train.jsonl", "eval": "eval.jsonl"},
            "metric": "judge",
            "metric_options": {"judge": "referee", "cache_dir": "judge-cache"},
            "extra_metrics": [],
            "models": {
                "small": {"model": "embedded"},
                "referee": {"model": "openai:referee-1", "options": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "REF_KEY"},
                            "pricing": {"input_per_1m": 2.0, "output_per_1m": 8.0}},
            },
            "ladder": {"rungs": ["zero_shot", "few_shot"], "few_shot": {"k": 2, "selection": "fixed"}, "max_new_tokens": 8},
        },
        tmp_path / "task.yaml",
    )


def test_a_judge_named_in_models_scores_the_rungs_and_its_bias_is_reported(tmp_path, monkeypatch):
    loaded = []

    def load_model(spec, **options):
        loaded.append((spec, options))
        return FakeModel(respond=always_a, name="referee-1")

    monkeypatch.setattr("tunewise.models.resolve.load_model", load_model)
    task = make_task(tmp_path)
    answers = FakeModel(respond=lambda m: "A cosy pub.")
    results = run_ladder(task, RunOptions(out_dir=tmp_path / "runs", model=answers, evidence=False), log=lambda m: None)

    # The judge is the `referee` entry: its spec and endpoint; the cache sits beside the task file.
    assert loaded == [("openai:referee-1", {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "REF_KEY"})]
    assert any((tmp_path / "judge-cache").iterdir())
    for r in results.rungs:
        fact = r.facts["judge"]
        assert fact.value == 0.0 and "position-consistent 0% of 6" in fact.text and "referee" in fact.text
        assert r.score.value == pytest.approx(0.5)  # every example inconsistent: a tie
    assert sum("gave the same verdict with the answers swapped on only 0%" in w for w in results.decision.warnings) == 2
    # The verdict does not pass off a position-biased judge's ties as "equivalent, choose the cheapest".
    assert results.decision.confident is False
    assert results.decision.sentence.startswith("Not a verdict to act on: the metric's own check failed on 2 rung(s)")
    markdown = (tmp_path / "runs" / results.run_id / "report.md").read_text()
    assert "position-consistent 0% of 6" in markdown

    # A rerun reads the answers and the judge's replies back: no new judge model, the same warnings.
    loaded.clear()
    again = run_ladder(task, RunOptions(out_dir=tmp_path / "runs", model=answers, evidence=False), log=lambda m: None)
    assert loaded == [] and again.decision.warnings == results.decision.warnings
