"""`tunewise audit`: everything wrong with a data file, reported at once, before any model runs.

One streaming pass per file keeps fingerprints, not texts (about 300 bytes an example): hashes of the
normalised input and answer, a 64-value MinHash signature of the input, and the token length. From
them the audit reports, with line numbers:

errors    every line that cannot be read (see `tunewise.data.formats`); the audit fails on any.
warnings  exact duplicates (same normalised input and answer), near-duplicates (MinHash Jaccard of
          byte 4-grams >= 0.9, same answer), conflicts (same input, different answers), train/eval
          leakage (exact, or near with the same answer), examples over the context limit, label
          imbalance, eval labels missing from train, and too little data.
stats     token lengths (min/p50/p95/max, real tokenizer or estimate), labels, volume verdict, and
          the hosted training cost under OpenAI's default-epochs rule (`default_epochs`).

Normalised text: casefolded, punctuation replaced by spaces, whitespace collapsed (`normalize`).
"""

from __future__ import annotations

import hashlib
import re
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunewise.data.example import Example
from tunewise.data.formats import Problem, iter_records, resolve_format
from tunewise.data.tokens import TokenCounter, tokenizer_for
from tunewise.errors import TunewiseError

NEAR_DUPLICATE_JACCARD = 0.9
"""Inputs at least this similar (estimated Jaccard of byte 4-gram sets) are near-duplicates."""
NUM_PERM, BANDS = 64, 8
"""MinHash size and LSH bands (8 rows each): a pair at Jaccard 0.9 becomes a candidate with p=0.99."""
SHINGLE = 4
LABEL_MAX_CLASSES = 50
"""Outputs look like labels when there are at most this many distinct ones ..."""
LABEL_MAX_CHARS = 40
"""... every one is a single line of at most this many characters ..."""
LABEL_MIN_PER_CLASS = 2
"""... and there are at least this many examples per distinct output on average."""
IMBALANCE_RATIO = 3.0
"""Warn when the most common label outnumbers the rarest by more than this."""
DEFAULT_PRICE_PER_1M = 3.00
"""$ per 1M training tokens (OpenAI gpt-4o-mini fine-tuning list price, 2024)."""

# OpenAI's default n_epochs rule, from the cookbook notebook "Data preparation and analysis for chat
# model fine-tuning": aim for 3 epochs, but keep n_examples x n_epochs within [100, 25000].
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES = 3, 100, 25_000
MIN_DEFAULT_EPOCHS, MAX_DEFAULT_EPOCHS = 1, 25
MAX_BILLED_TOKENS_PER_EXAMPLE = 16_385
"""Longer examples are truncated, and billed only up to this (same notebook)."""

VOLUME_LEVELS = [
    (1000, "full_sft", "full fine-tuning is feasible (and LoRA); measure both against prompting"),
    (100, "lora", "LoRA fine-tuning is feasible; full fine-tuning usually wants 1,000+ examples"),
    (50, "prompting", "prompting and few-shot first; LoRA is risky below 100 examples"),
    (0, "collect_more", "collect more data: fewer than 50 examples can neither train nor measure reliably"),
]
"""(minimum train examples, level, advice), largest first."""

_PUNCT = re.compile(r"[^\w\s]|_")


def normalize(text: str) -> str:
    """Casefold, punctuation to spaces, collapse whitespace.

    >>> normalize("  Play   'Hey Jude',  NOW!")
    'play hey jude now'
    """
    return " ".join(_PUNCT.sub(" ", text.casefold()).split())


