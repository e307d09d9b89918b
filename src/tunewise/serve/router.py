"""Route a request to the specialised configuration whose training inputs it resembles most.

A k-nearest-neighbour vote over every configuration's train inputs, embedded with the same
sentence embedder the few-shot rung uses (cosine similarity of L2-normalised vectors):

    neighbours = the k train inputs most similar to the request's last user message
    route      = argmax over configurations c of  sum(similarity(n) for n in neighbours if n is c's)
    fallback   when max similarity < threshold (the request is like nothing any configuration saw)

kNN rather than nearest-centroid: a task's inputs often form several clusters (7 intents), and the
mean of several clusters can sit far from all of them, which makes a centroid threshold hard to set.
A threshold on the nearest single neighbour reads plainly: "nothing in any training set is this close".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tunewise.errors import TunewiseError

DEFAULT_THRESHOLD = 0.35
"""Nearest-train-input cosine (all-MiniLM-L6-v2) below which a request goes to the fallback. On the
bundled tasks, held-out inputs score a median 0.59 (intent, 5th percentile 0.42) to 0.97 against
their own task's train inputs, while off-topic requests scored 0.17-0.38 (docs/serve.md)."""

DEFAULT_K = 5


@dataclass
class Route:
    name: str  # the configuration chosen (or the fallback)
    similarity: float  # cosine similarity of the nearest train input
    votes: dict[str, float]  # configuration -> summed similarity among the k neighbours
    fallback: bool = False


class Router:
    """kNN router over named example sets.

    >>> router = Router(embedder, {"intent": intent_inputs, "squad": squad_questions}, fallback="base")  # doctest: +SKIP
    >>> router.route("play some jazz").name  # doctest: +SKIP
    'intent'
    """

    def __init__(
        self,
        embedder: object,
        examples: Mapping[str, Sequence[str]],
        fallback: str,
        threshold: float = DEFAULT_THRESHOLD,
        k: int = DEFAULT_K,
    ) -> None:
        from tunewise.retrieval.embed import embed_cached

        problems = [f"{name!r} has no train inputs to route by" for name, texts in examples.items() if not texts]
        if not examples:
            problems.append("no configurations to route between")
        if not -1 <= threshold <= 1:
            problems.append(f"threshold must be a cosine similarity in [-1, 1] (got {threshold})")
        if k < 1:
            problems.append(f"k must be >= 1 (got {k})")
        if problems:
            raise TunewiseError("router: " + "; ".join(problems))
        self.embedder = embedder
        self.fallback = fallback
        self.threshold = threshold
        self.k = k
        self.names = list(examples)
        blocks = [embed_cached(embedder, list(texts), "examples") for texts in examples.values()]
        self.vectors = np.concatenate(blocks).astype(np.float32)  # (examples, dim), L2-normalised
        self.labels = np.concatenate([np.full(len(b), i) for i, b in enumerate(blocks)])  # (examples,)

    def route(self, text: str) -> Route:
        query = np.asarray(self.embedder.encode([text]), dtype=np.float32)[0]  # (dim,)
        sims = self.vectors @ query  # (examples,)
        k = min(self.k, len(sims))
        nearest = np.argsort(-sims, kind="stable")[:k]
        votes: dict[str, float] = {}
        for i in nearest:
            name = self.names[int(self.labels[i])]
            votes[name] = votes.get(name, 0.0) + float(sims[i])
        best = float(sims[nearest[0]])
        if best < self.threshold:
            return Route(self.fallback, best, votes, fallback=True)
        return Route(max(votes, key=lambda n: votes[n]), best, votes)
