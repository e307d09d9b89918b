"""The ladder run: scoring, comparison, decision, stopping, resume, run store. Fake models only."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import chat, write_jsonl
from tunewise.cli import cli, main
from tunewise.data.splits import load_splits
from tunewise.ladder.results import load_results
from tunewise.ladder.run import RunOptions, eval_order, run_ladder
from tunewise.ladder.store import MIGRATIONS, RunStore, migrate
from tunewise.models.base import FakeModel
from tunewise.task import parse_task

LABELS = ["alpha", "beta", "gamma"]


def make_task(tmp_path: Path, n_train=30, n_eval=40, target=0.8, rungs=("zero_shot", "few_shot"), corpus=False, **ladder):
    rows = lambda n, off: [chat(f"item {i + off} kind {LABELS[(i + off) % 3]}", LABELS[(i + off) % 3], system="Label it.") for i in range(n)]  # noqa: E731
    train = write_jsonl(tmp_path / "train.jsonl", rows(n_train, 0))
    evals = write_jsonl(tmp_path / "eval.jsonl", rows(n_eval, 1000))
    raw = {
        "name": "toy",
        "data": {"train": str(train), "eval": str(evals)},
        "metric": "accuracy",
        "target": target,
        "ladder": {"rungs": list(rungs), "few_shot": {"k": 2, "selection": "fixed"}, "batch_size": 4, **ladder},
    }
    if corpus:
        raw["corpus"] = str(write_jsonl(tmp_path / "corpus.jsonl", [{"id": "d1", "text": "alpha beta gamma"}]))
    return parse_task(raw, tmp_path / "task.yaml")


def oracle(zero_shot_accuracy: float, few_shot_accuracy: float):
    """A fake model that knows the gold label and gets a fixed share right, more with examples."""

    def respond(messages):
        found = re.search(r"item (\d+) kind (\w+)", messages[-1]["content"])
        index, gold = int(found.group(1)), found.group(2)
        few = sum(m["role"] == "assistant" for m in messages) > 0
        share = few_shot_accuracy if few else zero_shot_accuracy
        right = (index * 7919 % 100) < share * 100
        return gold if right else LABELS[(LABELS.index(gold) + 1) % 3]

    return respond


def test_ladder_scores_compares_and_decides(tmp_path):
    task = make_task(tmp_path, target=0.8)
    model = FakeModel(respond=oracle(0.4, 0.95))
    results = run_ladder(task, RunOptions(model=model, evidence=False, report=False, out_dir=tmp_path / "runs"), log=lambda m: None)

    zero, few = results.rung("zero_shot"), results.rung("few_shot")
    assert zero.score.value == pytest.approx(0.4, abs=0.06)
    assert few.score.value == pytest.approx(0.95, abs=0.06)
    assert zero.score.ci_low < zero.score.value < zero.score.ci_high
    # few-shot is best; zero-shot is measurably worse on the same 40 examples.
    assert few.p_value_vs_best is None and zero.significantly_worse_than_best
    assert zero.p_value_vs_best < 0.05
    assert zero.meets_target is False and few.meets_target is True
    assert results.decision.rung == "few_shot"
    assert "Use Few-shot" in results.decision.sentence
    # Few-shot prompts carry 2 examples: more tokens, more cost per request.
    assert few.prompt_tokens > zero.prompt_tokens
    assert few.cost_per_1k > zero.cost_per_1k > 0
    assert few.monthly_cost == pytest.approx(few.cost_per_1k / 1000 * task.business.calls_per_month)
    # The error browser holds examples where the rungs disagree, with both answers.
    assert results.disagreements and set(results.disagreements[0].answers) == {"zero_shot", "few_shot"}

    run_dir = tmp_path / "runs" / results.run_id
    assert load_results(run_dir).decision.rung == "few_shot"
    rows = [json.loads(line) for line in (run_dir / "predictions" / "few_shot.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and {"input", "gold", "prediction", "score", "prompt_tokens"} <= set(rows[0])
    assert "name: toy" in (run_dir / "config.yaml").read_text()


def test_cheaper_rung_good_enough_stops_the_climb(tmp_path):
    task = make_task(tmp_path, target=0.5)
    model = FakeModel(respond=oracle(0.9, 0.95))
    opts = RunOptions(model=model, evidence=False, report=False, out_dir=tmp_path / "runs")
    results = run_ladder(task, opts, log=lambda m: None)
    few = results.rung("few_shot")
    assert few.status == "skipped" and "--all" in few.note
    assert results.decision.rung == "zero_shot"
    # 40 eval answers, then 1 warm-up + 16 single requests timed for latency.
    assert len(model.calls) == 40 + 17
    zero = results.rung("zero_shot")
    assert zero.latency_requests == 16 and zero.latency_p50_ci[0] <= zero.latency_p50_s <= zero.latency_p50_ci[1]

    results = run_ladder(task, RunOptions(model=model, evidence=False, report=False, out_dir=tmp_path / "runs", all_rungs=True, rungs=["zero_shot", "few_shot"], fresh=True), log=lambda m: None)
    assert results.rung("few_shot").status == "done"


def test_a_cheaper_rung_shown_within_the_margin_wins(tmp_path):
    # The rungs differ on 1 of 100 examples: zero-shot is shown within 0.05 of few-shot.
    task = make_task(tmp_path, target=0.5, n_eval=100, margin=0.05, adaptive=False)
    model = FakeModel(respond=oracle(0.91, 0.92))
    results = run_ladder(task, RunOptions(model=model, evidence=False, report=False, all_rungs=True, rungs=["zero_shot", "few_shot"], out_dir=tmp_path / "r"), log=lambda m: None)
    zero = results.rung("zero_shot")
    assert zero.vs_best in ("equivalent", "non-inferior") and zero.significantly_worse_than_best is False
    assert results.decision.rung == "zero_shot" and results.decision.confident is True
    assert "is within 0.05 of the best" in results.decision.sentence


def test_not_significantly_worse_is_not_enough(tmp_path):
    # Zero-shot 0.80 against few-shot 0.90 on 40 examples: McNemar cannot call it worse (p > 0.05),
    # so the old rule chose the cheaper zero-shot. Within a 0.03 margin it is not shown: few-shot
    # is the choice, and the open question says how many examples would settle zero-shot.
    task = make_task(tmp_path, target=0.5)
    model = FakeModel(respond=oracle(0.8, 0.9))
    results = run_ladder(task, RunOptions(model=model, evidence=False, report=False, all_rungs=True, rungs=["zero_shot", "few_shot"], out_dir=tmp_path / "r"), log=lambda m: None)
    zero = results.rung("zero_shot")
    assert zero.p_value_vs_best > 0.05 and zero.vs_best == "inconclusive"
    d = results.decision
    assert d.rung == "few_shot" and d.confident is True
    assert d.examples_needed is not None and d.examples_needed > 40
    assert d.open_question.startswith("Cannot tell Zero-shot prompt from Few-shot (k=2, fixed) at 40 examples")
    assert f"about {d.examples_needed:,} eval examples would settle it" in d.open_question
    assert d.open_question in d.reasons


def test_inconclusive_verdict_names_the_conservative_choice(tmp_path):
    # Two rungs 0.02 apart on 40 examples: neither is shown within 0.03 of the other.
    task = make_task(tmp_path, target=0.5, n_train=30)
    model = FakeModel(respond=oracle(0.7, 0.72))

    def noisy(messages):  # zero-shot right on a different subset: many discordant pairs
        answer = oracle(0.7, 0.72)(messages)
        if not any(m["role"] == "assistant" for m in messages):
            found = re.search(r"item (\d+) kind (\w+)", messages[-1]["content"])
            index, gold = int(found.group(1)), found.group(2)
            return gold if (index * 31 % 100) < 70 else LABELS[(LABELS.index(gold) + 1) % 3]
        return answer

    model = FakeModel(respond=noisy)
    results = run_ladder(task, RunOptions(model=model, evidence=False, report=False, all_rungs=True, rungs=["zero_shot", "few_shot"], out_dir=tmp_path / "r"), log=lambda m: None)
    d = results.decision
    best = max(results.rungs, key=lambda r: r.score.value)
    assert d.confident is False and d.rung == best.name
    assert d.sentence.startswith("Inconclusive: Cannot tell")
    assert "The conservative choice is" in d.sentence and "eval examples would settle it" in d.sentence


class Interrupting(FakeModel):
    def __init__(self, respond, fail_after: int):
        super().__init__(respond=respond)
        self.fail_after = fail_after

    def generate(self, conversations, max_new_tokens, progress=None):
        if len(self.calls) + len(conversations) > self.fail_after:
            raise KeyboardInterrupt
        return super().generate(conversations, max_new_tokens, progress)


def test_interrupted_run_resumes_without_redoing_work(tmp_path):
    task = make_task(tmp_path, target=0.99)
    opts = dict(evidence=False, report=False, out_dir=tmp_path / "runs")
    # zero-shot (40) finishes, few-shot stops after two blocks of 16 (latency is timed at the end)
    # (block = 4 x batch_size).
    first = Interrupting(oracle(0.5, 0.9), fail_after=40 + 32)
    with pytest.raises(KeyboardInterrupt):
        run_ladder(task, RunOptions(model=first, **opts), log=lambda m: None)
    assert len(first.calls) == 72

    second = FakeModel(respond=oracle(0.5, 0.9))
    results = run_ladder(task, RunOptions(model=second, **opts), log=lambda m: None)
    # Only the 8 few-shot examples left unanswered are generated again (+ 17 latency probes a rung).
    assert len(second.calls) == 8 + 2 * 17
    shots = [sum(m["role"] == "assistant" for m in c) for c in second.calls]
    assert all(s == 2 for s in shots[:8]) and shots.count(0) == 17
    assert results.rung("few_shot").score.n == 40

    store = RunStore()
    [row] = store.runs(task="toy")
    assert row["status"] == "finished" and {r["name"] for r in row["rungs"]} == {"zero_shot", "few_shot"}


def test_rag_rung_skipped_without_corpus_and_measures_recall_with_one(tmp_path):
    task = make_task(tmp_path, rungs=("zero_shot", "rag"), target=None)
    results = run_ladder(task, RunOptions(model=FakeModel(respond=oracle(0.5, 0.5)), evidence=False, report=False, out_dir=tmp_path / "r"), log=lambda m: None)
    assert results.rung("rag").status == "skipped" and "corpus" in results.rung("rag").note

    class Hit:
        def __init__(self, doc_id):
            self.chunk = type("C", (), {"doc_id": doc_id, "text": "text of " + doc_id, "title": ""})()
            self.score = 1.0

    class Retriever:
        def search(self, query, k):
            return [Hit("d1"), Hit("d2")][:k]

    rows = [chat(f"q{i}", "a", source_id="d1" if i % 2 else "d9") for i in range(10)]
    write_jsonl(tmp_path / "eval.jsonl", rows)
    model = FakeModel(respond=lambda m: "a" if "text of d1" in m[-1]["content"] else "b")
    results = run_ladder(task, RunOptions(model=model, retriever=Retriever(), evidence=False, report=False, out_dir=tmp_path / "r2"), log=lambda m: None)
    rag = results.rung("rag")
    assert rag.retrieval_recall == pytest.approx(0.5)
    assert rag.score.value == 1.0
    assert any("Documents:" in c[-1]["content"] for c in model.calls)


def test_few_shot_rag_combines_demonstrations_with_documents(tmp_path):
    task = make_task(tmp_path, rungs=("zero_shot", "few_shot_rag"), target=None)

    class Retriever:
        def search(self, query, k):
            chunk = type("C", (), {"doc_id": "d1", "text": "the facts", "title": "Doc"})()
            return [type("H", (), {"chunk": chunk, "score": 1.0})()]

    model = FakeModel(respond=oracle(0.3, 0.9))
    results = run_ladder(task, RunOptions(model=model, retriever=Retriever(), evidence=False, report=False, out_dir=tmp_path / "r"), log=lambda m: None)
    combined = results.rung("few_shot_rag")
    last = next(c for c in reversed(model.calls) if len(c) > 2)
    # system, 2 demonstrations (user + assistant each), then the question carrying the documents.
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "Documents:\n[1] Doc: the facts" in last[-1]["content"] and "Documents:" not in last[1]["content"]
    assert combined.title == "Few-shot (k=2) + RAG (k=3)"
    assert combined.p_value_vs_zero_shot is not None and combined.p_value_vs_zero_shot < 0.05
    assert results.rung("zero_shot").p_value_vs_zero_shot is None


def test_all_climbs_every_rung_that_applies(tmp_path):
    """--all without a corpus leaves out the RAG rungs, unless the task lists one (then it shows as skipped)."""
    options = dict(model=FakeModel(respond=oracle(0.4, 0.95)), evidence=False, report=False, all_rungs=True)
    task = make_task(tmp_path, rungs=("zero_shot", "few_shot"))
    names = lambda results: [r.name for r in results.rungs]  # noqa: E731
    import tunewise.ladder.run as run_module

    original = dict(run_module.RUNGS)
    try:  # no training in this test: drop the fine-tuned rungs from the registry
        for n in ("lora", "lora_rag"):
            run_module.RUNGS.pop(n)
        plain = run_ladder(task, RunOptions(**options, out_dir=tmp_path / "a"), log=lambda m: None)
        assert names(plain) == ["zero_shot", "few_shot"]
        listed = task.model_copy(update={"ladder": task.ladder.model_copy(update={"rungs": ["zero_shot", "rag"]})})
        results = run_ladder(listed, RunOptions(**options, out_dir=tmp_path / "b"), log=lambda m: None)
        assert names(results) == ["zero_shot", "few_shot", "rag"] and results.rung("rag").status == "skipped"
        with_corpus = make_task(tmp_path / "c", corpus=True)
        results = run_ladder(with_corpus, RunOptions(**options, out_dir=tmp_path / "c" / "runs"), log=lambda m: None)
        assert names(results) == ["zero_shot", "few_shot", "rag", "few_shot_rag"]
    finally:
        run_module.RUNGS.clear()
        run_module.RUNGS.update(original)


def test_unknown_rung_fails_before_any_work(tmp_path):
    task = make_task(tmp_path)
    model = FakeModel()
    with pytest.raises(Exception, match="unknown rung 'fewshot'; valid rungs: zero_shot, few_shot"):
        run_ladder(task, RunOptions(model=model, rungs=["fewshot"]), log=lambda m: None)
    assert model.calls == []


def test_migrations_are_forward_only_and_idempotent():
    db = sqlite3.connect(":memory:")
    assert migrate(db) == [m.__name__ for m in MIGRATIONS]
    assert migrate(db) == []
    tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
    assert {"runs", "rungs", "_migrations"} <= tables


def test_cli_malformed_task_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "task.yaml"
    bad.write_text("name: x\ndata: {train: a.jsonl}\nmetric: accuracy\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(bad)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "data: give `train` and `eval`" in err and "Traceback" not in err

    good_data = write_jsonl(tmp_path / "d.jsonl", [chat("a", "b")])
    bad.write_text(f"name: x\ndata: {{train: {good_data}, eval: {good_data}}}\ncorpus: nowhere/\n")
    with pytest.raises(SystemExit):
        main(["run", str(bad)])
    assert "corpus: file not found" in capsys.readouterr().err


def test_cli_runs_lists_past_runs(tmp_path):
    task = make_task(tmp_path, target=0.5)
    run_ladder(task, RunOptions(model=FakeModel(respond=oracle(0.9, 0.9)), evidence=False, report=False, out_dir=tmp_path / "r"), log=lambda m: None)
    out = CliRunner().invoke(cli, ["runs"]).output
    assert "toy-" in out and "finished" in out and "zero_shot" in out


def test_extra_metrics_are_scored_on_the_same_answers_and_reread_on_resume(tmp_path):
    from tunewise.commands.run import extra_metrics_table
    from tunewise.eval.metrics import get_metric

    task = make_task(tmp_path, target=0.8)  # accuracy: macro_f1 is its companion by default
    options = RunOptions(model=FakeModel(respond=oracle(0.4, 0.95)), evidence=False, report=False, out_dir=tmp_path / "runs")
    results = run_ladder(task, options, log=lambda m: None)
    run_dir = tmp_path / "runs" / results.run_id
    examples = eval_order(load_splits(task)[1], task.data.seed)  # the order every rung scores in
    for r in results.rungs:
        rows = [json.loads(line) for line in (run_dir / r.predictions_file).read_text().splitlines()]
        expected = get_metric("macro_f1").aggregate([row["prediction"] for row in rows], examples)
        assert list(r.extra_scores) == ["macro_f1"] and r.extra_scores["macro_f1"].value == pytest.approx(expected)
        assert r.extra_scores["macro_f1"].ci_low <= expected <= r.extra_scores["macro_f1"].ci_high

    # Asking for other metrics later reuses the run (same id) and scores the saved answers.
    again = run_ladder(task.model_copy(update={"extra_metrics": ["exact_match"]}), options, log=lambda m: None)
    assert again.run_id == results.run_id
    assert [list(r.extra_scores) for r in again.rungs] == [["exact_match"], ["exact_match"]]
    table = extra_metrics_table(again)
    assert table is not None and [c.header for c in table.columns] == ["rung", "exact_match [95% CI]"]
    none = run_ladder(task.model_copy(update={"extra_metrics": []}), options, log=lambda m: None)
    assert all(r.extra_scores == {} for r in none.rungs) and extra_metrics_table(none) is None


def test_an_extra_metric_that_cannot_score_is_left_out_and_the_run_still_decides(tmp_path):
    task = make_task(tmp_path).model_copy(update={"extra_metrics": ["json_fields", "exact_match"]})  # labels are not JSON
    lines = []
    options = RunOptions(model=FakeModel(respond=oracle(0.4, 0.95)), evidence=False, report=False, out_dir=tmp_path / "runs")
    results = run_ladder(task, options, log=lines.append)
    assert results.decision.rung == "few_shot"
    assert all(list(r.extra_scores) == ["exact_match"] for r in results.rungs)
    assert any(line.startswith("extra metric json_fields left out: ") and "JSON object" in line for line in lines)


def test_unknown_extra_metric_fails_before_any_work(tmp_path):
    from tunewise.errors import TunewiseError

    task = make_task(tmp_path).model_copy(update={"extra_metrics": ["contain"]})
    with pytest.raises(TunewiseError, match="extra_metrics: unknown metric 'contain' \\(did you mean 'contains'\\?\\)"):
        run_ladder(task, RunOptions(model=FakeModel(), out_dir=tmp_path / "runs"), log=lambda m: None)
    assert not (tmp_path / "runs").exists()


def test_run_id_ignores_settings_that_only_change_the_decision(tmp_path):
    from tunewise.ladder.run import config_hash

    task = make_task(tmp_path)
    same = task.model_copy(
        update={"target": 0.1, "extra_metrics": ["exact_match"], "ladder": task.ladder.model_copy(update={"rungs": ["zero_shot"], "alpha": 0.01})}
    )
    other = task.model_copy(update={"ladder": task.ladder.model_copy(update={"max_new_tokens": 7})})
    assert config_hash(task, RunOptions()) == config_hash(same, RunOptions())
    assert config_hash(task, RunOptions()) != config_hash(other, RunOptions())
    assert config_hash(task, RunOptions()) != config_hash(task, RunOptions(eval_limit=5))


# --- decide(): sentences, money, agreement with the rules -----------------------------------------


def scored(name, title, value, *, worse=False, meets=True, monthly=0.0, upfront=0.0, horizon=0.0):
    from tunewise.ladder.results import RungResult, Score

    return RungResult(
        name=name, title=title, score=Score(value=value, ci_low=value - 0.05, ci_high=value + 0.05, n=400),
        meets_target=meets, monthly_cost=monthly, upfront_cost=upfront, horizon_cost=horizon,
    )  # fmt: skip


def verdict_for(rungs, margin=0.03):
    """The decision core's verdict on rungs with 400 per-example scores matching their values."""
    from tunewise.decision import Candidate, choose

    def scores(value):  # the first round(400 x value) right: rungs agree as much as they can
        return [1.0] * round(400 * value) + [0.0] * (400 - round(400 * value))

    return choose([Candidate(r.name, r.title, scores(r.score.value), cost=r.horizon_cost or 0.0) for r in rungs], margin, target=0.8)


