"""Generate with a prepared rung and score the answers: the one path every measurement goes through
(ladder rungs, learning-curve points, forgetting probes)."""

from __future__ import annotations

from dataclasses import dataclass

from tunewise.data.example import Example
from tunewise.ladder.results import Score
from tunewise.rungs.base import Prepared, Request
from tunewise.models.base import Generation, Progress


@dataclass
class Scored:
    score: Score
    per_example: list[float]
    generations: list[Generation]
    requests: list[Request]


def generate(
    prepared: Prepared, examples: list[Example], max_new_tokens: int, progress: Progress | None = None
) -> tuple[list[Request], list[Generation]]:
    """Build every request with the rung, then let the model batch them as it likes."""
    requests = [prepared.build(ex.messages) for ex in examples]
    generations = prepared.model.generate([r.messages for r in requests], max_new_tokens, progress)
    return requests, generations


def score_predictions(metric, predictions: list[str], examples: list[Example], seed: int = 0) -> tuple[Score, list[float]]:
    from tunewise.eval.stats import evaluate

    result = evaluate(metric, predictions, examples, seed=seed)
    return Score(value=result.value, ci_low=result.ci_low, ci_high=result.ci_high, n=result.n), list(result.per_example)


def generate_and_score(
    prepared: Prepared,
    examples: list[Example],
    metric,
    max_new_tokens: int,
    progress: Progress | None = None,
    seed: int = 0,
) -> Scored:
    requests, generations = generate(prepared, examples, max_new_tokens, progress)
    score, per_example = score_predictions(metric, [g.text for g in generations], examples, seed)
    return Scored(score, per_example, generations, requests)
