"""The judge metric: parsing, both modes, the position swap, unparsable replies, the cache, batching,
task-file options; one real run of the embedded model as judge (slow)."""

from __future__ import annotations

import doctest
import json
import re

import numpy as np
import pytest
from conftest import EXAMPLES

from tunewise.data.example import Example
from tunewise.eval import judge as judge_module
from tunewise.eval.judge import JudgeCache, JudgeMetric, correlations, judge_metric, parse_pairwise, parse_rubric
from tunewise.eval.metrics import METRICS, MetricError, chrf_score, get_metric, secondary_metrics
from tunewise.eval.stats import compare_predictions, evaluate
from tunewise.models.base import FakeModel

RUBRIC = "5: fluent, every attribute, nothing invented. 1: wrong or unrelated."


class CountingJudge(FakeModel):
    """A fake judge that counts `generate` calls (batches) as well as prompts (`calls`)."""

    def __init__(self, respond, name: str = "fake-judge") -> None:
        super().__init__(respond=respond, name=name)
        self.batches: list[int] = []

    def generate(self, conversations, max_new_tokens, progress=None):
        self.batches.append(len(conversations))
        return super().generate(conversations, max_new_tokens, progress)


def answers_in(messages) -> tuple[str, str]:
    """(answer A, answer B) from a pairwise judge prompt."""
    text = messages[-1]["content"]
    a = re.search(r"\[Answer A\]\n(.*?)\n\n\[Answer B\]", text, re.S).group(1)
    b = re.search(r"\[Answer B\]\n(.*?)\n\nWhich answer", text, re.S).group(1)
    return a, b


def answer_to_score(messages) -> str:
    return re.search(r"\[Answer to score\]\n(.*?)\n\nScore the answer", messages[-1]["content"], re.S).group(1)


def fair(messages) -> str:
    """Prefers the answer that says GOOD, whichever side it is on; a tie when neither or both do."""
    a, b = answers_in(messages)
    if ("GOOD" in a) == ("GOOD" in b):
        return "Tie: equally good."
    return "[[A]]" if "GOOD" in a else "Answer B is better."


def always_a(messages) -> str:
    return "A"


def example(i: int, answer: str | None = None) -> Example:
    return Example(
        [{"role": "system", "content": "Describe the restaurant."}, {"role": "user", "content": f'{{"name": "Place {i}"}}'}],
        answer or f"Place {i} is a pub in the city centre.",
    )


def metric(model, tmp_path, **options) -> JudgeMetric:
    return judge_metric(model, cache_dir=tmp_path / "judge-cache", **options)


# -- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("A", "A"),
        ("B", "B"),
        ("A.", "A"),
        ("**B**", "B"),
        ("[[A]]", "A"),
        ("My verdict: [[B]]", "B"),
        ("[[C]]", "tie"),
        ("Answer A is better.", "A"),
        ("Response B is better because it is shorter.", "B"),
        ("Verdict: A", "A"),
        ("The better answer is B.", "B"),
        ("I prefer A.", "A"),
        ("B is clearly better.", "B"),
        ("A because it names every attribute.", "A"),
        ("a", "A"),
        ("(B)", "B"),
        ("Tie", "tie"),
        ("Both answers are equally good.", "tie"),
        ("A good start, but the better answer is B", "B"),
        ("A: A\n\nA: A\n\nB: B", "A"),
        ("[[A]] or [[B]]", None),
        ("A is better. No, B is better.", None),
        ("Tie. A is better.", None),
        ("The Cricketers is a coffee shop near the river.", None),
        ("", None),
        ("   ", None),
    ],
)
def test_pairwise_verdicts_are_read_robustly(reply, expected):
    assert parse_pairwise(reply) == expected


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("4", 4.0),
        ("Score: 4", 4.0),
        ("score: 2. The answer misses the area.", 2.0),
        ("4/5", 4.0),
        ("**5**", 5.0),
        ("[[3]]", 3.0),
        ("Rating: 3 out of 5.", 3.0),
        ("I would give it a 2 because it invents a price.", 2.0),
        ("3.5", 3.5),
        ("5\nThe restaurant has a customer rating of 1 out of 5.", 5.0),
        ("Score: 5/10", None),
        ("8/10", None),
        ("Score: 7", None),
        ("0", None),
        ("4. It names every attribute.", 4.0),
        ("Score:", None),
        ("The answer is good.", None),
        ("", None),
    ],
)
def test_rubric_scores_are_read_robustly(reply, expected):
    assert parse_rubric(reply) == expected


