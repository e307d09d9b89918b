"""lora_rag: the lora rung's adapter, asked with retrieved documents (the rag rung's prompt)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunewise.finetune.rung import prepare_finetuned
from tunewise.rungs.base import LadderContext, Prepared, Rung
from tunewise.rungs.lora import describe as lora_title

if TYPE_CHECKING:
    from tunewise.task import Task


def prepare(ctx: LadderContext) -> Prepared:
    return prepare_finetuned(ctx, with_rag=True)


def describe(task: Task) -> str:
    return f"{lora_title(task)} + RAG (k={task.ladder.rag.k}, {task.ladder.rag.mode})"


RUNG = Rung(
    "lora_rag", "LoRA fine-tune + RAG", prepare, approaches=("finetune_rag",), retrieved=True, trains=True, describe=describe
)
