"""LLM-as-judge: a model scores each answer, pairwise against the reference or on a 1-5 rubric.

`judge_metric(...)` builds a `JudgeMetric`, a `Metric` like every other: its per-example scores come
out of `Metric.scores(predictions, examples)` and feed the same confidence intervals and paired tests.
Unlike the others it has a batched path (every judge prompt of one call to `scores` goes to the
judge's `generate` in a few batches) and a report (`metric.judge_report()`): token cost, the share of
pairwise examples whose two orders agree, replies that could not be parsed, agreement with chrF.

Modes (docs/metrics.md, "judge"):

- pairwise: the answer and the reference are shown to the judge in both orders (answer first, then
  reference first) to cancel position bias. Both orders agree: win 1, tie 0.5, loss 0. They
  disagree: 0.5. An answer identical to the reference scores 0.5 and an empty answer 0, without
  asking the judge.
- rubric: a 1-5 score against the task's rubric (with the reference shown as a guide), mapped to
  0-1 as (s - 1) / 4. An empty answer scores 0 without asking the judge.

A reply that cannot be parsed is never scored as if it could: its example scores `unparsable_score`
(default 0.5: a tie in pairwise mode, the middle of the scale in rubric mode) and is counted in the
report with a sample of the replies. In pairwise mode one unparsable order makes the example
unparsable (one order alone does not cancel position bias).

Judge replies are cached on disk, keyed by a hash of the judge's id, the mode, the prompt and
`max_new_tokens`: a rerun asks the judge nothing (and does not even load it). The cache is
append-only JSONL, one reply a line; a torn last line (a crash mid-write) is skipped on reading and
the next write starts on a new line. It holds the raw replies, so a better parser applies to them.

Only the standard library and numpy are imported here; the judge model is loaded on first use.
Importing this module registers `judge` in `eval.metrics.METRICS` (with chrF beside it in SECONDARY);
`tunewise.eval` imports it, so any import of the metrics sees it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunewise.data.example import Example
from tunewise.eval.metrics import METRICS, SECONDARY, Metric, MetricError, chrf_score
from tunewise.models.base import ChatModel, Messages, Progress

MODES = ("pairwise", "rubric")
CACHE_FORMAT = 1
MAX_TASK_CHARS = 3000
"""The task (system message and user turns) shown to the judge is clipped to this many characters."""
MAX_ANSWER_CHARS = 2000
"""Each answer shown to the judge is clipped to this many characters."""
UNPARSABLE_SAMPLES = 5
"""How many unparsable replies the report quotes."""
CONSISTENCY_WARNING = 0.6
"""`JudgeReport.warnings` flags pairwise position consistency below this."""
UNPARSABLE_WARNING = 0.1
"""`JudgeReport.warnings` flags a larger share of unparsable judged examples."""

JUDGE_SYSTEM = "You are a careful, impartial judge of answers. Give your verdict first."

PAIRWISE_PROMPT = """[Task]
{task}

[Answer A]
{a}

[Answer B]
{b}

Which answer is better for the task, A or B? Criteria: it follows the instruction; it is correct and complete for the input and adds nothing false; it is fluent and in the expected style. Reply with one letter first, A or B, then at most one sentence why."""

RUBRIC_PROMPT = """[Task]
{task}

[Reference answer]
{reference}

[Answer to score]
{answer}

Score the answer to score from 1 (poor) to 5 (excellent). Rubric: {rubric}
Also consider: it follows the instruction; it matches the reference answer's style and content; it is fluent. Reply with the score first, one digit from 1 to 5, then at most one sentence why."""

RUBRIC_PROMPT_NO_REFERENCE = """[Task]
{task}

[Answer to score]
{answer}

Score the answer from 1 (poor) to 5 (excellent). Rubric: {rubric}
Also consider: it follows the instruction; it is fluent. Reply with the score first, one digit from 1 to 5, then at most one sentence why."""
"""The question comes last, after the material: a small judge then answers it instead of continuing the task."""


# -- parsing ------------------------------------------------------------------------------------

