"""The rung contract: what every rung module declares (`Rung`) and what its `prepare` returns.

A rung's `prepare(ctx) -> Prepared` says which model answers and how a user's conversation becomes
the request that model sees. The ladder scores every rung with the same generation code, and
`tunewise serve` serves a rung by calling the very same `Prepared.build`. The rungs themselves are
one module each in this package, listed in `tunewise.rungs.RUNGS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewise.data.example import Example
from tunewise.models.base import ChatModel, Messages

if TYPE_CHECKING:
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
    model_key: str | None = None
    """The `models:` entry this context's rungs run on; None for a task with one `model:`. `task` is
    then that entry's view (`Task.for_model`): its `model`, `model_options` and prices."""
    load_model: Callable[[str | None], ChatModel] | None = None
    """Any of the task's models by key, loaded once and shared (None: only `base_model`)."""
    candidate: Callable[[str], Prepared] | None = None
    """Another candidate of this run, prepared once and shared (a distillation teacher); None outside a run."""

    def on_model(self, key: str | None) -> LadderContext:
        """The same context for another of the task's models; data, retriever and embedder are shared."""
        if key == self.model_key or self.load_model is None:
            return self
        load = self.load_model
        return replace(self, task=self.task.for_model(key), base_model=lambda: load(key), model_key=key)

    def for_candidate(self, name: str) -> LadderContext:
        """The context a candidate ("few_shot@large", or a bare rung on the first model) runs in."""
        key = name.partition("@")[2] or self.task.default_model_key
        return self.on_model(key)

    @property
    def system_prompt(self) -> str | None:
        if self.task.system_prompt:
            return self.task.system_prompt
        return next((ex.system for ex in self.train if ex.system), None)

    @property
    def train_dir(self) -> Path:
        """Where a training rung keeps its adapter: one folder per model, shared by its rungs."""
        return self.run_dir / ("train" if self.model_key is None else f"train@{self.model_key}")


@dataclass(frozen=True)
class Rung:
    """One rung, declared by its module. Everything the rest of tunewise knows about a rung is here:
    `estimate`, the stop rule, the decision, the report and `serve` read these fields and never name
    a rung.

    The cost profile is what a request carries beside the user's turn (`shots`: k demonstrations,
    `retrieved`: k corpus chunks) and whether there is a one-off training run (`trains`); the
    formulas that price it are in tunewise.cost.
    """

    name: str
    """Registry key and the name in task files: "few_shot"."""
    label: str
    """Short title; `title(task)` adds the task's settings."""
    prepare: Callable[[LadderContext], Prepared]
    approaches: tuple[str, ...] = ()
    """The advisor's approaches (tunewise.advise.rules.Approach values) this rung measures."""
    shots: bool = False
    retrieved: bool = False
    trains: bool = False
    """Trains once up front: a one-off cost, and the learning curve and forgetting check apply."""
    constrained: bool = False
    """Answers are restricted to the task's labels, JSON schema or regex (models/constraints.py)."""
    opt_in: bool = False
    """Only climbed when named in `ladder.rungs` or `--rungs`, not by `--all`."""
    knobs: tuple[str, ...] = ()
    """The `ladder.tune` knobs this rung can tune on dev (ladder/tuning.py), in tie-break order."""
    version: int = 1
    """Raised when the rung changes how it answers: saved answers of an older version are not reused."""
    evidence_steps: tuple[str, ...] | None = None
    """The evidence steps that apply when not the default for a training rung (see `evidence`)."""
    adapter_folder: Callable[[LadderContext], Path] | None = None
    """A training rung that keeps its adapter apart from the shared one (RAFT, distillation): where;
    default `ctx.train_dir`, shared by the rungs that train on the plain train split."""
    describe: Callable[[Task], str] | None = None
    """The title with the task's settings, e.g. "Few-shot (k=5, nearest)"; default: `label`."""
    unavailable: Callable[[Task], str | None] | None = None
    """Why this task cannot run the rung (beyond a missing corpus), said in the table; None: it can."""
    facts: Callable[[LadderContext, Prepared, list[dict[str, Any]]], dict[str, Any]] | None = None
    """Figures only this rung has, from its prepared state and its saved eval answers (rows of
    predictions/<name>.jsonl): name -> tunewise.ladder.results.Fact (or a dict of its fields)."""

    @property
    def needs_corpus(self) -> bool:
        return self.retrieved

    @property
    def evidence(self) -> tuple[str, ...]:
        """The evidence steps that apply: by default the learning curve and the forgetting check for
        rungs that train; a rung may declare fewer (`evidence_steps`)."""
        if self.evidence_steps is not None:
            return self.evidence_steps
        return ("learning_curve", "forgetting") if self.trains else ()

    def title(self, task: Task) -> str:
        return self.describe(task) if self.describe else self.label

    def adapter_dir(self, ctx: LadderContext) -> Path:
        """The folder this rung's adapters are trained into, for this context's model (export reads it)."""
        return self.adapter_folder(ctx) if self.adapter_folder else ctx.train_dir

    def why_not(self, task: Task, has_corpus: bool) -> str | None:
        """Why the rung is skipped on this task, or None when it can run."""
        if self.retrieved and not has_corpus:
            return "no knowledge corpus: set `corpus:` in the task file"
        return self.unavailable(task) if self.unavailable else None


# -- prompt building shared by several rungs -------------------------------------------------------


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


def plain_request(system: str | None) -> Callable[[Messages], Request]:
    """The user's turns under the task's system prompt: zero-shot, and a fine-tune without retrieval."""
    return lambda turns: Request(with_system(system, user_turns(turns)))


def rag_request(system: str | None, retriever: Any, k: int) -> Callable[[Messages], Request]:
    """The user's turns with the k best corpus chunks put before the question."""

    def build(turns: Messages) -> Request:
        turns = user_turns(turns)
        hits = retriever.search(turns[-1]["content"], k)
        return Request(rag_messages(system, turns, hits), [h.chunk.doc_id for h in hits])

    return build
