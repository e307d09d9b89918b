"""A lower-is-better metric (`fn.higher_is_better = False`, e.g. an error rate) is ranked the right
way round everywhere a score is compared: the decision, the target check, the sentences and
warnings, the report and the CLI, `tunewise compare`, tuning on dev, the learning curve and the web
app's answers page (issue 11, item 6). Fake models only."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from test_ladder import LABELS, make_task, oracle
from tunewise.decision import Candidate, choose
from tunewise.decision.direction import best_of, better, meets_target, ranked, short_of_target, target_phrase
from tunewise.ladder.results import RungResult, Score
from tunewise.ladder.run import RunOptions, run_ladder
from tunewise.models.base import FakeModel

ERROR_METRIC = (
    "def error(prediction, references):\n"
    '    """1 when the answer is not a gold label, 0 when it is."""\n'
    "    return 0.0 if prediction.strip() in references else 1.0\n"
    "error.binary = True\n"
    "error.higher_is_better = False\n"
)
ZERO_RIGHT, FEW_RIGHT = 0.95, 0.30
"""The fake model's accuracy: zero-shot (the cheapest rung) is right far more often, so its error is lowest."""


def error_task(tmp_path, target=0.2, **kwargs):
    (tmp_path / "errors.py").write_text(ERROR_METRIC)
    task = make_task(tmp_path, target=target, **kwargs)
    return task.model_copy(update={"metric": str(tmp_path / "errors.py") + ":error", "extra_metrics": []})


def expected_error(share: float, n_eval: int = 40) -> float:
    """The oracle's error on make_task's eval items (1000, 1001, ...), exactly as the ladder scores it."""
    return sum((i * 7919 % 100) >= share * 100 for i in range(1000, 1000 + n_eval)) / n_eval


def run(task, tmp_path, out="runs", **options):
    opts = dict(model=FakeModel(respond=oracle(ZERO_RIGHT, FEW_RIGHT)), evidence=False, report=False, out_dir=tmp_path / out)
    return run_ladder(task, RunOptions(**{**opts, **options}), log=lambda m: None)


def score(value: float) -> Score:
    return Score(value=value, ci_low=value - 0.05, ci_high=value + 0.05, n=400)


# -- the helper every site calls ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, higher_is_better, a_better",
    [(0.9, 0.8, True, True), (0.8, 0.9, True, False), (0.1, 0.3, False, True), (0.3, 0.1, False, False), (0.5, 0.5, False, False)],
)
def test_better_is_strict_and_follows_the_direction(a, b, higher_is_better, a_better):
    assert better(a, b, higher_is_better) is a_better


@pytest.mark.parametrize(
    "value, target, higher_is_better, meets",
    [
        (0.85, 0.85, True, True),
        (0.84, 0.85, True, False),
        (0.20, 0.20, False, True),  # the target is met from below: <=
        (0.19, 0.20, False, True),
        (0.21, 0.20, False, False),
        (0.90, 0.20, False, False),  # a high error never meets a low target
        (0.50, None, False, None),
    ],
)
def test_meets_target_is_at_least_or_at_most(value, target, higher_is_better, meets):
    assert meets_target(value, target, higher_is_better) is meets


def test_best_and_ranking_follow_the_direction_and_keep_the_first_of_equals():
    items = [("a", 0.3), ("b", 0.1), ("c", 0.1), ("d", 0.5)]
    key = lambda x: x[1]  # noqa: E731
    assert best_of(items, False, key=key) == ("b", 0.1)
    assert best_of(items, True, key=key) == ("d", 0.5)
    assert [n for n, _ in ranked(items, False, key=key)] == ["b", "c", "a", "d"]
    assert [n for n, _ in ranked(items, True, key=key)] == ["d", "a", "b", "c"]
    assert (short_of_target(True), short_of_target(False)) == ("below", "above")
    assert (target_phrase(0.85, True), target_phrase(0.2, False)) == ("≥ 0.85", "≤ 0.2")


# -- the decision core, its sentences and its warnings -------------------------------------------------


def errors(rate: float, n: int = 400) -> list[float]:
    return [1.0] * round(n * rate) + [0.0] * (n - round(n * rate))


def test_choose_picks_the_lowest_error_and_meets_the_target_from_below():
    cheap_bad = Candidate("zero_shot", "Zero-shot", errors(0.60), cost=1.0)
    dear_good = Candidate("few_shot", "Few-shot", errors(0.05), cost=5.0)
    v = choose([cheap_bad, dear_good], margin=0.03, target=0.05, higher_is_better=False)
    assert v.best == "few_shot" and v.choice == "few_shot" and v.confident
    assert v.meets_target is True  # 0.05 <= 0.05
    assert v.status["zero_shot"] == "worse" and v.vs_best["zero_shot"].diff < 0  # oriented: negative is worse
    assert v.higher_is_better is False
    # The same scores read as accuracy: the other rung is best.
    assert choose([cheap_bad, dear_good], margin=0.03, target=0.05).best == "zero_shot"


