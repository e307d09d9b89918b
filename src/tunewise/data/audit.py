"""`tunewise audit`: everything wrong with a data file, reported at once, before any model runs.

One streaming pass per file keeps fingerprints, not texts (92 bytes an example, in flat arrays):
hashes of the normalised input and answer, a 64-value MinHash signature of the input (8 bits a
value: b-bit MinHash), the line and the token length. From them the audit reports, with line numbers:

errors    every line that cannot be read (see `tunewise.data.formats`); the audit fails on any. All are
          counted; the first MAX_KEPT_PER_KIND of each kind are kept (so are warnings), so a file of
          millions of bad lines needs no more memory than a clean one.
warnings  exact duplicates (same normalised input and answer), near-duplicates (MinHash Jaccard of
          byte 4-grams >= 0.9, same answer), conflicts (same input, different answers), train/eval
          leakage (exact, or near with the same answer), examples over the context limit, label
          imbalance, eval labels missing from train, and too little data.
stats     token lengths (min/p50/p95/max, real tokenizer or estimate), labels, volume verdict, and
          the hosted training cost under OpenAI's default-epochs rule (`tunewise.cost.default_epochs`).

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

from tunewise.cost.model import (
    MAX_DEFAULT_EPOCHS,
    MAX_TARGET_EXAMPLES,
    MIN_DEFAULT_EPOCHS,
    MIN_TARGET_EXAMPLES,
    TARGET_EPOCHS,
    default_epochs,
    hosted_training_cost,
)
from tunewise.data.example import Example
from tunewise.data.formats import PROBLEM_KINDS, Problem, iter_records, resolve_format
from tunewise.data.tokens import TokenCounter, tokenizer_for
from tunewise.errors import TunewiseError
from tunewise.task import Pricing

NEAR_DUPLICATE_JACCARD = 0.9
"""Inputs at least this similar (estimated Jaccard of byte 4-gram sets) are near-duplicates."""
NUM_PERM, BANDS = 64, 8
"""MinHash size and LSH bands (8 rows each): a pair at Jaccard 0.9 becomes a candidate with p=0.99."""
SHINGLE = 4
MAX_KEPT_PER_KIND = 1000
"""The report keeps the first this-many errors of each kind, and of each warning kind (groups, leaks,
long examples, lines of one group), with full counts beside them."""
LABEL_MAX_CLASSES = 50
"""Outputs look like labels when there are at most this many distinct ones ..."""
LABEL_MAX_CHARS = 40
"""... every one is a single line of at most this many characters ..."""
LABEL_MIN_PER_CLASS = 2
"""... and there are at least this many examples per distinct output on average."""
IMBALANCE_RATIO = 3.0
"""Warn when the most common label outnumbers the rarest by more than this."""
DEFAULT_PRICE_PER_1M: float = Pricing.model_fields["training_per_1m"].default
"""$ per 1M training tokens: the task's default `pricing.training_per_1m`."""
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
    signatures: np.ndarray, threshold: float = NEAR_DUPLICATE_JACCARD, rows: np.ndarray | None = None
) -> Iterator[tuple[int, int, float]]:
    """(i, j, similarity) with i < j for rows of (n, NUM_PERM) signatures at or above threshold.

    `rows` limits the search to those row indices (default: all); i and j are always row indices of
    `signatures`. Signatures may be full uint32 MinHash values or their high 8 bits (b-bit MinHash,
    Li & König 2010): two different minima then agree by chance 1 time in 256, which raises a
    measured similarity J by (1 - J) / 256, under 0.004, against the +-0.04 of 64 permutations.

    Locality-sensitive hashing: rows that agree on a whole band of 8 values are candidates, and
    candidates are confirmed on the full signature. Runs in about O(n log n), with O(n) temporaries.
    """
    rows = np.arange(len(signatures)) if rows is None else np.asarray(rows, dtype=np.int64)
    n = len(rows)
    per_band = NUM_PERM // BANDS
    seen: set[tuple[int, int]] = set()
    for band in range(BANDS):
        keys = np.zeros(n, dtype=np.uint64)
        for c in range(band * per_band, (band + 1) * per_band):  # one column at a time: (n,) temporaries
            keys = keys * np.uint64(0x100000001B3) ^ signatures[rows, c].astype(np.uint64)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        del keys
        cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
        del ordered
        starts, ends = np.concatenate(([0], cuts)), np.concatenate((cuts, [n]))
        big = ends - starts > 1
        for s, e in zip(starts[big], ends[big]):
            members = np.sort(rows[order[s:e]])
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
    """The group's lines in file order: the first MAX_KEPT_PER_KIND of them."""
    similarity: float = 1.0
    answers: list[str] = field(default_factory=list)  # conflicts: the differing answers, shortened
    count: int = 0
    """Lines in the whole group (len(lines) unless the group is longer than the lines kept)."""

    def __post_init__(self) -> None:
        self.count = self.count or len(self.lines)


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
    error_count: int = 0
    """Every error found; `errors` keeps the first MAX_KEPT_PER_KIND of each kind."""
    error_lines: int = 0
    """Lines with at least one error."""
    error_counts: dict[str, int] = field(default_factory=dict)  # Problem.kind -> errors of that kind
    warning_counts: dict[str, int] = field(default_factory=dict)  # Finding.kind -> warnings, kept or not
    extra_copies: dict[str, int] = field(default_factory=dict)  # duplicate/near_duplicate -> lines beyond the first

    @property
    def ok(self) -> bool:
        return not self.errors and not self.error_count

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
            "errors": self.error_count,
            "warnings": sum(self.warning_counts.values()),
            "duplicates": self.extra_copies.get("duplicate", 0),
            "near_duplicates": self.extra_copies.get("near_duplicate", 0),
            "conflicts": self.warning_counts.get("conflict", 0),
            "leakage": self.warning_counts.get("leakage", 0),
            "over_context_limit": self.warning_counts.get("too_long", 0),
            "volume": self.volume.level,
            "token_counter": self.token_counter,
            "tokens": {role: asdict(stats) for role, stats in self.tokens.items()},
            "labels": labels,
            "training_tokens": self.training.training_tokens,
            "training_cost": round(self.training.cost, 4),
        }


