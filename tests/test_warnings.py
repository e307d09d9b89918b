"""What one number hides (issue 17): confusion matrices, collapsed classes and companion metrics that
disagree, from the pure module up to results.json, the CLI and both reports."""

from __future__ import annotations

import json
import re

import pytest

from conftest import chat, write_jsonl
from tunewise.decision.warnings import collapse_warnings, companion_warnings, confusion, verdict_warnings
from tunewise.ladder.results import RungResult, Score, load_results
from tunewise.ladder.run import RunOptions, run_ladder
from tunewise.models.base import FakeModel
from tunewise.task import parse_task

# The sentiment case, 120 eval examples: "ambivalent" is 33 of them (27.5%).
GOLD = ["ambivalent"] * 33 + ["positive"] * 35 + ["negative"] * 32 + ["neutral"] * 20


def collapsing(gold: str, i: int) -> str:
    """Right on every class but ambivalent, which it calls positive: accuracy 0.725, never 'ambivalent'."""
    return "positive" if gold == "ambivalent" else gold


def balanced(gold: str, i: int) -> str:
    """Every class predicted, fewer right: accuracy 0.692 but a higher macro-F1."""
    k = i - GOLD.index(gold)  # position within its class
    wrong = {"positive": (15, "negative"), "negative": (12, "positive"), "neutral": (10, "ambivalent")}
    if gold in wrong and k < wrong[gold][0]:
        return wrong[gold][1]
    return gold


def score(value: float) -> Score:
    return Score(value=value, ci_low=value - 0.05, ci_high=value + 0.05, n=120)


def test_confusion_counts_by_gold_and_prediction():
    predictions = [collapsing(g, i) for i, g in enumerate(GOLD)]
    m = confusion(predictions + ["I think it is positive"], GOLD + ["neutral"])
    assert m["ambivalent"] == {"positive": 33}
    assert m["positive"] == {"positive": 35} and m["neutral"] == {"neutral": 20, "(other)": 1}
    assert list(m) == ["ambivalent", "negative", "neutral", "positive"]
    # Labels compare as accuracy compares them.
    assert confusion(["**Play_Music.**"], ["play_music"]) == {"play_music": {"play_music": 1}}


def test_a_rung_that_never_predicts_a_common_class_is_warned_with_the_counts():
    lines = collapse_warnings("LoRA fine-tune", confusion([collapsing(g, i) for i, g in enumerate(GOLD)], GOLD))
    assert lines == [
        "LoRA fine-tune never predicts 'ambivalent' (33 of 120 gold labels, 28%): its score hides a class it does not "
        "produce; see its confusion matrix."
    ]
    assert collapse_warnings("Few-shot", confusion([balanced(g, i) for i, g in enumerate(GOLD)], GOLD)) == []


@pytest.mark.parametrize(
    ("predicted_neutral", "warned"),
    [(0, "never predicts 'neutral'"), (4, "predicts 'neutral' only 4 times"), (1, "predicts 'neutral' only once"), (5, None)],
)
def test_rarely_means_under_a_quarter_of_the_gold_count(predicted_neutral, warned):
    # neutral is 20 of 120 gold: fewer than 5 predictions (a quarter) is rare.
    predictions = [("neutral" if i < 100 + predicted_neutral else "positive") if g == "neutral" else g for i, g in enumerate(GOLD)]
    lines = collapse_warnings("R", confusion(predictions, GOLD))
    assert (lines[0] if lines else None) is None if warned is None else warned in lines[0]


def test_a_rare_class_in_gold_is_not_a_collapse():
    gold = ["a"] * 95 + ["b"] * 5  # b is 5%: under the 10% that makes a class common
    assert collapse_warnings("R", confusion(["a"] * 100, gold)) == []


def test_a_rung_answering_no_label_at_all_gets_one_line():
    lines = collapse_warnings("Zero-shot prompt", confusion(["I'm sorry, but"] * 120, GOLD))
    assert lines == ["Zero-shot prompt predicts none of the gold labels: all 120 answers are something else (see its confusion matrix)."]


def test_companion_metric_disagreement_names_both_figures():
    lora = RungResult(name="lora", title="LoRA fine-tune", score=score(0.642), extra_scores={"macro_f1": score(0.385)})
    few = RungResult(name="few_shot", title="Few-shot", score=score(0.558), extra_scores={"macro_f1": score(0.538)})
    zero = RungResult(name="zero_shot", title="Zero-shot", score=score(0.2), extra_scores={"macro_f1": score(0.1)})
    lines = companion_warnings([zero, few, lora], "accuracy", True, {"macro_f1": True}, focus="lora")
    assert lines == [
        "accuracy and macro_f1 disagree: LoRA fine-tune is ahead on accuracy (0.642 vs 0.558), Few-shot on macro_f1 (0.538 vs 0.385)."
    ]
    # Seen from the other rung, the same disagreement.
    assert "LoRA fine-tune is ahead on accuracy" in companion_warnings([few, lora], "accuracy", True, {}, focus="few_shot")[0]
    # A companion where lower is better agrees when it is lower.
    lora.extra_scores["errors"], few.extra_scores["errors"] = score(0.1), score(0.3)
    assert not any("errors" in x for x in companion_warnings([few, lora], "accuracy", True, {"errors": False}, focus="lora"))
    # A disagreement under one point on either metric is noise (intent: 0.910/0.890 accuracy, 0.901/0.904 macro-F1).
    a = RungResult(name="a", title="A", score=score(0.910), extra_scores={"macro_f1": score(0.901)})
    b = RungResult(name="b", title="B", score=score(0.890), extra_scores={"macro_f1": score(0.904)})
    assert companion_warnings([a, b], "accuracy", True, {}, focus="a") == []
    # No focus: the best rung by the primary metric.
    del lora.extra_scores["errors"], few.extra_scores["errors"]
    assert len(companion_warnings([zero, few, lora], "accuracy", True, {}, focus=None)) == 1


