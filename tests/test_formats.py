"""Data formats: every reader, detection, every per-record problem with its line number, streaming,
and the train/eval splits."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest
from conftest import DATA, chat, write_jsonl

from tunewise.data import formats
from tunewise.data.formats import (
    FORMATS,
    DataError,
    Problem,
    detect_format,
    get_format,
    iter_records,
    read_examples,
)
from tunewise.data.splits import load_splits, split_examples
from tunewise.task import parse_task

FIXTURES = DATA / "formats"
QUESTIONS = ["What is the capital of France?", "What is 2+2?", "Name a primary colour."]
ANSWERS = ["Paris", "4", "red"]


def problems_by_line(path: Path, fmt: str = "auto") -> dict[int, list[Problem]]:
    out: dict[int, list[Problem]] = {}
    for line, item in iter_records(path, fmt):
        if isinstance(item, Problem):
            assert item.line == line and item.fix, item
            out.setdefault(line, []).append(item)
    return out


# -- every problem, with its line ------------------------------------------------------------------

BAD_LINES = {
    2: "invalid JSON",
    4: "expected a JSON object, got list",
    5: "missing key(s) messages (found: msgs)",
    6: "message 2 has unknown role 'bot'; fix: use one of: system, user, assistant",
    7: "two user turns in a row (messages 1 and 2)",
    8: "conversation starts with an assistant turn (message 1)",
    9: "system message at position 2",
    10: "no final assistant turn: the last message (4) is from user",
    11: "message 2 (user) has empty content",
    12: "message 2 has unknown key(s) contnet",
    13: "looks like `prompt_completion`",
    15: "`references` must be a non-empty list",
    18: "`messages` must be a non-empty list",
}
GOOD_LINES = {1: "4", 14: "Paris", 16: "second answer", 17: "ok"}  # line 3 is blank: skipped


def test_mixed_bad_file_reports_every_bad_line_with_its_number():
    path = FIXTURES / "bad_lines.jsonl"
    found = problems_by_line(path)
    assert set(found) == set(BAD_LINES)
    for line, fragment in BAD_LINES.items():
        assert any(fragment in str(p) for p in found[line]), (line, [str(p) for p in found[line]])
    good = {ex.line: ex.answer for _, ex in iter_records(path) if not isinstance(ex, Problem)}
    assert good == GOOD_LINES


def test_read_examples_raises_once_listing_all_bad_lines():
    with pytest.raises(DataError) as err:
        read_examples(FIXTURES / "bad_lines.jsonl")
    message = str(err.value)
    assert f"on {len(BAD_LINES)} line(s)" in message
    for line in BAD_LINES:
        assert f"line {line}: " in message
    assert "line 1: " not in message and "line 14: " not in message


def test_unknown_key_and_missing_content_are_both_reported():
    found = problems_by_line(FIXTURES / "bad_lines.jsonl")
    assert [p.what.split(" has ")[1][:11] for p in found[12]] == ["unknown key", "no `content"]


@pytest.mark.parametrize(
    "messages, fragment",
    [
        ([{"role": "user", "content": "q"}, {"role": "tool", "content": "x"}], "unknown role 'tool'"),
        ([{"content": "q"}, {"role": "assistant", "content": "a"}], "message 1 has no `role`"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}], "message 2 (assistant) has empty"),
        ([{"role": "system", "content": "s"}], "no user or assistant messages"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": 5}], "content must be a string"),
        (
            [{"role": "user", "content": [{"type": "image_url"}]}, {"role": "assistant", "content": "a"}],
            "non-text content part",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "assistant", "content": "b"},
            ],
            "two assistant turns in a row (messages 2 and 3)",
        ),
        (["just text", {"role": "assistant", "content": "a"}], "message 1 is not an object"),
    ],
)
def test_chat_record_problems(tmp_path, messages, fragment):
    path = write_jsonl(tmp_path / "d.jsonl", [chat("fine", "ok"), {"messages": messages}])
    found = problems_by_line(path, "chat")
    assert list(found) == [2]
    assert any(fragment in p.what for p in found[2]), [p.what for p in found[2]]


def test_multi_turn_keeps_earlier_assistant_turns():
    [ex] = [e for _, e in iter_records(FIXTURES / "bad_lines.jsonl") if not isinstance(e, Problem) and e.line == 16]
    assert [m["role"] for m in ex.messages] == ["user", "assistant", "user"]
    assert ex.input_text == "second question" and ex.answer == "second answer"


def test_references_source_id_and_extra_keys_are_kept(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [chat("q", "a", references=["a", "A"], source_id=7, label="x")])
    [ex] = read_examples(path)
    assert (ex.references, ex.source_id, ex.meta, ex.line) == (["a", "A"], "7", {"label": "x"}, 1)


# -- every format, detected and parsed ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, fmt, lines, system",
    [
        ("chat.jsonl", "chat", [1, 2, 3], "Answer briefly."),
        ("prompt_completion.jsonl", "prompt_completion", [1, 2, 3], None),
        ("alpaca.json", "alpaca", [2, 7, 12], None),
        ("alpaca.jsonl", "alpaca", [1, 2, 3], None),
        ("sharegpt.json", "sharegpt", [2, 18, 34], "Answer briefly."),
        ("sharegpt.jsonl", "sharegpt", [1, 2, 3], None),
        ("qa.csv", "csv", [2, 3, 4], "Answer briefly."),
    ],
)
def test_each_format_is_detected_and_parsed(name, fmt, lines, system):
    path = FIXTURES / name
    assert detect_format(path) == fmt
    examples = read_examples(path)
    assert [ex.line for ex in examples] == lines
    assert [ex.answer for ex in examples] == ANSWERS  # prompt_completion's " Paris" is stripped
    assert all(q in ex.input_text for q, ex in zip(QUESTIONS, examples))
    assert {ex.system for ex in examples} == {system}
    assert read_examples(path, fmt) == examples  # naming the format gives the same result


def test_alpaca_joins_instruction_and_input():
    first, _, last = read_examples(FIXTURES / "alpaca.json")
    assert first.input_text == "Answer the question.\n\nWhat is the capital of France?"
    assert last.input_text == "Name a primary colour."  # empty input: the instruction alone


@pytest.mark.parametrize(
    "speaker, role",
    [("human", "user"), ("user", "user"), ("gpt", "assistant"), ("assistant", "assistant"), ("chatgpt", "assistant")],
)
def test_sharegpt_speakers_map_to_roles(tmp_path, speaker, role):
    other = "gpt" if role == "user" else "human"
    turns = [{"from": speaker, "value": "x"}, {"from": other, "value": "y"}]
    if role == "assistant":
        turns.reverse()
    path = write_jsonl(tmp_path / "s.jsonl", [{"conversations": turns, "system": "Be kind."}])
    [ex] = read_examples(path)
    assert ex.messages[0] == {"role": "system", "content": "Be kind."}
    assert ex.messages[1]["role"] == "user" and ex.answer == ("y" if role == "user" else "x")


def test_sharegpt_unknown_speaker_lists_the_valid_ones(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}]
    found = problems_by_line(write_jsonl(tmp_path / "s.jsonl", rows), "sharegpt")
    assert "unknown speaker 'bot'" in found[1][0].what
    assert "human, user, gpt, assistant, chatgpt, system" in found[1][0].fix


@pytest.mark.parametrize(
    "row, fragment",
    [
        ({"prompt": "q"}, "missing key(s) completion"),
        ({"prompt": "q", "completion": 1}, "`completion` must be a string, got int 1"),
        ({"prompt": "  ", "completion": "a"}, "`prompt` is empty"),
    ],
)
def test_prompt_completion_problems(tmp_path, row, fragment):
    found = problems_by_line(write_jsonl(tmp_path / "p.jsonl", [row]), "prompt_completion")
    assert fragment in found[1][0].what


@pytest.mark.parametrize(
    "row, fragment",
    [
        ({"instruction": "q"}, "missing key(s) output"),
        ({"instruction": "q", "output": ""}, "`output` is empty"),
        ({"instruction": "q", "output": "a", "input": ["x"]}, "`input` must be a string"),
    ],
)
def test_alpaca_problems(tmp_path, row, fragment):
    found = problems_by_line(write_jsonl(tmp_path / "a.jsonl", [row]), "alpaca")
    assert fragment in found[1][0].what


# -- CSV --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, expected_system",
    [
        ("input,output", None),
        ("prompt,completion", None),
        ("Question,Answer,notes", None),
        (" INPUT , Output ,system", "sys"),
    ],
)
def test_csv_column_names(tmp_path, header, expected_system):
    extra = ",sys" if header.count(",") == 2 and "system" in header else (",note" if header.count(",") == 2 else "")
    path = tmp_path / "d.csv"
    path.write_text(f"{header}\nhello,world{extra}\n")
    [ex] = read_examples(path)
    assert (ex.input_text, ex.answer, ex.system, ex.line) == ("hello", "world", expected_system, 2)


def test_csv_bad_header_names_the_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nhello,greeting\n")
    with pytest.raises(DataError, match=r"header has columns \['text', 'label'\].*input/prompt/question"):
        read_examples(path)


def test_csv_rows_report_their_own_line_numbers(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(
        'input,output\n"two\nline input",ok\n\nonly one field\n,empty input\nfine,"yes, quoted"\n', encoding="utf-8"
    )
    found = problems_by_line(path)
    assert {line: [p.what for p in ps] for line, ps in found.items()} == {
        5: ["row has 1 fields, the header has 2"],
        6: ["`input` is empty"],
    }
    good = [(ex.line, ex.answer) for _, ex in iter_records(path) if not isinstance(ex, Problem)]
    assert good == [(2, "ok"), (7, "yes, quoted")]


def test_tsv_is_tab_separated(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("question\tanswer\na, b\tc\n")
    [ex] = read_examples(path)
    assert (ex.input_text, ex.answer) == ("a, b", "c")


# -- detection, override, names ----------------------------------------------------------------------


def test_unknown_format_name_lists_the_valid_names():
    with pytest.raises(DataError) as err:
        get_format("openai")
    assert f"valid formats: auto, {', '.join(FORMATS)}" in str(err.value)
    with pytest.raises(DataError, match="unknown data format 'jsonl'"):
        read_examples(FIXTURES / "chat.jsonl", "jsonl")


def test_override_reads_the_file_as_the_named_format():
    with pytest.raises(DataError) as err:
        read_examples(FIXTURES / "chat.jsonl", "alpaca")
    assert "3 problem(s) on 3 line(s)" in str(err.value)
    assert "looks like `chat`" in str(err.value)


def test_detection_votes_over_the_first_valid_records(tmp_path):
    rows = ["not json", {"prompt": "a", "completion": "b"}, chat("q", "a"), chat("q2", "a2")]
    assert detect_format(write_jsonl(tmp_path / "d.jsonl", rows)) == "chat"


@pytest.mark.parametrize(
    "content, fragment",
    [
        ('{"text": "hello"}\n', "records with keys: text"),
        ('{\n  "messages": []\n}\n', "pretty-printed JSON document"),
        ("hello there\n", "no valid JSON object"),
        ("", "is empty"),
    ],
)
def test_undetectable_files_say_why(tmp_path, content, fragment):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match="Pass --format NAME" if content else "empty") as err:
        detect_format(path)
    assert fragment in str(err.value)


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        read_examples(tmp_path / "nope.jsonl")


def test_bom_and_bad_utf8_line(tmp_path):
    path = tmp_path / "d.jsonl"
    good = json.dumps(chat("q", "a")).encode()
    path.write_bytes(b"\xef\xbb\xbf" + good + b"\n" + b'{"messages": "\xff"}\n' + good + b"\n")
    found = problems_by_line(path)
    assert list(found) == [2] and "not valid UTF-8" in found[2][0].what
    assert [ex.line for _, ex in iter_records(path) if not isinstance(ex, Problem)] == [1, 3]


# -- JSON arrays and streaming -------------------------------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch):
    """Force the array reader to refill its buffer mid-record, many times."""
    monkeypatch.setattr(formats, "_CHUNK", 7)


def test_json_array_in_tiny_chunks_matches(small_chunks):
    examples = read_examples(FIXTURES / "sharegpt.json")
    assert [ex.line for ex in examples] == [2, 18, 34] and [ex.answer for ex in examples] == ANSWERS


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ('[\n{"instruction": "q", "output": "a"},\n{"instruction": "q2", "output": }\n]', 3, "invalid JSON"),
        ('[\n{"instruction": "q", "output": "a"},\n]', 3, "trailing comma"),
        ('[\n{"instruction": "q", "output": "a"}\n{"instruction": "q2", "output": "b"}]', 3, "expected ',' or ']'"),
        ('[\n{"instruction": "q", "output": "a"},\n{"instruction": "q2", "output": "b"}', 3, "file ends"),
        ('[\n{"instruction": "q", "output": "a"},\n3\n]', 3, "expected a JSON object, got int"),
    ],
)
def test_json_array_errors_have_line_numbers(small_chunks, tmp_path, text, line, fragment):
    path = tmp_path / "d.json"
    path.write_text(text)
    items = list(iter_records(path, "alpaca"))
    assert items[0][0] == 2 and items[0][1].answer == "a"
    problems = [(n, p) for n, p in items if isinstance(p, Problem)]
    assert len(problems) == 1 and problems[0][0] == line and fragment in problems[0][1].what


@pytest.mark.parametrize("container", ["jsonl", "array"])
def test_reading_streams_instead_of_loading_the_file(tmp_path, monkeypatch, container):
    monkeypatch.setattr(formats, "_CHUNK", 1 << 14)
    row = json.dumps(chat("a question " * 20, "an answer"))
    path = tmp_path / f"big.{container}"
    n = 6000  # ~2.4 MB
    with path.open("w") as f:
        f.write("[\n" + ",\n".join([row] * n) + "\n]" if container == "array" else (row + "\n") * n)
    size = path.stat().st_size
    tracemalloc.start()
    count = sum(1 for _, item in iter_records(path, "chat") if not isinstance(item, Problem))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == n
    assert peak < size / 4, f"peak {peak:,} bytes for a {size:,}-byte file: the reader holds the file"


# -- splits ---------------------------------------------------------------------------------------------


def task_for(tmp_path: Path, data: dict):
    return parse_task({"name": "t", "data": data}, tmp_path / "task.yaml")


def test_single_file_split_is_deterministic_and_complete(tmp_path):
    write_jsonl(tmp_path / "all.jsonl", [chat(f"q{i}", f"a{i}") for i in range(50)])
    task = task_for(tmp_path, {"file": "all.jsonl", "eval_fraction": 0.2, "seed": 3})
    train, evals = load_splits(task)
    assert (len(train), len(evals)) == (40, 10)
    assert sorted(ex.line for ex in train + evals) == list(range(1, 51))
    assert [ex.line for ex in train] == sorted(ex.line for ex in train)  # file order kept
    again = load_splits(task)
    assert [ex.line for ex in again[1]] == [ex.line for ex in evals]
    other = load_splits(task_for(tmp_path, {"file": "all.jsonl", "eval_fraction": 0.2, "seed": 4}))
    assert [ex.line for ex in other[1]] != [ex.line for ex in evals]


@pytest.mark.parametrize("n, fraction, expected_eval", [(2, 0.01, 1), (2, 0.9, 1), (10, 0.25, 2), (7, 0.5, 4)])
def test_split_sizes(n, fraction, expected_eval):
    data = read_examples(FIXTURES / "chat.jsonl") * n
    train, evals = split_examples(data[:n], fraction, seed=0)
    assert len(evals) == expected_eval and len(train) == n - expected_eval


def test_split_needs_two_examples():
    with pytest.raises(DataError, match="cannot split 1 example"):
        split_examples(read_examples(FIXTURES / "chat.jsonl")[:1], 0.2, 0)


def test_train_and_eval_files_report_all_problems_together(tmp_path):
    write_jsonl(tmp_path / "t.jsonl", [chat("q", "a"), "{bad"])
    write_jsonl(tmp_path / "e.jsonl", [{"messages": [{"role": "user", "content": "q"}]}])
    with pytest.raises(DataError) as err:
        load_splits(task_for(tmp_path, {"train": "t.jsonl", "eval": "e.jsonl"}))
    message = str(err.value)
    assert "2 problem(s) on 2 line(s)" in message
    assert "t.jsonl: line 2: invalid JSON" in message and "e.jsonl: line 1: no final assistant turn" in message


def test_train_and_eval_files_load(tmp_path):
    write_jsonl(tmp_path / "t.jsonl", [chat("q", "a"), chat("q2", "b")])
    write_jsonl(tmp_path / "e.jsonl", [chat("q3", "c")])
    train, evals = load_splits(task_for(tmp_path, {"train": "t.jsonl", "eval": "e.jsonl"}))
    assert [ex.answer for ex in train] == ["a", "b"] and [ex.answer for ex in evals] == ["c"]


# -- hostile input (issue 16): every bad line reported at its true line, no traceback -----------------

GOOD = json.dumps(chat("q", "a"))


def _bad_lines(path: Path, fmt: str = "auto") -> dict[int, str]:
    """line -> every problem text of that line; the reader must not raise."""
    return {line: " | ".join(p.what for p in ps) for line, ps in problems_by_line(path, fmt).items()}


def _good_lines(path: Path, fmt: str = "auto") -> list[int]:
    return [line for line, item in iter_records(path, fmt) if not isinstance(item, Problem)]


@pytest.mark.parametrize(
    "record, fmt",
    [
        ('{"messages": [{"role": "user", "content": "a\\ud800b"}, {"role": "assistant", "content": "x"}]}', "chat"),
        ('{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "\\udfff"}]}', "chat"),
        (
            '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud83d"}]}, '
            '{"role": "assistant", "content": "x"}]}',
            "chat",
        ),
        ('{"prompt": "q\\ud800", "completion": "a"}', "prompt_completion"),
        ('{"instruction": "q", "input": "\\udc80", "output": "a"}', "alpaca"),
        ('{"conversations": [{"from": "human", "value": "\\ud800"}, {"from": "gpt", "value": "a"}]}', "sharegpt"),
        (
            '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], '
            '"references": ["\\ud800"]}',
            "chat",
        ),
        (
            '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], '
            '"note": {"\\ud800": 1}}',
            "chat",
        ),
    ],
)
def test_lone_surrogate_is_a_bad_line(tmp_path, record, fmt):
    ok = {
        "chat": GOOD,
        "prompt_completion": '{"prompt": "q", "completion": "a"}',
        "alpaca": '{"instruction": "q", "output": "a"}',
        "sharegpt": '{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}',
    }[fmt]
    path = tmp_path / "d.jsonl"
    path.write_text(f"{ok}\n{record}\n{ok}\n")
    found = problems_by_line(path, fmt)
    assert list(found) == [2], found
    assert "lone surrogate" in found[2][0].what and "UTF-8" in found[2][0].fix
    assert "\\u" in found[2][0].what  # shown escaped: the message itself must stay printable
    str(found[2][0]).encode("utf-8")
    assert _good_lines(path, fmt) == [1, 3]
    with pytest.raises(DataError, match="line 2: .*lone surrogate"):
        read_examples(path, fmt)


def test_a_valid_surrogate_pair_is_fine(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ['{"prompt": "smile \\ud83d\\ude00", "completion": "a"}'])
    [ex] = read_examples(path)
    assert ex.input_text == "smile \U0001f600"


def test_find_lone_surrogate():
    assert formats.find_lone_surrogate("fine \U0001f600 é") is None
    assert formats.find_lone_surrogate("ab\ud800") == 2
    assert formats.find_lone_surrogate("\udfff") == 0


DEEP_LIST = "[" * 100_000 + "]" * 100_000
DEEP_OBJECTS = '{"a": ' * 5000 + "1" + "}" * 5000


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (DEEP_LIST, "nested"),
        ("[" * 100_000, "nested"),
        (DEEP_OBJECTS, "nested"),
        ('{"messages": ' + DEEP_LIST + "}", "nested"),
        ('{"messages": [{"role": "user", "content": "q"}], "x": ' + '{"a": ' * 150 + "1" + "}" * 151, "nested"),
        ('{"prompt": ' + "7" * 5000 + ', "completion": "a"}', "digits"),
        ("7" * 5000, "digits"),
    ],
)
def test_deep_nesting_and_huge_numbers_are_bad_lines_in_jsonl(tmp_path, bad, fragment):
    path = tmp_path / "d.jsonl"
    path.write_text(f"{GOOD}\n{bad}\n{GOOD}\n{{bad json\n{GOOD}\n")
    found = _bad_lines(path, "chat")
    assert set(found) == {2, 4} and fragment in found[2] and "invalid JSON" in found[4], found
    assert _good_lines(path, "chat") == [1, 3, 5]


@pytest.mark.parametrize("bad", [DEEP_LIST, DEEP_OBJECTS, "[" * 100_000, '{"prompt": ' + "7" * 5000 + "}"])
def test_deep_nesting_and_huge_numbers_in_a_json_array(small_chunks, tmp_path, bad):
    path = tmp_path / "d.json"
    path.write_text(f"[\n{GOOD},\n{bad},\n{GOOD}\n]\n")
    found = _bad_lines(path, "chat")
    assert 3 in found and ("nested" in found[3] or "digits" in found[3]), found
    assert _good_lines(path, "chat")[:1] == [2]
    if bad.count("[") == bad.count("]"):  # a complete value: the reader skips it and reads on
        assert set(found) == {3} and _good_lines(path, "chat") == [2, 4]


def test_first_line_deeply_nested_is_still_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(f"{DEEP_LIST}\n{GOOD}\nnot json\n")
    found = _bad_lines(path, "chat")
    assert set(found) == {1, 3} and "nested" in found[1]
    assert _good_lines(path, "chat") == [2]


@pytest.mark.parametrize(
    "part, fragment",
    [
        ({"type": ["text"]}, "content part 1"),
        ({"type": {"a": 1}, "text": "x"}, "content part 1"),
        ({"type": "text", "text": 42}, "`text` must be a string"),
        ({"type": "text"}, "no `text`"),
        ({"type": "text", "text": None}, "`text` must be a string"),
        ("just a string", "content part 1 is not an object"),
    ],
)
def test_content_parts_are_checked_one_by_one(tmp_path, part, fragment):
    bad = {"messages": [{"role": "user", "content": [{"type": "text", "text": "ok"}, part]}, {"role": "assistant", "content": "a"}]}
    path = write_jsonl(tmp_path / "d.jsonl", [chat("q", "a"), bad, '{"messages": 3}', chat("q2", "b")])
    found = _bad_lines(path, "chat")
    assert set(found) == {2, 3}, found
    assert fragment.replace("part 1", "part 2") in found[2] or fragment in found[2], found[2]
    assert _good_lines(path, "chat") == [1, 4]


def test_text_parts_join_into_the_content(tmp_path):
    row = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}, {"role": "assistant", "content": "c"}]}
    [ex] = read_examples(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert ex.input_text == "ab"


def test_jsonl_whose_first_line_is_an_array_reads_every_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(f"[{GOOD}]\n{GOOD}\nnot json\n{GOOD}\n")
    found = _bad_lines(path)
    assert set(found) == {1, 3} and "got list" in found[1], found
    assert _good_lines(path) == [2, 4]


@pytest.mark.parametrize(
    "tail, line",
    [("\ngarbage", 4), ("\n\n[1]", 5), ("]", 3), (f"\n{GOOD}\n", 4)],
)
def test_anything_after_a_json_arrays_closing_bracket_is_reported(small_chunks, tmp_path, tail, line):
    path = tmp_path / "d.json"
    path.write_text(f"[\n{GOOD}\n]{tail}")
    found = _bad_lines(path)
    assert list(found) == [line] and "after the JSON array" in found[line], found
    assert _good_lines(path) == [2]


def test_csv_invalid_utf8_is_reported_at_its_row_and_the_rest_is_read(tmp_path):
    path = tmp_path / "d.csv"
    rows = [b"input,output\n"] + [f'"question {i}, long enough to fill the buffer",answer {i}\n'.encode() for i in range(2, 2001)]
    rows[899] = b'"question \xff\xfe here",answer\n'  # line 900
    rows[1499] = b'"multi\nline \xc3",x\n'  # a row on lines 1500-1501, the bad byte on 1501
    path.write_bytes(b"".join(rows))
    found = _bad_lines(path)
    assert list(found) == [900, 1501] and all("not valid UTF-8" in v for v in found.values()), found
    good = _good_lines(path)
    assert len(good) == 2000 - 1 - 2 and good[-1] == 2001 and 901 in good and 1502 in good


def test_json_array_invalid_utf8_is_reported_at_its_true_line(tmp_path):
    path = tmp_path / "d.json"
    lines = [b"["] + [GOOD.encode() + b"," for _ in range(2, 30001)] + [GOOD.encode(), b"]"]
    lines[20000] = b'{"prompt": "caf\xe9", "completion": "a"},'  # line 20001
    path.write_bytes(b"\n".join(lines) + b"\n")
    found = _bad_lines(path, "chat")
    assert list(found) == [20001] and "not valid UTF-8" in found[20001], found
    assert len(_good_lines(path, "chat")) == len(lines) - 2 - 1  # not "[" and "]", not the bad line


def test_jsonl_invalid_utf8_keeps_reading(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(GOOD.encode() + b"\n\xff\xfe\n" + GOOD.encode() + b"\r\n")
    assert list(_bad_lines(path, "chat")) == [2] and _good_lines(path, "chat") == [1, 3]


def test_a_5mb_quoted_csv_field_is_read_like_jsonl(tmp_path):
    text = "word, " * 900_000  # 5.4 MB, with commas: it must be quoted
    csv_path = tmp_path / "d.csv"
    csv_path.write_text(f'input,output\n"{text}",short\nq,a\n')
    jsonl_path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": text, "completion": "short"}])
    assert read_examples(jsonl_path)[0].input_text == text
    examples = read_examples(csv_path)
    assert [ex.input_text for ex in examples] == [text, "q"]
