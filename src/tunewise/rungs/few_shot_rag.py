"""few_shot_rag: demonstrations teach the answer's form, retrieved documents supply the facts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunewise.models.base import Messages
from tunewise.rungs.base import LadderContext, Prepared, Request, Rung, rag_messages, user_turns
from tunewise.rungs.few_shot import shot_selector

if TYPE_CHECKING:
    from tunewise.task import Task


def prepare(ctx: LadderContext) -> Prepared:
    k, system = ctx.task.ladder.rag.k, ctx.system_prompt
    select, retriever = shot_selector(ctx), ctx.retriever()

    def build(turns: Messages) -> Request:
        turns = user_turns(turns)
        question = turns[-1]["content"]
        hits = retriever.search(question, k)
        messages = rag_messages(system, turns, hits)
        head = 1 if system else 0
        return Request(messages[:head] + select(question) + messages[head:], [h.chunk.doc_id for h in hits])

    return Prepared(ctx.base_model(), build)


def describe(task: Task) -> str:
    return f"Few-shot (k={task.ladder.few_shot.k}) + RAG (k={task.ladder.rag.k})"


RUNG = Rung("few_shot_rag", "Few-shot + RAG", prepare, approaches=("rag",), shots=True, retrieved=True, describe=describe,
            knobs=("rag_k", "few_shot_k", "few_shot_selection"))