_LABEL = r"(?i:(?:my\s+|the\s+|final\s+)*(?:verdict|answer|winner|choice|decision|output|judg?ement|result|better(?:\s+answer)?|best(?:\s+answer)?)\s*(?:is|:|-|=)?\s*)"
_SIDE = r"(?i:(?:answer|response|assistant|option|output|candidate)\s+)"
_WRAP = r"[\s\[\](){}*_`\"'“”‘’#>«»]*"
# After a leading letter: the end, punctuation, or a word that makes it a verdict ("A is better",
# "A because"), so that the article in "A good answer is B" is not read as a verdict.
_AFTER_LETTER = r"(?=[\s\]\)*_`\"'”’]*(?:$|[.,:;!\-–—]|(?i:is|wins|because|since|as|was|seems|clearly)\b))"
_LEADING = re.compile(rf"^{_WRAP}(?:{_LABEL})?{_WRAP}(?:{_SIDE})?{_WRAP}([AB]){_AFTER_LETTER}")
_LEADING_TIE = re.compile(rf"^{_WRAP}(?:{_LABEL})?{_WRAP}(?i:(tie|equal|both|neither|same)\b)")
_BRACKETS = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)
_BETTER = re.compile(
    rf"(?:\b{_SIDE})?\b([AB])\b(?i:\s+(?:is|was|seems|looks)\s+(?:(?:much|clearly|slightly|somewhat|a\s+bit|the|a)\s+)*"
    r"(?:better|best|preferred|superior|stronger|winner|more\s+\w+))"
)
_PREFER = re.compile(
    r"(?i:\b(?:prefer|choose|pick|select|winner\s+is|(?:better|best|stronger)\s+(?:answer|response|one)\s+is|"
    rf"verdict\s*(?:is|:)))\s*{_WRAP}(?:{_SIDE})?\(?\b([AB])\b"
)
_TIE_ANYWHERE = re.compile(r"(?i:\b(?:it'?s\s+a\s+tie|tie|equally\s+(?:good|bad|well|poor)|both\s+(?:are\s+)?equally)\b)")


def parse_pairwise(reply: str) -> str | None:
    """The verdict in a judge's reply: "A", "B" or "tie"; None when it cannot be read.

    Read in this order: an MT-Bench style "[[A]]" ("[[C]]" is a tie); a verdict leading the reply
    ("A", "**B**", "Verdict: A", "Answer B is better", "Tie"); "A is better", "I prefer B",
    "the better answer is A" anywhere. A reply naming both letters that way, or whose leading verdict
    those phrases contradict, is unparsable.

    >>> [parse_pairwise(r) for r in ["A", "[[B]]", "Answer A is better.", "b", "A good start, but the better answer is B", "hmm"]]
    ['A', 'B', 'A', 'B', 'B', None]
    """
    text = reply.strip()
    if not text:
        return None
    found = {m.upper() for m in _BRACKETS.findall(text)}
    found = {"tie" if f in ("C", "TIE") else f for f in found}
    if len(found) == 1:
        return found.pop()
    if found:
        return None
    if text.strip(" \t\n.*_`\"'[]()") in ("a", "b"):
        return text.strip(" \t\n.*_`\"'[]()").upper()
    first_line = next(line for line in text.splitlines() if line.strip())
    letters = {m.group(1) for m in _BETTER.finditer(text)} | {m.group(1) for m in _PREFER.finditer(text)}
    if m := _LEADING.match(first_line):
        return m.group(1) if letters <= {m.group(1)} else None  # "A is better. No, B is." contradicts itself
    if _LEADING_TIE.match(first_line):
        return "tie" if not letters else None
    if len(letters) == 1:
        return letters.pop()
    if not letters and _TIE_ANYWHERE.search(text):
        return "tie"
    return None


_NUMBER = r"(\d+(?:\.\d+)?)"
_OUT_OF = r"(?:\s*(?:/|out\s+of|of)\s*(\d+))?"
_RUBRIC_RULES = [
    re.compile(rf"\[\[\s*{_NUMBER}\s*(?:/\s*(\d+))?\s*\]\]"),  # [[4]]
    re.compile(rf"^{_WRAP}{_NUMBER}{_OUT_OF}(?!\w|\.\d)"),  # 4 / **4** / 4/5 leading the reply
    re.compile(rf"(?i:\b(?:score|grade|rating|mark)s?\s*(?:is|of|:|=|-)?\s*){_WRAP}{_NUMBER}{_OUT_OF}(?!\w|\.\d)"),
    re.compile(r"(\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*(\d+)"),  # 4/5, 4 out of 5
    re.compile(rf"(?i:\b(?:give|gave|rate|rated|award|awarded)\s+(?:it|this|the\s+answer|this\s+answer)?\s*(?:an?\s+)?){_NUMBER}(?!\w|\.\d)"),
]