def test_the_verdict_says_above_the_target_for_a_lower_is_better_metric():
    from tunewise.decision.explain import Context, explain

    rungs = [
        RungResult(name="zero_shot", title="Zero-shot", score=score(0.60), meets_target=False, horizon_cost=1.0),
        RungResult(name="few_shot", title="Few-shot", score=score(0.30), meets_target=False, horizon_cost=5.0),
    ]
    # Close enough on 40 examples that the data cannot place zero-shot: its reason is the target's.
    candidates = [Candidate("zero_shot", "Zero-shot", errors(0.35, 40), cost=1.0), Candidate("few_shot", "Few-shot", errors(0.30, 40), cost=5.0)]
    v = choose(candidates, margin=0.03, target=0.1, higher_is_better=False)
    assert v.best == "few_shot" and v.meets_target is False
    decision = explain(v, rungs, Context("error", 0.1, 10_000, 12, 40), None)
    assert decision.sentence.startswith("No rung reaches the target ≤ 0.1: the best is Few-shot at 0.300")
    assert any(r.startswith("Zero-shot scores 0.600, above the target 0.1") for r in decision.reasons)
    assert not any("below the target" in r for r in decision.reasons)


def test_companion_warnings_anchor_on_the_lowest_error_rung():
    from tunewise.decision.warnings import companion_warnings

    # Primary: error (lower is better). A is best; only A against B disagrees on accuracy.
    a = RungResult(name="a", title="A", score=score(0.1), extra_scores={"accuracy": score(0.6)})
    b = RungResult(name="b", title="B", score=score(0.3), extra_scores={"accuracy": score(0.8)})
    c = RungResult(name="c", title="C", score=score(0.5), extra_scores={"accuracy": score(0.5)})
    lines = companion_warnings([a, b, c], "error", False, {"accuracy": True}, focus=None)
    assert lines == ["error and accuracy disagree: A is ahead on error (0.100 vs 0.300), B on accuracy (0.800 vs 0.600)."]


# -- through run_ladder: the decision, the target, the report, the CLI ---------------------------------


def test_run_ladder_picks_the_lowest_error_and_the_report_and_cli_mark_it(tmp_path, capsys):
    from tunewise.commands.run import print_results

    task = error_task(tmp_path, target=0.2)
    results = run(task, tmp_path, all_rungs=True, rungs=["zero_shot", "few_shot"], report=True)
    zero, few = results.rung("zero_shot"), results.rung("few_shot")
    assert zero.score.value == pytest.approx(expected_error(ZERO_RIGHT)) and zero.score.value < 0.2
    assert few.score.value == pytest.approx(expected_error(FEW_RIGHT)) and few.score.value > 0.5
    assert results.higher_is_better is False
    # The lowest error is the best and the choice; the higher one is worse, and misses the target.
    assert zero.vs_best == "best" and few.vs_best == "worse" and few.diff_vs_best < 0
    assert zero.meets_target is True and few.meets_target is False
    assert results.decision.rung == "zero_shot" and results.decision.confident
    assert results.decision.sentence.startswith("Use Zero-shot prompt:") and "is the best measured" in results.decision.sentence
    assert "Zero-shot prompt meets the target ≤ 0.2" in " ".join(results.decision.reasons)
    # Every disagreement recorded has one rung right (error 0) and one wrong (error 1).
    assert all(set(d.scores.values()) == {0.0, 1.0} for d in results.disagreements)

    run_dir = tmp_path / "runs" / results.run_id
    html = (run_dir / "report.html").read_text()
    row = re.search(r'<tr id="rung-zero_shot" class="chosen">(.*?)</tr>', html, re.S)
    assert row, "the zero-shot row is the chosen one"
    assert '<td class="sig best">best</td>' in row.group(1) and '<td class="yes">yes</td>' in row.group(1)
    other = re.search(r'<tr id="rung-few_shot"[^>]*>(.*?)</tr>', html, re.S).group(1)
    assert 'class="sig worse"' in other and '<td class="no">no</td>' in other
    assert "(lower is better), target ≤ 0.2" in html
    assert "green 0 to red 1 (lower is better)" in html
    # In the error browser, an answer with error 0 is "right".
    first = re.search(r'<details class="example".*?</details>', html, re.S).group(0)
    cells = re.findall(r'<tr><td>[^<]+</td><td class="answer"[^>]*>[^<]*</td><td class="num">([\d.]+)</td><td class="verdict-cell">(\w+)</td>', first)
    assert sorted(cells) == [("0.00", "right"), ("1.00", "wrong")]
    md = (run_dir / "report.md").read_text()
    assert "| **Zero-shot prompt** (chosen) |" in md and "(95% CI; lower is better)" in md
    assert re.search(r"\| \*\*Zero-shot prompt\*\* \(chosen\) \| [\d.]+ \([^)]*\) \| best \| yes \|", md)

    print_results(results)
    out = capsys.readouterr().out
    chosen = next(line for line in out.splitlines() if "> Zero-shot prompt" in line)
    assert " best " in chosen and "yes" in chosen
    assert "lower is better" in out and "≤ 0.2" in out


