"""Data formats: one registry of readers that turn a file into `Example`s, streaming, with line numbers.

Supported (the names `--format` and `data.format` accept):

    chat               {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...],
                        "references": [...]?, "source_id": "..."?}            OpenAI fine-tuning format
    prompt_completion  {"prompt": "...", "completion": "...", "system": "..."?}
    alpaca             {"instruction": "...", "input": "..."?, "output": "...", "system": "..."?}
    sharegpt           {"conversations": [{"from": "human"|"gpt"|"system", "value": "..."}], "system": "..."?}
    csv                a header row with input/output (or prompt/completion, question/answer) columns,
                       optional system and source_id columns; .tsv files are tab-separated

JSON formats may be JSON Lines (one object a line) or one JSON array of objects. `auto` detects the
format from the keys of the first valid records. Files are streamed: `iter_records` never holds more
than one record in memory, so a 1 GB file is fine.

>>> from tunewise.data.formats import FORMATS
>>> list(FORMATS)
['chat', 'prompt_completion', 'alpaca', 'sharegpt', 'csv']
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tunewise.data.example import Example
from tunewise.errors import TunewiseError


class DataError(TunewiseError):
    """A data file that cannot be used; the message lists every problem with its line number."""


@dataclass
class Problem:
    """One thing wrong with one record: where, what, and how to fix it."""

    line: int
    """1-based line (or CSV row) where the record starts; 0 for the file as a whole."""
    what: str
    fix: str
    path: str | None = None
    """The file, when a caller reads several (set by `audit` and `load_splits`)."""

    def __str__(self) -> str:
        where = (f"{self.path}: " if self.path else "") + (f"line {self.line}: " if self.line else "")
        return f"{where}{self.what}" + (f"; fix: {self.fix}" if self.fix else "")


Issues = list[tuple[str, str]]
"""(what is wrong, how to fix it) pairs a record parser collects."""

ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content", "name", "weight")
"""Keys an OpenAI chat message may carry; `name` and `weight` are accepted and ignored."""
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "system": "system",
}
SHAREGPT_KEYS = ("from", "value", "weight")
CSV_COLUMNS = {
    "input": ("input", "prompt", "question"),
    "output": ("output", "completion", "answer"),
    "system": ("system",),
    "source_id": ("source_id",),
}
"""Canonical CSV field -> accepted header names (case-insensitive), first match wins."""

DETECT_RECORDS = 20
"""`auto` votes over this many valid records from the top of the file."""
_CHUNK = 1 << 20
_MAX_RECORD_CHARS = 64 << 20
"""A JSON-array element larger than this is reported as broken instead of buffered further."""


# -- small helpers -----------------------------------------------------------------------------


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _keys(record: dict) -> str:
    keys = sorted(map(str, record))
    return ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "") if keys else "none"


def _missing(record: dict, required: tuple[str, ...], issues: Issues) -> bool:
    """Report missing top-level keys, naming the format the record looks like instead."""
    absent = [k for k in required if k not in record]
    if not absent:
        return False
    guess = guess_record_format(record)
    hint = f"; this record looks like `{guess}`, and every record of a file must use one format" if guess else ""
    fix = f"use `--format {guess}` if the whole file is {guess}" if guess else f"add {', '.join(absent)}"
    issues.append((f"missing key(s) {', '.join(absent)} (found: {_keys(record)}){hint}", fix))
    return True


def _text_field(record: dict, key: str, issues: Issues, required: bool = True) -> str | None:
    """A string field; None (with an issue when required) if absent, wrong type or blank."""
    if key not in record or (record[key] is None and not required):
        return None
    value = record[key]
    if not isinstance(value, str):
        issues.append((f"`{key}` must be a string, got {type(value).__name__} {_show(value)}", f"quote the {key}"))
        return None
    if required and not value.strip():
        issues.append((f"`{key}` is empty", f"write the {key} or drop the line"))
        return None
    return value


def _content_text(content: Any, where: str, issues: Issues) -> str | None:
    """A message's content: a string, or OpenAI's list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        kinds = {p.get("type") for p in content} - {"text"}
        if kinds:
            issues.append(
                (f"{where} has non-text content part(s) {sorted(map(str, kinds))}", "give text content only")
            )
            return None
        return "".join(str(p.get("text", "")) for p in content)
    issues.append((f"{where} content must be a string, got {type(content).__name__} {_show(content)}", "give text"))
    return None