@pytest.mark.parametrize(
    "monthly, upfront, horizon, dearer, ending, reason",
    [
        (12.3456, 0.0, 148.1472, 1234.5, "at 10,000 calls/month ($12.35/month).", "costs more: $1,234 vs $148.15 over 12 months."),
        (0.0123, 0.5, 0.6476, 2.5, "at 10,000 calls/month ($0.012/month + $0.50 one-off).", "costs more: $2.50 vs $0.65 over 12 months."),
    ],
)
def test_decide_writes_money_with_the_shared_format(tmp_path, monthly, upfront, horizon, dearer, ending, reason):
    from tunewise.ladder.run import decide

    task = make_task(tmp_path, target=0.8)
    rungs = [
        scored("zero_shot", "Zero-shot", 0.40, worse=True, meets=False),
        scored("few_shot", "Few-shot", 0.95, monthly=monthly, upfront=upfront, horizon=horizon),
        scored("lora", "LoRA", 0.94, horizon=dearer),
    ]
    decision = decide(task, rungs, None, verdict_for(rungs))
    assert decision.rung == "few_shot" and decision.confident
    assert decision.sentence.endswith(ending)
    assert any(r.startswith("LoRA is as good within the margin (0.940)") and r.endswith(reason) for r in decision.reasons)
    assert any(r.startswith("Zero-shot scores 0.400, worse than Few-shot by more than the margin 0.03") for r in decision.reasons)
    assert decision.agreement is None and decision.agreement_kind is None


@pytest.mark.parametrize(
    "approach, kind, says",
    [
        ("few_shot", "agree", "Measurement and the framework agree: Few-shot."),
        ("prompting", "disagree", "the rules suggest prompting (it scored 0.400 here)"),
        ("lora", "disagree", "the rules suggest lora (it was not measured in this run)"),
        ("router", "unmeasured", "The framework recommends router, which the ladder does not measure directly."),
    ],
)
def test_decide_records_how_measurement_relates_to_the_rules(tmp_path, approach, kind, says):
    from tunewise.ladder.run import decide

    task = make_task(tmp_path, target=0.8)
    rungs = [scored("zero_shot", "Zero-shot", 0.40, worse=True, meets=False), scored("few_shot", "Few-shot", 0.95)]
    decision = decide(task, rungs, {"approach": approach, "rules": [{"id": "r1", "reason": "because"}]}, verdict_for(rungs))
    assert decision.agreement_kind == kind
    assert says in decision.agreement
    assert decision.advisor_rules == ["r1: because"]