def test_module_doctests():
    assert doctest.testmod(judge_module).failed == 0


# -- the two modes ------------------------------------------------------------------------------


def test_pairwise_scores_win_tie_loss_from_both_orders(tmp_path):
    examples = [example(i) for i in range(3)]
    predictions = ["GOOD answer", "an answer", "another answer"]
    examples[2] = example(2, answer="GOOD reference")
    fake = CountingJudge(fair)
    m = metric(fake, tmp_path)
    assert m.scores(predictions, examples) == [1.0, 0.5, 0.0]
    report = m.judge_report()
    assert report.consistency == 1.0 and report.consistent == report.consistency_n == 3
    assert report.warnings() == []
    assert report.verdicts == {"win": 1, "tie": 1, "loss": 1}
    assert report.replies == report.new_calls == len(fake.calls) == 6
    # each example was asked in both orders: the answer first, then the reference first
    firsts = [answers_in(c)[0] for c in fake.calls]
    assert firsts.count("GOOD answer") == 1 and firsts.count(examples[0].answer) == 1


def test_a_judge_biased_to_position_gives_ties_and_zero_consistency(tmp_path):
    examples = [example(i) for i in range(6)]
    m = metric(CountingJudge(always_a), tmp_path)
    scores = m.scores([f"answer {i}" for i in range(6)], examples)
    report = m.judge_report()
    assert scores == [0.5] * 6
    assert report.consistency == 0.0 and report.consistency_n == 6 and report.consistent == 0
    assert report.verdicts == {"inconsistent": 6} and report.unparsable == 0
    [warning] = report.warnings()
    assert "same verdict with the answers swapped on only 0% of 6 examples" in warning


def test_pairwise_skips_the_reference_itself_and_empty_answers(tmp_path):
    examples = [example(i) for i in range(3)]
    fake = CountingJudge(fair)
    m = metric(fake, tmp_path)
    assert m.scores([examples[0].answer + "  ", "   ", "GOOD"], examples) == [0.5, 0.0, 1.0]
    report = m.judge_report()
    assert report.skipped == 2 and report.verdicts == {"skipped": 2, "win": 1}
    assert len(fake.calls) == 2 and report.consistency_n == 1


def test_rubric_maps_one_to_five_onto_zero_to_one(tmp_path):
    replies = {"poor": "Score: 1", "fine": "3/5", "great": "5 - fluent and complete"}

    def grade(messages):
        assert "Rubric: " + RUBRIC in messages[-1]["content"]
        assert "[Reference answer]" in messages[-1]["content"]
        return replies[answer_to_score(messages)]

    fake = CountingJudge(grade)
    m = metric(fake, tmp_path, mode="rubric", rubric=RUBRIC)
    assert m.scores(["poor", "fine", "great", ""], [example(i) for i in range(4)]) == [0.0, 0.5, 1.0, 0.0]
    report = m.judge_report()
    assert report.mode == "rubric" and report.consistency is None
    assert report.verdicts == {"1": 1, "3": 1, "5": 1, "skipped": 1} and report.replies == 3


def test_rubric_can_hide_the_reference(tmp_path):
    fake = CountingJudge(lambda messages: "4")
    m = metric(fake, tmp_path, mode="rubric", rubric=RUBRIC, reference_in_rubric=False)
    assert m.scores(["x"], [example(0)]) == [0.75]
    assert "[Reference answer]" not in fake.calls[0][-1]["content"]