def test_verdict_warnings_put_collapses_first():
    lora = RungResult(name="lora", title="LoRA fine-tune", score=score(0.725), extra_scores={"macro_f1": score(0.668)})
    few = RungResult(name="few_shot", title="Few-shot", score=score(0.692), extra_scores={"macro_f1": score(0.682)})
    confusions = {"lora": confusion([collapsing(g, i) for i, g in enumerate(GOLD)], GOLD)}
    lines = verdict_warnings([few, lora], confusions, "accuracy", True, {"macro_f1": True}, focus="lora")
    assert lines[0].startswith("LoRA fine-tune never predicts 'ambivalent'") and "disagree" in lines[1]


# -- end to end on a small labelled fixture ----------------------------------------------------------


def sentiment_task(tmp_path):
    rows = [chat(f"review {i}", g, system="Sentiment of the review?") for i, g in enumerate(GOLD)]
    train = write_jsonl(tmp_path / "train.jsonl", rows[::3])
    evals = write_jsonl(tmp_path / "eval.jsonl", rows)
    raw = {
        "name": "sentiment",
        "data": {"train": str(train), "eval": str(evals)},
        "metric": "accuracy",
        "ladder": {"rungs": ["zero_shot", "few_shot"], "few_shot": {"k": 2, "selection": "fixed"}, "batch_size": 8},
    }
    return parse_task(raw, tmp_path / "task.yaml")


def respond(messages):
    i = int(re.search(r"review (\d+)", messages[-1]["content"]).group(1))
    few = any(m["role"] == "assistant" for m in messages)
    return (balanced if few else collapsing)(GOLD[i], i)


def test_the_sentiment_collapse_reaches_results_cli_and_reports(tmp_path, capsys):
    from tunewise.commands.run import print_results
    from tunewise.report.render import render_report

    task = sentiment_task(tmp_path)
    opts = RunOptions(model=FakeModel(respond=respond), evidence=False, report=False, full=True, out_dir=tmp_path / "runs")
    results = run_ladder(task, opts, log=lambda m: None)
    zero, few = results.rung("zero_shot"), results.rung("few_shot")
    assert zero.score.value == pytest.approx(87 / 120) and few.score.value == pytest.approx(83 / 120)
    assert zero.extra_scores["macro_f1"].value < few.extra_scores["macro_f1"].value
    warnings = results.decision.warnings
    assert any(w.startswith("Zero-shot prompt never predicts 'ambivalent' (33 of 120 gold labels") for w in warnings), warnings
    assert any(w.startswith("accuracy and macro_f1 disagree: Zero-shot prompt is ahead on accuracy (0.725 vs 0.692)") for w in warnings), warnings

    run_dir = tmp_path / "runs" / results.run_id
    saved = json.loads((run_dir / "results.json").read_text())
    by_name = {r["name"]: r for r in saved["rungs"]}
    assert by_name["zero_shot"]["confusion"]["ambivalent"] == {"positive": 33}
    assert by_name["few_shot"]["confusion"]["neutral"] == {"ambivalent": 10, "neutral": 10}
    assert saved["decision"]["warnings"] == warnings
    assert load_results(run_dir).rung("zero_shot").confusion == zero.confusion

    print_results(results)
    printed = capsys.readouterr().out
    assert "never predicts 'ambivalent'" in re.sub(r"\s+", " ", printed)

    render_report(results, run_dir)
    md = (run_dir / "report.md").read_text()
    html = (run_dir / "report.html").read_text()
    assert "What the score hides" in md and "⚠ Zero-shot prompt never predicts 'ambivalent'" in md
    assert "| ambivalent | 0 | 0 | 0 | 33 |" in md  # gold ambivalent row: all predicted positive
    assert 'id="confusion"' in html and "What the score hides" in html and "never predicts &#39;ambivalent&#39;" in html


def test_tasks_without_labels_get_no_confusion(tmp_path):
    task = sentiment_task(tmp_path).model_copy(update={"metric": "exact_match"})
    opts = RunOptions(model=FakeModel(respond=respond), evidence=False, report=False, full=True, out_dir=tmp_path / "runs")
    results = run_ladder(task, opts, log=lambda m: None)
    assert all(r.confusion is None for r in results.rungs)
    assert not any("never predicts" in w for w in results.decision.warnings)