def _key(text: str) -> int:
    """A stable 64-bit fingerprint (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


_rng = np.random.default_rng(12345)  # fixed: signatures must compare across files and runs
_MUL = _rng.integers(1, 2**62, NUM_PERM, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd multipliers
_ADD = _rng.integers(0, 2**62, NUM_PERM, dtype=np.uint64)


def minhash(text: str) -> np.ndarray:
    """MinHash signature (NUM_PERM,) uint32 of the text's byte 4-grams, by multiply-shift hashing.

    The share of equal positions between two signatures estimates the Jaccard similarity.
    """
    data = text.encode("utf-8").ljust(SHINGLE, b"\0")
    b = np.frombuffer(data, dtype=np.uint8).astype(np.uint64)
    grams = np.unique(b[:-3] << np.uint64(24) | b[1:-2] << np.uint64(16) | b[2:-1] << np.uint64(8) | b[3:])
    sig = np.full(NUM_PERM, np.iinfo(np.uint64).max, dtype=np.uint64)
    for start in range(0, len(grams), 4096):  # bounded temporaries for long texts
        block = grams[start : start + 4096]
        hashed = (_MUL[:, None] * block[None, :] + _ADD[:, None]) >> np.uint64(32)  # (perm, grams)
        sig = np.minimum(sig, hashed.min(axis=1))
    return sig.astype(np.uint32)


def similar_pairs(
    signatures: np.ndarray, threshold: float = NEAR_DUPLICATE_JACCARD
) -> Iterator[tuple[int, int, float]]:
    """(i, j, similarity) with i < j for rows of (n, NUM_PERM) signatures at or above threshold.

    Locality-sensitive hashing: rows that agree on a whole band of 8 values are candidates, and
    candidates are confirmed on the full signature. Runs in about O(n log n).
    """
    n = len(signatures)
    rows = NUM_PERM // BANDS
    seen: set[tuple[int, int]] = set()
    for band in range(BANDS):
        cols = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)
        keys = cols[:, 0].copy()
        for c in range(1, rows):
            keys = keys * np.uint64(0x100000001B3) ^ cols[:, c]
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
        starts, ends = np.concatenate(([0], cuts)), np.concatenate((cuts, [n]))
        big = ends - starts > 1
        for s, e in zip(starts[big], ends[big]):
            members = np.sort(order[s:e])
            sigs = signatures[members]
            if len(members) <= 64:
                sim = (sigs[:, None, :] == sigs[None, :, :]).mean(axis=2)  # (m, m)
                pairs = [(a, b, sim[a, b]) for a, b in zip(*np.nonzero(np.triu(sim >= threshold, k=1)))]
            else:  # a huge bucket (templated data): compare with its first member only
                sim0 = (sigs == sigs[0]).mean(axis=1)  # (m,)
                pairs = [(0, b, sim0[b]) for b in np.flatnonzero(sim0 >= threshold) if b > 0]
            for a, b, value in pairs:
                i, j = int(members[a]), int(members[b])
                if (i, j) not in seen:
                    seen.add((i, j))
                    yield i, j, float(value)


def default_epochs(n_examples: int) -> int:
    """OpenAI's default n_epochs: 3, unless n x 3 falls outside [100, 25000] examples.

    >>> [default_epochs(n) for n in (10, 33, 34, 1000, 8333, 8334, 30000)]
    [10, 3, 3, 3, 3, 2, 1]
    """
    if n_examples <= 0:
        return 0
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


# -- the report -----------------------------------------------------------------------------------


@dataclass
class Finding:
    """One warning: what, where and what to do."""

    kind: str  # duplicate, near_duplicate, conflict, leakage, too_long, imbalance, unseen_label, volume
    message: str
    fix: str
    file: str | None = None  # "train" or "eval"
    lines: list[int] = field(default_factory=list)


@dataclass
class Group:
    """Lines of one file that share (nearly) the same input."""

    file: str
    lines: list[int]
    similarity: float = 1.0
    answers: list[str] = field(default_factory=list)  # conflicts: the differing answers, shortened


@dataclass
class Leak:
    eval_line: int
    train_line: int
    kind: str  # "exact" (same input) or "near" (similar input, same answer)
    similarity: float
    same_answer: bool


@dataclass
class TokenStats:
    examples: int
    min: int
    p50: float
    p95: float
    max: int
    mean: float
    total: int


@dataclass
class OverLimit:
    file: str
    line: int
    tokens: int


@dataclass
class LabelStats:
    counts: dict[str, int]  # train label -> examples, most common first
    eval_counts: dict[str, int]
    imbalance: float  # most common / rarest train label
    unseen_in_train: list[str]  # eval labels no train example has


@dataclass
class Volume:
    examples: int
    level: str  # collect_more | prompting | lora | full_sft
    advice: str


@dataclass
class TrainingEstimate:
    examples: int
    epochs: int
    tokens_per_epoch: int  # billed: each example capped at MAX_BILLED_TOKENS_PER_EXAMPLE
    training_tokens: int  # tokens_per_epoch x epochs
    price_per_1m: float
    cost: float
    rule: str


@dataclass
class AuditReport:
    train_path: str
    eval_path: str | None
    formats: dict[str, str]  # file role -> detected or given format
    train_examples: int
    eval_examples: int
    errors: list[Problem]
    warnings: list[Finding]
    duplicates: list[Group]
    near_duplicates: list[Group]
    conflicts: list[Group]
    leakage: list[Leak]
    tokens: dict[str, TokenStats]  # file role -> stats
    token_counter: str  # what the counts come from
    token_note: str | None  # why the estimate is used although a tokenizer was asked for
    context_limit: int
    over_limit: list[OverLimit]
    labels: LabelStats | None
    volume: Volume
    training: TrainingEstimate

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}

    def summary(self) -> dict[str, Any]:
        """The small dict stored in results.json."""
        labels = None
        if self.labels:
            labels = {"classes": len(self.labels.counts), "imbalance": round(self.labels.imbalance, 2)}
        return {
            "ok": self.ok,
            "formats": self.formats,
            "train_examples": self.train_examples,
            "eval_examples": self.eval_examples,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "duplicates": sum(len(g.lines) - 1 for g in self.duplicates),
            "near_duplicates": sum(len(g.lines) - 1 for g in self.near_duplicates),
            "conflicts": len(self.conflicts),
            "leakage": len(self.leakage),
            "over_context_limit": len(self.over_limit),
            "volume": self.volume.level,
            "token_counter": self.token_counter,
            "tokens": {role: asdict(stats) for role, stats in self.tokens.items()},
            "labels": labels,
            "training_tokens": self.training.training_tokens,
            "training_cost": round(self.training.cost, 4),
        }


# -- scanning -------------------------------------------------------------------------------------


class _Signatures:
    """A growable (n, NUM_PERM) uint32 array."""

    def __init__(self) -> None:
        self.data = np.empty((256, NUM_PERM), dtype=np.uint32)
        self.n = 0

    def append(self, sig: np.ndarray) -> None:
        if self.n == len(self.data):
            self.data = np.concatenate([self.data, np.empty_like(self.data)])
        self.data[self.n] = sig
        self.n += 1

    def array(self) -> np.ndarray:
        return self.data[: self.n]


class _Scan:
    """Fingerprints of one file, in bounded memory: hashes, signatures and lengths, never texts."""

    def __init__(self, role: str, counter: TokenCounter, context_limit: int, train: _Scan | None = None):
        self.role, self.counter, self.context_limit, self.train = role, counter, context_limit, train
        self.examples = 0
        self.errors: list[Problem] = []
        self.first: dict[int, tuple[int, int]] = {}  # input key -> (first line, answer key)
        self.repeats: dict[int, list[int]] = {}  # input key -> later lines
        self.conflicting: set[int] = set()
        self.by_text: dict[int, tuple[int, int]] = {}  # turns-only key -> (first line, answer key)
        self.signatures = _Signatures()  # one per distinct input key
        self.sig_lines = array("q")
        self.sig_answers = array("q")
        self.lengths = array("q")
        self.over_limit: list[OverLimit] = []
        self.labels: Counter[str] | None = Counter()
        self.leaks: list[Leak] = []

    def add(self, ex: Example, line: int) -> None:
        self.examples += 1
        turns = normalize("\n".join(m["content"] for m in ex.turns))
        answer = _key(normalize(ex.answer))
        key = _key(normalize(ex.system or "") + "\x1f" + turns)  # same input under the same instructions
        text_key = _key(turns)

        prompt_tokens, answer_tokens = self.counter.count_example(ex)
        tokens = prompt_tokens + answer_tokens
        self.lengths.append(tokens)
        if tokens > self.context_limit:
            self.over_limit.append(OverLimit(self.role, line, tokens))

        label = ex.answer.strip()
        if self.labels is not None:
            if len(label) > LABEL_MAX_CHARS or "\n" in label or len(self.labels) > LABEL_MAX_CLASSES:
                self.labels = None
            else:
                self.labels[label] += 1

        if self.train is not None and text_key in self.train.by_text:
            train_line, train_answer = self.train.by_text[text_key]
            self.leaks.append(Leak(line, train_line, "exact", 1.0, train_answer == answer))

        if key in self.first:
            self.repeats.setdefault(key, []).append(line)
            if self.first[key][1] != answer:
                self.conflicting.add(key)
        else:
            self.first[key] = (line, answer)
            self.signatures.append(minhash(turns))
            self.sig_lines.append(line)
            self.sig_answers.append(answer)
        self.by_text.setdefault(text_key, (line, answer))

    def label_counts(self) -> Counter[str] | None:
        if not self.labels or len(self.labels) > LABEL_MAX_CLASSES:
            return None
        if self.examples < LABEL_MIN_PER_CLASS * len(self.labels):
            return None
        return self.labels

    def groups(self) -> tuple[list[Group], list[Group]]:
        """(duplicates, conflicts): exact same input, same or different answers."""
        duplicates, conflicts = [], []
        for key, later in self.repeats.items():
            group = Group(self.role, [self.first[key][0], *later])
            (conflicts if key in self.conflicting else duplicates).append(group)
        return sorted(duplicates, key=lambda g: g.lines), sorted(conflicts, key=lambda g: g.lines)

    def near_duplicates(self) -> list[Group]:
        """Groups (linked by similar pairs) of distinct inputs at Jaccard >= 0.9 with the same answer."""
        parent = list(range(self.signatures.n))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        pairs = [
            (i, j, sim)
            for i, j, sim in similar_pairs(self.signatures.array())
            if self.sig_answers[i] == self.sig_answers[j]
        ]
        for i, j, _ in pairs:
            parent[root(j)] = root(i)
        lines: dict[int, set[int]] = {}
        lowest: dict[int, float] = {}
        for i, j, sim in pairs:
            r = root(i)
            lines.setdefault(r, set()).update((self.sig_lines[i], self.sig_lines[j]))
            lowest[r] = min(lowest.get(r, 1.0), sim)
        groups = [Group(self.role, sorted(lines[r]), round(lowest[r], 3)) for r in lines]
        return sorted(groups, key=lambda g: g.lines)

    def token_stats(self) -> TokenStats | None:
        if not self.lengths:
            return None
        lengths = np.frombuffer(self.lengths, dtype=np.int64)
        return TokenStats(
            examples=len(lengths),
            min=int(lengths.min()),
            p50=float(np.percentile(lengths, 50)),
            p95=float(np.percentile(lengths, 95)),
            max=int(lengths.max()),
            mean=round(float(lengths.mean()), 1),
            total=int(lengths.sum()),
        )


def _scan(path: Path, fmt: str, scan: _Scan) -> None:
    for line, item in iter_records(path, fmt):
        if isinstance(item, Problem):
            item.path = str(path)
            scan.errors.append(item)
        else:
            scan.add(item, line)
    if scan.examples == 0 and not scan.errors:
        scan.errors.append(Problem(0, "no examples in the file", "give a file with at least one record", str(path)))


def _near_leaks(train: _Scan, evals: _Scan) -> list[Leak]:
    """Eval inputs similar (not identical) to a train input with the same answer."""
    n_train = train.signatures.n
    if not n_train or not evals.signatures.n:
        return []
    both = np.concatenate([train.signatures.array(), evals.signatures.array()])
    exact = {leak.eval_line for leak in evals.leaks}
    found: dict[int, Leak] = {}
    for i, j, sim in similar_pairs(both):
        if i >= n_train or j < n_train:
            continue  # both in the same file
        e = j - n_train
        eval_line = evals.sig_lines[e]
        if eval_line in exact or train.sig_answers[i] != evals.sig_answers[e]:
            continue
        if eval_line not in found or sim > found[eval_line].similarity:
            found[eval_line] = Leak(eval_line, train.sig_lines[i], "near", round(sim, 3), True)
    return list(found.values())


def _answers(path: Path, fmt: str, lines: set[int]) -> dict[int, str]:
    """Second pass for the few lines a report quotes (conflicts), so the first pass stores no text."""
    out = {}
    for line, item in iter_records(path, fmt):
        if line in lines and isinstance(item, Example):
            out[line] = item.answer if len(item.answer) <= 60 else item.answer[:57] + "..."
    return out


def _resolve_counter(tokenizer: Any) -> TokenCounter:
    if isinstance(tokenizer, TokenCounter):
        return tokenizer
    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        return tokenizer_for(tokenizer)
    if not hasattr(tokenizer, "encode"):
        raise TunewiseError(f"tokenizer must have an encode(text) method or be a local path, got {tokenizer!r}")
    return TokenCounter(tokenizer)


def volume_verdict(n_examples: int) -> Volume:
    """What the number of training examples allows.

    >>> [volume_verdict(n).level for n in (49, 50, 99, 100, 999, 1000)]
    ['collect_more', 'prompting', 'prompting', 'lora', 'lora', 'full_sft']
    """
    for minimum, level, advice in VOLUME_LEVELS:
        if n_examples >= minimum:
            return Volume(n_examples, level, f"{n_examples} examples: {advice}")
    raise AssertionError("unreachable: the last level starts at 0")


def training_estimate(lengths: list[int] | np.ndarray, price_per_1m: float) -> TrainingEstimate:
    """Hosted training tokens and cost: billed tokens per epoch x OpenAI's default epochs x price."""
    n = len(lengths)
    per_epoch = int(sum(min(MAX_BILLED_TOKENS_PER_EXAMPLE, int(t)) for t in lengths))
    epochs = default_epochs(n)
    rule = (
        f"OpenAI default epochs: {TARGET_EPOCHS}, or {MIN_TARGET_EXAMPLES}//n (max {MAX_DEFAULT_EPOCHS}) when "
        f"n x {TARGET_EPOCHS} < {MIN_TARGET_EXAMPLES}, or {MAX_TARGET_EXAMPLES}//n (min {MIN_DEFAULT_EPOCHS}) "
        f"when n x {TARGET_EPOCHS} > {MAX_TARGET_EXAMPLES}; n = {n} gives {epochs}"
    )
    tokens = per_epoch * epochs
    return TrainingEstimate(n, epochs, per_epoch, tokens, price_per_1m, tokens / 1e6 * price_per_1m, rule)