def _conversation(turns: list[tuple[str, str | None, int]], issues: Issues) -> tuple[list[dict], str] | None:
    """Check role order and content of (role, content, message number) turns; split off the answer.

    Valid: an optional system message first, then user/assistant alternating, starting with user and
    ending with assistant. Earlier assistant turns stay in the messages (multi-turn context).
    """
    ok = True
    for role, content, i in turns:
        if content is not None and not content.strip():
            issues.append((f"message {i} ({role}) has empty content", "write the text, or drop the message"))
            ok = False
    for k, (role, _, i) in enumerate(turns):
        if role == "system" and k > 0:
            issues.append(
                (f"system message at position {i}; a system message may only come first", "move it to the start")
            )
            ok = False
    dialog = [(role, i) for role, _, i in turns if role != "system"]
    if not dialog:
        issues.append(("no user or assistant messages", "add a user message and the assistant answer"))
        return None
    if dialog[0][0] == "assistant":
        issues.append(
            (f"conversation starts with an assistant turn (message {dialog[0][1]})", "start with a user message")
        )
        ok = False
    for (prev, i), (role, j) in zip(dialog, dialog[1:]):
        if prev == role:
            issues.append(
                (
                    f"two {role} turns in a row (messages {i} and {j})",
                    "merge them into one message, or put the other role's turn between them",
                )
            )
            ok = False
    if dialog[-1][0] != "assistant":
        issues.append(
            (
                f"no final assistant turn: the last message ({dialog[-1][1]}) is from {dialog[-1][0]}",
                "end the conversation with the assistant answer to learn",
            )
        )
        ok = False
    if not ok or any(content is None for _, content, _ in turns):
        return None
    messages = [{"role": role, "content": content} for role, content, _ in turns[:-1]]
    return messages, turns[-1][1]  # type: ignore[return-value]


def _extras(record: dict, issues: Issues) -> tuple[list[str], str | None]:
    """The optional `references` and `source_id` fields every JSON format may carry."""
    references: list[str] = []
    if "references" in record:
        refs = record["references"]
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r.strip() for r in refs):
            issues.append(
                (f"`references` must be a non-empty list of non-empty strings, got {_show(refs)}", "fix or drop it")
            )
        else:
            references = refs
    source_id = record.get("source_id")
    if source_id is not None and not isinstance(source_id, (str, int)):
        issues.append((f"`source_id` must be a string, got {_show(source_id)}", "use the corpus document id"))
        source_id = None
    return references, None if source_id is None else str(source_id)


def _with_system(system: str | None, messages: list[dict]) -> list[dict]:
    return ([{"role": "system", "content": system}] if system and system.strip() else []) + messages


# -- record parsers: dict -> Example (or None, with issues) ------------------------------------


def parse_chat(record: dict, issues: Issues) -> Example | None:
    if _missing(record, ("messages",), issues):
        return None
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        issues.append((f"`messages` must be a non-empty list, got {_show(messages)}", "give a list of messages"))
        return None
    turns: list[tuple[str, str | None, int]] = []
    roles_ok = True
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict):
            issues.append((f"message {i} is not an object: {_show(m)}", 'write {"role": ..., "content": ...}'))
            roles_ok = False
            continue
        unknown = [str(k) for k in m if k not in MESSAGE_KEYS]
        if unknown:
            issues.append(
                (
                    f"message {i} has unknown key(s) {', '.join(unknown)}",
                    f"use only {', '.join(MESSAGE_KEYS)} (tool calls are not supported)",
                )
            )
        role = m.get("role")
        if role not in ROLES:
            got = "no `role`" if "role" not in m else f"unknown role {_show(role)}"
            issues.append((f"message {i} has {got}", f"use one of: {', '.join(ROLES)}"))
            roles_ok = False
        if "content" not in m:
            issues.append((f"message {i} has no `content`", "add the message text as `content`"))
            content = None
        else:
            content = _content_text(m["content"], f"message {i}", issues)
        turns.append((str(role), content, i))
    references, source_id = _extras(record, issues)
    if not roles_ok:
        return None  # order checks on unknown roles only add noise
    split = _conversation(turns, issues)
    if split is None or issues:
        return None
    extra = {k: v for k, v in record.items() if k not in ("messages", "references", "source_id")}
    return Example(split[0], split[1], references, source_id, meta=extra)


def parse_prompt_completion(record: dict, issues: Issues) -> Example | None:
    """Legacy OpenAI completions format. The completion is stripped of surrounding whitespace (that
    format recommended a leading space)."""
    if _missing(record, ("prompt", "completion"), issues):
        return None
    prompt = _text_field(record, "prompt", issues)
    completion = _text_field(record, "completion", issues)
    system = _text_field(record, "system", issues, required=False)
    references, source_id = _extras(record, issues)
    if issues or prompt is None or completion is None:
        return None
    messages = _with_system(system, [{"role": "user", "content": prompt}])
    return Example(messages, completion.strip(), references, source_id)