# -- unparsable replies -------------------------------------------------------------------------


def test_unparsable_pairwise_replies_are_counted_reported_and_scored_as_a_tie(tmp_path):
    def flaky(messages):
        a, b = answers_in(messages)
        return "I cannot say." if "MUMBLE" in a + b else fair(messages)

    m = metric(CountingJudge(flaky), tmp_path)
    examples = [example(i) for i in range(4)]
    scores = m.scores(["GOOD", "MUMBLE", "MUMBLE GOOD", "plain"], examples)
    report = m.judge_report()
    assert scores == [1.0, 0.5, 0.5, 0.5]
    assert report.unparsable == 2 and report.unparsable_replies == 4 and report.unparsable_score == 0.5
    assert [s["index"] for s in report.unparsable_samples] == [1, 2]
    assert report.unparsable_samples[0]["reply"] == "I cannot say."
    assert report.consistency_n == 2  # unparsable examples are not in the consistency rate
    assert report.verdicts == {"win": 1, "unparsable": 2, "tie": 1}
    assert "unparsable 2/4" in report.summary()
    assert any("2 of 4 judged examples got a reply that could not be read" in w for w in report.warnings())


def test_one_unparsable_order_makes_the_example_unparsable(tmp_path):
    replies = iter(["A", "no idea"])
    m = metric(CountingJudge(lambda messages: next(replies)), tmp_path)
    assert m.scores(["x"], [example(0)]) == [0.5]
    assert m.judge_report().unparsable == 1 and m.judge_report().unparsable_replies == 1


def test_unparsable_rubric_replies_score_the_chosen_value(tmp_path):
    m = metric(CountingJudge(lambda messages: "What a lovely pub."), tmp_path, mode="rubric", rubric=RUBRIC, unparsable_score=0.0)
    assert m.scores(["x", "y"], [example(0), example(1)]) == [0.0, 0.0]
    report = m.judge_report()
    assert report.unparsable == report.unparsable_replies == 2 and report.verdicts == {"unparsable": 2}
    assert len(report.warnings()) == 1


def test_a_judge_that_cannot_tell_answers_apart_is_flagged(tmp_path):
    m = metric(CountingJudge(lambda messages: "3"), tmp_path, mode="rubric", rubric=RUBRIC)
    m.scores(["x", "y", "z"], [example(i) for i in range(3)])
    assert m.judge_report().warnings() == ["judge fake-judge gave every judged answer the same verdict (3): it cannot tell these answers apart"]


# -- cache --------------------------------------------------------------------------------------


def test_a_rerun_makes_no_judge_calls(tmp_path):
    examples = [example(i) for i in range(5)]
    predictions = ["GOOD", "a", "GOOD b", "c", "d"]
    first = CountingJudge(fair)
    scores = metric(first, tmp_path).scores(predictions, examples)
    assert len(first.calls) == 10
    again = CountingJudge(fair)  # a new process: a new metric and model, the same cache folder
    m = metric(again, tmp_path)
    assert m.scores(predictions, examples) == scores
    assert again.calls == [] and again.batches == []
    report = m.judge_report()
    assert report.new_calls == 0 and report.cached == report.replies == 10
    assert report.prompt_tokens > 0  # what judging this set costs, though this rerun paid nothing


def test_a_fully_cached_judge_spec_is_never_loaded(tmp_path, monkeypatch):
    examples, predictions = [example(i) for i in range(3)], ["GOOD", "x", "y"]
    scores = metric(CountingJudge(fair), tmp_path, judge_id="embedded").scores(predictions, examples)

    def no_loading(*args, **kwargs):
        raise AssertionError("the judge model was loaded")

    monkeypatch.setattr("tunewise.models.resolve.load_model", no_loading)
    m = metric("embedded", tmp_path)
    assert m.scores(predictions, examples) == scores and m.judge_report().new_calls == 0
    with pytest.raises(AssertionError, match="was loaded"):
        m.scores(["something new"], [example(0)])


