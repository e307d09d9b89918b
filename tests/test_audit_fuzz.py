"""Fuzz `tunewise audit` with seeded hostile files (issue 16): no traceback, and every planted bad line
reported at its own line, no good line reported, every good record counted.

A generator of our own (no hypothesis dependency), seeded: the same 240 files on every run. Each file
mixes good records with planted bad lines of many sorts (invalid UTF-8, lone surrogates, deep
nesting, 5,000-digit integers, wrong types, bad content parts, other formats, non-objects, invalid
JSON, stray byte-order marks), in JSON Lines, JSON arrays or CSV/TSV, with BOMs, CRLF, blank lines,
truncation, garbage after an array, Latin-1 lines and whole UTF-16 files. A quarter go in as --eval.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import chat, write_jsonl

from tunewise.cli import cli

SEED = 16
CASES = 240
WORDS = "play book light timer weather music alarm lamp kitchen tomorrow seven jazz rain north".split()
UNICODE = ["é", "中文", "😀", "Ωmega", "naïve", "\u2028", "tab\there", 'say "hi"', "back\\slash", "ß"]
FORMATS = ["chat", "prompt_completion", "alpaca", "sharegpt"]
INVALID_UTF8 = [b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xe2\x82", b"\xc0\xaf", b"\xfe\xfe", b"\x80"]
SURROGATES = [b"\\ud800", b"\\udfff", b"\\uDBFF", b"\\udc80x", b"a\\ud83d"]


@dataclass
class Case:
    name: str
    data: bytes
    suffix: str
    fmt: str  # what --format gets
    bad: set[int] = field(default_factory=set)
    good: int = 0
    as_eval: bool = False


def text(rng: random.Random, marker: str = "") -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(1, 8))]
    if rng.random() < 0.4:
        words.insert(rng.randrange(len(words) + 1), rng.choice(UNICODE))
    if marker:
        words.insert(rng.randrange(len(words) + 1), marker)
    return " ".join(words) + f" {rng.randrange(10**6)}"


def good_record(rng: random.Random, fmt: str, marker: str = "") -> dict:
    """A valid record of `fmt`; `marker` (if given) lands in one of its text fields."""
    texts = [text(rng) for _ in range(6)]
    if marker:
        texts[rng.randrange(2)] = text(rng, marker)  # the input or the answer
    if fmt == "chat":
        content: object = texts[0]
        if rng.random() < 0.3:
            content = [{"type": "text", "text": texts[0]}, {"type": "text", "text": " " + texts[2]}]
        messages = [{"role": "user", "content": content}, {"role": "assistant", "content": texts[1]}]
        if rng.random() < 0.3:
            messages = [{"role": "user", "content": texts[3]}, {"role": "assistant", "content": texts[4]}, *messages]
        if rng.random() < 0.4:
            messages.insert(0, {"role": "system", "content": texts[5]})
        return {"messages": messages}
    if fmt == "prompt_completion":
        return {"prompt": texts[0], "completion": texts[1]}
    if fmt == "alpaca":
        return {"instruction": texts[0], "output": texts[1], "input": texts[2] if rng.random() < 0.5 else ""}
    return {"conversations": [{"from": "human", "value": texts[0]}, {"from": "gpt", "value": texts[1]}]}


def dumps(rng: random.Random, value: object) -> bytes:
    """One line of JSON; with ensure_ascii an emoji becomes a valid escape pair, which must pass."""
    return json.dumps(value, ensure_ascii=rng.random() < 0.5).encode("utf-8")


def deep(rng: random.Random) -> str:
    n = rng.choice([150, 1500, 20_000, 100_000])
    return "[" * n + "]" * n if rng.random() < 0.6 else '{"a": ' * n + "1" + "}" * n


# -- planted bad lines: each returns one line (bytes, no newline) that must be reported ---------------


def bad_utf8(rng, fmt):
    return dumps(rng, good_record(rng, fmt, "XBADX")).replace(b"XBADX", rng.choice(INVALID_UTF8))


def bad_surrogate(rng, fmt):
    return dumps(rng, good_record(rng, fmt, "XSURX")).replace(b"XSURX", rng.choice(SURROGATES))


def bad_deep_value(rng, fmt):
    return deep(rng).encode()


def bad_deep_inside(rng, fmt):
    record = dumps(rng, good_record(rng, fmt))
    return record[:-1] + b', "meta": ' + deep(rng).encode() + b"}"


def bad_huge_int(rng, fmt):
    record = good_record(rng, fmt)
    digits = "9" * rng.choice([4301, 5000, 20_000])
    if rng.random() < 0.3:
        return digits.encode()
    key = {"chat": "messages", "prompt_completion": "prompt", "alpaca": "output", "sharegpt": "extra"}[fmt]
    return json.dumps({**record, key: "HUGE"}).encode().replace(b'"HUGE"', digits.encode())


def bad_part(rng, fmt):
    part = rng.choice(
        [
            {"type": ["text"]},
            {"type": {"a": 1}, "text": "x"},
            {"type": "text", "text": 42},
            {"type": "text"},
            {"type": "image_url", "image_url": {"url": "x"}},
            "plain string",
            {"type": 7, "text": "x"},
        ]
    )
    record = good_record(rng, "chat")
    record["messages"][-2]["content"] = [{"type": "text", "text": "ok"}, part]
    if fmt == "sharegpt":
        record = {"conversations": [{"from": "human", "value": [part]}, {"from": "gpt", "value": "a"}]}
    elif fmt != "chat":
        record = {k: [part] if isinstance(v, str) else v for k, v in good_record(rng, fmt).items()}
    return dumps(rng, record)


def bad_type(rng, fmt):
    record = good_record(rng, fmt)
    key = rng.choice([k for k, v in record.items() if isinstance(v, (str, list)) and v])
    record[key] = rng.choice([42, None, True, {"a": "b"}, 3.5, [] if key != "messages" else "text"])
    if fmt == "alpaca" and key == "input" and record[key] is None:
        record[key] = 42  # a null optional input is allowed
    return dumps(rng, record)


def bad_empty(rng, fmt):
    record = good_record(rng, fmt)
    blank = rng.choice(["", "   ", "\n"])
    if fmt == "chat":
        record["messages"][-1]["content"] = blank
    elif fmt == "sharegpt":
        record["conversations"][0]["value"] = blank
    else:
        record[{"prompt_completion": "completion", "alpaca": "instruction"}[fmt]] = blank
    return dumps(rng, record)


def bad_role(rng, fmt):
    record = good_record(rng, fmt)
    if fmt == "chat":
        record["messages"][-1]["role"] = rng.choice(["bot", "tool", ["user"], None])
    elif fmt == "sharegpt":
        record["conversations"][0]["from"] = rng.choice(["robot", 3, {"x": 1}])
    else:
        record = {"only": "unknown keys"}
    return dumps(rng, record)


def bad_not_object(rng, fmt):
    return rng.choice([b"3", b'"a string"', b"null", b"true", b"[1, 2]", b"NaN", b"-Infinity", b"[]"])


def bad_other_format(rng, fmt):
    return dumps(rng, good_record(rng, rng.choice([f for f in FORMATS if f != fmt])))


SKIPPABLE = [
    bad_utf8,
    bad_surrogate,
    bad_deep_value,
    bad_deep_inside,
    bad_huge_int,
    bad_part,
    bad_type,
    bad_empty,
    bad_role,
    bad_not_object,
    bad_other_format,
]
"""Bad lines that leave the JSON around them intact: planted in JSON arrays as well as JSONL."""


def bad_json(rng, fmt):
    record = dumps(rng, good_record(rng, fmt))
    return rng.choice(
        [record[: rng.randint(1, len(record) - 1)], b"{'single': 'quotes'}", b'{"a": }', b"{", b"}{", b"[" * 100_000]
    )


def bad_bom(rng, fmt):
    return b"\xef\xbb\xbf" + dumps(rng, good_record(rng, fmt))


def bad_latin1(rng, fmt):
    return json.dumps(good_record(rng, fmt, "café"), ensure_ascii=False).encode("latin-1", "replace")


JSONL_ONLY = [bad_json, bad_bom, bad_latin1]


# -- files ------------------------------------------------------------------------------------------------


def jsonl_case(rng: random.Random, i: int) -> Case:
    fmt = rng.choice(FORMATS)
    explicit = rng.random() < 0.5
    eol = rng.choice([b"\n", b"\r\n"])
    case = Case(f"{i}-jsonl-{fmt}", b"", ".jsonl", fmt if explicit else "auto")
    lines: list[bytes] = []
    first_array = rng.random() < 0.1
    if first_array:  # JSON Lines whose first line is an array: a bad line, and the rest is still read
        lines.append(b"[" + dumps(rng, good_record(rng, fmt)) + b"]")
        case.bad.add(1)
    lines.append(dumps(rng, good_record(rng, fmt)))  # a record after it (and never an empty file)
    case.good += 1
    for _ in range(rng.randint(3, 40)):
        if rng.random() < 0.1:
            lines.append(rng.choice([b"", b"   ", b"\t"]))  # blank: not a record
            continue
        n = len(lines) + 1
        # auto-detection votes over the first 20 valid records: keep other formats out of them
        early = not explicit and n <= 45
        if rng.random() < 0.35 and n > (3 if not explicit else 0):
            planted = rng.choice([b for b in SKIPPABLE + JSONL_ONLY if not (early and b is bad_other_format)])
            lines.append(planted(rng, fmt))
            case.bad.add(n)
        else:
            lines.append(dumps(rng, good_record(rng, fmt)))
            case.good += 1
    if rng.random() < 0.15:  # truncated mid-record
        record = dumps(rng, good_record(rng, fmt))
        lines.append(record[: rng.randint(1, len(record) - 1)])
        case.bad.add(len(lines))
    data = eol.join(lines) + (eol if rng.random() < 0.7 and not case.bad & {len(lines)} else b"")
    case.data = (b"\xef\xbb\xbf" if rng.random() < 0.3 else b"") + data
    if not case.good and not explicit:
        case.fmt = fmt
    return case


def array_case(rng: random.Random, i: int) -> Case:
    fmt = rng.choice(FORMATS)
    eol = rng.choice([b"\n", b"\r\n"])
    case = Case(f"{i}-array-{fmt}", b"", rng.choice([".json", ".jsonl"]), fmt)
    elements: list[tuple[bytes, bool]] = [(dumps(rng, good_record(rng, fmt)), False)]
    for _ in range(rng.randint(1, 30)):
        if rng.random() < 0.35:
            elements.append((rng.choice(SKIPPABLE)(rng, fmt), True))
        else:
            elements.append((dumps(rng, good_record(rng, fmt)), False))
    ending = rng.random()
    truncated = ending < 0.15  # cut inside a last record: reading stops there, reported at its line
    if truncated:
        record = dumps(rng, good_record(rng, fmt))
        elements.append((record[: rng.randint(1, len(record) - 2)], True))
    lines = [b"["]
    for k, (element, bad) in enumerate(elements):
        lines.append(element + (b"," if k < len(elements) - 1 else b""))
        if bad:
            case.bad.add(len(lines))
        else:
            case.good += 1
    if not truncated:
        lines.append(b"]")
        if ending < 0.3:  # more text after the closing bracket
            lines.append(rng.choice([b"garbage", b"{}", dumps(rng, good_record(rng, fmt)), b"]"]))
            case.bad.add(len(lines))
    bom = b"\xef\xbb\xbf" if rng.random() < 0.3 else b""
    case.data = bom + eol.join(lines) + (b"" if truncated else eol)
    return case


def csv_cell(rng: random.Random) -> str:
    """A CSV cell, quoted when it must be, sometimes over two lines."""
    value = text(rng)
    if rng.random() < 0.2:
        value += "\nsecond line"
    if rng.random() < 0.3 or "\n" in value or '"' in value or "," in value or "\t" in value:
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_case(rng: random.Random, i: int) -> Case:
    tsv = rng.random() < 0.3
    sep = "\t" if tsv else ","
    eol = rng.choice(["\n", "\r\n"])
    header = rng.choice([["input", "output"], ["prompt", "completion", "system"], ["Question", "Answer"]])
    case = Case(f"{i}-csv", b"", ".tsv" if tsv else ".csv", rng.choice(["auto", "csv"]))
    rows: list[bytes] = [sep.join(header).encode()]
    line = 1  # physical line the next row starts on
    for _ in range(rng.randint(3, 40)):
        cells = [csv_cell(rng) for _ in header]
        start = line + 1
        row = sep.join(cells).encode()
        if rng.random() < 0.3:
            planted = rng.choice(["utf8", "fields", "empty"])
            if planted == "utf8":  # the byte's own line, even inside a multi-line quoted cell
                at = rng.randrange(len(row) + 1)
                row = row[:at] + rng.choice(INVALID_UTF8) + row[at:]
                case.bad.add(start + row[:at].count(b"\n"))
            elif planted == "fields":
                row += f"{sep}extra{sep}cells".encode()
                case.bad.add(start)
            else:
                row = sep.join(["", *cells[1:]]).encode()
                case.bad.add(start)
        else:
            case.good += 1
        rows.append(row)
        line = start + row.count(b"\n")
    if rng.random() < 0.15:  # an unterminated quote swallows the rest: reported where the row starts
        rows.append(b'"never closed' + sep.encode() + b"x")
        case.bad.add(line + 1)
    data = eol.encode().join(rows) + eol.encode()
    case.data = (b"\xef\xbb\xbf" if rng.random() < 0.3 else b"") + data
    return case


def utf16_case(rng: random.Random, i: int) -> Case:
    """A whole file in UTF-16: no line of it is UTF-8 JSON."""
    fmt = rng.choice(FORMATS)
    lines = [json.dumps(good_record(rng, fmt), ensure_ascii=False) for _ in range(rng.randint(2, 8))]
    data = "\n".join(lines).encode(rng.choice(["utf-16", "utf-16-le"]))
    bad = {n for n, raw in enumerate(data.split(b"\n"), 1) if raw.strip(b" \t\r\n")}
    return Case(f"{i}-utf16-{fmt}", data, ".jsonl", fmt, bad)


def cases() -> list[Case]:
    rng = random.Random(SEED)
    makers = [jsonl_case] * 5 + [array_case] * 3 + [csv_case] * 2 + [utf16_case]
    out = []
    for i in range(CASES):
        case = rng.choice(makers)(rng, i)
        case.as_eval = rng.random() < 0.25
        out.append(case)
    return out


ALL = cases()


def _good_file(fmt: str) -> bytes:
    rng = random.Random(0)
    if fmt == "csv":
        return b"input,output\nq1,a\nq2,b\nq3,c\n"
    return b"".join(json.dumps(good_record(rng, fmt)).encode() + b"\n" for _ in range(3))


GOOD_FILES = {fmt: _good_file(fmt) for fmt in [*FORMATS, "csv"]}


def test_the_generator_plants_enough():
    assert len(ALL) >= 200
    assert sum(len(c.bad) for c in ALL) > 1000
    kinds = {c.name.split("-")[1] for c in ALL}
    assert kinds == {"jsonl", "array", "csv", "utf16"}


@pytest.mark.parametrize("case", ALL, ids=[c.name for c in ALL])
def test_audit_reports_every_planted_bad_line(tmp_path, case):
    path = tmp_path / f"hostile{case.suffix}"
    path.write_bytes(case.data)
    args = ["audit", "--json"] + (["--format", case.fmt] if case.fmt != "auto" else [])
    if case.as_eval:  # a clean train file that the same --format reads
        train = tmp_path / ("train.csv" if case.fmt == "csv" else "train.jsonl")
        train.write_bytes(GOOD_FILES["chat" if case.fmt == "auto" else case.fmt])
        args += [str(train), "--eval", str(path)]
    else:
        args += [str(path)]
    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{case.name}: {type(result.exception).__name__}: {result.exception}"
    )
    assert result.exit_code == (1 if case.bad else 0), result.output[-2000:]
    report = json.loads(result.output)
    reported = {p["line"] for p in report["errors"] if p["path"] == str(path)}
    assert reported == case.bad, f"{case.name}: missed {sorted(case.bad - reported)}, extra {sorted(reported - case.bad)}"
    assert report["error_count"] == len(report["errors"])  # small files: nothing dropped
    examples = report["eval_examples"] if case.as_eval else report["train_examples"]
    assert examples == case.good, case.name
    if case.as_eval:
        assert not [p for p in report["errors"] if p["path"] != str(path)]


def test_reading_is_the_same_whatever_the_chunk_size(tmp_path, monkeypatch):
    """The JSON-array reader refills its buffer mid-record, mid-character and mid-escape."""
    from tunewise.data import formats

    arrays = [c for c in ALL if c.name.split("-")[1] == "array"][:25]
    assert len(arrays) == 25
    for case in arrays:
        path = tmp_path / "a.json"
        path.write_bytes(case.data)
        whole = [(line, str(item)) for line, item in formats.iter_records(path, case.fmt)]
        monkeypatch.setattr(formats, "_CHUNK", 5)
        tiny = [(line, str(item)) for line, item in formats.iter_records(path, case.fmt)]
        monkeypatch.undo()
        assert tiny == whole, case.name
