"""The evidence around fine-tuning, without torch: overfitting warning, learning-curve fit and
verdict, forgetting check with fake models."""

from __future__ import annotations

import math

import pytest

from conftest import chat, write_jsonl
from tunewise.data.example import Example
from tunewise.finetune import curve
from tunewise.finetune.forgetting import GENERAL_PROBES, as_is, contains_score, forgetting_check, load_probes
from tunewise.finetune.train import overfitting_warning, underfitting_note
from tunewise.ladder.results import LossPoint
from tunewise.rungs.base import LadderContext
from tunewise.models.base import FakeModel
from tunewise.task import parse_task


def history(train: list[float], val: list[float], steps_per_epoch: int = 10) -> list[LossPoint]:
    """Two training-loss logs and one validation loss per epoch."""
    points = []
    for epoch, (t, v) in enumerate(zip(train, val), 1):
        end = epoch * steps_per_epoch
        points += [
            LossPoint(step=end - steps_per_epoch // 2, epoch=epoch - 0.5, train_loss=t + 0.05),
            LossPoint(step=end, epoch=epoch, train_loss=t - 0.05),
            LossPoint(step=end, epoch=epoch, val_loss=v),
        ]
    return points


@pytest.mark.parametrize(
    "train, val, expect",
    [
        # val best at epoch 2 then up while train keeps falling: the classic picture
        (
            [0.60, 0.30, 0.12],
            [0.50, 0.41, 0.52],
            "validation loss rose 0.41 -> 0.52 over epochs 2-3 while training loss fell 0.30 -> 0.12",
        ),
        ([0.60, 0.40, 0.30], [0.50, 0.45, 0.44], None),  # both fall: fine
        ([0.60, 0.40, 0.30], [0.50, 0.45, 0.455], None),  # a 1% wobble is noise, not overfitting
        ([0.60], [0.50], None),  # one evaluation: nothing to compare
        ([0.30, 0.35, 0.40], [0.30, 0.36, 0.45], "training loss did not fall either"),  # diverging
    ],
)
def test_overfitting_warning(train, val, expect):
    warning = overfitting_warning(history(train, val))
    if expect is None:
        assert warning is None
    else:
        assert expect in warning


def test_overfitting_warning_says_which_checkpoint_was_kept():
    points = history([0.6, 0.3, 0.1], [0.5, 0.4, 0.6])
    assert "epoch-2 checkpoint (lowest validation loss) was kept" in overfitting_warning(points)
    assert "The last checkpoint was kept" in overfitting_warning(points, kept_best=False)


@pytest.mark.parametrize(
    "val, expect",
    [
        ([0.054, 0.035], "0.054 -> 0.035 over epochs 1-2, -35%"),  # still falling fast: say so
        ([0.50, 0.45, 0.44], None),  # a 2% last step: converged enough
        ([0.50, 0.41, 0.52], None),  # rising at the end: the overfitting warning's case, not this one
        ([0.50, 0.30, 0.40, 0.31], None),  # falling again but not below the best: no note
        ([0.50, 0.30, 0.40, 0.30], None),  # back to the best, not below it: early stopping's case
        ([0.50, float("nan")], None),  # a NaN loss is not progress
        ([0.50], None),  # one evaluation: nothing to compare
    ],
)
def test_underfitting_note(val, expect):
    note = underfitting_note(history([0.6] * len(val), val), epochs=len(val))
    if expect is None:
        assert note is None
    else:
        assert expect in note and f"train.epochs, now {len(val)}" in note


# -- learning curve ------------------------------------------------------------------------------


def power_law(a: float, b: float, c: float):
    return lambda n: a - b * n ** (-c)


@pytest.mark.parametrize(
    "sizes, truth, kind",
    [
        ([50, 100, 200, 400, 800], (0.92, 1.5, 0.4), "power"),
        ([60, 120, 240, 480], (0.85, 3.0, 0.7), "power"),
        ([100, 200, 400], (0.90, 2.0, 0.5), "power_half"),
    ],
)
def test_curve_fit_recovers_examples_needed(sizes, truth, kind):
    f = power_law(*truth)
    target = truth[0] - 0.03
    true_needed = (truth[1] / (truth[0] - target)) ** (1 / truth[2])
    fit = curve.fit_curve(sizes, [f(n) for n in sizes], [0.05] * len(sizes))
    assert fit.kind == kind
    needed, verdict = curve.curve_verdict(sizes, [f(n) for n in sizes], fit, target)
    assert needed == pytest.approx(true_needed, rel=0.02)
    assert f"About {needed:,.0f} training examples" in verdict
    assert ("fixed at 0.5" in verdict) == (kind == "power_half")


def test_curve_flattened_below_target():
    sizes = [100, 200, 400, 800]
    scores = [power_law(0.71, 1.0, 0.6)(n) for n in sizes]
    fit = curve.fit_curve(sizes, scores)
    needed, verdict = curve.curve_verdict(sizes, scores, fit, 0.8)
    assert needed is None
    assert "flattened at ~0.71, below the 0.8 target" in verdict


@pytest.mark.parametrize(
    "scores, target, expect_needed, phrase",
    [
        ([0.70, 0.86, 0.90], 0.85, 200, "already met at 200"),
        ([0.60, 0.55, 0.50], 0.85, None, "did not rise"),
        ([0.60, 0.70, 0.75], None, None, "no target set"),
    ],
)
def test_curve_verdicts(scores, target, expect_needed, phrase):
    sizes = [100, 200, 400]
    fit = curve.fit_curve(sizes, scores)
    needed, verdict = curve.curve_verdict(sizes, scores, fit, target)
    assert needed == expect_needed
    assert phrase in verdict


def test_curve_far_extrapolation_is_flagged():
    sizes = [10, 20, 40]
    scores = [power_law(0.9, 1.0, 0.5)(n) for n in sizes]
    fit = curve.fit_curve(sizes, scores)
    needed, verdict = curve.curve_verdict(sizes, scores, fit, 0.89)
    assert needed == pytest.approx(10_000, rel=0.01)
    assert "long extrapolation" in verdict


def test_curve_needs_two_sizes():
    assert curve.fit_curve([100, 100], [0.5, 0.6]) is None


# -- forgetting ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prediction, references, expected",
    [
        ("The capital of France is Paris.", ["Paris"], 1.0),
        ("Parisian food", ["Paris"], 0.0),
        ("A spider has eight legs.", ["8", "eight"], 1.0),
        ("the quick brown fox", ["The quick brown fox"], 1.0),
        ("Water boils at 100°C.", ["100", "100°C"], 1.0),
        ("get_weather", ["Tokyo"], 0.0),
    ],
)
def test_contains_score(prediction, references, expected):
    assert contains_score(prediction, Example([], references[0], references)) == expected


