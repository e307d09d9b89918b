"""The rungs of the customisation ladder, each one small contract, all listed in RUNGS.

A rung's whole contract is `prepare(ctx) -> Prepared`: which model answers, and how a user's
conversation becomes the request that model sees. The ladder scores every rung with the same
generation code, and `tunewise serve` serves a rung by calling the very same `Prepared.build`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.data.example import Example
from tunewise.errors import TunewiseError
from tunewise.models.base import ChatModel, Messages
from tunewise.task import Task


@dataclass
class Request:
    """What the model is asked, plus what the rung used to build it."""

    messages: Messages
    retrieved_ids: list[str] = field(default_factory=list)  # corpus document ids, best first


@dataclass
class Prepared:
    model: ChatModel
    build: Callable[[Messages], Request]
    """From the user's conversation (no system message; ends with a user turn) to the request."""
    finetuned: bool = False
    upfront_cost: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)  # e.g. TrainingSummary for the report
    adapter_path: Path | None = None
    constraint: Any = None  # tunewise.models.constraints.Constraint: `model` generates under it


@dataclass
class LadderContext:
    """Everything a rung may need. Heavy resources are built on first use and shared."""

    task: Task
    train: list[Example]
    eval: list[Example]
    run_dir: Path
    base_model: Callable[[], ChatModel]
    retriever: Callable[[], Any]  # -> tunewise.retrieval.index.HybridRetriever (needs a corpus)
    embedder: Callable[[], Any]  # -> tunewise.retrieval.embed.Embedder
    seed: int = 0

    @property
    def system_prompt(self) -> str | None:
        if self.task.system_prompt:
            return self.task.system_prompt
        return next((ex.system for ex in self.train if ex.system), None)


def with_system(system: str | None, turns: Messages) -> Messages:
    return ([{"role": "system", "content": system}] if system else []) + list(turns)


def user_turns(messages: Messages) -> Messages:
    """Drop a caller's system message: the rung's configuration owns the system prompt."""
    return [m for m in messages if m["role"] != "system"]


def context_block(hits: list[Any]) -> str:
    """Retrieved chunks as numbered documents."""
    return "\n\n".join(f"[{i}] {h.chunk.title + ': ' if h.chunk.title else ''}{h.chunk.text}" for i, h in enumerate(hits, 1))


def rag_messages(system: str | None, turns: Messages, hits: list[Any]) -> Messages:
    """Put the retrieved documents right before the question: small models use close context best."""
    turns = list(turns)
    question = turns[-1]["content"]
    turns[-1] = {
        "role": "user",
        "content": f"Documents:\n{context_block(hits)}\n\nUsing the documents above, answer: {question}",
    }
    return with_system(system, turns)


# -- rungs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rung:
    name: str
    title: str
    prepare: Callable[[LadderContext], Prepared]
    needs_corpus: bool = False
    trains: bool = False
    constrained: bool = False  # answers are restricted (labels, JSON schema, regex): see constrained()


def zero_shot(ctx: LadderContext) -> Prepared:
    system = ctx.system_prompt
    return Prepared(ctx.base_model(), lambda turns: Request(with_system(system, user_turns(turns))))


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


def few_shot(ctx: LadderContext) -> Prepared:
    system, select = ctx.system_prompt, shot_selector(ctx)

    def build(turns: Messages) -> Request:
        turns = user_turns(turns)
        return Request(with_system(system, select(turns[-1]["content"]) + turns))

    return Prepared(ctx.base_model(), build)


def rag(ctx: LadderContext) -> Prepared:
    spec = ctx.task.ladder.rag
    system = ctx.system_prompt
    retriever = ctx.retriever()

    def build(turns: Messages) -> Request:
        turns = user_turns(turns)
        hits = retriever.search(turns[-1]["content"], spec.k)
        return Request(rag_messages(system, turns, hits), [h.chunk.doc_id for h in hits])

    return Prepared(ctx.base_model(), build)


def few_shot_rag(ctx: LadderContext) -> Prepared:
    """Demonstrations teach the answer's form, retrieved documents supply the facts."""
    spec, system = ctx.task.ladder.rag, ctx.system_prompt
    select, retriever = shot_selector(ctx), ctx.retriever()

    def build(turns: Messages) -> Request:
        turns = user_turns(turns)
        question = turns[-1]["content"]
        hits = retriever.search(question, spec.k)
        messages = rag_messages(system, turns, hits)
        head = 1 if system else 0
        return Request(messages[:head] + select(question) + messages[head:], [h.chunk.doc_id for h in hits])

    return Prepared(ctx.base_model(), build)


def constrained(prepare: Callable[[LadderContext], Prepared]) -> Callable[[LadderContext], Prepared]:
    """The same rung with constrained decoding: its model answers only within the task's constraint
    (its `constraint:`, else the train labels or a JSON schema, by metric; models/constraints.py)."""

    def prepare_constrained(ctx: LadderContext) -> Prepared:
        from tunewise.models.constraints import ConstrainedModel, infer_constraint

        constraint = infer_constraint(ctx.task, ctx.train)
        prepared = prepare(ctx)
        prepared.model = ConstrainedModel(prepared.model, constraint)
        prepared.constraint = constraint
        return prepared

    return prepare_constrained


def _finetuned(ctx: LadderContext, with_rag: bool) -> Prepared:
    from tunewise.finetune.rung import prepare_finetuned

    return prepare_finetuned(ctx, with_rag=with_rag)


RUNGS: dict[str, Rung] = {
    r.name: r
    for r in [
        Rung("zero_shot", "Zero-shot prompt", zero_shot),
        Rung("few_shot", "Few-shot", few_shot),
        Rung("zero_shot_constrained", "Zero-shot prompt, constrained", constrained(zero_shot), constrained=True),
        Rung("few_shot_constrained", "Few-shot, constrained", constrained(few_shot), constrained=True),
        Rung("rag", "RAG", rag, needs_corpus=True),
        Rung("few_shot_rag", "Few-shot + RAG", few_shot_rag, needs_corpus=True),
        Rung("lora", "LoRA fine-tune", lambda ctx: _finetuned(ctx, False), trains=True),
        Rung("lora_rag", "LoRA fine-tune + RAG", lambda ctx: _finetuned(ctx, True), needs_corpus=True, trains=True),
    ]
}


def get_rung(name: str) -> Rung:
    if name not in RUNGS:
        raise TunewiseError(f"unknown rung {name!r}; valid rungs: {', '.join(RUNGS)}")
    return RUNGS[name]


def rung_title(name: str, task: Task) -> str:
    if RUNGS.get(name) and RUNGS[name].constrained:
        from tunewise.models.constraints import constraint_kind

        return f"{rung_title(name.removesuffix('_constrained'), task)}, constrained ({constraint_kind(task)})"
    spec = task.ladder
    if name == "few_shot":
        return f"Few-shot (k={spec.few_shot.k}, {spec.few_shot.selection})"
    if name in ("rag", "lora_rag"):
        return f"{RUNGS[name].title} (k={spec.rag.k}, {spec.rag.mode})"
    if name == "few_shot_rag":
        return f"Few-shot (k={spec.few_shot.k}) + RAG (k={spec.rag.k})"
    if name == "lora" and task.train.method != "lora":
        return f"{task.train.method.upper()} fine-tune"
    return RUNGS[name].title
