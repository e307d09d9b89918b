"""rag: the k best corpus chunks (hybrid BM25 + dense by default) put before the question."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunewise.rungs.base import LadderContext, Prepared, Rung, rag_request

if TYPE_CHECKING:
    from tunewise.task import Task


def prepare(ctx: LadderContext) -> Prepared:
    return Prepared(ctx.base_model(), rag_request(ctx.system_prompt, ctx.retriever(), ctx.task.ladder.rag.k))


def describe(task: Task) -> str:
    return f"RAG (k={task.ladder.rag.k}, {task.ladder.rag.mode})"


RUNG = Rung("rag", "RAG", prepare, approaches=("rag",), retrieved=True, describe=describe, knobs=("rag_k",))