def test_replies_another_instance_wrote_are_read_before_asking(tmp_path):
    examples = [example(i) for i in range(2)]
    first, second = CountingJudge(fair), CountingJudge(fair)
    a, b = metric(first, tmp_path), metric(second, tmp_path)
    b.scores(["x"], [example(9)])  # b has read the cache file
    a.scores(["GOOD", "y"], examples)
    assert b.scores(["GOOD", "y"], examples) == [1.0, 0.5]
    assert len(second.calls) == 2 and b.judge_report().new_calls == 0


def test_the_cache_key_covers_judge_mode_prompt_and_length(tmp_path):
    examples, predictions = [example(0)], ["GOOD"]
    metric(CountingJudge(fair), tmp_path).scores(predictions, examples)
    for options in ({"judge_id": "other-judge"}, {"max_new_tokens": 8}, {"mode": "rubric", "rubric": RUBRIC}):
        fake = CountingJudge(lambda messages: "A" if "[Answer A]" in messages[-1]["content"] else "4")
        metric(fake, tmp_path, **options).scores(predictions, examples)
        assert fake.calls, options
    fake = CountingJudge(fair)
    metric(fake, tmp_path).scores(["GOOD!"], examples)  # another answer: another prompt
    assert len(fake.calls) == 2


def test_a_torn_cache_line_is_skipped_and_the_next_write_starts_a_new_line(tmp_path):
    examples, predictions = [example(i) for i in range(3)], ["GOOD", "x", "y"]
    scores = metric(CountingJudge(fair), tmp_path).scores(predictions, examples)
    [path] = (tmp_path / "judge-cache").glob("*.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2], encoding="utf-8")  # a crash mid-write

    cache = JudgeCache(path)
    assert len(cache.entries) == 5 and cache.torn == 1
    fake = CountingJudge(fair)
    m = metric(fake, tmp_path)
    assert m.scores(predictions, examples) == scores
    assert len(fake.calls) == 1 and m.judge_report().new_calls == 1  # only the torn reply is asked again
    healed = JudgeCache(path)
    assert len(healed.entries) == 6 and healed.torn == 1  # the torn fragment stays, on a line of its own
    assert all(json.loads(line)["key"] for line in path.read_text(encoding="utf-8").splitlines()[-1:])


# -- batching, statistics, report ---------------------------------------------------------------


def test_judge_prompts_go_to_the_model_in_batches(tmp_path):
    examples = [example(i) for i in range(10)]
    fake = CountingJudge(fair)
    m = metric(fake, tmp_path, batch_size=8)
    m.scores([f"answer {i}" for i in range(10)], examples)
    assert fake.batches == [8, 8, 4]
    fake_default = CountingJudge(fair)
    metric(fake_default, tmp_path / "other").scores([f"answer {i}" for i in range(10)], examples)
    assert fake_default.batches == [20]


def test_duplicate_prompts_are_asked_once(tmp_path):
    fake = CountingJudge(fair)
    m = metric(fake, tmp_path)
    assert m.scores(["GOOD", "GOOD"], [example(0), example(0)]) == [1.0, 1.0]
    assert len(fake.calls) == 2 and m.judge_report().replies == 2


def test_judge_scores_feed_the_confidence_intervals_and_paired_tests(tmp_path):
    examples = [example(i) for i in range(30)]
    good = ["GOOD" if i % 3 else "meh" for i in range(30)]
    plain = ["meh"] * 30
    m = metric(CountingJudge(fair), tmp_path)
    result = evaluate(m, good, examples, seed=0)
    assert result.value == pytest.approx(np.mean(m.scores(good, examples)))
    assert result.ci_low <= result.value <= result.ci_high and len(result.per_example) == 30
    comparison = compare_predictions(m, good, plain, examples, seed=0)
    assert comparison.diff == pytest.approx(np.mean([1.0 if i % 3 else 0.5 for i in range(30)]) - 0.5)
    assert comparison.method == "paired-bootstrap" and comparison.p_value < 0.01
    assert m.per_example("GOOD", examples[0]) == 1.0  # the one-example path of every Metric


def test_report_costs_and_agreement_with_chrf(tmp_path):
    scipy_stats = pytest.importorskip("scipy.stats")
    examples = [example(i) for i in range(8)]
    predictions = [
        "GOOD",
        examples[1].answer + " GOOD",
        "nothing alike",
        examples[3].answer[:20],
        "GOOD " + examples[4].answer,
        "q",
        examples[6].answer + "!",
        "GOOD x",
    ]
    fake = CountingJudge(fair)
    m = metric(fake, tmp_path, input_per_1m=0.15, output_per_1m=0.60)
    scores = m.scores(predictions, examples)
    report = m.judge_report()
    assert report.prompt_tokens == sum(fake.count_tokens(msg["content"]) + 4 for c in fake.calls for msg in c)
    assert report.output_tokens == sum(fake.count_tokens(fair(c)) for c in fake.calls)
    assert report.dollars == pytest.approx((report.prompt_tokens * 0.15 + report.output_tokens * 0.60) / 1e6)
    chrf = [chrf_score(p, ex.answer) for p, ex in zip(predictions, examples)]
    assert report.chrf_spearman == pytest.approx(scipy_stats.spearmanr(scores, chrf).statistic)
    assert report.chrf_pearson == pytest.approx(scipy_stats.pearsonr(scores, chrf).statistic)
    assert report.n == 8 and report.mean == pytest.approx(np.mean(scores))
    as_dict = report.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict  # fit for results.json
    assert m.judge_report(predictions, examples).new_calls == 0  # a rung's report, from the cache


def test_correlations_are_none_when_undefined():
    assert correlations([0.5, 0.5, 0.5], [0.1, 0.2, 0.3]) == (None, None)
    assert correlations([0.0, 1.0], [0.1, 0.2]) == (None, None)


def test_no_price_no_dollars(tmp_path):
    m = metric(CountingJudge(fair), tmp_path)
    m.scores(["GOOD"], [example(0)])
    assert m.judge_report().dollars is None


# -- registration, options, task files ----------------------------------------------------------


def test_judge_is_registered_with_chrf_beside_it():
    assert "judge" in METRICS and secondary_metrics("judge") == ["chrf"]
    built = get_metric("judge")  # building loads no model
    assert isinstance(built, JudgeMetric) and not built.binary and built.higher_is_better and built.corpus is None


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mode": "score"}, "mode 'score' is not one of pairwise, rubric"),
        ({"mode": "rubric"}, "mode rubric needs a rubric"),
        ({"mode": "rubric", "rubric": "  "}, "mode rubric needs a rubric"),
        ({"rubric": RUBRIC}, "a rubric is only used in mode rubric"),
        ({"max_new_tokens": 0}, "max_new_tokens must be a whole number of at least 1"),
        ({"batch_size": 2.5}, "batch_size must be a whole number"),
        ({"unparsable_score": 2}, "unparsable_score must be a number from 0 to 1"),
        ({"input_per_1m": -1}, "input_per_1m must be a price"),
        ({"judge": "no/such/judge/here"}, "judge: unknown model spec"),
        ({"judge": ""}, "name a judge model"),
        ({"judge": 5}, "give a model spec or a ChatModel"),
        ({"api_key_env": "KEY"}, "api_key_env applies to an API judge"),
        ({"judgee": "embedded"}, "metric 'judge' takes only judge, mode, rubric"),
    ],
)
def test_bad_options_are_refused_with_the_fix(options, message):
    with pytest.raises(MetricError, match=re.escape(message)):
        get_metric("judge", **options)


