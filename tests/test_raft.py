"""lora_rag trained the RAFT way (finetune/raft.py): the prompt builder on a fake corpus and a spy
retriever, the rung through run_ladder on a tiny Llama with a corpus, and one slow test on the
embedded model and the squad_rag data."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import EXAMPLES, write_jsonl
from tunewise.data.example import Example
from tunewise.finetune.raft import gold_chunk, raft_examples, raft_max_length
from tunewise.retrieval.corpus import Chunk
from tunewise.retrieval.index import Hit
from tunewise.task import RaftSpec, parse_task

SYSTEM = "Answer from the documents."


class SpyRetriever:
    """Ranks chunks by shared words with the query (ties in corpus order) and records every query."""

    def __init__(self, chunks, limit=None):
        self.chunks = list(chunks)
        self.queries: list[str] = []
        self.limit = limit  # return at most this many hits, like bm25 when few chunks share a term

    def search(self, query, k):
        self.queries.append(query)
        words = set(re.findall(r"\w+", query.lower()))
        ranked = sorted(self.chunks, key=lambda c: -len(words & set(re.findall(r"\w+", c.text.lower()))))
        return [Hit(c, 1.0) for c in ranked[: min(k, self.limit or k)]]


def corpus(n_docs=10):
    """Doc d<j> says "topic<j> holds answer<j>"; d0 has a second chunk, which holds the answer."""
    chunks = [Chunk(f"d{j}#0", f"d{j}", f"topic{j} is a place near topic{(j + 1) % n_docs}", f"T{j}") for j in range(n_docs)]
    chunks[0] = Chunk("d0#0", "d0", "topic0 is a place near topic1", "T0")
    chunks.insert(1, Chunk("d0#1", "d0", "topic0 holds answer0", "T0"))
    for j in range(1, n_docs):
        chunks[j + 1] = Chunk(f"d{j}#0", f"d{j}", f"topic{j} holds answer{j}, near topic{(j + 1) % n_docs}", f"T{j}")
    return chunks


def question(j, i):
    return Example([{"role": "system", "content": "file system"}, {"role": "user", "content": f"what does topic{j} hold ? ({i})"}],
                   f"answer{j}", source_id=f"d{j}")


def train_set(n=40, n_docs=10):
    out = [question(i % n_docs, i) for i in range(n)]
    out.append(Example([{"role": "user", "content": "what does topic3 hold ? (no id)"}], "answer3"))
    out.append(Example([{"role": "user", "content": "what does topic4 hold ? (unknown id)"}], "answer4", source_id="nowhere"))
    return out


def chunk_ids(example, chunks):
    """The corpus chunks shown in a RAFT prompt, in order."""
    text = example.messages[-1]["content"]
    shown = re.findall(r"^\[\d+\] (.*)$", text.split("\n\nUsing the documents above")[0], flags=re.MULTILINE)
    by_text = {f"{c.title}: {c.text}": c.id for c in chunks}
    return [by_text[s] for s in shown]


def test_oracle_in_its_share_absent_otherwise_and_distractors_never_from_the_gold_document():
    chunks = corpus()
    train = train_set()
    spy = SpyRetriever(chunks)
    out, stats = raft_examples(train, spy, chunks, SYSTEM, k=3, spec=RaftSpec(oracle_share=0.75), seed=0)

    assert len(out) == len(train) and stats.documents == 3
    # 40 examples have a gold chunk; exactly round(0.75 x 40) keep it.
    assert (stats.with_oracle, stats.without_oracle, stats.no_gold) == (30, 10, 2)
    for ex, raft in zip(train, out):
        shown = chunk_ids(raft, chunks)
        assert raft.answer == ex.answer and raft.references == ex.references
        # The prompt the lora_rag rung sends: the task's system prompt, documents before the question.
        assert raft.messages[0] == {"role": "system", "content": SYSTEM} and len(raft.messages) == 2
        assert raft.messages[-1]["content"].endswith(f"Using the documents above, answer: {ex.input_text}")
        if raft.meta["raft"] == "no_gold":
            # No gold document in the corpus: the retriever's top 3, in rank order.
            assert shown == [h.chunk.id for h in spy.search(ex.input_text, 3)]
            continue
        gold = f"{ex.source_id}#1" if ex.source_id == "d0" else f"{ex.source_id}#0"  # the chunk holding the answer
        distractors = [c for c in shown if c != gold]
        assert len(shown) == 3 and len(set(shown)) == 3
        assert all(not c.startswith(ex.source_id + "#") for c in distractors)
        assert (gold in shown) == (raft.meta["raft"] == "oracle")
    kinds = [r.meta["raft"] for r in out]
    assert kinds.count("oracle") == 30 and kinds.count("no_oracle") == 10
    # The gold chunk is not always first: the documents are shuffled.
    positions = {chunk_ids(r, chunks).index(f"{r.source_id}#0") for r in out if r.meta["raft"] == "oracle" and r.source_id != "d0"}
    assert len(positions) > 1


def test_seeded_and_only_train_questions_are_retrieved_for():
    chunks = corpus()
    train = train_set()
    evals = [question(j, 1000 + j) for j in range(10)]
    spy = SpyRetriever(chunks)
    first, _ = raft_examples(train, spy, chunks, SYSTEM, k=3, spec=RaftSpec(), seed=7)
    again, _ = raft_examples(train, SpyRetriever(chunks), chunks, SYSTEM, k=3, spec=RaftSpec(), seed=7)
    other, _ = raft_examples(train, SpyRetriever(chunks), chunks, SYSTEM, k=3, spec=RaftSpec(), seed=8)
    assert [e.messages for e in first] == [e.messages for e in again]
    assert [e.messages for e in first] != [e.messages for e in other]
    assert set(spy.queries) == {ex.input_text for ex in train}
    assert not set(spy.queries) & {ex.input_text for ex in evals}


def test_random_distractors_query_only_examples_without_a_gold_document():
    chunks = corpus()
    train = train_set()
    spy = SpyRetriever(chunks)
    out, stats = raft_examples(train, spy, chunks, SYSTEM, k=4, spec=RaftSpec(distractors_from="random", oracle_share=0.5), seed=0)
    assert spy.queries == ["what does topic3 hold ? (no id)", "what does topic4 hold ? (unknown id)"]
    assert stats.documents == 4 and stats.distractors_from == "random"
    for ex, raft in zip(train, out):
        shown = chunk_ids(raft, chunks)
        assert len(shown) == 4 and len(set(shown)) == 4
        if raft.meta["raft"] != "no_gold":
            assert sum(c.startswith(ex.source_id + "#") for c in shown) == (raft.meta["raft"] == "oracle")


def test_short_retrieval_is_topped_up_and_the_sample_and_distractor_count_are_honoured():
    chunks = corpus()
    train = train_set()
    # Retrieval returns 2 hits, one of them often the gold chunk: distractors are topped up at random.
    spec = RaftSpec(distractors=3, max_examples=12, oracle_share=1.0)
    out, stats = raft_examples(train, SpyRetriever(chunks, limit=2), chunks, SYSTEM, k=3, spec=spec, seed=0)
    assert stats.examples == 12 and stats.train_examples == len(train) and stats.documents == 4
    inputs = [ex.input_text for ex in train]
    picked = [inputs.index(r.messages[-1]["content"].rsplit("answer: ", 1)[1]) for r in out]
    assert picked == sorted(picked)  # a subset, in input order
    for raft in out:
        shown = chunk_ids(raft, chunks)
        if raft.meta["raft"] != "no_gold":
            assert len(shown) == 4 and len(set(shown)) == 4
            assert sum(c.startswith(raft.source_id + "#") for c in shown) == 1
    resampled, _ = raft_examples(train, SpyRetriever(chunks, limit=2), chunks, SYSTEM, k=3, spec=spec, seed=1)
    assert [r.messages[-1]["content"] for r in resampled] != [r.messages[-1]["content"] for r in out]


def test_gold_chunk_is_the_one_holding_an_answer():
    chunks = corpus()
    by_doc = {}
    for c in chunks:
        by_doc.setdefault(c.doc_id, []).append(c)
    assert gold_chunk(question(0, 0), by_doc).id == "d0#1"
    no_answer = Example([{"role": "user", "content": "q"}], "elsewhere", source_id="d0")
    assert gold_chunk(no_answer, by_doc).id == "d0#0"
    assert gold_chunk(Example([{"role": "user", "content": "q"}], "a"), by_doc) is None


def test_raft_settings_are_validated_and_the_default_length_makes_room_for_the_documents():
    from tunewise.task import TaskError

    base = {"name": "x", "data": {"file": "d.jsonl"}, "train": {"max_length": 100}, "ladder": {"rag": {"k": 4, "chunk_words": 50}}}
    assert raft_max_length(parse_task(base)) == 100 + 2 * 4 * 50
    assert raft_max_length(parse_task({**base, "train": {"max_length": 100, "raft": {"distractors": 1}}})) == 100 + 2 * 2 * 50
    assert raft_max_length(parse_task({**base, "train": {"raft": {"max_length": 300}}})) == 300
    from tunewise.finetune.raft import raft_task

    assert raft_task(parse_task(base)).train.batch_size == parse_task(base).train.batch_size == 8
    assert raft_task(parse_task({**base, "train": {"raft": {"batch_size": 2}}})).train.batch_size == 2
    with pytest.raises(TaskError) as err:
        parse_task({**base, "train": {"raft": {"oracle_share": 1.5, "distractors_from": "bm25", "max_examples": 0, "batch_size": 0}}})
    message = str(err.value)
    for field in ("train.raft.oracle_share", "train.raft.distractors_from", "train.raft.max_examples", "train.raft.batch_size"):
        assert field in message


# -- the rung on a tiny Llama, through run_ladder ------------------------------------------------------

ANIMALS = ["cat", "dog", "cow", "duck", "sheep", "pig", "horse", "owl"]  # words of test_finetune's tiny vocabulary
SOUNDS = ["meow", "woof", "moo", "quack", "baa", "oink", "neigh", "hoot"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """test_finetune's tiny Llama (2 layers, width 64, word-level ChatML tokenizer), saved."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from test_finetune import build_model, build_tokenizer

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tokenizer()
    build_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def animal_rows(n, offset=0):
    return [
        {"messages": [{"role": "system", "content": "answer briefly ."},
                      {"role": "user", "content": f"what does the {ANIMALS[i % 8]} say ? {'?' * (i // 8)}".strip()},
                      {"role": "assistant", "content": SOUNDS[i % 8]}],
         "source_id": ANIMALS[i % 8]}
        for i in range(offset, offset + n)
    ]