def test_run_ladder_stops_at_the_cheap_rung_whose_error_meets_the_target(tmp_path):
    # Without --all, a rung meeting the target stops the climb: zero-shot's error is <= 0.2.
    results = run(error_task(tmp_path, target=0.2), tmp_path)
    assert results.rung("zero_shot").meets_target is True
    assert results.rung("few_shot").status == "skipped"
    assert results.decision.rung == "zero_shot"


def test_run_ladder_target_equal_to_the_error_is_met(tmp_path):
    exact = expected_error(ZERO_RIGHT)
    results = run(error_task(tmp_path, target=exact), tmp_path, all_rungs=True, rungs=["zero_shot", "few_shot"])
    assert results.rung("zero_shot").score.value == exact
    assert results.rung("zero_shot").meets_target is True and results.decision.rung == "zero_shot"


def test_run_ladder_with_no_rung_at_the_target_names_the_lowest_error(tmp_path):
    results = run(error_task(tmp_path, target=0.001), tmp_path, all_rungs=True, rungs=["zero_shot", "few_shot"])
    assert results.rung("zero_shot").meets_target is False and results.rung("few_shot").meets_target is False
    assert results.decision.sentence.startswith("No rung reaches the target ≤ 0.001: the best is Zero-shot prompt")
    assert results.decision.rung == "zero_shot"


# -- the report from results.json alone ---------------------------------------------------------------


def test_report_best_rung_and_answer_colours_follow_the_direction():
    from tunewise.report.render import _best_rung, _score_colour

    rungs = [RungResult(name="a", title="A", score=score(0.4)), RungResult(name="b", title="B", score=score(0.1))]
    assert _best_rung(rungs, higher_is_better=False).name == "b"  # schema 1 results: no vs_best recorded
    assert _best_rung(rungs, higher_is_better=True).name == "a"
    assert _score_colour(0.0, higher_is_better=False)[2] == "right" and _score_colour(1.0, higher_is_better=False)[2] == "wrong"
    assert _score_colour(0.0)[2] == "wrong" and _score_colour(1.0)[2] == "right"
    assert _score_colour(0.0, higher_is_better=False)[0] == _score_colour(1.0)[0]  # the same green


# -- tunewise compare -------------------------------------------------------------------------------


def test_compare_calls_the_lower_error_rung_better(tmp_path):
    from tunewise.cli import cli

    results = run(error_task(tmp_path), tmp_path, all_rungs=True, rungs=["zero_shot", "few_shot"])
    run_dir = tmp_path / "runs" / results.run_id
    metric = str(tmp_path / "errors.py") + ":error"
    out = CliRunner().invoke(cli, ["compare", str(run_dir), "few_shot", "zero_shot", "--metric", metric])
    assert out.exit_code == 0, out.output
    assert "Zero-shot prompt is measurably better" in out.output
    as_json = json.loads(CliRunner().invoke(cli, ["compare", str(run_dir), "few_shot", "zero_shot", "--metric", metric, "--json"]).stdout)
    assert as_json["higher_is_better"] is False and as_json["difference"] > 0  # few-shot minus zero-shot: more errors


# -- tuning on dev ----------------------------------------------------------------------------------


def test_tuning_keeps_the_configuration_with_the_lowest_dev_error(tmp_path):
    share_by_k = {2: 0.5, 4: 0.9, 8: 0.7}  # k=4 is right most often: the lowest error

    def by_shots(messages):
        found = re.search(r"item (\d+) kind (\w+)", messages[-1]["content"])
        index, gold = int(found.group(1)), found.group(2)
        k = sum(m["role"] == "assistant" for m in messages)
        right = (index * 7919 % 100) < share_by_k.get(k, 0.3) * 100
        return gold if right else LABELS[(LABELS.index(gold) + 1) % 3]

    task = error_task(tmp_path, target=0.5, n_train=90, rungs=("few_shot",), tune={"dev_examples": 30, "few_shot_k": [2, 4, 8]})
    results = run(task, tmp_path, model=FakeModel(respond=by_shots))
    tuning = results.rung("few_shot").tuning
    dev = {t.config["few_shot_k"]: t.dev_score.value for t in tuning.tried}
    assert dev[4] < dev[8] < dev[2]
    assert tuning.chosen == {"few_shot_k": 4}