def audit(
    train_path: str | Path,
    eval_path: str | Path | None = None,
    format: str = "auto",
    context_limit: int = 2048,
    tokenizer: Any = None,
    price_per_1m: float = DEFAULT_PRICE_PER_1M,
) -> AuditReport:
    """Audit a training file (and its eval file): every error and warning at once, with line numbers.

    `tokenizer`: a TokenCounter, anything with encode(), a local tokenizer path, or None (estimate).
    Raises DataError only when a file cannot be read at all (missing, unknown format, CSV header).
    """
    if context_limit < 1:
        raise TunewiseError(f"context limit must be at least 1 token, got {context_limit}")
    if price_per_1m < 0:
        raise TunewiseError(f"price per 1M training tokens cannot be negative, got {price_per_1m}")
    counter = _resolve_counter(tokenizer)
    train_path = Path(train_path)
    formats = {"train": resolve_format(train_path, format)}
    train = _Scan("train", counter, context_limit)
    _scan(train_path, formats["train"], train)
    scans = {"train": (train_path, train)}
    evals = None
    if eval_path is not None:
        eval_path = Path(eval_path)
        formats["eval"] = resolve_format(eval_path, format)
        evals = _Scan("eval", counter, context_limit, train=train)
        _scan(eval_path, formats["eval"], evals)
        scans["eval"] = (eval_path, evals)

    duplicates: list[Group] = []
    conflicts: list[Group] = []
    near: list[Group] = []
    for role, (path, scan) in scans.items():
        dups, confl = scan.groups()
        if confl:
            quoted = _answers(path, formats[role], {line for g in confl[:50] for line in g.lines})
            for g in confl:
                g.answers = [quoted[line] for line in g.lines if line in quoted]
        duplicates += dups
        conflicts += confl
        near += scan.near_duplicates()
    leakage = []
    if evals is not None:
        leakage = sorted(evals.leaks + _near_leaks(train, evals), key=lambda leak: leak.eval_line)

    labels = None
    train_labels = train.label_counts()
    if train_labels:
        eval_labels = (evals.labels if evals is not None else None) or Counter()
        counts = dict(train_labels.most_common())
        labels = LabelStats(
            counts=counts,
            eval_counts=dict(eval_labels.most_common()),
            imbalance=max(counts.values()) / min(counts.values()),
            unseen_in_train=sorted(set(eval_labels) - set(counts)),
        )

    tokens = {role: stats for role, (_, scan) in scans.items() if (stats := scan.token_stats())}
    errors = [p for _, scan in scans.values() for p in scan.errors]
    report = AuditReport(
        train_path=str(train_path),
        eval_path=None if eval_path is None else str(eval_path),
        formats=formats,
        train_examples=train.examples,
        eval_examples=evals.examples if evals is not None else 0,
        errors=errors,
        warnings=[],
        duplicates=duplicates,
        near_duplicates=near,
        conflicts=conflicts,
        leakage=leakage,
        tokens=tokens,
        token_counter=counter.source,
        token_note=counter.note,
        context_limit=context_limit,
        over_limit=[o for _, scan in scans.values() for o in scan.over_limit],
        labels=labels,
        volume=volume_verdict(train.examples),
        training=training_estimate(np.frombuffer(train.lengths, dtype=np.int64), price_per_1m),
    )
    report.warnings = _warnings(report)
    return report