def animal_task(tmp_path, tiny_dir, rungs, **raft):
    write_jsonl(tmp_path / "train.jsonl", animal_rows(32))
    write_jsonl(tmp_path / "eval.jsonl", [dict(r, messages=[r["messages"][0], {"role": "user", "content": r["messages"][1]["content"] + " sound"}, r["messages"][2]])
                                          for r in animal_rows(8, offset=3)])
    write_jsonl(tmp_path / "corpus.jsonl", [{"id": a, "text": f"the {a} say {s} ."} for a, s in zip(ANIMALS, SOUNDS)])
    return parse_task(
        {
            "name": "animals",
            "data": {"train": "train.jsonl", "eval": "eval.jsonl"},
            "corpus": "corpus.jsonl",
            "metric": "exact_match",
            "model": str(tiny_dir),
            "model_options": {"bf16": "off"},
            "ladder": {"rungs": rungs, "rag": {"k": 2, "chunk_words": 20, "mode": "bm25"}, "max_new_tokens": 3, "batch_size": 8},
            "train": {"epochs": 2, "batch_size": 8, "learning_rate": 0.01, "max_length": 48, "bf16": "off",
                      "learning_curve": [0.5, 1.0], "raft": {"max_length": 120, **raft}},
        },
        tmp_path / "task.yaml",
    )


