"""`tunewise init DATA`: write a commented task file from a data file.

Every value the data does not fix is a guess, and every guess is written with a comment saying why,
so the user can change it. The logic (`suggest_task`, `render_task_yaml`) is plain Python that the
web app (`tunewise ui`) reuses; the command only parses flags, asks and writes.

>>> s = suggest_answers(["rate_book", "play_music", "rate_book", "play_music"] * 10)
>>> s.metric, s.kind
('accuracy', 'labels')
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from tunewise.task import Change, Goal

LABEL_MAX_CLASSES = 50
"""More distinct answers than this are not read as labels."""
LABEL_MAX_WORDS = 4
SHORT_ANSWER_WORDS = 8
"""Mean answer length (words) under which answers are 'short' (facts, names, numbers)."""
JSON_SHARE = 0.8
"""Share of answers that must parse as a JSON object for the JSON metric."""
EVAL_FRACTION = 0.2
MAX_EVAL_EXAMPLES = 300
"""A held-out split larger than this costs time on every rung and narrows CIs little."""
SAMPLE_RECORDS = 5000
"""Answers read to suggest a metric (the file is streamed; the rest is counted only)."""


@dataclass
class MetricSuggestion:
    """The metric suggested for a set of answers, and why."""

    kind: str  # labels | json | short | free_text | empty
    metric: str
    why: str
    max_new_tokens: int = 64
    max_new_tokens_why: str = ""
    labels: list[str] = field(default_factory=list)


def _words(text: str) -> int:
    return len(text.split())


def _is_json_object(text: str) -> bool:
    text = text.strip()
    if not text.startswith(("{", "[")):
        return False
    try:
        return isinstance(json.loads(text), (dict, list))
    except ValueError:
        return False


def _answer_tokens(answers: list[str]) -> int:
    """95th percentile of the answers' length in tokens (about 4 characters a token)."""
    from tunewise.models.base import estimate_tokens

    lengths = sorted(estimate_tokens(a) for a in answers)
    return lengths[min(len(lengths) - 1, math.ceil(0.95 * len(lengths)) - 1)] if lengths else 16