# -- scanning -------------------------------------------------------------------------------------


class _Scan:
    """Fingerprints of one file in flat arrays (92 bytes an example), never texts or dicts.

    Duplicates, conflicts and leakage are found afterwards by sorting the hashes; near-duplicates by
    LSH over the signatures. Train and eval append to one signature store, so leakage needs no copy.
    """

    def __init__(self, role: str, counter: TokenCounter, context_limit: int, signatures: array, text_keys: bool):
        self.role, self.counter, self.context_limit = role, counter, context_limit
        self.examples = 0
        self.errors: list[Problem] = []  # the first MAX_KEPT_PER_KIND of each kind
        self.error_counts: Counter[str] = Counter()
        self.error_lines = 0
        self._last_error_line = -1
        self.keys = array("q")  # normalised system + turns
        self.text_keys = array("q")  # normalised turns only (leakage); only when there is an eval file
        self.answers = array("q")
        self.lines = array("q")
        self.lengths = array("i")
        self.signatures = signatures  # NUM_PERM uint8 per example, shared with the other file
        self.offset = len(signatures) // NUM_PERM  # this file's first row in the store
        self.with_text_keys = text_keys
        self.over_limit: list[OverLimit] = []
        self.over_limit_count = 0
        self.labels: Counter[str] | None = Counter()

    def error(self, problem: Problem, path: Path) -> None:
        problem.path = str(path)
        self.error_counts[problem.kind] += 1
        if problem.line != self._last_error_line or not problem.line:
            self.error_lines += 1
            self._last_error_line = problem.line
        if self.error_counts[problem.kind] <= MAX_KEPT_PER_KIND:
            self.errors.append(problem)

    def add(self, ex: Example, line: int) -> None:
        self.examples += 1
        turns = normalize("\n".join(m["content"] for m in ex.turns))
        self.keys.append(_key(normalize(ex.system or "") + "\x1f" + turns))  # same input, same instructions
        if self.with_text_keys:
            self.text_keys.append(_key(turns))
        self.answers.append(_key(normalize(ex.answer)))
        self.lines.append(line)
        # the high 8 bits of each MinHash value (b-bit MinHash): 64 bytes, not 256, per example
        self.signatures.frombytes((minhash(turns) >> np.uint32(24)).astype(np.uint8).tobytes())

        prompt_tokens, answer_tokens = self.counter.count_example(ex)
        tokens = min(prompt_tokens + answer_tokens, 2**31 - 1)
        self.lengths.append(tokens)
        if tokens > self.context_limit:
            self.over_limit_count += 1
            if len(self.over_limit) < MAX_KEPT_PER_KIND:
                self.over_limit.append(OverLimit(self.role, line, tokens))

        label = ex.answer.strip()
        if self.labels is not None:
            if len(label) > LABEL_MAX_CHARS or "\n" in label or len(self.labels) > LABEL_MAX_CLASSES:
                self.labels = None
            else:
                self.labels[label] += 1

    def array(self, name: str) -> np.ndarray:
        return np.frombuffer(getattr(self, name), dtype=np.int64)

    def label_counts(self) -> Counter[str] | None:
        if not self.labels or len(self.labels) > LABEL_MAX_CLASSES:
            return None
        if self.examples < LABEL_MIN_PER_CLASS * len(self.labels):
            return None
        return self.labels

    def first_rows(self) -> np.ndarray:
        """Indices (into this file) of the first example of every distinct input, in file order."""
        return np.sort(np.unique(self.array("keys"), return_index=True)[1])

    def groups(self) -> tuple[list[Group], list[Group], dict[str, int]]:
        """(duplicates, conflicts, counts): exact same input with the same or different answers.

        The first MAX_KEPT_PER_KIND groups of each (by first line); counts has every group
        (`duplicate`, `conflict`) and the lines beyond each duplicate group's first (`duplicate_copies`).
        """
        counts = {"duplicate": 0, "conflict": 0, "duplicate_copies": 0}
        keys = self.array("keys")
        if len(keys) < 2:
            return [], [], counts
        order = np.argsort(keys, kind="stable")  # stable: each group's lines stay in file order
        ordered = keys[order]
        new = np.ones(len(ordered), dtype=bool)
        new[1:] = ordered[1:] != ordered[:-1]
        del ordered
        starts = np.flatnonzero(new)
        sizes = np.diff(np.append(starts, len(keys)))
        if not (sizes > 1).any():
            return [], [], counts
        group_of = np.cumsum(new) - 1
        answers = self.array("answers")[order]
        differs = answers != answers[starts][group_of]
        conflict = np.bincount(group_of, weights=differs, minlength=len(starts)) > 0
        del group_of, answers, differs
        lines = self.array("lines")
        first_line = lines[order[starts]]
        out = []
        for kind, mask in (("duplicate", (sizes > 1) & ~conflict), ("conflict", (sizes > 1) & conflict)):
            chosen = np.flatnonzero(mask)
            counts[kind] = len(chosen)
            if kind == "duplicate":
                counts["duplicate_copies"] = int((sizes[chosen] - 1).sum())
            chosen = chosen[np.argsort(first_line[chosen], kind="stable")][:MAX_KEPT_PER_KIND]
            out.append(
                [
                    Group(
                        self.role,
                        lines[order[starts[g] : starts[g] + min(int(sizes[g]), MAX_KEPT_PER_KIND)]].tolist(),
                        count=int(sizes[g]),
                    )
                    for g in chosen
                ]
            )
        return out[0], out[1], counts

    def near_duplicates(self, store: np.ndarray) -> tuple[list[Group], int, int]:
        """(groups, number of groups, lines beyond each group's first): distinct inputs linked by
        similar pairs (Jaccard >= 0.9) with the same answer."""
        rows = self.first_rows() + self.offset
        answers = self.array("answers")
        parent: dict[int, int] = {}

        def root(i: int) -> int:
            parent.setdefault(i, i)
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        lowest: dict[int, float] = {}
        pairs = []
        for i, j, sim in similar_pairs(store, rows=rows):
            if answers[i - self.offset] == answers[j - self.offset]:
                pairs.append((i, j, sim))
                parent[root(j)] = root(i)
        members: dict[int, list[int]] = {}
        for i in parent:
            members.setdefault(root(i), []).append(i)
        for i, _, sim in pairs:
            r = root(i)
            lowest[r] = min(lowest.get(r, 1.0), sim)
        lines = self.array("lines")
        groups = [
            Group(self.role, sorted(int(lines[i - self.offset]) for i in group), round(lowest[r], 3))
            for r, group in members.items()
        ]
        groups.sort(key=lambda g: g.lines)
        copies = sum(len(g.lines) - 1 for g in groups)
        for g in groups[:MAX_KEPT_PER_KIND]:
            g.lines = g.lines[:MAX_KEPT_PER_KIND]
        return groups[:MAX_KEPT_PER_KIND], len(groups), copies

    def token_stats(self) -> TokenStats | None:
        if not self.lengths:
            return None
        lengths = np.frombuffer(self.lengths, dtype=np.int32).astype(np.int64)
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
            scan.error(item, path)
        else:
            scan.add(item, line)
    if scan.examples == 0 and not scan.error_counts:
        scan.error(Problem(0, "no examples in the file", "give a file with at least one record", kind="file"), path)