def parse_rubric(reply: str) -> float | None:
    """The 1-5 score in a judge's reply, or None when it cannot be read or is off the scale.

    Read in this order, on the first non-empty line and then on the whole reply: "[[4]]"; a number
    leading the reply ("4", "**4**", "4/5"); "Score: 4" (also rating, grade); "4/5" or "4 out of 5";
    "I give it a 4". A number out of another scale ("8/10") or outside 1-5 is unparsable, not rescaled.

    >>> [parse_rubric(r) for r in ["4", "Score: 4", "4/5", "[[2]]", "Rating: 3 out of 5.", "8/10", "good"]]
    [4.0, 4.0, 4.0, 2.0, 3.0, None, None]
    """
    text = reply.strip()
    if not text:
        return None
    first_line = next(line for line in text.splitlines() if line.strip())
    for where in (first_line, text):
        for rule in _RUBRIC_RULES:
            m = rule.search(where)
            if m is None:
                continue
            value = float(m.group(1))
            scale = m.group(2) if m.re.groups >= 2 else None
            if scale is not None and int(scale) != 5:
                return None
            return value if 1.0 <= value <= 5.0 else None
    return None


# -- prompts ------------------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} [...] {text[-half:]}"


def task_text(example: Example) -> str:
    """What the judge is told the task was: the system message and the conversation's user turns."""
    parts = [example.system] if example.system else []
    turns = example.turns
    if len(turns) == 1:
        parts.append(turns[0]["content"])
    else:
        parts.extend(f"{t['role'].capitalize()}: {t['content']}" for t in turns)
    return _clip("\n\n".join(parts), MAX_TASK_CHARS)


def pairwise_messages(example: Example, a: str, b: str) -> Messages:
    prompt = PAIRWISE_PROMPT.format(task=task_text(example), a=_clip(a, MAX_ANSWER_CHARS), b=_clip(b, MAX_ANSWER_CHARS))
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}]


def rubric_messages(example: Example, answer: str, rubric: str, show_reference: bool = True) -> Messages:
    template = RUBRIC_PROMPT if show_reference else RUBRIC_PROMPT_NO_REFERENCE
    prompt = template.format(
        rubric=rubric.strip(),
        task=task_text(example),
        reference=_clip(example.answer, MAX_ANSWER_CHARS),
        answer=_clip(answer, MAX_ANSWER_CHARS),
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}]


# -- cache --------------------------------------------------------------------------------------


@dataclass
class Reply:
    """One judge reply, as cached."""

    text: str
    prompt_tokens: int
    output_tokens: int