def _lines(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:12]))
    return shown + (f" and {len(lines) - 12} more" if len(lines) > 12 else "")


def _warnings(r: AuditReport) -> list[Finding]:
    """Every warning, one per group / leak / example, in reading order."""
    out: list[Finding] = []
    for g in r.duplicates:
        out.append(
            Finding(
                "duplicate",
                f"{g.file} lines {_lines(g.lines)}: the same input and answer {len(g.lines)} times",
                "keep one copy: repeats overweight these examples",
                g.file,
                g.lines,
            )
        )
    for g in r.near_duplicates:
        out.append(
            Finding(
                "near_duplicate",
                f"{g.file} lines {_lines(g.lines)}: near-identical inputs (Jaccard >= {g.similarity:.2f}) "
                "with the same answer",
                "keep one, or make them genuinely different",
                g.file,
                g.lines,
            )
        )
    for g in r.conflicts:
        answers = " / ".join(repr(a) for a in dict.fromkeys(g.answers))
        out.append(
            Finding(
                "conflict",
                f"{g.file} lines {_lines(g.lines)}: the same input with different answers"
                + (f" ({answers})" if answers else ""),
                "decide the right answer and correct or drop the others",
                g.file,
                g.lines,
            )
        )
    for leak in r.leakage:
        how = "the same input" if leak.kind == "exact" else f"a near-identical input ({leak.similarity:.2f})"
        diff = "" if leak.same_answer else " (with a different answer)"
        out.append(
            Finding(
                "leakage",
                f"eval line {leak.eval_line} has {how} as train line {leak.train_line}{diff}",
                "drop it from eval or train: a leaked example measures memory, not skill",
                "eval",
                [leak.eval_line],
            )
        )
    for o in r.over_limit:
        out.append(
            Finding(
                "too_long",
                f"{o.file} line {o.line}: {o.tokens:,} tokens > context limit {r.context_limit:,}",
                "shorten or drop it, or raise --context-limit; training would truncate it",
                o.file,
                [o.line],
            )
        )
    if r.labels and r.labels.imbalance > IMBALANCE_RATIO:
        common, rare = next(iter(r.labels.counts)), list(r.labels.counts)[-1]
        out.append(
            Finding(
                "imbalance",
                f"labels are imbalanced: {common!r} has {r.labels.counts[common]} examples, {rare!r} "
                f"{r.labels.counts[rare]} ({r.labels.imbalance:.1f}x > {IMBALANCE_RATIO:.0f}x)",
                "collect more of the rare labels, and read macro-F1 beside accuracy",
                "train",
            )
        )
    if r.labels and r.labels.unseen_in_train:
        out.append(
            Finding(
                "unseen_label",
                f"eval labels no train example has: {', '.join(map(repr, r.labels.unseen_in_train))}",
                "add train examples for them, or check them for typos",
                "eval",
            )
        )
    if r.volume.level in ("collect_more", "prompting"):
        out.append(Finding("volume", r.volume.advice, "collect more examples before fine-tuning", "train"))
    return out
