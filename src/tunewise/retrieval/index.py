"""Search a chunked corpus with BM25, dense embeddings, or both fused by reciprocal rank fusion.

bm25s and the embedding model are imported when a retriever is built, never at module import.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tunewise.errors import TunewiseError
from tunewise.retrieval.corpus import Chunk, chunk_documents, load_corpus

MODES = ("hybrid", "bm25", "dense")
RRF_K = 60
FUSION_DEPTH = 100  # each ranking contributes its top max(FUSION_DEPTH, k) chunks to the fusion


@dataclass
class Hit:
    """One retrieved chunk. `score` is BM25 (bm25), cosine (dense) or the RRF sum (hybrid)."""

    chunk: Chunk
    score: float


def rrf(rankings: Sequence[Sequence[Hashable]], k: int = RRF_K) -> list[tuple[Hashable, float]]:
    """Reciprocal rank fusion (Cormack et al. 2009): score(d) = sum over rankings of 1 / (k + rank),
    rank counting from 1; an item missing from a ranking gets nothing from it. Best first; ties keep
    the order in which items first appear.

    >>> rrf([["a", "b"], ["b", "c"]])
    [('b', 0.03252247488101534), ('a', 0.01639344262295082), ('c', 0.016129032258064516)]
    """
    scores: dict[Hashable, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])  # sorted() is stable


def recall_at_k(retrieved_doc_ids: list[list[str]], gold_ids: list[str | None]) -> float | None:
    """Share of examples whose gold document is among their retrieved ids; k is the list length.

    Examples without a gold id are left out; None when no example has one.

    >>> recall_at_k([["d1", "d2"], ["d3"], ["d4"]], ["d2", "d9", None])
    0.5
    """
    if len(retrieved_doc_ids) != len(gold_ids):
        raise ValueError(f"{len(retrieved_doc_ids)} retrieval lists for {len(gold_ids)} gold ids")
    pairs = [(got, gold) for got, gold in zip(retrieved_doc_ids, gold_ids) if gold is not None]
    if not pairs:
        return None
    return sum(gold in got for got, gold in pairs) / len(pairs)


def _index_text(chunk: Chunk) -> str:
    """What BM25 and the embedder see: the title carries the topic a paragraph often leaves implicit."""
    return f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text


class HybridRetriever:
    """Top-k chunks for a query.

    mode "bm25": lexical (bm25s, lower-cased word tokens, English stopwords, no stemming); only chunks
    sharing a term with the query are returned, so a query may get fewer than k hits.
    mode "dense": cosine similarity of all-MiniLM-L6-v2 embeddings (or the embedder given).
    mode "hybrid": both rankings fused by `rrf`.
    """

    def __init__(
        self,
        chunks: list[Chunk],
        mode: Literal["hybrid", "bm25", "dense"] = "hybrid",
        embedder: Any = None,
        cache: bool = True,
    ) -> None:
        if mode not in MODES:
            raise TunewiseError(f"unknown retrieval mode {mode!r}; valid modes: {', '.join(MODES)}")
        if not chunks:
            raise TunewiseError("cannot build a retriever over an empty corpus; add documents to the corpus")
        self.chunks = chunks
        self.mode = mode
        texts = [_index_text(c) for c in chunks]
        self._bm25 = self._tokenizer = None
        if mode in ("bm25", "hybrid"):
            import bm25s
            from bm25s.tokenization import Tokenizer

            self._tokenizer = Tokenizer(lower=True, stopwords="en", stemmer=None)
            ids = self._tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False)
            self._bm25 = bm25s.BM25()
            self._bm25.index(ids, show_progress=False)
        self.embedder = None
        self._vectors: np.ndarray | None = None
        if mode in ("dense", "hybrid"):
            from tunewise.retrieval.embed import embed_cached, load_embedder

            self.embedder = embedder if embedder is not None else load_embedder()
            self._vectors = embed_cached(self.embedder, texts, "corpus") if cache else self.embedder.encode(texts)

    def search(self, query: str, k: int) -> list[Hit]:
        return self.search_batch([query], k)[0]

    def search_batch(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Hits per query, best first; chunks, not documents (two chunks may share a doc_id)."""
        if not queries:
            return []
        k = max(1, min(k, len(self.chunks)))
        depth = min(len(self.chunks), max(FUSION_DEPTH, k))
        lexical = self._bm25_rankings(queries, depth) if self._bm25 is not None else None
        dense = self._dense_rankings(queries, depth) if self._vectors is not None else None
        results = []
        for i in range(len(queries)):
            if self.mode == "bm25":
                ranked = lexical[i][:k]
            elif self.mode == "dense":
                ranked = dense[i][:k]
            else:
                fused = rrf([[c for c, _ in lexical[i]], [c for c, _ in dense[i]]])
                ranked = fused[:k]
            results.append([Hit(self.chunks[c], float(s)) for c, s in ranked])
        return results

    def _bm25_rankings(self, queries: list[str], depth: int) -> list[list[tuple[int, float]]]:
        ids = self._tokenizer.tokenize(list(queries), update_vocab=False, return_as="ids", show_progress=False)
        out = []
        for query_ids in ids:
            scores = self._bm25.get_scores(query_ids)  # (chunks,)
            order = np.argsort(-scores, kind="stable")[:depth]
            out.append([(int(c), float(scores[c])) for c in order if scores[c] > 0])
        return out

    def _dense_rankings(self, queries: list[str], depth: int) -> list[list[tuple[int, float]]]:
        scores = self.embedder.encode(list(queries)) @ self._vectors.T  # (queries, chunks)
        out = []
        for row in scores:
            order = np.argsort(-row, kind="stable")[:depth]
            out.append([(int(c), float(row[c])) for c in order])
        return out


def build_retriever(task: Any, embedder: Any = None) -> HybridRetriever:
    """The retriever a task asks for: its corpus, chunked by ladder.rag.chunk_words, in ladder.rag.mode."""
    if task.corpus is None:
        raise TunewiseError(
            "this rung needs a corpus; set `corpus:` in the task file to a JSONL file or a folder of .txt/.md"
        )
    spec = task.ladder.rag
    chunks = chunk_documents(load_corpus(task.corpus), chunk_words=spec.chunk_words)
    return HybridRetriever(chunks, mode=spec.mode, embedder=embedder)