def test_shipped_probes_are_well_formed():
    probes = load_probes(GENERAL_PROBES)
    assert len(probes) >= 40
    assert all(p.system and p.references for p in probes)
    assert all(contains_score(p.answer, p) == 1.0 for p in probes)  # the gold answer passes its own check
    assert len({p.input_text for p in probes}) == len(probes)


def context(tmp_path) -> LadderContext:
    task = parse_task({"name": "t", "data": {"train": "a.jsonl", "eval": "b.jsonl"}})
    none = lambda: None  # noqa: E731
    return LadderContext(task, [], [], tmp_path, none, none, none)


def answer_reference(messages) -> str:
    probes = {p.input_text: p.answer for p in load_probes(GENERAL_PROBES)}
    return probes.get(messages[-1]["content"], "I don't know")


@pytest.mark.parametrize(
    "finetuned_answers, phrase, sign",
    [
        (lambda messages: "get_weather", "lost general skills", -1),  # answers every probe with a label
        (answer_reference, "no measurable forgetting", 0),  # as good as the base
    ],
)
def test_forgetting_check_with_fake_models(tmp_path, finetuned_answers, phrase, sign):
    base = FakeModel(respond=answer_reference)
    tuned = FakeModel(respond=finetuned_answers)
    result = forgetting_check(context(tmp_path), as_is(base), as_is(tuned))
    (probe,) = result.probes
    assert probe.name == "general" and probe.base.value == 1.0
    assert math.copysign(1, probe.delta) == sign or (sign == 0 and probe.delta == 0)
    assert probe.delta_ci_low <= probe.delta <= probe.delta_ci_high
    assert phrase in result.verdict
    # probes are asked as written, with their own system prompt
    assert base.calls[0][0] == {"role": "system", "content": load_probes(GENERAL_PROBES)[0].system}


def test_forgetting_check_adds_user_probe_files(tmp_path):
    extra = write_jsonl(tmp_path / "house_style.jsonl", [chat("Sign off?", "Best regards")] * 6)
    base = FakeModel(respond=lambda m: "Best regards" if m[-1]["content"] == "Sign off?" else answer_reference(m))
    tuned = FakeModel(respond=lambda m: "Cheers" if m[-1]["content"] == "Sign off?" else answer_reference(m))
    result = forgetting_check(context(tmp_path), as_is(base), as_is(tuned), extra_probe_files=[extra])
    names = [p.name for p in result.probes]
    assert names == ["general", "house_style"]
    house = result.probes[1]
    assert (house.base.value, house.finetuned.value, house.delta) == (1.0, 0.0, -1.0)
    assert "house_style: the fine-tuned model lost general skills" in result.verdict