class LadderSpy:
    """The task's real bm25 retriever, recording what it is asked."""

    def __init__(self, task):
        from tunewise.retrieval.index import build_retriever

        self.inner = build_retriever(task)
        self.chunks = self.inner.chunks
        self.queries: list[str] = []

    def search(self, query, k):
        self.queries.append(query)
        return self.inner.search(query, k)


def test_lora_rag_trains_on_raft_prompts_in_its_own_folder_and_resumes(tmp_path, tiny_dir, monkeypatch):
    from tunewise.data.splits import load_splits
    from tunewise.finetune import train as ft
    from tunewise.ladder.run import RunOptions, run_ladder
    from tunewise.rungs import lora_rag as rung_module

    task = animal_task(tmp_path, tiny_dir, ["lora", "lora_rag"], batch_size=4)
    train, evals = load_splits(task)
    spy = LadderSpy(task)
    seen_at_training: list[list[str]] = []
    real_train_adapter = rung_module.train_adapter

    def recording(ctx, examples=None, folder=None):
        seen_at_training.append(list(spy.queries))
        return real_train_adapter(ctx, examples, folder)

    monkeypatch.setattr(rung_module, "train_adapter", recording)
    options = dict(retriever=spy, embedder=object(), evidence=False, report=False, full=True, out_dir=tmp_path / "runs")
    results = run_ladder(task, RunOptions(**options), log=lambda m: None)
    lora, lora_rag = results.rung("lora"), results.rung("lora_rag")
    assert lora.status == lora_rag.status == "done", (lora.note, lora_rag.note)

    # Before the RAFT adapter trained, the retriever had been asked every train question and nothing else.
    (before,) = seen_at_training
    assert set(before) == {ex.input_text for ex in train}
    assert not set(before) & {ex.input_text for ex in evals}

    # Two adapters, each in its own folder: lora's on bare questions, lora_rag's on RAFT prompts.
    run_dir = tmp_path / "runs" / results.run_id
    bare, raft = Path(lora.training.adapter_path), Path(lora_rag.training.adapter_path)
    assert bare.parent.parent == run_dir / "train" and raft.parent.parent == run_dir / "train-raft"
    from tunewise.finetune.raft import raft_training
    from tunewise.ladder.run import open_run

    _, ctx, _ = open_run(run_dir, RunOptions(retriever=spy, embedder=object()))
    expected = raft_training(ctx)
    config = json.loads((raft.parent / "train_config.json").read_text())
    assert config["data_sha256"] == ft._examples_digest(expected.examples)
    assert (config["train"]["max_length"], config["train"]["batch_size"]) == (120, 4)  # train.raft's, not train's
    assert lora_rag.training.train_examples + lora_rag.training.val_examples == len(train)  # none cut by the length
    assert all(ex.messages[-1]["content"].startswith("Documents:\n[1] ") for ex in expected.examples)
    assert json.loads((bare.parent / "train_config.json").read_text())["data_sha256"] == ft._examples_digest(train)
    # The rung's facts say how it was trained; it answers with retrieved documents.
    assert "trained RAFT-style on 32 prompts of 2 documents" in lora_rag.facts["raft"].text
    assert lora_rag.facts["raft"].value == pytest.approx(round(0.8 * 32) / 32)
    assert lora_rag.retrieval_recall is not None and lora_rag.prompt_tokens > lora.prompt_tokens

    # Resume: nothing trains again, neither the finished run nor a fresh prepare of the rung.
    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(ft, "_trainer", no_training)
    again = run_ladder(task, RunOptions(**options), log=lambda m: None)
    assert again.rung("lora_rag").score == lora_rag.score
    prepared = rung_module.prepare(ctx)
    assert prepared.adapter_path == raft and prepared.details["raft"] == expected.stats
    assert sorted(p.name for p in (run_dir / "train-raft").iterdir()) == [raft.parent.name]
    # The rung declares its folder, so export and serve find the RAFT adapter, not lora's.
    from tunewise.finetune.export import find_adapter
    from tunewise.rungs import get_rung

    assert get_rung("lora_rag").adapter_dir(ctx) == run_dir / "train-raft" and get_rung("lora").adapter_dir(ctx) == run_dir / "train"
    assert find_adapter(get_rung("lora_rag").adapter_dir(ctx)) == raft
    from tunewise.finetune.export import load_deployment

    assert load_deployment(run_dir, "lora_rag").finetune == raft and load_deployment(run_dir, "lora").finetune == bare