def suggest_answers(answers: list[str], has_corpus: bool = False) -> MetricSuggestion:
    """Pick a registered metric from what the answers look like: labels, JSON, short facts or free text."""
    if not answers:
        return MetricSuggestion("empty", "exact_match", "no readable answers to look at; exact_match is the default")
    n = len(answers)
    p95 = _answer_tokens(answers)
    budget = max(8, int(p95 * 1.5) + 4)
    budget_why = f"the longest answers (95th percentile) are about {p95} tokens; 1.5x that leaves room"
    distinct = sorted(set(a.strip() for a in answers))
    mean_words = sum(_words(a) for a in answers) / n
    json_share = sum(_is_json_object(a) for a in answers) / n
    if json_share >= JSON_SHARE:
        return MetricSuggestion(
            "json",
            "json_fields",
            f"{json_share:.0%} of the answers are JSON; json_fields gives credit per matching (key, value) pair "
            "(json_valid is reported beside it)",
            budget,
            budget_why,
        )
    longest_label = max(_words(a) for a in distinct)
    if len(distinct) <= min(LABEL_MAX_CLASSES, max(2, n // 5)) and longest_label <= LABEL_MAX_WORDS:
        shown = ", ".join(distinct[:8]) + (", ..." if len(distinct) > 8 else "")
        return MetricSuggestion(
            "labels",
            "accuracy",
            f"{len(distinct)} distinct short answers over {n} examples look like labels ({shown}); "
            "accuracy counts exact label matches (macro_f1 is reported beside it)",
            max(8, p95 + 4),
            f"labels are at most about {p95} tokens; a few more let the model finish the word",
            labels=distinct,
        )
    if mean_words <= SHORT_ANSWER_WORDS:
        corpus = (
            "with a corpus the model will quote documents in sentences, and token_f1 gives partial credit for that"
            if has_corpus
            else "token_f1 gives partial credit for answers that say a little more or less"
        )
        return MetricSuggestion(
            "short",
            "token_f1",
            f"answers are short (mean {mean_words:.1f} words) and varied ({len(distinct)} distinct); {corpus} "
            "(exact_match and contains are reported beside it)",
            budget,
            budget_why,
        )
    return MetricSuggestion(
        "free_text",
        "chrf",
        f"answers are free text (mean {mean_words:.0f} words); chrF compares character n-grams, which tolerates "
        "rewording better than exact words (rouge_l is reported beside it). No judge metric is registered yet",
        budget,
        budget_why,
    )


@dataclass
class DataLook:
    """What reading a data file found: its format, how many examples, and the answers sampled."""

    path: Path
    format: str
    examples: int
    problems: int
    answers: list[str]
    system: str | None


def look_at(path: str | Path, format: str = "auto") -> DataLook:
    """Stream a data file once: the detected format, the example count, bad records, sampled answers."""
    from tunewise.data.formats import Problem, iter_records, resolve_format

    path = Path(path)
    fmt = resolve_format(path, format)
    examples = problems = 0
    answers: list[str] = []
    system = None
    for _, item in iter_records(path, fmt):
        if isinstance(item, Problem):
            problems += 1
            continue
        examples += 1
        if len(answers) < SAMPLE_RECORDS:
            answers.append(item.answer)
        if system is None and item.system:
            system = item.system
    return DataLook(path, fmt, examples, problems, answers, system)


def applicable_rungs(has_corpus: bool) -> list[str]:
    """Every rung that can run on this data: the RAG rungs need a corpus. The constrained variants
    are opt-in, as with `tunewise run --all` (add them to `ladder.rungs` by name)."""
    from tunewise.rungs import RUNGS

    return [name for name, rung in RUNGS.items() if not rung.opt_in and (has_corpus or not rung.needs_corpus)]


@dataclass
class Business:
    """The business answers: from flags, the questionnaire, or defaults (each marked as which)."""

    goals: list[str] = field(default_factory=list)
    calls_per_month: int | None = None
    requirements_change: str | None = None
    needs_fresh_facts: bool = False
    latency_budget_ms: float | None = None


@dataclass
class TaskDraft:
    """Everything `render_task_yaml` writes: values plus the reason for each guess."""

    name: str
    train: Path
    eval: Path | None
    corpus: Path | None
    look: DataLook
    suggestion: MetricSuggestion
    metric: str
    rungs: list[str]
    business: Business
    eval_fraction: float
    eval_fraction_why: str
    advice: str | None = None
    target: float | None = None


def safe_name(text: str) -> str:
    """A task name: letters, digits, '-', '_', '.'.

    >>> safe_name("My data (v2)")
    'My-data-v2'
    """
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return name or "task"


GENERIC_STEMS = {"train", "training", "data", "dataset", "examples", "all", "eval", "test", "dev"}


def name_for(path: Path) -> str:
    """The data file's name, or its folder's when the file is called train/data/... (intent/train.jsonl -> intent).

    >>> name_for(Path("examples/intent/train.jsonl")), name_for(Path("tickets.csv"))
    ('intent', 'tickets')
    """
    stem = safe_name(path.stem)
    if stem.lower() in GENERIC_STEMS and path.resolve().parent.name:
        return safe_name(path.resolve().parent.name)
    return stem


def suggest_eval_fraction(examples: int) -> tuple[float, str]:
    if examples <= 0:
        return EVAL_FRACTION, "the default share"
    held = examples * EVAL_FRACTION
    if held <= MAX_EVAL_EXAMPLES:
        return EVAL_FRACTION, (
            f"{EVAL_FRACTION:.0%} of {examples:,} examples = about {held:.0f} held out for scoring, "
            f"{examples - held:.0f} left to train and pick few-shot examples from"
        )
    fraction = round(max(MAX_EVAL_EXAMPLES / examples, 0.01), 3)
    return fraction, (
        f"{fraction} of {examples:,} examples = about {examples * fraction:.0f} held out: enough for a 95% CI of "
        "a few points, and every rung scores each of them, so more would only cost time"
    )


def suggest_task(
    train: str | Path,
    eval: str | Path | None = None,
    corpus: str | Path | None = None,
    business: Business | None = None,
    name: str | None = None,
    metric: str | None = None,
    rungs: list[str] | None = None,
    format: str = "auto",
) -> TaskDraft:
    """Read the data and fill in every field of a task, with the reason for each guess."""
    look = look_at(train, format)
    answers = list(look.answers)
    if eval is not None and len(answers) < SAMPLE_RECORDS:
        answers += look_at(eval, format).answers[: SAMPLE_RECORDS - len(answers)]
    suggestion = suggest_answers(answers, has_corpus=corpus is not None)
    fraction, why = (EVAL_FRACTION, "") if eval is not None else suggest_eval_fraction(look.examples)
    draft = TaskDraft(
        name=name or name_for(Path(train)),
        train=Path(train),
        eval=Path(eval) if eval is not None else None,
        corpus=Path(corpus) if corpus is not None else None,
        look=look,
        suggestion=suggestion,
        metric=metric or suggestion.metric,
        rungs=rungs or applicable_rungs(corpus is not None),
        business=business or Business(),
        eval_fraction=fraction,
        eval_fraction_why=why,
    )
    draft.advice = advice_line(draft)
    return draft


def situation_of(draft: TaskDraft) -> Any:
    from tunewise.advise import Situation

    b = draft.business
    n_train = draft.look.examples if draft.eval is not None else round(draft.look.examples * (1 - draft.eval_fraction))
    return Situation(
        goals=list(b.goals),
        n_examples=n_train,
        calls_per_month=b.calls_per_month,
        requirements_change=b.requirements_change,
        needs_fresh_facts=b.needs_fresh_facts,
        has_corpus=draft.corpus is not None,
        latency_budget_ms=b.latency_budget_ms,
    )


def advice_line(draft: TaskDraft) -> str | None:
    """The advisor's recommendation for these answers, in one line (None if it cannot advise)."""
    from tunewise.advise import advise
    from tunewise.errors import TunewiseError

    try:
        return advise(situation_of(draft)).headline
    except TunewiseError:
        return None


def _yaml(value: Any) -> str:
    """One YAML value on one line (JSON is valid YAML for these)."""
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value, ensure_ascii=False)


def _rel(path: Path, base: Path) -> str:
    """A path relative to the task file's folder when it is inside or near it, else absolute."""
    path, base = path.resolve(), base.resolve()
    try:
        rel = os.path.relpath(path, base)
    except ValueError:  # another drive on Windows
        return str(path)
    return rel if rel.split(os.sep).count("..") <= 1 else str(path)


def _line(key: str, value: str, comment: str, indent: int = 0, width: int = 30) -> str:
    text = " " * indent + f"{key}: {value}"
    return f"{text.ljust(width - 2)}  # {comment}" if comment else text


def render_task_yaml(draft: TaskDraft, out: Path) -> str:
    """The task file's text. Paths are written relative to `out`'s folder."""
    base = out.parent
    s, look, b = draft.suggestion, draft.look, draft.business
    task_file = _rel(out, Path.cwd())
    lines = [
        f"# tunewise run {task_file} --limit 50    (a quick look; drop --limit for the full decision)",
        "#",
        f"# Written by `tunewise init` from {look.path.name}. Every guess below says why in a comment:",
        "# change what is wrong. Paths are relative to this file.",
        _line("name", _yaml(draft.name), "used for run folders; taken from the data file's name"),
        "",
        "data:",
    ]
    fmt_why = f"detected from the records ({look.examples:,} examples" + (
        f", {look.problems} unreadable: run `tunewise audit` to see them)" if look.problems else ")"
    )
    if draft.eval is not None:
        lines += [
            _line("train", _yaml(_rel(draft.train, base)), f"{look.examples:,} examples to train on and pick few-shot examples from", 2),
            _line("eval", _yaml(_rel(draft.eval, base)), "held-out examples scored by every rung", 2),
        ]
    else:
        lines += [
            _line("file", _yaml(_rel(draft.train, base)), "no eval file given: this one file is split in two", 2),
            _line("eval_fraction", _yaml(draft.eval_fraction), draft.eval_fraction_why, 2),
        ]
    lines += [
        _line("format", _yaml(look.format), fmt_why, 2),
        _line("seed", "0", "fixes the split and every sampler, so reruns resume", 2),
        "",
    ]
    if draft.corpus is not None:
        lines += [_line("corpus", _yaml(_rel(draft.corpus, base)), "the documents the RAG rungs retrieve from"), ""]
    metric_why = s.why if draft.metric == s.metric else f"chosen by you (the data suggested {s.metric}: {s.why})"
    lines += [
        f"# metric: {metric_why}",
        f"metric: {draft.metric}",
        "# target: the score that is good enough; climbing stops at the cheapest rung that reaches it.",
        "# Unset: the ladder picks the best rung, and the cheapest not measurably worse than it.",
        _line("target", _yaml(draft.target), "e.g. 0.85 for accuracy") if draft.target is not None else "# target: 0.85",
        "# system_prompt: ...          # default: the data's own system message"
        + (" (found one)" if look.system else " (the data has none: consider writing one)"),
        _line("model", '"embedded"', "SmolLM2-135M-Instruct, shipped with tunewise; or a hub id, a folder, openai:NAME"),
        "",
        "business:",
    ]

    def answered(value: Any, default_why: str) -> str:
        return "your answer" if value not in (None, [], False) else default_why

    calls = b.calls_per_month if b.calls_per_month is not None else 10_000
    lines += [
        _line("goals", _yaml(list(b.goals)), answered(b.goals, "none given") + "; knowledge | freshness | style | format | behaviour | latency | cost | language", 2),
        _line("calls_per_month", _yaml(calls), answered(b.calls_per_month, "a guess (the default): set your volume, it drives every cost figure"), 2),
        _line("requirements_change", _yaml(b.requirements_change or Change.monthly.value), answered(b.requirements_change, "a guess (the default)") + "; never | yearly | monthly | weekly | daily", 2),
        _line("needs_fresh_facts", _yaml(bool(b.needs_fresh_facts)), answered(b.needs_fresh_facts or None, "a guess: answers do not need facts newer than training"), 2),
    ]
    if b.latency_budget_ms is not None:
        lines.append(_line("latency_budget_ms", _yaml(b.latency_budget_ms), "your answer: p95 latency the product tolerates", 2))
    else:
        lines.append("  # latency_budget_ms: 500     # p95 latency the product tolerates; unset: no budget")
    lines += [
        _line("horizon_months", "12", "a one-off training cost is spread over this many months", 2),
        "  pricing:                    # USD; gpt-4o-mini list prices (2024) as a stand-in. Set your provider's.",
        "    input_per_1m: 0.15",
        "    output_per_1m: 0.60",
        "    finetuned_input_per_1m: 0.30",
        "    finetuned_output_per_1m: 1.20",
        "    training_per_1m: 3.00",
        "    # gpu_hourly: 2.50          # self-hosting instead: $ per GPU hour",
        "",
        "ladder:",
    ]
    from tunewise.rungs import RUNGS

    skipped = [n for n, r in RUNGS.items() if r.needs_corpus and not r.opt_in and n not in draft.rungs and draft.corpus is None]
    rung_why = "cheapest first; " + ("every rung that applies" if not skipped else f"no corpus, so not {', '.join(skipped)}")
    lines += [
        _line("rungs", "[" + ", ".join(draft.rungs) + "]", rung_why, 2),
        _line("max_new_tokens", str(s.max_new_tokens), s.max_new_tokens_why, 2),
        "",
    ]
    if draft.advice:
        lines.append(f"# The advisor's rules, from these answers: {draft.advice}. `tunewise advise --task THIS_FILE` explains.")
    return "\n".join(lines) + "\n"


def next_commands(out: Path, draft: TaskDraft) -> list[str]:
    shown = _rel(out, Path.cwd())
    audit = f"tunewise audit {_rel(draft.train, Path.cwd())}" + (f" --eval {_rel(draft.eval, Path.cwd())}" if draft.eval else "")
    return [audit, f"tunewise estimate {shown}", f"tunewise run {shown} --limit 50", f"tunewise run {shown}"]


def business_from_answers(situation: Any) -> Business:
    return Business(
        goals=[g.value for g in situation.goals],
        calls_per_month=situation.calls_per_month,
        requirements_change=situation.requirements_change.value if situation.requirements_change else None,
        needs_fresh_facts=bool(situation.needs_fresh_facts),
        latency_budget_ms=situation.latency_budget_ms,
    )


@click.command("init")
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--eval", "eval_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Held-out examples; without it DATA is split.")
@click.option("--corpus", type=click.Path(exists=True, path_type=Path), help="Knowledge documents (JSONL with id/text, or a folder of .txt/.md).")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("task.yaml"), show_default=True, help="Task file to write.")
@click.option("--name", help="Task name [default: from DATA's file name].")
@click.option("--metric", help="Metric instead of the suggested one (a registered name).")
@click.option("--goal", "goals", multiple=True, type=click.Choice([g.value for g in Goal], case_sensitive=False), help="What customisation must achieve; repeat for several.")
@click.option("--calls-per-month", type=click.IntRange(min=0), help="Expected requests per month.")
@click.option("--changes", type=click.Choice([c.value for c in Change], case_sensitive=False), help="How often facts, rules or labels change.")
@click.option("--fresh/--no-fresh", "fresh", default=None, help="Answers need up-to-date facts.")
@click.option("--latency-ms", type=click.FloatRange(min=0, min_open=True), help="p95 latency budget.")
@click.option("-i/-I", "--interactive/--no-interactive", default=None, help="Ask the business questions [default: on a terminal, when no answer flag is given].")
@click.option("--force", is_flag=True, help="Overwrite an existing task file.")
def command(data, eval_path, corpus, out, name, metric, goals, calls_per_month, changes, fresh, latency_ms, interactive, force):
    """Write a commented task file from DATA: format, metric, rungs, eval split, business answers.

    Every guess is written with a comment saying why; edit the file, then run the command it prints.
    """
    from tunewise.advise import ask
    from tunewise.eval.metrics import METRICS
    from tunewise.ui import console, err_console

    if out.exists() and not force:
        raise click.ClickException(f"{out} exists; pass --force to overwrite it, or -o another path")
    if metric is not None and metric not in METRICS:
        raise click.ClickException(f"unknown metric {metric!r}; registered metrics: {', '.join(METRICS)}")
    business = Business(
        goals=[g.lower() for g in goals],
        calls_per_month=calls_per_month,
        requirements_change=changes.lower() if changes else None,
        needs_fresh_facts=bool(fresh),
        latency_budget_ms=latency_ms,
    )
    flags_given = bool(goals) or any(v is not None for v in (calls_per_month, changes, fresh, latency_ms))
    if interactive is None:
        interactive = not flags_given and sys.stdin.isatty()
    draft = suggest_task(data, eval_path, corpus, business, name=name, metric=metric)
    if interactive:
        known: dict[str, Any] = {"n_examples": situation_of(draft).n_examples, "has_corpus": corpus is not None}
        if goals:
            known["goals"] = business.goals
        for key, value in (("calls_per_month", calls_per_month), ("requirements_change", business.requirements_change),
                           ("needs_fresh_facts", fresh), ("latency_budget_ms", latency_ms)):  # fmt: skip
            if value is not None:
                known[key] = value
        err_console.print("[bold]A few questions about the product[/bold] (Enter keeps the default):")
        draft.business = business_from_answers(ask(known, prompt=click.prompt))
        draft.advice = advice_line(draft)
    text = render_task_yaml(draft, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    console.print(f"wrote {out}: {draft.look.format}, {draft.look.examples:,} examples, metric {draft.metric}, rungs {', '.join(draft.rungs)}", soft_wrap=True)
    if draft.advice:
        console.print(f"advisor: {draft.advice}", soft_wrap=True)
    console.print("next:\n  " + "\n  ".join(next_commands(out, draft)), soft_wrap=True)
