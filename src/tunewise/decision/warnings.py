"""What one number hides: confusion matrices and the warnings the verdict carries (issue 17).

Pure: it reads RungResults and the per-rung answers and gold labels passed in; no torch, no I/O.

- `confusion(predictions, golds)`: gold label -> predicted label -> count, labels compared as the
  accuracy metric compares them; an answer that is no gold label counts as "(other)".
- `collapse_warnings`: a rung that never, or rarely, predicts a class common in the gold labels.
  Accuracy can rise while a class disappears (issue 17: LoRA 0.642 against few-shot 0.558, never
  answering "ambivalent", 33 of 120 gold labels); macro-F1 sees it, accuracy does not.
- `companion_warnings`: the companion metrics (`RungResult.extra_scores`) order the chosen rung and
  another rung the other way round from the primary metric; both figures are given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tunewise.decision.direction import best_of, oriented
from tunewise.eval.metrics import normalize_label

OTHER = "(other)"
COMMON_SHARE = 0.10
"""A class is common when at least this share of the gold labels is that class."""
RARE_RATIO = 0.25
"""A rung rarely predicts a class when it predicts it less than this share of the class's gold count."""
MIN_GAP = 0.01
"""Companion metrics disagree only when both differences are at least this (one point of a 0-1
metric): on intent, few-shot constrained led few-shot 0.910 to 0.890 on accuracy and trailed it
0.901 to 0.904 on macro-F1, a difference no one should act on."""

Confusion = dict[str, dict[str, int]]


def confusion(predictions: Sequence[str], golds: Sequence[str]) -> Confusion:
    """Gold label -> predicted label -> count (only non-zero cells), gold labels sorted.

    >>> confusion(["Pos", "neg", "I think pos"], ["pos", "pos", "neg"])
    {'neg': {'(other)': 1}, 'pos': {'pos': 1, 'neg': 1}}
    """
    names: dict[str, str] = {}
    for gold in golds:
        names.setdefault(normalize_label(gold), gold.strip())
    out: Confusion = {names[key]: {} for key in sorted(names, key=lambda k: names[k])}
    for prediction, gold in zip(predictions, golds):
        row = out[names[normalize_label(gold)]]
        predicted = names.get(normalize_label(prediction), OTHER)
        row[predicted] = row.get(predicted, 0) + 1
    return out


def _share(count: int, total: int) -> str:
    return f"{count} of {total} gold labels, {count / total:.0%}"


def collapse_warnings(title: str, matrix: Confusion, common_share: float = COMMON_SHARE, rare_ratio: float = RARE_RATIO) -> list[str]:
    """One line when the rung never or rarely predicts a class common in the gold labels; none otherwise.

    >>> m = {"ambivalent": {"positive": 20, "negative": 13}, "negative": {"negative": 40}, "positive": {"positive": 47}}
    >>> collapse_warnings("LoRA", m)
    ["LoRA never predicts 'ambivalent' (33 of 120 gold labels, 28%): its score hides a class it does not produce; see its confusion matrix."]
    """
    gold_counts = {gold: sum(row.values()) for gold, row in matrix.items()}
    total = sum(gold_counts.values())
    if not total:
        return []
    predicted = {label: sum(row.get(label, 0) for row in matrix.values()) for label in matrix}
    if not any(predicted.values()):
        return [f"{title} predicts none of the gold labels: all {total} answers are something else (see its confusion matrix)."]
    never, rarely = [], []
    for label, count in gold_counts.items():
        if count / total < common_share or predicted[label] >= rare_ratio * count:
            continue
        if predicted[label] == 0:
            never.append(f"'{label}' ({_share(count, total)})")
        else:
            times = "once" if predicted[label] == 1 else f"{predicted[label]} times"
            rarely.append(f"'{label}' only {times} ({_share(count, total)})")
    parts = ([f"never predicts {', '.join(never)}"] if never else []) + ([f"predicts {', '.join(rarely)}"] if rarely else [])
    if not parts:
        return []
    return [f"{title} {' and '.join(parts)}: its score hides a class it does not produce; see its confusion matrix."]


def companion_warnings(
    rungs: Sequence[Any],
    primary: str,
    higher_is_better: bool,
    directions: Mapping[str, bool],
    focus: str | None,
    min_gap: float = MIN_GAP,
) -> list[str]:
    """Where a companion metric orders the focus rung (the chosen one, else the best) and another
    rung the other way round from the primary metric, both by at least `min_gap`, with both figures.

    `rungs` are RungResults; `directions` maps each companion metric to whether higher is better
    (default: higher).
    """
    done = [r for r in rungs if r.status == "done" and r.score is not None]
    if len(done) < 2:
        return []
    anchor = next((r for r in done if r.name == focus), None) or best_of(done, higher_is_better, key=lambda r: r.score.value)
    out = []
    for other in done:
        if other is anchor:
            continue
        primary_diff = oriented(anchor.score.value - other.score.value, higher_is_better)  # positive: anchor ahead
        for name, score in anchor.extra_scores.items():
            theirs = other.extra_scores.get(name)
            if theirs is None or name == primary:
                continue
            companion_diff = oriented(score.value - theirs.value, directions.get(name, True))
            if primary_diff * companion_diff >= 0 or min(abs(primary_diff), abs(companion_diff)) < min_gap:
                continue
            ahead, behind = (anchor, other) if primary_diff > 0 else (other, anchor)
            out.append(
                f"{primary} and {name} disagree: {ahead.title} is ahead on {primary} "
                f"({ahead.score.value:.3f} vs {behind.score.value:.3f}), {behind.title} on {name} "
                f"({behind.extra_scores[name].value:.3f} vs {ahead.extra_scores[name].value:.3f})."
            )
    return out


def verdict_warnings(
    rungs: Sequence[Any],
    confusions: Mapping[str, Confusion],
    primary: str,
    higher_is_better: bool,
    directions: Mapping[str, bool],
    focus: str | None,
) -> list[str]:
    """Every warning for the decision: collapsed classes (label tasks, per rung, in table order),
    then companion-metric disagreements with the focus rung."""
    out = []
    for r in rungs:
        if r.name in confusions:
            out += collapse_warnings(r.title, confusions[r.name])
    return out + companion_warnings(rungs, primary, higher_is_better, directions, focus)