def test_learning_curve_of_lora_rag_trains_on_the_raft_prompts(tmp_path, tiny_dir):
    from tunewise.eval.metrics import get_metric
    from tunewise.finetune.curve import learning_curve
    from tunewise.ladder.run import RunOptions, run_ladder

    task = animal_task(tmp_path, tiny_dir, ["lora_rag"], oracle_share=0.5)
    spy = LadderSpy(task)
    options = RunOptions(retriever=spy, embedder=object(), evidence=False, report=False, full=True, out_dir=tmp_path / "runs")
    results = run_ladder(task, options, log=lambda m: None)
    run_dir = tmp_path / "runs" / results.run_id
    adapter = Path(results.rung("lora_rag").training.adapter_path)
    assert not (run_dir / "train").exists()  # no bare-question adapter was trained

    from tunewise.ladder.run import open_run

    _, ctx, _ = open_run(run_dir, RunOptions(retriever=spy, embedder=object()))
    curve = learning_curve(ctx, get_metric("exact_match"), with_rag=True)
    assert curve.rung == "lora_rag" and [p.examples for p in curve.points] == [15, 29]
    folders = sorted(p.name for p in (run_dir / "train-raft").iterdir())
    # The 100% point is the rung's own adapter (reused); the 50% share is the RAFT prompts' nested half.
    assert adapter.parent.name in folders and len(folders) == 2
    half = next(run_dir / "train-raft" / f for f in folders if f.startswith("lora-50pct-"))
    assert json.loads((half / "train_config.json").read_text())["data_sha256"] == json.loads(
        (adapter.parent / "train_config.json").read_text())["data_sha256"]
    assert not (run_dir / "train").exists()


