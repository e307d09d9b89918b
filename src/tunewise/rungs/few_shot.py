"""few_shot: k training examples shown in the prompt as earlier turns, the nearest to the question
by embedding (or a fixed sample)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from tunewise.data.example import Example
from tunewise.errors import TunewiseError
from tunewise.models.base import Messages
from tunewise.rungs.base import LadderContext, Prepared, Request, Rung, user_turns, with_system

if TYPE_CHECKING:
    from tunewise.task import Task


def shot_selector(ctx: LadderContext) -> Callable[[str], Messages]:
    """Few-shot demonstrations for a question: a fixed sample, or the k nearest train examples."""
    spec = ctx.task.ladder.few_shot
    if not ctx.train:
        raise TunewiseError("few-shot needs training examples; the train split is empty")
    k = min(spec.k, len(ctx.train))

    def shots(examples: list[Example]) -> Messages:
        out: Messages = []
        for ex in examples:
            out += [*ex.turns, {"role": "assistant", "content": ex.answer}]
        return out

    if spec.selection == "fixed":
        prefix = shots(random.Random(ctx.seed).sample(ctx.train, k))
        return lambda question: prefix

    from tunewise.retrieval.embed import nearest_examples_index

    index = nearest_examples_index(ctx.embedder(), [ex.input_text for ex in ctx.train])
    # Most similar example last, closest to the question.
    return lambda question: shots([ctx.train[i] for i in reversed(index.nearest(question, k))])


def prepare(ctx: LadderContext) -> Prepared:
    system, select = ctx.system_prompt, shot_selector(ctx)

    def build(turns: Messages) -> Request:
        turns = user_turns(turns)
        return Request(with_system(system, select(turns[-1]["content"]) + turns))

    return Prepared(ctx.base_model(), build)


def describe(task: Task) -> str:
    return f"Few-shot (k={task.ladder.few_shot.k}, {task.ladder.few_shot.selection})"


RUNG = Rung("few_shot", "Few-shot", prepare, approaches=("few_shot",), shots=True, describe=describe,
            knobs=("few_shot_k", "few_shot_selection"))
