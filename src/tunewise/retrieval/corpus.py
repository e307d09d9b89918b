"""The knowledge corpus: load documents from JSONL or a folder of text files, split them into chunks.

Plain Python: no heavy imports, so the data audit can count a corpus without loading a model.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from tunewise.errors import TunewiseError

TEXT_SUFFIXES = (".txt", ".md")


@dataclass
class Document:
    """One corpus entry; `id` is what an example's `source_id` points at."""

    id: str
    text: str
    title: str = ""


@dataclass
class Chunk:
    """A retrievable piece of one document; `id` is "<doc_id>#<n>", n counting from 0."""

    id: str
    doc_id: str
    text: str
    title: str = ""


def load_corpus(path: str | Path) -> list[Document]:
    """Read a corpus: a JSONL file of {"id", "text", "title"?}, a folder of .txt/.md, or one such file.

    JSONL rows may say `content` instead of `text`; a row without `id` gets its line number.
    Every bad line is reported at once.
    """
    path = Path(path)
    if not path.exists():
        raise TunewiseError(
            f"corpus not found: {path} (set `corpus:` in the task file to a JSONL file or a folder of .txt/.md)"
        )
    if path.is_dir():
        docs = _load_folder(path)
    elif path.suffix.lower() in TEXT_SUFFIXES:
        docs = [_text_document(path.name, path)]
    else:
        docs = _load_jsonl(path)
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise TunewiseError(
            f"corpus {path} holds no documents with text; give JSONL rows with `id` and `text`, "
            "or a folder of non-empty .txt/.md files"
        )
    return docs


def _load_jsonl(path: Path) -> list[Document]:
    docs: list[Document] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"line {line_no}: not valid JSON ({err.msg})")
                continue
            if not isinstance(row, dict):
                problems.append(f"line {line_no}: expected an object with `id` and `text`, got {type(row).__name__}")
                continue
            text = row.get("text", row.get("content"))
            if not isinstance(text, str) or not text.strip():
                problems.append(f"line {line_no}: needs a non-empty string `text` (or `content`), got {text!r}"[:200])
                continue
            doc_id = row.get("id", line_no)
            if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
                problems.append(f"line {line_no}: `id` must be a string or integer, got {doc_id!r}")
                continue
            doc_id = str(doc_id)
            if doc_id in seen:
                problems.append(f"line {line_no}: duplicate id {doc_id!r} (first on line {seen[doc_id]})")
                continue
            seen[doc_id] = line_no
            title = row.get("title") or ""
            docs.append(Document(id=doc_id, text=text, title=str(title)))
    if problems:
        shown = problems[:50] + ([f"... and {len(problems) - 50} more"] if len(problems) > 50 else [])
        raise TunewiseError(
            f"{path}: {len(problems)} bad line(s); each line must be a JSON object with `id` and `text`:\n  "
            + "\n  ".join(shown)
        )
    return docs


def _load_folder(root: Path) -> list[Document]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    return [_text_document(p.relative_to(root).as_posix(), p) for p in files]


def _text_document(doc_id: str, path: Path) -> Document:
    text = path.read_text(encoding="utf-8", errors="replace")
    heading = re.search(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE)
    return Document(id=doc_id, text=text, title=heading.group(1) if heading else path.stem)


# -- chunking -----------------------------------------------------------------------------------

_PARAGRAPH = re.compile(r"\n\s*\n")
# A sentence ends at . ! or ? (optionally closed by a quote or bracket) followed by whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def _sentences(text: str) -> list[list[str]]:
    """The text as sentences of words; a paragraph break always ends a sentence."""
    out = []
    for paragraph in _PARAGRAPH.split(text):
        for sentence in _SENTENCE_END.split(paragraph):
            words = sentence.split()
            if words:
                out.append(words)
    return out


def default_overlap(chunk_words: int) -> int:
    """30 words for the default 200-word chunks; 15% of smaller ones."""
    return min(30, chunk_words * 3 // 20)


def chunk_documents(docs: list[Document], chunk_words: int = 200, overlap_words: int | None = None) -> list[Chunk]:
    """Split long documents into chunks of about `chunk_words` words on sentence boundaries.

    A document of at most `chunk_words` words stays one chunk. A longer one becomes
    n = ceil((W - overlap) / (chunk_words - overlap)) chunks of roughly equal size (so no tiny tail),
    each starting with the last whole sentences (at most `overlap_words` words) of the one before
    (or its last `overlap_words` words when its final sentence is longer).
    A sentence longer than a chunk is cut by words. `overlap_words` defaults to `default_overlap`.

    >>> [c.id for c in chunk_documents([Document("a", "One two. Three four. Five six.")], 4, 0)]
    ['a#0', 'a#1']
    """
    if overlap_words is None:
        overlap_words = default_overlap(chunk_words)
    if chunk_words < 1 or not 0 <= overlap_words < chunk_words:
        raise TunewiseError(
            f"chunking needs chunk_words >= 1 and 0 <= overlap_words < chunk_words; "
            f"got chunk_words={chunk_words}, overlap_words={overlap_words}"
        )
    chunks: list[Chunk] = []
    for doc in docs:
        pieces = _split(doc.text, chunk_words, overlap_words)
        chunks += [Chunk(f"{doc.id}#{i}", doc.id, text, doc.title) for i, text in enumerate(pieces)]
    return chunks


def _split(text: str, chunk_words: int, overlap_words: int) -> list[str]:
    total = len(text.split())
    if total <= chunk_words:
        return [" ".join(text.split())]
    n = math.ceil((total - overlap_words) / (chunk_words - overlap_words))
    target = math.ceil((total + (n - 1) * overlap_words) / n)  # equal shares, overlap included
    # Sentences longer than a chunk are cut into chunk-sized runs of words first.
    units = [s[i : i + target] for s in _sentences(text) for i in range(0, len(s), target)]

    pieces: list[list[list[str]]] = []
    current: list[list[str]] = []
    fresh = 0  # words in `current` not carried over from the previous chunk
    for unit in units:
        size = sum(map(len, current))
        # Cut where the chunk ends closest to the target: before this sentence if over half of it overflows.
        if fresh and size + len(unit) / 2 > target:
            pieces.append(current)
            current = _tail(current, overlap_words)
            fresh = 0
        current.append(unit)
        fresh += len(unit)
    if fresh:
        pieces.append(current)
    return [" ".join(w for unit in piece for w in unit) for piece in pieces]


def _tail(units: list[list[str]], overlap_words: int) -> list[list[str]]:
    """The last whole sentences holding at most `overlap_words` words, else the last words."""
    tail: list[list[str]] = []
    size = 0
    for unit in reversed(units):
        if size + len(unit) > overlap_words:
            break
        tail.insert(0, unit)
        size += len(unit)
    if not tail and overlap_words and units:
        # Long final sentence: a partial one still keeps a fact that straddles the cut retrievable.
        tail = [units[-1][-overlap_words:]]
    return tail