def parse_alpaca(record: dict, issues: Issues) -> Example | None:
    """The user message is the instruction, then a blank line and the input when there is one."""
    if _missing(record, ("instruction", "output"), issues):
        return None
    instruction = _text_field(record, "instruction", issues)
    output = _text_field(record, "output", issues)
    extra_input = _text_field(record, "input", issues, required=False)
    system = _text_field(record, "system", issues, required=False)
    references, source_id = _extras(record, issues)
    if issues or instruction is None or output is None:
        return None
    user = f"{instruction}\n\n{extra_input}" if extra_input and extra_input.strip() else instruction
    return Example(_with_system(system, [{"role": "user", "content": user}]), output, references, source_id)


def parse_sharegpt(record: dict, issues: Issues) -> Example | None:
    if _missing(record, ("conversations",), issues):
        return None
    conversation = record["conversations"]
    if not isinstance(conversation, list) or not conversation:
        issues.append((f"`conversations` must be a non-empty list, got {_show(conversation)}", "give a list of turns"))
        return None
    turns: list[tuple[str, str | None, int]] = []
    system = _text_field(record, "system", issues, required=False)
    if system and system.strip():
        turns.append(("system", system, 0))
    roles_ok = True
    for i, m in enumerate(conversation, 1):
        if not isinstance(m, dict):
            issues.append((f"turn {i} is not an object: {_show(m)}", 'write {"from": ..., "value": ...}'))
            roles_ok = False
            continue
        unknown = [str(k) for k in m if k not in SHAREGPT_KEYS]
        if unknown:
            issues.append((f"turn {i} has unknown key(s) {', '.join(unknown)}", f"use only {', '.join(SHAREGPT_KEYS)}"))
        speaker = m.get("from")
        role = SHAREGPT_ROLES.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            got = "no `from`" if "from" not in m else f"unknown speaker {_show(speaker)}"
            issues.append((f"turn {i} has {got}", f"use one of: {', '.join(SHAREGPT_ROLES)}"))
            roles_ok = False
        if "value" not in m:
            issues.append((f"turn {i} has no `value`", "add the turn's text as `value`"))
            value = None
        else:
            value = _content_text(m["value"], f"turn {i}", issues)
        turns.append((str(role), value, i))
    references, source_id = _extras(record, issues)
    if not roles_ok:
        return None
    split = _conversation(turns, issues)
    if split is None or issues:
        return None
    return Example(split[0], split[1], references, source_id)


def parse_csv_row(record: dict, issues: Issues) -> Example | None:
    """A CSV row already mapped to the canonical columns input/output/system/source_id."""
    prompt = _text_field(record, "input", issues)
    output = _text_field(record, "output", issues)
    if issues or prompt is None or output is None:
        return None
    system = record.get("system") or None
    source_id = record.get("source_id") or None
    return Example(_with_system(system, [{"role": "user", "content": prompt}]), output, source_id=source_id)


# -- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    name: str
    summary: str
    keys: tuple[str, ...]
    """Top-level keys that identify a record of this format (empty for CSV)."""
    parse: Callable[[dict, Issues], Example | None]
    tabular: bool = False


FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        Format("chat", 'OpenAI chat JSONL: {"messages": [{"role", "content"}, ...]}', ("messages",), parse_chat),
        Format(
            "prompt_completion",
            'prompt/completion JSONL: {"prompt": ..., "completion": ...}',
            ("prompt", "completion"),
            parse_prompt_completion,
        ),
        Format(
            "alpaca",
            'Alpaca: {"instruction": ..., "input": ..., "output": ...}',
            ("instruction", "output"),
            parse_alpaca,
        ),
        Format(
            "sharegpt",
            'ShareGPT: {"conversations": [{"from": "human"|"gpt", "value": ...}]}',
            ("conversations",),
            parse_sharegpt,
        ),
        Format("csv", "CSV with input/output (or prompt/completion, question/answer) columns", (), parse_csv_row, True),
    ]
}


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise DataError(f"unknown data format {name!r}; valid formats: auto, {', '.join(FORMATS)}")
    return FORMATS[name]


def guess_record_format(record: dict) -> str | None:
    """The first JSON format whose identifying keys the record has, else None."""
    return next((f.name for f in FORMATS.values() if f.keys and all(k in record for k in f.keys)), None)


