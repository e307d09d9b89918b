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

Hostile input is a bad line, never a traceback: invalid UTF-8 (reported at the line of the byte, and
reading goes on), a lone surrogate escape (`find_lone_surrogate`), nesting deeper than MAX_NESTING,
integers longer than Python parses (4,300 digits), records over MAX_RECORD_CHARS, anything after a
JSON array's closing `]`.

>>> from tunewise.data.formats import FORMATS
>>> list(FORMATS)
['chat', 'prompt_completion', 'alpaca', 'sharegpt', 'csv']
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter, deque
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
    kind: str = "record"
    """What sort of problem, for counting: one of PROBLEM_KINDS."""

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

PROBLEM_KINDS = {
    "utf8": "bytes that are not valid UTF-8",
    "json": "invalid JSON, or anything after a JSON array's closing `]`",
    "nesting": "values nested deeper than MAX_NESTING levels",
    "number": "an integer with more digits than Python parses (4,300)",
    "surrogate": "a lone surrogate escape such as \\ud800 (half of a UTF-16 pair)",
    "size": "a line, record or CSV field over MAX_RECORD_CHARS",
    "csv": "CSV quoting or field-count errors",
    "record": "a readable record that breaks the format's rules (keys, roles, order, types, empty text)",
    "file": "the file as a whole (no examples)",
    "internal": "a record the checker itself failed on (a tunewise bug; please report it)",
}
"""Problem.kind -> what it covers; `audit` keeps the first problems of each kind and counts the rest."""
DETECT_RECORDS = 20
"""`auto` votes over this many valid records from the top of the file."""
MAX_NESTING = 100
"""Deepest nesting of arrays/objects a record may have (the formats need 5): deeper records are bad
lines, so no later step (printing, dumping) can exhaust Python's recursion on them."""
MAX_RECORD_CHARS = 32 << 20
"""A JSONL line, a JSON-array element or a CSV field longer than this is a bad line, not buffered further."""
_CHUNK = 1 << 20
_SNIFF_LINE = 1 << 20
"""How much of a `[`-first file's first line is read to tell a JSON array from JSON Lines."""
_BOM = b"\xef\xbb\xbf"


# -- small helpers -----------------------------------------------------------------------------


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""A \\uD800-\\uDFFF escape in raw JSON text: the only way a surrogate gets into a decoded record."""


def find_lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate in `text` (None if there is none).

    JSON's `"\\ud800"` escape decodes to one; it cannot be encoded as UTF-8, so a tokenizer or a
    UTF-8 writer fails on it. A valid escape pair decodes to one character and is fine.

    >>> find_lone_surrogate("ok \\U0001f600"), find_lone_surrogate("ab\\ud800")
    (None, 2)
    """
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    return found.start() if found else None


