"""RAFT training prompts for the `lora_rag` rung (Zhang et al. 2024, "RAFT: Adapting Language Model to
Domain Specific RAG").

An adapter trained on bare questions has never seen a documents block, so asking it with retrieved
documents (the lora_rag rung) gains little over asking it without. RAFT trains on the prompt the
model will be asked with: each train question with documents put before it exactly as
`rungs.base.rag_messages` does at inference, where

- in `train.raft.oracle_share` of the examples (RAFT's P, 0.8) the documents are the gold chunk (the
  chunk of the example's `source_id` that holds an accepted answer, else its first chunk) shuffled
  among `distractors` other chunks (default ladder.rag.k - 1, so a prompt holds k documents);
- in the rest the gold chunk is replaced by one more distractor, so the adapter also learns to answer
  from what it memorised when retrieval misses;
- distractors are never a chunk of the gold document: the train question's own best-ranked chunks
  (`distractors_from: retrieved`, the near misses inference shows; topped up with random chunks when
  retrieval returns too few) or random corpus chunks (`random`, RAFT's sampling);
- an example without a `source_id`, or whose `source_id` is not in the corpus, gets the retriever's
  top documents as they are, in rank order (what inference would show it).

The retriever is the task's: it indexes the corpus alone, and only train questions are sent to it
(tests/test_raft.py checks that no eval question is). Everything random is seeded by the task's seed.
The adapter lives in its own folder (`raft_folder`), so `lora` keeps its bare-question one.

Plain Python: no torch here; `raft_training` reads the context's retriever.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tunewise.data.example import Example

TOKENS_PER_WORD = 2
"""Room a document word gets in the default RAFT max_length: subword tokenizers spend about 1.3-1.5
tokens a word of English (SmolLM2's: ~1.4), more on names and numbers."""


@dataclass(frozen=True)
class RaftStats:
    """What the RAFT prompts hold, for the rung's facts and the docs."""

    examples: int
    """Prompts built (train examples, or the max_examples sample of them)."""
    with_oracle: int
    """Prompts holding the gold chunk among distractors."""
    without_oracle: int
    """Prompts whose gold chunk was left out: distractors only."""
    no_gold: int
    """Examples without a gold chunk in the corpus: the retriever's top documents as they are."""
    documents: int
    """Documents per prompt (gold + distractors)."""
    distractors_from: str
    train_examples: int
    """Train examples the prompts were sampled from."""


@dataclass
class RaftSet:
    """Everything the lora_rag rung (and its learning curve) trains on: the prompts, the task as it
    trains them (`raft_task`: the RAFT length and batch size), and the adapter's folder."""

    examples: list[Example]
    stats: RaftStats
    task: Any
    folder: Path


def _sample(examples: Sequence[Example], limit: int | None, seed: int) -> list[Example]:
    """At most `limit` examples by a seeded draw, kept in input order."""
    if limit is None or limit >= len(examples):
        return list(examples)
    chosen = sorted(random.Random(f"raft-sample-{seed}").sample(range(len(examples)), limit))
    return [examples[i] for i in chosen]


def gold_chunk(example: Example, chunks_by_doc: dict[str, list[Any]]) -> Any | None:
    """The chunk of the example's gold document that holds an accepted answer (case-insensitive),
    else that document's first chunk; None without a source_id in the corpus.

    >>> from tunewise.retrieval.corpus import Chunk
    >>> doc = [Chunk("d#0", "d", "Paris is big."), Chunk("d#1", "d", "The Seine runs through it.")]
    >>> gold_chunk(Example([{"role": "user", "content": "Which river?"}], "seine", source_id="d"), {"d": doc}).id
    'd#1'
    """
    chunks = chunks_by_doc.get(example.source_id) if example.source_id is not None else None
    if not chunks:
        return None
    answers = [r.lower() for r in example.references if r.strip()]
    return next((c for c in chunks if any(a in c.text.lower() for a in answers)), chunks[0])


def _search(retriever: Any, queries: list[str], k: int) -> list[list[Any]]:
    if not queries:
        return []
    if hasattr(retriever, "search_batch"):
        return retriever.search_batch(queries, k)
    return [retriever.search(q, k) for q in queries]


def _as_hit(chunk: Any) -> Any:
    from tunewise.retrieval.index import Hit

    return Hit(chunk, 0.0)


def _random_distractors(chunks: Sequence[Any], gold_doc: str, taken: list[Any], need: int, rng: random.Random, gold_chunks: int) -> list[Any]:
    """Hits for `need - len(taken)` random chunks, none of the gold document nor already taken.

    Drawing `need + gold_chunks` distinct positions leaves enough once the at most `gold_chunks +
    len(taken)` unusable ones are dropped, without scanning a large corpus for every example."""
    used = {h.chunk.id for h in taken}
    draw = rng.sample(range(len(chunks)), min(len(chunks), need + gold_chunks))
    fresh = [chunks[j] for j in draw if chunks[j].doc_id != gold_doc and chunks[j].id not in used]
    return [_as_hit(c) for c in fresh[: need - len(taken)]]


def raft_examples(
    train: Sequence[Example],
    retriever: Any,
    chunks: Sequence[Any],
    system: str | None,
    k: int,
    spec: Any,
    seed: int,
) -> tuple[list[Example], RaftStats]:
    """RAFT prompts for `train` (see the module docstring): one Example per (sampled) train example,
    its messages what the lora_rag rung would send with the chosen documents, its answer unchanged.

    `retriever` has `search(query, k)` (and maybe `search_batch`) returning hits with `.chunk`;
    `chunks` are the corpus chunks it indexes (gold and random distractors are drawn from them);
    `spec` is the task's `train.raft` (tunewise.task.RaftSpec). Only train questions are queried.
    """
    # Imported here: tunewise.rungs imports this module (through rungs/lora_rag.py), so importing it
    # at the top would make `import tunewise.finetune.raft` alone fail half-way.
    from tunewise.rungs.base import rag_messages, user_turns

    sample = _sample(train, spec.max_examples, seed)
    n_distractors = k - 1 if spec.distractors is None else spec.distractors
    per_prompt = n_distractors + 1
    by_doc: dict[str, list[Any]] = {}
    for chunk in chunks:
        by_doc.setdefault(chunk.doc_id, []).append(chunk)
    golds = [gold_chunk(ex, by_doc) for ex in sample]

    # Exactly round(P x n) of the examples with a gold chunk keep it, drawn by a seeded shuffle.
    with_gold = [i for i, g in enumerate(golds) if g is not None]
    random.Random(f"raft-oracle-{seed}").shuffle(with_gold)
    oracle = set(with_gold[: round(spec.oracle_share * len(with_gold))])

    # Retrieve deep enough that, with every chunk of the gold document dropped, a prompt is still full.
    retrieved = spec.distractors_from == "retrieved"
    asked = [i for i, g in enumerate(golds) if g is None or retrieved]
    depth = per_prompt + max((len(by_doc[g.doc_id]) for g in golds if g is not None), default=0)
    hits = dict(zip(asked, _search(retriever, [sample[i].input_text for i in asked], depth)))

    out: list[Example] = []
    for i, (ex, gold) in enumerate(zip(sample, golds)):
        rng = random.Random(f"raft-{seed}-{i}")
        if gold is None:
            docs, kind = list(hits[i][:per_prompt]), "no_gold"
        else:
            need = n_distractors if i in oracle else n_distractors + 1
            pool = [h for h in hits.get(i, []) if h.chunk.doc_id != gold.doc_id]
            distractors = pool[:need]
            if len(distractors) < need:  # retrieval fell short (bm25 returns only term matches), or random
                distractors += _random_distractors(chunks, gold.doc_id, distractors, need, rng, len(by_doc[gold.doc_id]))
            docs = ([_as_hit(gold)] if i in oracle else []) + distractors
            rng.shuffle(docs)
            kind = "oracle" if i in oracle else "no_oracle"
        out.append(
            Example(
                rag_messages(system, user_turns(ex.messages), docs),
                ex.answer,
                references=list(ex.references),
                source_id=ex.source_id,
                line=ex.line,
                meta={**ex.meta, "raft": kind},
            )
        )
    stats = RaftStats(
        examples=len(out),
        with_oracle=len(oracle),
        without_oracle=len(with_gold) - len(oracle),
        no_gold=len(sample) - len(with_gold),
        documents=per_prompt,
        distractors_from=spec.distractors_from,
        train_examples=len(train),
    )
    return out, stats


def raft_max_length(task: Any) -> int:
    """The RAFT examples' max_length: train.raft.max_length, else train.max_length plus room for the
    documents (TOKENS_PER_WORD x k x chunk_words). Padding is to each batch's longest example, so a
    generous cap costs nothing for shorter prompts.

    >>> from tunewise.task import Task
    >>> raft_max_length(Task(name="x", data={"file": "d.jsonl"}))  # 512 + 2 x 3 x 200
    1712
    """
    spec = task.train.raft
    if spec.max_length is not None:
        return spec.max_length
    docs = spec.distractors + 1 if spec.distractors is not None else task.ladder.rag.k
    return task.train.max_length + TOKENS_PER_WORD * docs * task.ladder.rag.chunk_words


def raft_task(task: Any) -> Any:
    """The task as the RAFT adapter trains: its train.max_length set to `raft_max_length`, its
    train.batch_size to train.raft.batch_size when set."""
    update: dict[str, Any] = {"max_length": raft_max_length(task)}
    if task.train.raft.batch_size is not None:
        update["batch_size"] = task.train.raft.batch_size
    train = task.train.model_copy(update=update)
    return task.model_copy(update={"train": train})


def raft_folder(ctx: Any) -> Path:
    """The RAFT adapter's folder beside the bare one: <run>/train-raft (train@small-raft with models:)."""
    return ctx.train_dir.parent / f"{ctx.train_dir.name}-raft"


def corpus_chunks(ctx: Any, retriever: Any) -> list[Any]:
    """The chunks the retriever indexes: its own (`HybridRetriever.chunks`), else the task's corpus
    chunked as `build_retriever` would; [] when neither is there (every example then gets the
    retriever's top documents as they are)."""
    chunks = getattr(retriever, "chunks", None)
    if chunks is not None:
        return list(chunks)
    if ctx.task.corpus is None:
        return []
    from tunewise.retrieval.corpus import chunk_documents, load_corpus

    return chunk_documents(load_corpus(ctx.task.corpus), chunk_words=ctx.task.ladder.rag.chunk_words)


def raft_training(ctx: Any) -> RaftSet:
    """The RAFT prompts for the context's train split (the tuning pool when tuned; never eval), the
    task they train under and their folder."""
    task = ctx.task
    retriever = ctx.retriever()
    examples, stats = raft_examples(
        ctx.train, retriever, corpus_chunks(ctx, retriever), ctx.system_prompt, task.ladder.rag.k, task.train.raft, ctx.seed
    )
    return RaftSet(examples, stats, raft_task(task), raft_folder(ctx))


def raft_context(ctx: Any, raft: RaftSet) -> Any:
    """The context `finetune.rung.train_adapter` trains the RAFT adapter in (`raft_task`'s settings)."""
    return replace(ctx, task=raft.task)