def test_an_http_judge_is_an_openai_compatible_model(tmp_path):
    m = judge_metric("my-judge", base_url="http://localhost:9/v1", api_key_env="JUDGE_KEY", cache_dir=tmp_path)
    assert m.judge.judge_id == "my-judge@http://localhost:9/v1"
    from tunewise.models.openai_http import OpenAIChatModel

    assert isinstance(m.judge.model, OpenAIChatModel)  # built, not called
    with pytest.raises(MetricError, match="not to an already built model"):
        judge_metric(CountingJudge(fair), base_url="http://localhost:9/v1")


def test_task_files_check_judge_options(tmp_path):
    from tunewise.task import TaskError, load_task

    (tmp_path / "x.jsonl").write_text("")

    def task(options: str):
        path = tmp_path / "task.yaml"
        path.write_text(f"name: x\ndata: {{file: x.jsonl}}\nmetric: judge\nmetric_options: {options}\n")
        return load_task(path)

    loaded = task(f"{{judge: embedded, mode: rubric, rubric: '{RUBRIC}', max_new_tokens: 8, input_per_1m: 0.5}}")
    built = get_metric(loaded.metric, **loaded.metric_options)
    assert built.judge.mode == "rubric" and built.judge.max_new_tokens == 8
    with pytest.raises(TaskError, match=r"metric_options: metric 'judge' takes only judge, mode, rubric, .*got 'temperature'"):
        task("{temperature: 0.2}")
    # values are checked when the metric is built, before any model work
    with pytest.raises(MetricError, match="needs a rubric"):
        get_metric("judge", **task("{mode: rubric}").metric_options)