# -- containers: a file -> (line, dict | Problem) ----------------------------------------------


def _open_binary(path: Path) -> BinaryIO:
    if not path.is_file():
        raise DataError(f"data file not found: {path} (check the path, or the task file's data section)")
    return path.open("rb")


def _first_char(path: Path) -> str:
    """The first non-blank character of the file (after a UTF-8 byte-order mark), or ''."""
    with _open_binary(path) as f:
        while chunk := f.read(4096):
            text = chunk.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
            if text:
                return text[0]
    return ""


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    with _open_binary(path) as f:
        for line_no, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield line_no, Problem(line_no, f"not valid UTF-8 (byte {err.start + 1})", "save the file as UTF-8")
                continue
            if line_no == 1:
                text = text.lstrip("\ufeff")
            if not text.strip():
                continue  # blank lines (a trailing newline) are not records
            try:
                yield line_no, json.loads(text)
            except json.JSONDecodeError as err:
                hint = " (one JSON object per line; pretty-printed JSON is not JSONL)" if text.strip() == "{" else ""
                yield line_no, Problem(
                    line_no, f"invalid JSON: {err.msg} at column {err.pos + 1}{hint}", "fix the JSON on this line"
                )


def _json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """Elements of a top-level JSON array, decoded one at a time from 1 MiB chunks."""
    decoder = json.JSONDecoder()
    blank = re.compile(r"[ \t\r\n]*")
    with _open_binary(path) as raw:
        handle = io.TextIOWrapper(raw, encoding="utf-8-sig")
        buf, pos, line, eof = "", 0, 1, False

        def fill() -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            chunk = handle.read(_CHUNK)
            if not chunk:
                eof = True
                return False
            buf, pos = buf[pos:] + chunk, 0
            return True

        def advance(to: int) -> None:
            nonlocal pos, line
            line += buf.count("\n", pos, to)
            pos = to

        def peek() -> str:
            while True:
                advance(blank.match(buf, pos).end())  # type: ignore[union-attr]
                if pos < len(buf):
                    return buf[pos]
                if not fill():
                    return ""

        try:
            if peek() != "[":
                yield line, Problem(line, "expected a JSON array `[...]` of records", "wrap the records in [ ]")
                return
            advance(pos + 1)
            if peek() == "]":
                return
            while True:
                start = line
                while True:
                    try:
                        value, end = decoder.raw_decode(buf, pos)
                        if end < len(buf) or eof:
                            break  # a number at the very end of the buffer may continue in the next chunk
                        if not fill():
                            break
                    except json.JSONDecodeError as err:
                        if len(buf) - pos < _MAX_RECORD_CHARS and fill():
                            continue
                        at = start + buf.count("\n", pos, err.pos)
                        yield at, Problem(
                            at,
                            f"invalid JSON: {err.msg}; the rest of the array cannot be read",
                            "fix the JSON syntax, or convert the file to JSONL (one object a line)",
                        )
                        return
                advance(end)
                yield start, value
                nxt = peek()
                if nxt == "]":
                    return
                if nxt != ",":
                    what = "the file ends inside the array" if not nxt else f"found {nxt!r}"
                    yield line, Problem(line, f"expected ',' or ']' after a record; {what}", "fix the JSON syntax")
                    return
                advance(pos + 1)
                if peek() == "]":
                    yield line, Problem(line, "trailing comma before ']'", "remove the last comma")
                    return
        except UnicodeDecodeError:
            yield line, Problem(line, "not valid UTF-8; the rest of the file cannot be read", "save it as UTF-8")


def _csv_header(path: Path) -> tuple[list[str], dict[str, int]]:
    """The header cells and canonical field -> column index. Raises DataError without input/output."""
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        header = next(csv.reader(f, delimiter=_delimiter(path)), [])
    names = [h.strip().casefold() for h in header]
    columns = {}
    for field, aliases in CSV_COLUMNS.items():
        idx = next((names.index(a) for a in aliases if a in names), None)
        if idx is not None:
            columns[field] = idx
    if "input" not in columns or "output" not in columns:
        raise DataError(
            f"{path}: line 1: the CSV header has columns {header or '(none)'}; it needs an input column "
            f"({'/'.join(CSV_COLUMNS['input'])}) and an output column ({'/'.join(CSV_COLUMNS['output'])}); "
            "rename the columns (an optional `system` column sets the system prompt)"
        )
    return header, columns


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    header, columns = _csv_header(_checked(path))
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter=_delimiter(path))
        ended = 0
        try:
            next(reader)
            ended = reader.line_num
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    yield ended + 1, Problem(ended + 1, f"CSV error: {err}", "fix the quoting on this row")
                    ended = reader.line_num
                    continue
                start, ended = ended + 1, reader.line_num
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    yield start, Problem(
                        start,
                        f"row has {len(row)} fields, the header has {len(header)}",
                        "quote fields that contain the delimiter or line breaks",
                    )
                    continue
                yield start, {field: row[idx] for field, idx in columns.items()}
        except UnicodeDecodeError:
            yield ended + 1, Problem(ended + 1, "not valid UTF-8; the rest of the file cannot be read", "save as UTF-8")


