"""lora_rag: an adapter trained the RAFT way (finetune/raft.py: each train question asked with retrieved
documents, the gold one among distractors or left out), asked with retrieved documents exactly as the
rag rung asks. Its adapter is its own (<run>/train-raft/), so `lora` keeps its bare-question one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunewise.finetune.raft import raft_context, raft_folder, raft_max_length, raft_training
from tunewise.finetune.rung import prepared_from_adapter, train_adapter
from tunewise.rungs.base import LadderContext, Prepared, Rung
from tunewise.rungs.lora import describe as lora_title

if TYPE_CHECKING:
    from tunewise.task import Task


def prepare(ctx: LadderContext) -> Prepared:
    raft = raft_training(ctx)
    outcome = train_adapter(raft_context(ctx, raft), raft.examples, raft.folder)
    prepared = prepared_from_adapter(ctx, outcome.adapter_path, outcome.summary, with_rag=True)
    prepared.details["raft"] = raft.stats
    return prepared


def describe(task: Task) -> str:
    return f"{lora_title(task)} + RAG (k={task.ladder.rag.k}, {task.ladder.rag.mode})"


def facts(ctx: LadderContext, prepared: Prepared, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How the adapter was trained: how many RAFT prompts, how many held the gold document, and how
    many the length cap dropped."""
    stats = prepared.details.get("raft")
    if stats is None:
        return {}
    sampled = f" (a seeded sample of {stats.train_examples:,} train examples)" if stats.examples < stats.train_examples else ""
    text = (
        f"trained RAFT-style on {stats.examples:,} prompts{sampled} of {stats.documents} documents "
        f"({stats.distractors_from} distractors): the gold document in {stats.with_oracle:,}, left out of "
        f"{stats.without_oracle:,}"
    )
    if stats.no_gold:
        text += f", {stats.no_gold:,} without a gold document in the corpus (the retriever's top documents as they are)"
    summary = prepared.details.get("training")
    kept = None if summary is None else summary.train_examples + summary.val_examples
    if kept is not None and kept < stats.examples:
        text += (f"; {stats.examples - kept:,} prompts longer than {raft_max_length(ctx.task):,} tokens were skipped "
                 "(raise train.raft.max_length)")
    share = stats.with_oracle / (stats.with_oracle + stats.without_oracle) if stats.with_oracle + stats.without_oracle else None
    return {"raft": {"value": share, "text": text}}


RUNG = Rung(
    "lora_rag",
    "LoRA fine-tune + RAG",
    prepare,
    approaches=("finetune_rag",),
    retrieved=True,
    trains=True,
    describe=describe,
    facts=facts,
    knobs=("rag_k", "epochs", "learning_rate"),
    adapter_folder=raft_folder,
    version=2,  # 2: trained on RAFT prompts (issue 13); 1 trained on bare questions
)