def test_the_bundled_style_task_uses_the_judge(monkeypatch):
    from tunewise.data.formats import read_examples
    from tunewise.task import load_task

    task = load_task(EXAMPLES / "e2e_style" / "task.yaml")
    assert task.metric == "judge" and task.metric_options["mode"] == "pairwise"
    built = get_metric(task.metric, **task.metric_options)
    assert built.judge.judge_id == "embedded"
    train, evaluation = read_examples(task.data.train), read_examples(task.data.eval)
    assert len(evaluation) == 100 and len(train) >= 300
    # whole attribute sets are split: none is in both train and eval
    assert not {ex.input_text for ex in train} & {ex.input_text for ex in evaluation}
    assert all(ex.answer in ex.references for ex in evaluation)


# -- the real embedded model as judge -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pairwise", "rubric"])
def test_the_embedded_model_judges_and_its_report_adds_up(tmp_path, mode):
    from tunewise.data.formats import read_examples

    examples = read_examples(EXAMPLES / "e2e_style" / "eval.jsonl")[:4]
    predictions = [ex.references[-1] if i % 2 else "I am sorry, I cannot help with that." for i, ex in enumerate(examples)]
    options = {"mode": mode, "rubric": RUBRIC} if mode == "rubric" else {}
    m = judge_metric("embedded", cache_dir=tmp_path, max_new_tokens=16, **options)
    scores = m.scores(predictions, examples)
    report = m.judge_report()
    assert len(scores) == report.n == 4 and all(0.0 <= s <= 1.0 for s in scores)
    assert report.mean == pytest.approx(np.mean(scores))
    assert sum(report.verdicts.values()) == report.n
    judged = report.n - report.skipped
    assert report.replies == report.new_calls == judged * (2 if mode == "pairwise" else 1)
    assert report.prompt_tokens > 0 and report.output_tokens > 0
    assert 0 <= report.unparsable <= judged and report.unparsable <= report.unparsable_replies
    assert report.verdicts.get("unparsable", 0) == report.unparsable == len(report.unparsable_samples)
    if mode == "pairwise":
        assert report.consistency_n == judged - report.unparsable
        assert report.consistency is None or 0.0 <= report.consistency <= 1.0
    else:
        assert report.consistency is None
    again = judge_metric("embedded", cache_dir=tmp_path, max_new_tokens=16, **options)
    assert again.scores(predictions, examples) == scores and again.judge_report().new_calls == 0