def _leaks(train: _Scan, evals: _Scan, store: np.ndarray) -> tuple[list[Leak], int]:
    """(the first MAX_KEPT_PER_KIND leaks by eval line, every leak counted).

    Exact: an eval input (turns, any system prompt) equal to a train input; the first such train line.
    Near: similar (Jaccard >= 0.9, not identical) to a train input with the same answer.
    """
    found: dict[int, Leak] = {}
    train_text, eval_text = train.array("text_keys"), evals.array("text_keys")
    train_lines, eval_lines = train.array("lines"), evals.array("lines")
    train_answers, eval_answers = train.array("answers"), evals.array("answers")
    exact = np.zeros(len(eval_text), dtype=bool)
    if len(train_text) and len(eval_text):
        unique, first = np.unique(train_text, return_index=True)
        at = np.minimum(np.searchsorted(unique, eval_text), len(unique) - 1)
        exact = unique[at] == eval_text
        for e in np.flatnonzero(exact):
            t = first[at[e]]
            line = int(eval_lines[e])
            same = bool(train_answers[t] == eval_answers[e])
            found.setdefault(line, Leak(line, int(train_lines[t]), "exact", 1.0, same))
    if train.examples and evals.examples:
        rows = np.concatenate([train.first_rows() + train.offset, evals.first_rows() + evals.offset])
        near: dict[int, Leak] = {}
        for i, j, sim in similar_pairs(store, rows=rows):
            if i >= evals.offset or j < evals.offset:
                continue  # both in the same file
            t, e = i - train.offset, j - evals.offset
            line = int(eval_lines[e])
            if exact[e] or train_answers[t] != eval_answers[e]:
                continue
            if line not in near or sim > near[line].similarity:
                near[line] = Leak(line, int(train_lines[t]), "near", round(sim, 3), True)
        found.update(near)
    ordered = sorted(found.values(), key=lambda leak: leak.eval_line)
    return ordered[:MAX_KEPT_PER_KIND], len(ordered)


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
    per_epoch = int(np.minimum(np.asarray(lengths, dtype=np.int64), MAX_BILLED_TOKENS_PER_EXAMPLE).sum())
    epochs = default_epochs(n) if n else 0  # no readable example: nothing to train or bill
    rule = (
        f"OpenAI default epochs: {TARGET_EPOCHS}, or ceil({MIN_TARGET_EXAMPLES}/n) (max {MAX_DEFAULT_EPOCHS}) when "
        f"n x {TARGET_EPOCHS} < {MIN_TARGET_EXAMPLES}, or floor({MAX_TARGET_EXAMPLES}/n) (min {MIN_DEFAULT_EPOCHS}) "
        f"when n x {TARGET_EPOCHS} > {MAX_TARGET_EXAMPLES}; n = {n} gives {epochs}"
    )
    cost = hosted_training_cost(per_epoch, epochs, price_per_1m)
    return TrainingEstimate(n, epochs, per_epoch, per_epoch * epochs, price_per_1m, cost, rule)


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
    if eval_path is not None:
        eval_path = Path(eval_path)
        formats["eval"] = resolve_format(eval_path, format)
    store = array("B")  # every example's signature, train then eval
    train = _Scan("train", counter, context_limit, store, text_keys=eval_path is not None)
    _scan(train_path, formats["train"], train)
    scans = {"train": (train_path, train)}
    evals = None
    if eval_path is not None:
        evals = _Scan("eval", counter, context_limit, store, text_keys=True)
        _scan(eval_path, formats["eval"], evals)
        scans["eval"] = (eval_path, evals)
    signatures = np.frombuffer(store, dtype=np.uint8).reshape(-1, NUM_PERM)

    duplicates: list[Group] = []
    conflicts: list[Group] = []
    near: list[Group] = []
    counts: Counter[str] = Counter()
    copies: Counter[str] = Counter()
    for role, (path, scan) in scans.items():
        dups, confl, found = scan.groups()
        counts["duplicate"] += found["duplicate"]
        counts["conflict"] += found["conflict"]
        copies["duplicate"] += found["duplicate_copies"]
        if confl:
            quoted = _answers(path, formats[role], {line for g in confl[:50] for line in g.lines})
            for g in confl:
                g.answers = [quoted[line] for line in g.lines if line in quoted]
        near_groups, n_near, near_copies = scan.near_duplicates(signatures)
        counts["near_duplicate"] += n_near
        copies["near_duplicate"] += near_copies
        duplicates += dups[: MAX_KEPT_PER_KIND - len(duplicates)]
        conflicts += confl[: MAX_KEPT_PER_KIND - len(conflicts)]
        near += near_groups[: MAX_KEPT_PER_KIND - len(near)]
    leakage: list[Leak] = []
    if evals is not None:
        leakage, counts["leakage"] = _leaks(train, evals, signatures)
    counts["too_long"] = sum(scan.over_limit_count for _, scan in scans.values())

    labels = None
    train_labels = train.label_counts()
    if train_labels:
        eval_labels = (evals.labels if evals is not None else None) or Counter()
        label_counts = dict(train_labels.most_common())
        labels = LabelStats(
            counts=label_counts,
            eval_counts=dict(eval_labels.most_common()),
            imbalance=max(label_counts.values()) / min(label_counts.values()),
            unseen_in_train=sorted(set(eval_labels) - set(label_counts)),
        )

    tokens = {role: stats for role, (_, scan) in scans.items() if (stats := scan.token_stats())}
    error_counts: Counter[str] = Counter()
    for _, scan in scans.values():
        error_counts.update(scan.error_counts)
    report = AuditReport(
        train_path=str(train_path),
        eval_path=None if eval_path is None else str(eval_path),
        formats=formats,
        train_examples=train.examples,
        eval_examples=evals.examples if evals is not None else 0,
        errors=[p for _, scan in scans.values() for p in scan.errors],
        warnings=[],
        duplicates=duplicates,
        near_duplicates=near,
        conflicts=conflicts,
        leakage=leakage,
        tokens=tokens,
        token_counter=counter.source,
        token_note=counter.note,
        context_limit=context_limit,
        over_limit=[o for _, scan in scans.values() for o in scan.over_limit][:MAX_KEPT_PER_KIND],
        labels=labels,
        volume=volume_verdict(train.examples),
        training=training_estimate(np.frombuffer(train.lengths, dtype=np.int32), price_per_1m),
        error_count=sum(error_counts.values()),
        error_lines=sum(scan.error_lines for _, scan in scans.values()),
        error_counts={kind: error_counts[kind] for kind in PROBLEM_KINDS if error_counts[kind]},
        extra_copies={kind: n for kind, n in copies.items() if n},
    )
    report.warnings = _warnings(report)
    shown = Counter(w.kind for w in report.warnings)
    report.warning_counts = {kind: counts.get(kind, n) for kind, n in shown.items()}
    return report


def _lines(lines: list[int], total: int | None = None) -> str:
    total = len(lines) if total is None else total
    shown = ", ".join(map(str, lines[:12]))
    return shown + (f" and {total - 12:,} more" if total > 12 else "")


def _warnings(r: AuditReport) -> list[Finding]:
    """Every warning, one per group / leak / example, in reading order."""
    out: list[Finding] = []
    for g in r.duplicates:
        out.append(
            Finding(
                "duplicate",
                f"{g.file} lines {_lines(g.lines, g.count)}: the same input and answer {g.count:,} times",
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
                f"{g.file} lines {_lines(g.lines, g.count)}: the same input with different answers"
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