# -- the learning curve --------------------------------------------------------------------------------


def test_learning_curve_for_an_error_rate_falls_to_the_target():
    from tunewise.finetune import curve
    from tunewise.report.charts import evaluate_fit

    sizes = [100, 200, 400]
    floor, scale = 0.05, 2.0
    error = [floor + scale * n**-0.5 for n in sizes]  # 0.25, 0.19, 0.15: falls with more data
    fit = curve.fit_curve(sizes, error, higher_is_better=False)
    assert fit.kind == "power_half" and fit.improves
    assert fit.asymptote == pytest.approx(floor)
    assert fit.predict(800.0) == pytest.approx(floor + scale * 800**-0.5)
    # The stored parameters draw the same curve through the formula the report uses.
    assert evaluate_fit(fit.formula, fit.params, [800.0])[0] == pytest.approx(floor + scale * 800**-0.5)
    needed, verdict = curve.curve_verdict(sizes, error, fit, 0.1, higher_is_better=False)
    assert needed == pytest.approx((scale / (0.1 - floor)) ** 2, rel=1e-6)  # 1,600 examples
    assert verdict.startswith("About 1,600 training examples should reach the 0.1 target") and "best 0.15" in verdict

    assert curve.curve_verdict(sizes, error, fit, 0.2, higher_is_better=False)[0] == 200  # already at most 0.2 at 200
    needed, verdict = curve.curve_verdict(sizes, error, fit, 0.04, higher_is_better=False)
    assert needed is None and "flattened at ~0.05, above the 0.04 target" in verdict

    rising = [0.2, 0.25, 0.3]  # more data, more errors
    fit = curve.fit_curve(sizes, rising, higher_is_better=False)
    assert not fit.improves
    assert "did not fall with more data" in curve.curve_verdict(sizes, rising, fit, 0.1, higher_is_better=False)[1]


def test_learning_curve_power_fit_of_an_error_rate_recovers_examples_needed():
    from tunewise.finetune import curve

    sizes = [50, 100, 200, 400, 800]
    error = [0.04 + 1.5 * n**-0.4 for n in sizes]
    fit = curve.fit_curve(sizes, error, [0.05] * len(sizes), higher_is_better=False)
    assert fit.kind == "power" and fit.params["a"] == pytest.approx(0.04, abs=1e-6)
    assert fit.examples_for(0.1) == pytest.approx((1.5 / (0.1 - 0.04)) ** (1 / 0.4), rel=0.01)  # about 3,125


def test_learning_curve_chart_labels_a_lower_is_better_target():
    from tunewise.report.charts import learning_curve_chart

    svg = learning_curve_chart([100, 200], [0.3, 0.2], [0.25, 0.15], [0.35, 0.25], "#0969da", "error", target=0.1, higher_is_better=False)
    plain = learning_curve_chart([100, 200], [0.3, 0.2], [0.25, 0.15], [0.35, 0.25], "#0969da", "error", target=0.1)
    assert ">target ≤ 0.1<" in svg and ">error (lower is better)<" in svg  # the target line and axis say which way is good
    assert ">target 0.1<" in plain and "lower is better" not in plain


# -- the web app's answers page --------------------------------------------------------------------------


def test_web_answers_colour_an_error_of_zero_green(tmp_path, isolated):
    from fastapi.testclient import TestClient

    from tunewise.web.app import build_web_app

    results = run(error_task(tmp_path), tmp_path, all_rungs=True, rungs=["zero_shot", "few_shot"])
    token = "direction-token"
    with TestClient(build_web_app(token, cwd=tmp_path), base_url="http://127.0.0.1:8765") as client:
        assert client.get(f"/new?token={token}", follow_redirects=False).status_code == 303
        page = client.get(f"/runs/{results.run_id}/answers", params={"a": "zero_shot", "b": "few_shot", "only": "all"})
    assert page.status_code == 200, page.text
    assert "0 right, 1 wrong (lower is better)" in page.text
    cells = re.findall(r'<td class="answer s(\d)">.*?<span class="score">([\d.]+)</span>', page.text, re.S)
    assert cells and {(cls, value) for cls, value in cells} == {("2", "0.000"), ("0", "1.000")}