# -- the real path ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_raft_on_the_embedded_model_and_the_squad_corpus(tmp_path):
    """squad_rag's real corpus, bm25 retrieval and SmolLM2's tokenizer: the default RAFT length keeps
    every prompt whole, and a few training steps run through the rung."""
    from tunewise.data.splits import load_splits
    from tunewise.finetune.raft import raft_training
    from tunewise.finetune.train import encode_examples
    from tunewise.models.resolve import load_pretrained
    from tunewise.rungs.base import LadderContext
    from tunewise.rungs.lora_rag import RUNG
    from tunewise.task import load_task

    task = load_task(EXAMPLES / "squad_rag" / "task.yaml")
    ladder = task.ladder.model_copy(update={"rag": task.ladder.rag.model_copy(update={"mode": "bm25"})})
    train_spec = task.train.model_copy(update={"epochs": 1, "batch_size": 4, "raft": RaftSpec(max_examples=12)})
    task = task.model_copy(update={"ladder": ladder, "train": train_spec})
    train, evals = load_splits(task)
    from tunewise.retrieval.index import build_retriever

    retriever = build_retriever(task)
    spy = type("Spy", (), {"chunks": retriever.chunks, "queries": [],
                           "search": lambda self, q, k: (self.queries.append(q), retriever.search(q, k))[1]})()
    ctx = LadderContext(task, train, evals[:4], tmp_path, lambda: None, lambda: spy, lambda: None)
    raft = raft_training(ctx)
    assert raft.stats.examples == 12 and raft.stats.with_oracle == round(0.8 * 12)
    assert set(spy.queries) <= {ex.input_text for ex in train} and not set(spy.queries) & {ex.input_text for ex in evals}

    _, tokenizer = load_pretrained(task.model)
    # Every squad_rag train example fits the default length whole (the longest paragraphs included).
    every = raft_training(replace(ctx, task=task.model_copy(update={"train": task.train.model_copy(update={"raft": RaftSpec()})})))
    assert every.stats.examples == len(train)
    kept, dropped = encode_examples(tokenizer, every.examples, raft_max_length(task))
    assert dropped == 0 and max(len(e["input_ids"]) for e in kept) < raft_max_length(task)

    prepared = RUNG.prepare(ctx)
    assert prepared.adapter_path.parent.parent == tmp_path / "train-raft"
    (answer,) = prepared.model.generate([prepared.build(evals[0].turns).messages], max_new_tokens=8)
    assert answer.text


# -- bench/compare_runs.py: the README's cross-run paired tests --------------------------------------


def test_compare_runs_matches_tunewise_compare_and_refuses_runs_of_other_examples(tmp_path):
    import importlib.util

    from conftest import ROOT
    from test_ladder import make_task, oracle

    from tunewise.commands.compare import compare_two
    from tunewise.errors import TunewiseError
    from tunewise.ladder.run import RunOptions, run_ladder
    from tunewise.models.base import FakeModel

    spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "bench" / "compare_runs.py")
    compare_runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare_runs)

    options = dict(model=FakeModel(respond=oracle(0.4, 0.9)), evidence=False, report=False, full=True, out_dir=tmp_path / "runs")
    first = run_ladder(make_task(tmp_path / "a", target=None), RunOptions(**options), log=lambda m: None)
    # The same examples under another config (another run folder); and a run of other eval examples.
    other_k = make_task(tmp_path / "a", target=None)
    other_k = other_k.model_copy(update={"ladder": other_k.ladder.model_copy(update={"max_new_tokens": 8})})
    second = run_ladder(other_k, RunOptions(**options), log=lambda m: None)
    elsewhere = run_ladder(make_task(tmp_path / "c", n_eval=30, target=None), RunOptions(**options), log=lambda m: None)
    runs = tmp_path / "runs"
    a, b = runs / first.run_id, runs / second.run_id
    assert a != b

    (row,) = compare_runs.compare_sides(f"{a}:few_shot", f"{b}:zero_shot", ["accuracy"])
    within = compare_two(a, "few_shot", "zero_shot")  # zero_shot answers alike in both runs
    assert (row["value_a"], row["value_b"]) == (within["rungs"]["few_shot"]["value"], within["rungs"]["zero_shot"]["value"])
    assert row["difference"] == pytest.approx(within["difference"]) and row["p_value"] == pytest.approx(within["p_value"])
    assert row["test"] == within["test"] and row["examples"] == 40
    assert elsewhere.run_id not in (first.run_id, second.run_id)
    with pytest.raises(TunewiseError, match="did not answer the same eval examples"):
        compare_runs.compare_sides(f"{a}:few_shot", f"{runs / elsewhere.run_id}:zero_shot", ["accuracy"])
    with pytest.raises(TunewiseError, match="finished rungs: zero_shot, few_shot"):
        compare_runs.compare_sides(f"{a}:lora", f"{b}:zero_shot", ["accuracy"])
