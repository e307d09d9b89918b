"""`tunewise init`: the suggested metric per kind of answer, the commented task file, and that the file
loads with load_task and runs with a fake model."""

from __future__ import annotations

import json

import pytest
import yaml

from conftest import EXAMPLES, chat, write_jsonl
from tunewise.cli import main
from tunewise.commands.init import Business, render_task_yaml, suggest_answers, suggest_task
from tunewise.ladder.run import RunOptions, run_ladder
from tunewise.models.base import FakeModel
from tunewise.task import load_task

INTENT = EXAMPLES / "intent"


@pytest.mark.parametrize(
    "answers, corpus, metric",
    [
        (["yes", "no", "maybe"] * 20, False, "accuracy"),
        ([json.dumps({"name": f"n{i}", "food": "thai"}) for i in range(30)], False, "json_fields"),
        ([f"Warsaw {i}" for i in range(40)], True, "token_f1"),
        ([f"Paris in {1900 + i}" for i in range(40)], False, "token_f1"),
        ([" ".join(["word"] * 20 + [str(i)]) for i in range(40)], False, "chrf"),
        ([], False, "exact_match"),
    ],
)
def test_metric_follows_the_answers(answers, corpus, metric):
    s = suggest_answers(answers, has_corpus=corpus)
    assert s.metric == metric
    assert s.why  # every guess says why


def test_labels_with_many_distinct_values_are_not_labels():
    answers = [f"label{i}" for i in range(60)] * 3  # 60 classes: beyond LABEL_MAX_CLASSES
    assert suggest_answers(answers).metric == "token_f1"


def run_init(*args: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["init", *args])
    assert exit_info.value.code in (0, None)


def test_init_from_the_intent_example_loads_and_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "tasks" / "intent.yaml"
    try:
        main(["init", str(INTENT / "train.jsonl"), "--eval", str(INTENT / "eval.jsonl"), "-o", str(out),
              "--goal", "format", "--calls-per-month", "200000", "--no-interactive"])  # fmt: skip
    except SystemExit as err:
        assert err.code in (0, None)
    text = out.read_text()
    assert text.startswith("# tunewise run ")  # the file opens with the command that runs it
    assert "# metric: 7 distinct short answers" in text
    task = load_task(out)
    assert task.name == "intent"
    assert task.metric == "accuracy"
    assert task.data.train == (INTENT / "train.jsonl").resolve()
    assert task.ladder.rungs == ["zero_shot", "few_shot", "lora"]  # no corpus: no RAG rungs
    assert task.business.calls_per_month == 200000 and [g.value for g in task.business.goals] == ["format"]
    labels = ["add_to_playlist", "book_restaurant", "get_weather", "play_music", "rate_book", "search_creative_work", "search_screening_event"]
    assert task.ladder.max_new_tokens >= 6

    def respond(messages):
        text = messages[-1]["content"].lower()
        return "play_music" if "play" in text else "get_weather" if "weather" in text else labels[len(text) % 7]

    results = run_ladder(
        task,
        RunOptions(model=FakeModel(respond=respond), rungs=["zero_shot"], eval_limit=20, evidence=False, report=False, out_dir=tmp_path / "runs"),
        log=lambda m: None,
    )
    assert results.decision.rung == "zero_shot"
    assert results.eval_examples == 20


def test_one_file_is_split_and_the_fraction_says_why(tmp_path):
    rows = [chat(f"question {i}", f"answer number {i} is here") for i in range(2000)]
    data = write_jsonl(tmp_path / "qa.jsonl", rows)
    draft = suggest_task(data)
    assert draft.eval is None and draft.eval_fraction == pytest.approx(0.15)  # 300 of 2,000
    out = tmp_path / "qa.yaml"
    out.write_text(render_task_yaml(draft, out))
    raw = yaml.safe_load(out.read_text())
    assert raw["data"] == {"file": "qa.jsonl", "eval_fraction": 0.15, "format": "chat", "seed": 0}
    assert "about 300 held out" in out.read_text()
    task = load_task(out)
    assert task.data.file == data.resolve()


def test_corpus_adds_the_rag_rungs_and_business_answers_are_marked(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", [chat(f"who is {i}?", f"Person {i}") for i in range(40)])
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"id": "d1", "text": "Person 1 is a person."}])
    draft = suggest_task(data, corpus=corpus, business=Business(goals=["knowledge"], latency_budget_ms=800))
    assert draft.rungs == ["zero_shot", "few_shot", "rag", "few_shot_rag", "lora", "lora_rag"]
    out = tmp_path / "t.yaml"
    text = render_task_yaml(draft, out)
    out.write_text(text)
    task = load_task(out)
    assert task.corpus == corpus.resolve() and task.metric == "token_f1"
    assert task.business.latency_budget_ms == 800
    assert "latency_budget_ms: 800" in text and "your answer" in text
    assert "a guess (the default)" in text  # requirements_change was not answered
    assert draft.advice  # the advisor's recommendation is written as a comment
    assert f"# The advisor's rules, from these answers: {draft.advice}" in text


def test_init_refuses_to_overwrite_and_rejects_unknown_metrics(tmp_path, capsys):
    out = tmp_path / "t.yaml"
    out.write_text("keep me")
    with pytest.raises(SystemExit) as err:
        main(["init", str(INTENT / "train.jsonl"), "-o", str(out), "--no-interactive"])
    assert err.value.code != 0 and out.read_text() == "keep me"
    assert "--force" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        main(["init", str(INTENT / "train.jsonl"), "-o", str(tmp_path / "u.yaml"), "--metric", "evil.py:f", "--no-interactive"])
    assert err.value.code != 0
    assert "registered metrics" in capsys.readouterr().err


def test_interactive_answers_fill_the_business_block(tmp_path, monkeypatch):
    answers = iter(["format cost", "50000", "yearly", "n", "300", "n", "n", "n", "n"])
    import click

    monkeypatch.setattr(click, "prompt", lambda *a, **k: k["value_proc"](next(answers)))
    out = tmp_path / "t.yaml"
    try:
        main(["init", str(INTENT / "train.jsonl"), "-o", str(out), "--interactive"])
    except SystemExit as err:
        assert err.code in (0, None)
    task = load_task(out)
    assert task.business.calls_per_month == 50000
    assert task.business.requirements_change.value == "yearly"
    assert [g.value for g in task.business.goals] == ["format", "cost"]
    assert task.business.latency_budget_ms == 300


def test_a_csv_of_free_text_gets_chrf_and_loads(tmp_path):
    rows = ["input,output"] + [f'"Summarise note {i}","The customer asked about invoice {i} and we agreed to send a corrected copy by Friday."' for i in range(50)]
    data = tmp_path / "notes.csv"
    data.write_text("\n".join(rows) + "\n")
    draft = suggest_task(data)
    assert (draft.look.format, draft.look.examples, draft.metric, draft.name) == ("csv", 50, "chrf", "notes")
    out = tmp_path / "notes.yaml"
    out.write_text(render_task_yaml(draft, out))
    task = load_task(out)
    assert task.metric == "chrf" and task.data.format == "csv"
    assert task.ladder.max_new_tokens > 20  # room for the long answers


def test_unreadable_data_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"foo": 1}\n{"bar": 2}\n')
    with pytest.raises(SystemExit) as err:
        main(["init", str(bad), "-o", str(tmp_path / "t.yaml"), "--no-interactive"])
    assert err.value.code == 2
    assert "cannot detect the data format" in capsys.readouterr().err
    assert not (tmp_path / "t.yaml").exists()