class JudgeCache:
    """Judge replies by key, in an append-only JSONL file.

    Each write appends whole lines with one `write` call; a torn last line left by a crash is skipped
    on reading (counted in `torn`), and the next write first ends it with a newline.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, Reply] = {}
        self.torn = 0
        self._size = -1
        self.refresh()

    def refresh(self) -> None:
        """Read the file again if it changed since it was read (another process or metric wrote to it)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == self._size:
            return
        raw = self.path.read_bytes()
        self._size = len(raw)
        self.entries, self.torn = {}, 0
        for line in raw.split(b"\n"):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if row.get("format") == CACHE_FORMAT:
                    self.entries[row["key"]] = Reply(str(row["text"]), int(row["prompt_tokens"]), int(row["output_tokens"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                self.torn += 1

    def get(self, key: str) -> Reply | None:
        return self.entries.get(key)

    def put_many(self, items: Sequence[tuple[str, Reply]]) -> None:
        if not items:
            return
        lines = "".join(
            json.dumps({"format": CACHE_FORMAT, "key": key, **asdict(reply)}, ensure_ascii=False) + "\n" for key, reply in items
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            if f.tell() > 0 and not self._ends_with_newline():
                lines = "\n" + lines
            f.write(lines.encode("utf-8"))
            f.flush()
        self.entries.update(items)
        self._size = -1  # read again before the next batch of calls: others may have appended too

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, 2)
            return f.read(1) == b"\n"


def cache_key(judge_id: str, mode: str, messages: Messages, max_new_tokens: int) -> str:
    payload = json.dumps(
        {"judge": judge_id, "mode": mode, "messages": messages, "max_new_tokens": max_new_tokens},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# -- report -------------------------------------------------------------------------------------


@dataclass
class JudgeReport:
    """What stands behind the judge's scores on one set of answers (`JudgeMetric.judge_report`)."""

    judge: str
    mode: str
    n: int
    """Examples scored."""
    mean: float
    """Mean judge score (the metric's value)."""
    replies: int
    """Judge replies behind the scores (from the cache or new)."""
    new_calls: int
    """Replies the judge was asked for in this scoring (0 when every reply was cached)."""
    cached: int
    """Replies read from the cache."""
    prompt_tokens: int
    """Judge tokens behind these scores, cached replies included (what judging this set costs)."""
    output_tokens: int
    dollars: float | None
    """prompt and output tokens at the prices given (input_per_1m, output_per_1m); None without them."""
    unparsable: int
    """Examples scored `unparsable_score` because a judge reply could not be read."""
    unparsable_replies: int
    unparsable_score: float
    skipped: int
    """Examples scored without the judge: an empty answer (0), or in pairwise mode the reference itself (0.5)."""
    consistency: float | None
    """Pairwise: share of examples with both orders parsed whose two verdicts agree; None in rubric mode."""
    consistent: int
    consistency_n: int
    """Pairwise examples with both orders parsed (the consistency rate's denominator)."""
    verdicts: dict[str, int]
    """Pairwise: win / tie / loss / inconsistent / unparsable / skipped. Rubric: 1-5 / unparsable / skipped."""
    chrf_spearman: float | None
    """Rank correlation of per-example judge scores with chrF (best over references); None when undefined."""
    chrf_pearson: float | None
    unparsable_samples: list[dict[str, Any]] = field(default_factory=list)
    """Up to 5: the example's index and the reply that could not be read."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def warnings(self) -> list[str]:
        """Reasons not to trust these scores, each a sentence (empty when none applies).

        Position consistency under 0.6 in pairwise mode (a judge that picks a side at random agrees
        with itself about half the time), more than 10% unparsable examples, or the same score for
        every judged answer.
        """
        out = []
        if self.consistency is not None and self.consistency < CONSISTENCY_WARNING:
            out.append(
                f"judge {self.judge} gave the same verdict with the answers swapped on only {self.consistency:.0%} of "
                f"{self.consistency_n} examples: its verdicts follow the position more than the answer, and the "
                "inconsistent examples score 0.5; use a stronger judge before trusting these scores"
            )
        judged = self.n - self.skipped
        if judged and self.unparsable / judged > UNPARSABLE_WARNING:
            out.append(
                f"judge {self.judge}: {self.unparsable} of {judged} judged examples got a reply that could not be read "
                f"(scored {self.unparsable_score:g}); see unparsable_samples, or give it more max_new_tokens or a stronger judge"
            )
        kinds = {k for k in self.verdicts if k != "skipped"}
        if judged > 1 and len(kinds) == 1 and not kinds & {"inconsistent", "unparsable"}:  # those are flagged above
            out.append(f"judge {self.judge} gave every judged answer the same verdict ({kinds.pop()}): it cannot tell these answers apart")
        return out

    def summary(self) -> str:
        """One line for a log or a report."""
        parts = [f"judge {self.judge} ({self.mode}): {self.replies} replies, {self.new_calls} new"]
        parts.append(f"{self.prompt_tokens:,}/{self.output_tokens:,} tokens in/out")
        if self.dollars is not None:
            parts.append(f"${self.dollars:.4f}")
        if self.consistency is not None:
            parts.append(f"position-consistent {self.consistency:.0%} of {self.consistency_n}")
        parts.append(f"unparsable {self.unparsable}/{self.n}")
        if self.chrf_spearman is not None:
            parts.append(f"Spearman with chrF {self.chrf_spearman:+.2f}")
        return "; ".join(parts)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    value = float(np.corrcoef(a, b)[0, 1])
    return value if math.isfinite(value) else None


def correlations(judge_scores: Sequence[float], other_scores: Sequence[float]) -> tuple[float | None, float | None]:
    """(Spearman, Pearson) correlation; None where undefined (fewer than 3 examples, a constant side).

    >>> round(correlations([0, 0.5, 1, 1], [0.1, 0.2, 0.3, 0.9])[0], 4)
    0.9487
    """
    a, b = np.asarray(judge_scores, dtype=float), np.asarray(other_scores, dtype=float)
    return _pearson(_ranks(a), _ranks(b)), _pearson(a, b)


# -- the metric ---------------------------------------------------------------------------------


@dataclass
class _Item:
    """One example's judgement: the prompts it needs (one or two) and how to score their replies."""

    keys: list[str]
    messages: list[Messages]
    fixed: float | None = None
    """A score given without the judge (skipped examples)."""


class Judge:
    """The judging machinery behind a JudgeMetric: prompts, cache, batched calls, scores, report."""

    def __init__(
        self,
        model: ChatModel | str,
        judge_id: str,
        mode: str,
        rubric: str | None,
        max_new_tokens: int,
        cache_path: Path,
        batch_size: int,
        unparsable_score: float,
        input_per_1m: float | None,
        output_per_1m: float | None,
        show_reference: bool,
        model_options: dict[str, Any],
    ) -> None:
        self._model = model if not isinstance(model, str) else None
        self.spec = model if isinstance(model, str) else None
        self.judge_id = judge_id
        self.mode = mode
        self.rubric = rubric
        self.max_new_tokens = max_new_tokens
        self.cache_path = cache_path
        self._cache: JudgeCache | None = None
        self.batch_size = batch_size
        self.unparsable_score = unparsable_score
        self.prices = (input_per_1m, output_per_1m)
        self.show_reference = show_reference
        self.model_options = model_options
        self.progress: Progress | None = None
        """Optional: called with the number of judge replies just generated (for a progress bar)."""
        self.last_report: JudgeReport | None = None

    @property
    def cache(self) -> JudgeCache:
        if self._cache is None:
            self._cache = JudgeCache(self.cache_path)
        return self._cache

    @property
    def model(self) -> ChatModel:
        """The judge model, loaded on first use (a fully cached rerun never loads it)."""
        if self._model is None:
            from tunewise.models.resolve import load_model

            self._model = load_model(self.spec, **self.model_options)
        return self._model

    def _item(self, prediction: str, example: Example) -> _Item:
        if self.mode == "pairwise":
            if prediction.strip() == example.answer.strip():
                return _Item([], [], fixed=0.5)
            if not prediction.strip():
                return _Item([], [], fixed=0.0)
            conversations = [pairwise_messages(example, prediction, example.answer), pairwise_messages(example, example.answer, prediction)]
        else:
            if not prediction.strip():
                return _Item([], [], fixed=0.0)
            conversations = [rubric_messages(example, prediction, self.rubric or "", self.show_reference)]
        keys = [cache_key(self.judge_id, self.mode, m, self.max_new_tokens) for m in conversations]
        return _Item(keys, conversations)

    def _fill(self, items: list[_Item]) -> int:
        """Ask the judge for every reply not in the cache, in batches; returns how many it was asked."""
        if any(self.cache.get(k) is None for item in items for k in item.keys):
            self.cache.refresh()
        missing: dict[str, Messages] = {}
        for item in items:
            for key, messages in zip(item.keys, item.messages):
                if self.cache.get(key) is None and key not in missing:
                    missing[key] = messages
        pending = list(missing.items())
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start : start + self.batch_size]
            generations = self.model.generate([m for _, m in chunk], self.max_new_tokens, self.progress)
            if len(generations) != len(chunk):
                raise MetricError(f"judge {self.judge_id}: {len(generations)} replies for {len(chunk)} prompts")
            # Saved batch by batch: an interrupted scoring keeps what it paid for.
            self.cache.put_many(
                [(key, Reply(g.text, int(g.prompt_tokens), int(g.output_tokens))) for (key, _), g in zip(chunk, generations)]
            )
        return len(pending)

    def score(self, predictions: Sequence[str], examples: Sequence[Example]) -> tuple[list[float], JudgeReport]:
        if len(predictions) != len(examples):
            raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples; give one per example")
        if not examples:
            raise ValueError("no examples to score")
        items = [self._item(p, ex) for p, ex in zip(predictions, examples)]
        already = {k for item in items for k in item.keys if self.cache.get(k) is not None}
        new_calls = self._fill(items)

        scores: list[float] = []
        verdicts: Counter[str] = Counter()
        tokens = [0, 0]
        unparsable = unparsable_replies = skipped = consistent = consistency_n = 0
        samples: list[dict[str, Any]] = []
        seen: set[str] = set()
        cached = 0
        for index, item in enumerate(items):
            if item.fixed is not None:
                scores.append(item.fixed)
                skipped += 1
                verdicts["skipped"] += 1
                continue
            replies = [self.cache.get(k) for k in item.keys]
            for key, reply in zip(item.keys, replies):
                if key not in seen:  # a prompt asked twice (duplicate examples) is paid for once
                    seen.add(key)
                    tokens[0] += reply.prompt_tokens
                    tokens[1] += reply.output_tokens
                    cached += key in already
            if self.mode == "pairwise":
                outcomes = [_outcome(parse_pairwise(replies[0].text), first=True), _outcome(parse_pairwise(replies[1].text), first=False)]
                bad = [r for r, o in zip(replies, outcomes) if o is None]
                if bad:
                    score, verdict = self.unparsable_score, "unparsable"
                else:
                    consistency_n += 1
                    if outcomes[0] == outcomes[1]:
                        consistent += 1
                        score, verdict = outcomes[0], {1.0: "win", 0.5: "tie", 0.0: "loss"}[outcomes[0]]
                    else:
                        score, verdict = 0.5, "inconsistent"
            else:
                value = parse_rubric(replies[0].text)
                bad = [replies[0]] if value is None else []
                if value is None:
                    score, verdict = self.unparsable_score, "unparsable"
                else:
                    score, verdict = (value - 1.0) / 4.0, f"{value:g}"
            if bad:
                unparsable += 1
                unparsable_replies += len(bad)
                if len(samples) < UNPARSABLE_SAMPLES:
                    samples.append({"index": index, "reply": bad[0].text[:200]})
            verdicts[verdict] += 1
            scores.append(score)

        chrf = [max(chrf_score(p, r) for r in ex.references) for p, ex in zip(predictions, examples)]
        spearman, pearson = correlations(scores, chrf)
        price_in, price_out = self.prices
        dollars = None
        if price_in is not None or price_out is not None:
            dollars = (tokens[0] * (price_in or 0.0) + tokens[1] * (price_out or 0.0)) / 1e6
        report = JudgeReport(
            judge=self.judge_id,
            mode=self.mode,
            n=len(scores),
            mean=float(np.mean(scores)),
            replies=len(seen),
            new_calls=new_calls,
            cached=cached,
            prompt_tokens=tokens[0],
            output_tokens=tokens[1],
            dollars=dollars,
            unparsable=unparsable,
            unparsable_replies=unparsable_replies,
            unparsable_score=self.unparsable_score,
            skipped=skipped,
            consistency=(consistent / consistency_n if consistency_n else None) if self.mode == "pairwise" else None,
            consistent=consistent,
            consistency_n=consistency_n,
            verdicts=dict(verdicts),
            chrf_spearman=spearman,
            chrf_pearson=pearson,
            unparsable_samples=samples,
        )
        self.last_report = report
        return scores, report


def _outcome(verdict: str | None, first: bool) -> float | None:
    """The answer's result from one order's verdict: 1 win, 0.5 tie, 0 loss (`first`: it was A)."""
    if verdict is None:
        return None
    if verdict == "tie":
        return 0.5
    return 1.0 if (verdict == "A") == first else 0.0


@dataclass(frozen=True)
class JudgeMetric(Metric):
    """A Metric whose scores come from a judge model, all of one set's prompts batched together."""

    judge: Judge | None = None

    def scores(self, predictions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        return self.judge.score(predictions, examples)[0]

    def judge_report(self, predictions: Sequence[str] | None = None, examples: Sequence[Example] | None = None) -> JudgeReport | None:
        """The report of the last `scores` call; or, given predictions and examples, of those (scored
        now: from the cache when they were scored before, with no judge call)."""
        if predictions is not None and examples is not None:
            return self.judge.score(predictions, examples)[1]
        return self.judge.last_report


def judge_metric(
    judge: ChatModel | str = "embedded",
    mode: str = "pairwise",
    rubric: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    max_new_tokens: int = 32,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    unparsable_score: float = 0.5,
    input_per_1m: float | None = None,
    output_per_1m: float | None = None,
    reference_in_rubric: bool = True,
    judge_id: str | None = None,
) -> JudgeMetric:
    """A model scores each answer: pairwise against the reference (both orders), or 1-5 on a rubric.

    `judge`: a model spec ("embedded", "openai:NAME", a path, a hub id) loaded on first use, or an
    already built ChatModel (then `judge_id`, default its name, keys the cache). `base_url` and
    `api_key_env` make it an OpenAI-compatible endpoint. `cache_dir` defaults to the user's cache
    (`paths.cache_dir("judge")`). `input_per_1m`/`output_per_1m` (dollars per million tokens) put a
    price on the judge's tokens in the report. `reference_in_rubric: false` hides the reference in
    rubric mode.
    """
    if mode not in MODES:
        raise MetricError(f"judge: mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "rubric" and not (isinstance(rubric, str) and rubric.strip()):
        raise MetricError("judge: mode rubric needs a rubric: metric_options: {mode: rubric, rubric: '<what a 5 looks like>'}")
    if mode == "pairwise" and rubric is not None:
        raise MetricError("judge: a rubric is only used in mode rubric; remove it or set mode: rubric")
    for name, value, low in (("max_new_tokens", max_new_tokens, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise MetricError(f"judge: {name} must be a whole number of at least {low}, got {value!r}")
    if isinstance(unparsable_score, bool) or not isinstance(unparsable_score, int | float) or not 0 <= unparsable_score <= 1:
        raise MetricError(f"judge: unparsable_score must be a number from 0 to 1, got {unparsable_score!r}")
    for name, price in (("input_per_1m", input_per_1m), ("output_per_1m", output_per_1m)):
        if price is not None and (isinstance(price, bool) or not isinstance(price, int | float) or not 0 <= price < math.inf):
            raise MetricError(f"judge: {name} must be a price of at least 0 (dollars per million tokens), got {price!r}")
    model_options = {k: v for k, v in {"base_url": base_url, "api_key_env": api_key_env}.items() if v is not None}
    if isinstance(judge, str):
        if not judge.strip():
            raise MetricError("judge: name a judge model, e.g. embedded or openai:gpt-4o-mini")
        if api_key_env is not None and base_url is None and not judge.startswith("openai:"):
            raise MetricError(f"judge: api_key_env applies to an API judge: write openai:NAME or give a base_url (judge is {judge!r})")
        if not model_options:
            from tunewise.models.resolve import ModelNotFound, spec_kind

            try:
                spec_kind(judge)
            except ModelNotFound as err:
                raise MetricError(f"judge: {err}") from None
        identity = judge_id or (f"{judge}@{base_url}" if base_url else judge)
    elif isinstance(judge, ChatModel):
        if model_options:
            raise MetricError("judge: base_url and api_key_env apply to a judge spec, not to an already built model")
        identity = judge_id or judge.name
    else:
        raise MetricError(f"judge: give a model spec or a ChatModel, got {type(judge).__name__}")
    from tunewise import paths

    folder = Path(cache_dir).expanduser() if cache_dir is not None else paths.cache_dir("judge")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", identity)[-40:].strip("._-") or "judge"
    cache_path = folder / f"{slug}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}.jsonl"
    engine = Judge(
        judge,
        identity,
        mode,
        rubric,
        max_new_tokens,
        cache_path,
        batch_size,
        float(unparsable_score),
        input_per_1m,
        output_per_1m,
        bool(reference_in_rubric),
        model_options,
    )

    def score_one(prediction: str, example: Example) -> float:
        return engine.score([prediction], [example])[0][0]

    description = (
        f"Judge {identity}: the answer against the reference, both orders (win 1, tie 0.5, loss 0)."
        if mode == "pairwise"
        else f"Judge {identity}: 1-5 on the task's rubric, as (score - 1) / 4."
    )
    return JudgeMetric("judge", score_one, binary=False, description=description, judge=engine)


# Registered on import (`tunewise.eval` imports this module, so every user of METRICS sees it): this
# module builds on eval.metrics, which therefore does not import it back.
METRICS["judge"] = judge_metric
SECONDARY["judge"] = ["chrf"]