def _checked(path: Path) -> Path:
    _open_binary(path).close()
    return path


def _records(path: Path, fmt: Format) -> Iterator[tuple[int, Any]]:
    if fmt.tabular:
        return _csv_rows(path)
    return _json_array(path) if _first_char(path) == "[" else _json_lines(path)


# -- public API ---------------------------------------------------------------------------------


def detect_format(path: str | Path) -> str:
    """The format of a file, from its suffix (.csv/.tsv) or the keys of its first valid records.

    Raises DataError naming the keys it found and the formats it knows.
    """
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        return "csv"
    first = _first_char(path)
    if not first:
        raise DataError(f"{path} is empty; give a file with examples")
    votes: Counter[str] = Counter()
    seen: list[str] = []
    reader = _json_array(path) if first == "[" else _json_lines(path)
    for _, record in reader:
        if isinstance(record, dict):
            name = guess_record_format(record)
            if name:
                votes[name] += 1
            elif len(seen) < 3:
                seen.append(_keys(record))
            if sum(votes.values()) + len(seen) >= DETECT_RECORDS:
                break
    if not votes and not seen and first not in "[{":
        try:
            _csv_header(path)  # a CSV file without a .csv suffix
            return "csv"
        except DataError:
            pass
    if votes:
        order = list(FORMATS)
        return max(votes, key=lambda n: (votes[n], -order.index(n)))
    if seen:
        found = f"records with keys: {'; '.join(seen)}"
    elif first == "{":
        found = "no line is a JSON object (a pretty-printed JSON document? write one object a line, or an array)"
    else:
        found = "no valid JSON object at the top"
    known = "; ".join(f"{f.name} ({f.summary})" for f in FORMATS.values())
    raise DataError(f"{path}: cannot detect the data format, {found}. Known formats: {known}. Pass --format NAME")


def resolve_format(path: str | Path, format: str = "auto") -> str:
    """`format` itself when it is a known name, the detected format for "auto"."""
    if format == "auto":
        return detect_format(path)
    get_format(format)
    return format


def iter_records(path: str | Path, format: str = "auto") -> Iterator[tuple[int, Example | Problem]]:
    """Stream a file as (line, Example) and (line, Problem) pairs, in file order.

    A record with several problems yields one Problem for each. Nothing but the current record is held
    in memory.
    """
    path = Path(path)
    fmt = get_format(resolve_format(path, format))
    for line, record in _records(path, fmt):
        if isinstance(record, Problem):
            yield line, record
            continue
        if not isinstance(record, dict):
            yield line, Problem(line, f"expected a JSON object, got {type(record).__name__}", "write one object")
            continue
        issues: Issues = []
        example = fmt.parse(record, issues)
        if issues or example is None:
            for what, fix in issues or [("record could not be read", "check it against the format")]:
                yield line, Problem(line, what, fix)
            continue
        example.line = line
        yield line, example


def problems_message(problems: list[Problem], path: str | Path | None = None) -> str:
    """All problems, one a line, under a count: the text DataError carries."""
    lines = len({(p.path, p.line) for p in problems})
    head = f"{path}: " if path else ""
    body = "\n  ".join(str(p) for p in problems)
    return f"{head}{len(problems)} problem(s) on {lines} line(s):\n  {body}"


def read_examples(path: str | Path, format: str = "auto") -> list[Example]:
    """Every example in the file, or DataError listing every bad line at once.

    >>> read_examples("missing.jsonl")
    Traceback (most recent call last):
    ...
    tunewise.data.formats.DataError: data file not found: missing.jsonl (check the path, or the task file's data section)
    """
    examples: list[Example] = []
    problems: list[Problem] = []
    for _, item in iter_records(path, format):
        (problems if isinstance(item, Problem) else examples).append(item)  # type: ignore[arg-type]
    if problems:
        raise DataError(problems_message(problems, path))
    if not examples:
        raise DataError(f"{path}: no examples; give a file with at least one record")
    return examples
