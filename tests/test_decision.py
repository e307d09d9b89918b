"""The decision core (margin, multiplicity, inconclusive, eval size needed, adaptive looks) and the
ladder's use of it. Pure functions on synthetic scores, plus fake-model ladder runs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from test_ladder import FakeModel, Interrupting, make_task, oracle
from tunewise.decision import Candidate, choose, compare_pair, examples_needed, sequential, spending_schedule
from tunewise.ladder.run import RunOptions, run_ladder


def paired(n: int, p_best: float, gap: float, seed: int = 0, shared: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """0/1 outcomes of two systems on n examples, `gap` apart, with correlated errors."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    own = rng.random(n)
    mix = np.where(rng.random(n) < shared, u, own)
    return (u < p_best).astype(float), (mix < p_best - gap).astype(float)


def test_the_decision_core_imports_without_torch():
    # A finder that makes `import torch` fail, as on a machine without it.
    code = (
        "import sys, importlib.abc\n"
        "class NoTorch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "import tunewise.decision, tunewise.decision.explain\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize(
    "diff, lower, upper, status",
    [
        (0.01, 0.002, 0.02, "better"),
        (-0.005, -0.02, 0.01, "equivalent"),
        (0.01, -0.02, 0.05, "non-inferior"),
        (-0.1, -0.15, -0.05, "worse"),
        (-0.02, -0.06, -0.001, "worse"),  # measurably lower, maybe by less than the margin: not shown within it
        (-0.15, -0.27, -0.026, "worse"),
        (0.0, -0.08, 0.08, "inconclusive"),
    ],
)
def test_status_against_the_best_reads_the_interval_against_the_margin(diff, lower, upper, status):
    from tunewise.decision import PairComparison

    assert PairComparison("a", "b", 100, diff, lower, upper, 0.3, 0.025).status(margin=0.03) == status


def test_direction_is_honoured_for_lower_is_better_metrics():
    low_error = Candidate("a", "A", [0.1] * 50 + [0.2] * 50, cost=5.0)
    high_error = Candidate("b", "B", [0.6] * 50 + [0.7] * 50, cost=1.0)
    v = choose([low_error, high_error], margin=0.05, higher_is_better=False, target=0.3)
    assert v.best == "a" and v.choice == "a" and v.status["b"] == "worse" and v.meets_target is True
    assert compare_pair(low_error.scores, high_error.scores, 0.025, higher_is_better=False).diff == pytest.approx(0.5)


def test_the_chosen_rung_must_be_within_the_margin_of_every_rival_not_only_the_observed_best():
    # c is within the margin of b (the observed best) but a, nearly as good as b, is far better than
    # c on the examples where they differ: c is not shown non-inferior and is not chosen.
    n = 400
    b = np.ones(n)
    a = np.r_[np.ones(n - 4), np.zeros(4)]
    c = np.r_[np.ones(n - 60), np.zeros(60)]
    v = choose([Candidate("a", "A", a, 2.0), Candidate("b", "B", b, 3.0), Candidate("c", "C", c, 1.0)], margin=0.05)
    assert "c" not in v.noninferior and v.choice == "a"


def test_examples_needed_grows_as_the_difference_nears_the_margin():
    base = dict(a="a", b="b", n=100, lower=-0.1, upper=0.05, sd=0.4, level=0.025)
    from tunewise.decision import PairComparison

    far = examples_needed(PairComparison(diff=0.02, **base), margin=0.03)
    near = examples_needed(PairComparison(diff=-0.02, **base), margin=0.03)
    assert far < near
    assert examples_needed(PairComparison(diff=-0.03, **base), margin=0.03) is None  # on the margin


def test_examples_needed_is_what_settles_it_in_simulation():
    # Draw at the recommended size with the same truth: the pair is settled about 80% of the time.
    # The power calculation fed the true difference and spread (from a very large draw) gives a
    # size at which the pair is settled (shown within the margin) about 80% of the time.
    truth_gap, margin, level = 0.0, 0.03, 0.025
    a, b = paired(200_000, 0.8, truth_gap, seed=1)
    needed = examples_needed(compare_pair(a, b, level), margin)
    assert needed is not None and 200 < needed < 5000
    settled = 0
    for seed in range(300):
        a, b = paired(needed, 0.8, truth_gap, seed=100 + seed)
        settled += compare_pair(a, b, level).lower > -margin
    assert 0.72 <= settled / 300 <= 0.88


def test_spending_adds_up_to_alpha():
    assert sum(spending_schedule(0.05, [0.25, 0.5, 0.75, 1.0])) == pytest.approx(0.05)
    assert spending_schedule(0.05, [1.0]) == pytest.approx([0.05])
    with pytest.raises(ValueError, match="rise to 1.0"):
        spending_schedule(0.05, [0.5, 0.25, 1.0])


def test_sequential_drops_a_clear_loser_and_stops_when_settled():
    rng = np.random.default_rng(3)
    scores = {"zero": (rng.random(400) < 0.2).astype(float), "few": (rng.random(400) < 0.9).astype(float)}
    asked = []

    def measure(name, size):
        asked.append((name, size))
        return Candidate(name, name, scores[name][:size], cost={"zero": 1.0, "few": 4.0}[name])

    out = sequential(["zero", "few"], [100, 200, 300, 400], measure, alpha=0.05, margin=0.03)
    assert out.verdict.choice == "few" and out.verdict.confident
    assert out.looks[0].settled and asked == [("zero", 100), ("few", 100)]


def test_sequential_keeps_scoring_while_the_question_is_open():
    a, b = paired(400, 0.85, 0.02, seed=5)
    scores = {"cheap": b, "dear": a}
    out = sequential(
        ["cheap", "dear"], [100, 200, 300, 400], lambda n, s: Candidate(n, n, scores[n][:s], cost={"cheap": 1, "dear": 2}[n]), alpha=0.05, margin=0.03
    )
    assert [lk.examples for lk in out.looks][-1] == 400 or out.verdict.settled


def test_a_truly_worse_rung_is_rarely_chosen_confidently():
    # A small version of the simulation study (bench/sim_decision.py): cheap rung 0.05 worse.
    confident_bad = 0
    trials = 150
    for seed in range(trials):
        best, worse = paired(200, 0.85, 0.05, seed=seed)
        v = choose([Candidate("dear", "D", best, 2.0), Candidate("cheap", "C", worse, 1.0)], margin=0.03)
        confident_bad += v.confident and v.choice == "cheap"
    assert confident_bad / trials <= 0.05


# -- the ladder ---------------------------------------------------------------------------------


def _run(tmp_path, task, model, out="runs", **options):
    return run_ladder(task, RunOptions(model=model, evidence=False, report=False, out_dir=tmp_path / out, **options), log=lambda m: None)


def test_adaptive_ladder_stops_scoring_once_the_verdict_cannot_change(tmp_path):
    task = make_task(tmp_path, n_eval=200, target=0.5)
    adaptive = FakeModel(respond=oracle(0.3, 0.95))
    results = _run(tmp_path, task, adaptive, all_rungs=True, rungs=["zero_shot", "few_shot"])
    d = results.decision
    assert d.rung == "few_shot" and d.confident and d.looks[0].examples == 50 and d.looks[-1].settled
    assert {r.scored_examples for r in results.rungs} == {50}
    # 50 answers a rung plus 17 latency requests each, instead of 200 a rung.
    assert len(adaptive.calls) == 2 * (50 + 17)

    full = FakeModel(respond=oracle(0.3, 0.95))
    again = _run(tmp_path, task, full, out="full", all_rungs=True, rungs=["zero_shot", "few_shot"], full=True)
    assert again.decision.rung == "few_shot" and {r.scored_examples for r in again.rungs} == {200}
    assert len(again.decision.looks) == 1


def test_a_replay_over_saved_answers_reaches_the_live_verdict(tmp_path):
    task = make_task(tmp_path, n_eval=200, target=0.5)
    live = _run(tmp_path, task, FakeModel(respond=oracle(0.3, 0.95)), out="live", all_rungs=True, rungs=["zero_shot", "few_shot"])
    # A --full run first, then the default adaptive one in the same folder: no new answers, and the
    # verdict and the scores shown are those of the live adaptive run.
    _run(tmp_path, task, FakeModel(respond=oracle(0.3, 0.95)), out="replay", all_rungs=True, rungs=["zero_shot", "few_shot"], full=True)
    quiet = FakeModel(respond=oracle(0.3, 0.95))
    replay = _run(tmp_path, task, quiet, out="replay", all_rungs=True, rungs=["zero_shot", "few_shot"])
    assert len(quiet.calls) == 0
    assert replay.decision.sentence == live.decision.sentence
    assert [r.score for r in replay.rungs] == [r.score for r in live.rungs]


def test_an_interrupted_adaptive_run_resumes_to_the_same_verdict(tmp_path):
    task = make_task(tmp_path, n_eval=200, target=0.5, margin=0.01)
    reference = _run(tmp_path, task, FakeModel(respond=oracle(0.85, 0.9)), out="ref", all_rungs=True, rungs=["zero_shot", "few_shot"])
    first = Interrupting(oracle(0.85, 0.9), fail_after=150)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, task, first, all_rungs=True, rungs=["zero_shot", "few_shot"])
    resumed = _run(tmp_path, task, FakeModel(respond=oracle(0.85, 0.9)), all_rungs=True, rungs=["zero_shot", "few_shot"])
    assert resumed.decision.sentence == reference.decision.sentence
    assert [r.scored_examples for r in resumed.rungs] == [r.scored_examples for r in reference.rungs]


def test_a_lower_is_better_metric_picks_the_lowest_through_run_ladder(tmp_path):
    """`higher_is_better = False` (an error rate): the best rung is the lowest-scoring one, the
    target is met from below, and the rung with more errors is the worse one."""
    (tmp_path / "errors.py").write_text(
        "def error(prediction, references):\n"
        "    return 0.0 if prediction.strip() in references else 1.0\n"
        "error.binary = True\n"
        "error.higher_is_better = False\n"
    )
    task = make_task(tmp_path, target=0.2).model_copy(update={"metric": "errors.py:error", "extra_metrics": []})
    results = _run(tmp_path, task, FakeModel(respond=oracle(0.3, 0.95)), all_rungs=True, rungs=["zero_shot", "few_shot"])
    zero, few = results.rung("zero_shot"), results.rung("few_shot")
    assert few.score.value < 0.15 < 0.6 < zero.score.value
    assert results.higher_is_better is False
    assert few.vs_best == "best" and zero.vs_best == "worse" and zero.diff_vs_best < 0  # oriented: negative is worse
    assert few.meets_target is True and zero.meets_target is False
    assert results.decision.rung == "few_shot" and results.decision.confident