def _printable(text: str) -> str:
    """`text` with any lone surrogate written as a \\uXXXX escape, so a message can always be printed."""
    return text if find_lone_surrogate(text) is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _show(value: Any, limit: int = 60) -> str:
    if isinstance(value, str):
        text = repr(value[: limit * 2])  # repr escapes surrogates; the cut keeps a huge value cheap
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (RecursionError, ValueError):  # too deep, or an int too long for str()
            text = f"<{type(value).__name__}>"
    text = _printable(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _keys(record: dict) -> str:
    keys = sorted(_printable(str(k))[:40] for k in record)
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
    """A message's content: a string, or OpenAI's list of {"type": "text", "text": "..."} parts, joined.

    Every part is checked: an object, `type` exactly "text", `text` a string (42 is not "42").
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        issues.append(
            (f"{where} content must be a string, got {type(content).__name__} {_show(content)}", "give text")
        )
        return None
    texts: list[str] = []
    ok = True
    for k, part in enumerate(content, 1):
        name = f"{where} content part {k}"
        if not isinstance(part, dict):
            issues.append((f"{name} is not an object: {_show(part)}", 'write {"type": "text", "text": "..."}'))
        elif part.get("type") != "text":
            got = "no `type`" if "type" not in part else f"`type` {_show(part['type'])}"
            issues.append(
                (f"{where} has a non-text content part {k} ({got})", 'give text content only: {"type": "text"}')
            )
        elif "text" not in part:
            issues.append((f"{name} has no `text`", "add the part's text as `text`"))
        elif not isinstance(part["text"], str):
            text = part["text"]
            issues.append((f"{name}: `text` must be a string, got {type(text).__name__} {_show(text)}", "quote it"))
        else:
            texts.append(part["text"])
            continue
        ok = False
    return "".join(texts) if ok else None


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


_TOKEN = re.compile(r'[ \t\r\n]+|"(?:[^"\\]|\\.)*"|[\[{]|[\]}]|[,:]|[^ \t\r\n"\[\]{},:]+')


def _value_end(text: str, pos: int, eof: bool) -> int | None:
    """Where the JSON value starting at text[pos] ends, by matching brackets outside strings.

    No parsing and no recursion, so it finds the end of a value too deep or too large for `json`.
    None when the text ends first (or, before `eof`, when the last token may go on in the next chunk).

    >>> _value_end('[[1, "]"], 2] tail', 0, True), _value_end("[[[", 0, True)
    (13, None)
    """
    depth = 0
    while (token := _TOKEN.match(text, pos)) is not None:
        if token.end() == len(text) and not eof:
            return None
        pos, first = token.end(), token.group()[0]
        if first in "[{":
            depth += 1
        elif first in "]}":
            depth -= 1
        elif first in " \t\r\n,:" or depth:
            continue
        if depth <= 0:
            return pos
    return None


def _json_path(where: tuple) -> str:
    """('messages', 0, 'content') -> 'messages[0].content'."""
    out = ""
    for key in where:
        out += f"[{key}]" if isinstance(key, int) else (("." if out else "") + _printable(str(key))[:40])
    return out or "the record"


def _structure_problem(value: Any) -> tuple[str, str, str] | None:
    """(kind, what, fix) for a lone surrogate anywhere in a decoded value, or nesting over MAX_NESTING.

    Iterative, so a value nested as deep as `json` allows cannot exhaust the recursion here.
    """
    stack: list[tuple[Any, int, tuple]] = [(value, 1, ())]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, str):
            at = find_lone_surrogate(item)
            if at is not None:
                return _surrogate(item[at], f"`{_json_path(where)}`")
            continue
        if depth > MAX_NESTING:
            return (
                "nesting",
                f"nested more than {MAX_NESTING} levels deep (at `{_json_path(where[:5])}...`)",
                "flatten the record: the formats need at most 5 levels",
            )
        children = []
        for key, child in item.items() if isinstance(item, dict) else enumerate(item):
            if isinstance(key, str) and (at := find_lone_surrogate(key)) is not None:
                return _surrogate(key[at], f"a key of `{_json_path(where)}`")
            if isinstance(child, (str, dict, list)):
                children.append((child, depth + 1, (*where, key)))
        stack.extend(reversed(children))  # popped in file order: the first bad value is the one named
    return None


def _surrogate(char: str, where: str) -> tuple[str, str, str]:
    return (
        "surrogate",
        f"lone surrogate \\u{ord(char):04x} in {where}: half of a UTF-16 pair, it cannot be encoded as text",
        "write the character itself in UTF-8 (or its full \\uXXXX\\uXXXX escape pair), or drop it",
    )


def _decoded(text: str, start: int, end: int, line: int) -> Any:
    """json-decode text[start:end] (one record), or the Problem that says why it cannot be used."""
    try:
        value = json.loads(text if start == 0 and end == len(text) else text[start:end])
    except json.JSONDecodeError as err:
        hint = " (one JSON object per line; pretty-printed JSON is not JSONL)" if text.strip() == "{" else ""
        return Problem(
            line, f"invalid JSON: {err.msg} at column {err.pos + 1}{hint}", "fix the JSON on this line", kind="json"
        )
    except RecursionError:
        return Problem(
            line,
            "nested too deeply for a JSON parser (thousands of levels)",
            "flatten the record: the formats need at most 5 levels",
            kind="nesting",
        )
    except ValueError as err:  # an integer over sys.get_int_max_str_digits()
        return _number_problem(line, err)
    return _structure_checked(value, text, start, end, line)


def _number_problem(line: int, err: ValueError) -> Problem:
    if "digits" in str(err):
        return Problem(
            line,
            "a number with more than 4,300 digits (Python does not parse longer integers)",
            "write it as a string, or drop it",
            kind="number",
        )
    return Problem(line, f"invalid JSON: {_printable(str(err))[:200]}", "fix the JSON", kind="json")


def _structure_checked(value: Any, text: str, start: int, end: int, line: int) -> Any:
    """`value`, or a Problem for a surrogate or deep nesting. The raw text rules both out cheaply first."""
    if not isinstance(value, (dict, list)):
        return value
    deep = text.count("[", start, end) + text.count("{", start, end) > MAX_NESTING
    if deep or _SURROGATE_ESCAPE.search(text, start, end):
        found = _structure_problem(value)
        if found:
            kind, what, fix = found
            return Problem(line, what, fix, kind=kind)
    return value


def _utf8_problem(line: int, byte: int) -> Problem:
    return Problem(
        line, f"not valid UTF-8 (byte 0x{byte:02x})", "save the file as UTF-8 (the line is skipped)", kind="utf8"
    )


def _size_problem(line: int, what: str) -> Problem:
    return Problem(
        line,
        f"{what} is longer than {MAX_RECORD_CHARS // (1 << 20)} MiB",
        "split or shorten it: no training example needs that much",
        kind="size",
    )


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    with _open_binary(path) as f:
        line_no = 0
        while raw := f.readline(MAX_RECORD_CHARS + 1):
            line_no += 1
            if len(raw) > MAX_RECORD_CHARS and not raw.endswith(b"\n"):
                while (rest := f.readline(_CHUNK)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of the long line without holding it
                yield line_no, _size_problem(line_no, "the line")
                continue
            if line_no == 1:
                raw = raw.removeprefix(_BOM)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield line_no, _utf8_problem(line_no, raw[err.start])
                continue
            if not text.strip():
                continue  # blank lines (a trailing newline) are not records
            yield line_no, _decoded(text, 0, len(text), line_no)


class _Utf8Reader:
    """Decodes a binary file in chunks. Invalid bytes become U+FFFD, and the line of each is queued in
    `bad` (in file order) for the reader to report when it reaches that line."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.pending, self.lines, self.first = raw, b"", 1, True
        self.bad: deque[tuple[int, int]] = deque()  # (line, byte value)

    def read(self, size: int) -> str:
        """Up to `size` bytes' worth of text; '' at the end of the file."""
        while True:
            chunk = self.raw.read(size)
            data, final = self.pending + chunk, not chunk
            if self.first:
                if len(data) < 3 and not final:
                    self.pending = data  # too short to tell a byte-order mark yet
                    continue
                data, self.first = data.removeprefix(_BOM), False
            cut = len(data) if final else _complete_prefix(data)
            data, self.pending = data[:cut], data[cut:]
            if data or final:
                break
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = self._mark(data.decode("utf-8", "surrogateescape"))
        self.lines += text.count("\n")
        return text

    def _mark(self, text: str) -> str:
        """Queue the line of every invalid byte (escaped as U+DC80-U+DCFF) and replace it with U+FFFD."""
        line, at, last = self.lines, 0, 0
        for found in _SURROGATE.finditer(text):
            line += text.count("\n", at, found.start())
            at = found.start()
            if line != last:
                self.bad.append((line, ord(found.group()) - 0xDC00))
                last = line
        return _SURROGATE.sub("\ufffd", text)


def _complete_prefix(data: bytes) -> int:
    """Length of `data` without a UTF-8 sequence cut at its end (kept for the next chunk)."""
    for back in range(1, min(4, len(data) + 1)):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: look further back for the lead byte
        needed = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 if byte >> 3 == 0b11110 else 1
        return len(data) - back if needed > back else len(data)
    return len(data)


def _json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """Elements of a top-level JSON array, decoded one at a time from 1 MiB chunks.

    Elements too deep or with too long a number for `json` are skipped by bracket matching and
    reported; invalid UTF-8 is reported at its own line. A syntax error ends the reading (where the
    next element starts is then unknown).
    """
    decoder = json.JSONDecoder()
    blank = re.compile(r"[ \t\r\n]*")
    with _open_binary(path) as raw:
        reader = _Utf8Reader(raw)
        buf, pos, line, eof = "", 0, 1, False

        def fill() -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            # Grow with the element being read: a big element is then re-parsed O(log n) times, not O(n).
            chunk = reader.read(max(_CHUNK, len(buf) - pos))
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

        def bad_bytes(upto: int) -> Iterator[tuple[int, Problem]]:
            """UTF-8 problems queued for lines up to `upto`."""
            while reader.bad and reader.bad[0][0] <= upto:
                bad_line, byte = reader.bad.popleft()
                yield bad_line, _utf8_problem(bad_line, byte)

        def skip_value() -> int | None:
            """End of the element at pos, found without `json`; None when the file ends first."""
            while (end := _value_end(buf, pos, eof)) is None:
                if len(buf) - pos > MAX_RECORD_CHARS or not fill():
                    return None
            return end

        if peek() != "[":
            yield line, Problem(line, "expected a JSON array `[...]` of records", "wrap the records in [ ]", kind="json")
            return
        advance(pos + 1)
        if peek() == "]":
            advance(pos + 1)
        else:
            while True:
                start = line
                value: Any = None
                while True:
                    try:
                        value, end = decoder.raw_decode(buf, pos)
                        if end < len(buf) or eof:
                            break  # a number at the very end of the buffer may continue in the next chunk
                        if not fill():
                            break
                    except json.JSONDecodeError as err:
                        if len(buf) - pos <= MAX_RECORD_CHARS and fill():
                            continue
                        at = start + buf.count("\n", pos, err.pos)
                        yield from bad_bytes(at)
                        if len(buf) - pos > MAX_RECORD_CHARS:
                            yield start, _size_problem(start, "this array element; the rest of the array cannot be read")
                        else:
                            yield at, Problem(
                                at,
                                f"invalid JSON: {err.msg}; the rest of the array cannot be read",
                                "fix the JSON syntax, or convert the file to JSONL (one object a line)",
                                kind="json",
                            )
                        yield from bad_bytes(1 << 62)
                        return
                    except (RecursionError, ValueError) as err:
                        problem = (
                            _number_problem(start, err)
                            if isinstance(err, ValueError)
                            else Problem(
                                start,
                                "nested too deeply for a JSON parser (thousands of levels)",
                                "flatten the record: the formats need at most 5 levels",
                                kind="nesting",
                            )
                        )
                        end = skip_value()
                        if end is None:
                            problem.what += "; the file ends inside it, so the rest of the array cannot be read"
                            yield start, problem
                            yield from bad_bytes(1 << 62)
                            return
                        value = problem
                        break
                record_start = pos
                advance(end)
                queued = list(bad_bytes(line))
                if queued:
                    yield from queued  # the element holds invalid UTF-8: report that, not the element
                elif isinstance(value, Problem):
                    yield start, value
                else:
                    yield start, _structure_checked(value, buf, record_start, end, start)
                nxt = peek()
                if nxt == "]":
                    advance(pos + 1)
                    break
                if nxt != ",":
                    what = "the file ends inside the array" if not nxt else f"found {_show(nxt)}"
                    yield line, Problem(
                        line, f"expected ',' or ']' after a record; {what}", "fix the JSON syntax", kind="json"
                    )
                    yield from bad_bytes(1 << 62)
                    return
                advance(pos + 1)
                if peek() == "]":
                    yield line, Problem(line, "trailing comma before ']'", "remove the last comma", kind="json")
                    yield from bad_bytes(1 << 62)
                    return
        if peek():
            yield from bad_bytes(line - 1)
            yield line, Problem(
                line,
                f"more text after the JSON array's closing `]`: {_show(buf[pos : pos + 40])}",
                "a JSON file holds one array; delete the rest, or write JSON Lines (one object a line)",
                kind="json",
            )
        yield from bad_bytes(1 << 62)


def _csv_header(path: Path, require_output: bool = True) -> tuple[list[str], dict[str, int]]:
    """The header cells and canonical field -> column index. Raises DataError without input/output
    (without input only, for a file of inputs: `require_output=False`)."""
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        header = next(csv.reader(f, delimiter=_delimiter(path)), [])
    names = [h.strip().casefold() for h in header]
    columns = {}
    for field, aliases in CSV_COLUMNS.items():
        idx = next((names.index(a) for a in aliases if a in names), None)
        if idx is not None:
            columns[field] = idx
    if "input" not in columns or ("output" not in columns and require_output):
        raise DataError(
            f"{path}: line 1: the CSV header has columns {header or '(none)'}; it needs an input column "
            f"({'/'.join(CSV_COLUMNS['input'])}) and an output column ({'/'.join(CSV_COLUMNS['output'])}); "
            "rename the columns (an optional `system` column sets the system prompt)"
        )
    return header, columns


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _csv_text_lines(raw: BinaryIO, bad: deque[Problem]) -> Iterator[str]:
    """The file's lines, decoded one by one so an invalid byte is queued in `bad` at its own line.

    Exactly one string per physical line, so the csv reader's line_num stays the file's line number.
    """
    line_no = 0
    while data := raw.readline(MAX_RECORD_CHARS + 1):
        line_no += 1
        if len(data) > MAX_RECORD_CHARS and not data.endswith(b"\n"):
            while (rest := raw.readline(_CHUNK)) and not rest.endswith(b"\n"):
                pass
            bad.append(_size_problem(line_no, "the line"))
            yield "\n"
            continue
        if line_no == 1:
            data = data.removeprefix(_BOM)
        try:
            yield data.decode("utf-8")
        except UnicodeDecodeError as err:
            bad.append(_utf8_problem(line_no, data[err.start]))
            yield data.decode("utf-8", "replace")


def _csv_rows(path: Path, require_output: bool = True) -> Iterator[tuple[int, Any]]:
    header, columns = _csv_header(_checked(path), require_output)
    # The csv module's default field limit (128 KiB) would reject a long quoted field that JSONL
    # accepts; raise it (process-wide, the only way the module offers) to the record limit.
    if csv.field_size_limit() < MAX_RECORD_CHARS:
        csv.field_size_limit(MAX_RECORD_CHARS)
    bad: deque[Problem] = deque()
    with _open_binary(path) as raw:
        reader = csv.reader(_csv_text_lines(raw, bad), delimiter=_delimiter(path))
        next(reader, None)
        bad.clear()  # the header was checked by _csv_header
        ended = reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                start, ended = ended + 1, reader.line_num
                queued = [p for p in _take(bad, ended)]
                if queued:
                    yield from ((p.line, p) for p in queued)
                else:
                    yield start, Problem(start, f"CSV error: {err}", "fix the quoting on this row", kind="csv")
                continue
            start, ended = ended + 1, reader.line_num
            queued = _take(bad, ended)
            if queued:
                yield from ((p.line, p) for p in queued)  # the row is not what the file meant: skip it
                continue
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                yield start, Problem(
                    start,
                    f"row has {len(row)} fields, the header has {len(header)}",
                    "quote fields that contain the delimiter or line breaks",
                    kind="csv",
                )
                continue
            yield start, {field: row[idx] for field, idx in columns.items()}
        yield from ((p.line, p) for p in _take(bad, 1 << 62))


def _take(queue: deque[Problem], upto: int) -> list[Problem]:
    out = []
    while queue and queue[0].line <= upto:
        out.append(queue.popleft())
    return out


def _checked(path: Path) -> Path:
    _open_binary(path).close()
    return path


def _is_json_array(path: Path) -> bool:
    """Whether a JSON file is one array (else JSON Lines).

    It is an array when its first non-blank character is `[`, unless its first line holds one complete
    value and more text follows: that is JSON Lines whose first record happens to be an array.
    """
    with _open_binary(path) as f:
        first = True
        while raw := f.readline(_SNIFF_LINE):
            text = raw.decode("utf-8", "replace").lstrip("\ufeff" if first else "")
            first = False
            if text.strip():
                break
        else:
            return False
        text = text.strip(" \t\r\n")
        if not text.startswith("["):
            return False
        if len(raw) >= _SNIFF_LINE and not raw.endswith(b"\n"):
            return True  # a first line this long: a one-line array
        if _value_end(text, 0, eof=True) != len(text):
            return True  # the value goes on past the first line (or the line holds more)
        while chunk := f.read(4096):
            if chunk.strip():
                return False
    return True


def _records(path: Path, fmt: Format) -> Iterator[tuple[int, Any]]:
    if fmt.tabular:
        return _csv_rows(path)
    return _json_array(path) if _is_json_array(path) else _json_lines(path)


# -- public API ---------------------------------------------------------------------------------


def _vote_format(path: Path, guess: Callable[[dict], str | None], order: list[str], empty: str) -> tuple[str | None, str, list[str]]:
    """Detect a JSON format by vote over the file's first DETECT_RECORDS records: (the format most
    records look like, ties to the earlier in `order`, or None; the file's first character; the keys
    of up to 3 records that look like no format). An empty file raises DataError ending with `empty`."""
    first = _first_char(path)
    if not first:
        raise DataError(f"{path} is empty; {empty}")
    votes: Counter[str] = Counter()
    seen: list[str] = []
    for _, record in _json_array(path) if _is_json_array(path) else _json_lines(path):
        if isinstance(record, dict):
            name = guess(record)
            if name:
                votes[name] += 1
            elif len(seen) < 3:
                seen.append(_keys(record))
            if sum(votes.values()) + len(seen) >= DETECT_RECORDS:
                break
    winner = max(votes, key=lambda n: (votes[n], -order.index(n))) if votes else None
    return winner, first, seen


def detect_format(path: str | Path) -> str:
    """The format of a file, from its suffix (.csv/.tsv) or the keys of its first valid records.

    Raises DataError naming the keys it found and the formats it knows.
    """
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        return "csv"
    winner, first, seen = _vote_format(path, guess_record_format, list(FORMATS), "give a file with examples")
    if winner:
        return winner
    if not seen and first not in "[{":
        try:
            _csv_header(path)  # a CSV file without a .csv suffix
            return "csv"
        except DataError:
            pass
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
        try:
            example = fmt.parse(record, issues)
        except Exception as err:  # noqa: BLE001 - one record the checker cannot handle must not hide the rest
            what = f"could not check this record ({type(err).__name__}: {_printable(str(err))[:200]})"
            yield line, Problem(line, what, "please report this tunewise bug with the line", kind="internal")
            continue
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


# -- inputs without answers (the distill rung's `data.unlabelled`) ------------------------------

INPUT_KEYS: dict[str, tuple[str, ...]] = {
    "chat": ("messages",),
    "prompt_completion": ("prompt",),
    "alpaca": ("instruction",),
    "sharegpt": ("conversations",),
}
"""Top-level keys that identify a record of a JSON format when it need not hold an answer."""
_NO_ANSWER = "(no answer)"


def _with_placeholder_answer(record: dict, fmt: str) -> dict:
    """The record with a placeholder in place of its answer (added where it has none), so the format's
    own parser checks the rest (keys, roles, order, types, empty text) as it checks a labelled record."""
    if fmt in ("chat", "sharegpt"):
        key, role_key = ("messages", "role") if fmt == "chat" else ("conversations", "from")
        turns = record.get(key)
        if not isinstance(turns, list) or not turns or not isinstance(turns[-1], dict):
            return record  # the parser says what is wrong
        speaker = turns[-1].get(role_key)
        role = (speaker if fmt == "chat" else SHAREGPT_ROLES.get(speaker)) if isinstance(speaker, str) else None
        answer = {"role": "assistant", "content": _NO_ANSWER} if fmt == "chat" else {"from": "gpt", "value": _NO_ANSWER}
        return {**record, key: [*(turns[:-1] if role == "assistant" else turns), answer]}
    return {**record, {"prompt_completion": "completion", "alpaca": "output", "csv": "output"}[fmt]: _NO_ANSWER}


def detect_inputs_format(path: str | Path) -> str:
    """The format of a file of inputs: like `detect_format`, but a record needs no answer
    ({"prompt": ...} is prompt_completion, {"instruction": ...} alpaca, a CSV needs an input column only)."""
    path = Path(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        return "csv"

    def guess(record: dict) -> str | None:
        return next((n for n, keys in INPUT_KEYS.items() if all(k in record for k in keys)), None)

    winner, first, seen = _vote_format(path, guess, list(INPUT_KEYS), "give a file with one input a line")
    if winner:
        return winner
    if not seen and first not in "[{":
        try:
            _csv_header(path, require_output=False)  # a CSV file without a .csv suffix
            return "csv"
        except DataError:
            pass
    found = f"records with keys: {'; '.join(seen)}" if seen else "no JSON object at the top"
    raise DataError(
        f"{path}: cannot detect the format of these inputs, {found}. Give one input a record: "
        '{"prompt": "..."}, {"messages": [..., {"role": "user", "content": "..."}]}, {"instruction": "..."}, '
        '{"conversations": [..., {"from": "human", "value": "..."}]}, or a CSV with an input column'
    )


def read_inputs(path: str | Path) -> list[list[dict[str, str]]]:
    """The conversations of a file of inputs without answers (production logs, say), each ending with
    its last user turn, in file order; or DataError listing every bad line at once.

    Any supported format, detected from the file, with the answer left out: {"prompt": "..."},
    chat messages ending with a user turn, {"instruction": "...", "input": "..."}, ShareGPT ending
    with a human turn, or a CSV with an input column. A record that does hold an answer is read
    too, and its answer ignored: a log of a model's past replies is no gold answer.

        {"prompt": "play some jazz"}  ->  [{"role": "user", "content": "play some jazz"}]
    """
    path = Path(path)
    name = detect_inputs_format(path)
    fmt = get_format(name)
    if fmt.tabular:
        records = _csv_rows(path, require_output=False)
    else:
        records = _json_array(path) if _is_json_array(path) else _json_lines(path)
    inputs: list[list[dict[str, str]]] = []
    problems: list[Problem] = []
    for line, record in records:
        if isinstance(record, Problem):
            problems.append(record)
            continue
        if not isinstance(record, dict):
            problems.append(Problem(line, f"expected a JSON object, got {type(record).__name__}", "write one object"))
            continue
        issues: Issues = []
        try:
            example = fmt.parse(_with_placeholder_answer(record, name), issues)
        except Exception as err:  # noqa: BLE001 - one record the checker cannot handle must not hide the rest
            what = f"could not check this record ({type(err).__name__}: {_printable(str(err))[:200]})"
            problems.append(Problem(line, what, "please report this tunewise bug with the line", kind="internal"))
            continue
        if issues or example is None:
            problems += [Problem(line, what, fix) for what, fix in issues or [("record could not be read", "check it against the format")]]
            continue
        inputs.append(example.messages)
    if problems:
        raise DataError(problems_message(problems, path))
    if not inputs:
        raise DataError(f"{path}: no inputs; give a file with at least one record")
    return inputs
