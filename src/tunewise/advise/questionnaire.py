"""The questions the advisor asks, the `Situation` their answers fill in, and the interactive prompt.

Every question is listed once in QUESTIONS: the interactive questionnaire asks them in that order and
every `Advice` reports them back as its checklist, each with the answer it took.

>>> s = Situation(goals=["style"], n_examples=300)
>>> s.goals, s.n_examples, s.needs_fresh_facts
([<Goal.style: 'style'>], 300, False)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Callable, Literal

import click

from tunewise.errors import TunewiseError
from tunewise.task import Change, Goal, Task


class AdviseError(TunewiseError):
    """A situation the advisor cannot use; the message names each bad answer and the fix."""


def _choices(enum: type[Enum]) -> str:
    return ", ".join(m.value for m in enum)


@dataclass
class Situation:
    """What the advisor knows about the problem. None means "unknown": thresholds on it are not applied.

    Three goals and three flags mean the same thing and are kept in step: the `freshness` goal and
    `needs_fresh_facts`, `language` and `new_language_or_modality`, `latency` and `want_smaller_faster`.
    """

    goals: list[Goal] = field(default_factory=list)
    """What customisation must achieve (tunewise.task.Goal values)."""
    n_examples: int | None = None
    """Quality examples (input + ideal output) available for training and evaluation; None: unknown."""
    calls_per_month: int | None = None
    """Expected requests per month; None: unknown."""
    requirements_change: Change | None = None
    """How often facts, rules or labels change; None: unknown."""
    needs_fresh_facts: bool = False
    """Answers need information newer than any training run."""
    has_corpus: bool | None = None
    """Documents holding the knowledge (product docs, clauses, standards) exist; None: unknown."""
    latency_budget_ms: float | None = None
    """p95 latency the product tolerates, in milliseconds; None: no stated budget."""
    style_critical: bool | None = None
    """A voice, tone or house style must be matched closely; None: unknown (a `style` goal counts)."""
    new_language_or_modality: bool = False
    """The model must handle a language or modality the base model barely knows."""
    multiple_distinct_tasks: bool = False
    """Several distinct specialised tasks or domains are served behind one endpoint."""
    want_smaller_faster: bool = False
    """The aim is a smaller or faster model than the current one."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        goals: list[Goal] = []
        for g in self.goals:
            try:
                goal = Goal(g.strip().lower() if isinstance(g, str) else g)
            except ValueError:
                problems.append(f"goals: unknown goal {g!r}; valid goals: {_choices(Goal)}")
                continue
            if goal not in goals:
                goals.append(goal)
        if self.requirements_change is not None and not isinstance(self.requirements_change, Change):
            try:
                self.requirements_change = Change(str(self.requirements_change).strip().lower())
            except ValueError:
                problems.append(
                    f"requirements_change: unknown value {self.requirements_change!r}; "
                    f"valid values: {_choices(Change)}"
                )
        for name in ("n_examples", "calls_per_month"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                problems.append(f"{name}: expected a whole number >= 0 or None (unknown), got {value!r}")
        if self.latency_budget_ms is not None and not (
            isinstance(self.latency_budget_ms, (int, float)) and self.latency_budget_ms > 0
        ):
            problems.append(f"latency_budget_ms: expected a number of milliseconds > 0, got {self.latency_budget_ms!r}")
        if problems:
            raise AdviseError(f"{len(problems)} problem(s) in the situation:\n  " + "\n  ".join(problems))
        # A goal and its flag say the same thing; keep them in step so rules and checklist agree.
        for goal, flag in _GOAL_FLAGS.items():
            if goal in goals or getattr(self, flag):
                setattr(self, flag, True)
                if goal not in goals:
                    goals.append(goal)
        self.goals = goals

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["goals"] = [g.value for g in self.goals]
        raw["requirements_change"] = self.requirements_change.value if self.requirements_change else None
        return raw


_GOAL_FLAGS = {
    Goal.freshness: "needs_fresh_facts",
    Goal.language: "new_language_or_modality",
    Goal.latency: "want_smaller_faster",
}


def situation_from_task(task: Task, n_examples: int | None = None) -> Situation:
    """The situation a task file describes. `n_examples` is the count of training examples, if known."""
    business = task.business
    return Situation(
        goals=list(business.goals),
        n_examples=n_examples,
        calls_per_month=business.calls_per_month,
        requirements_change=business.requirements_change,
        needs_fresh_facts=business.needs_fresh_facts,
        has_corpus=task.corpus is not None,
        latency_budget_ms=business.latency_budget_ms,
    )


# -- questions --------------------------------------------------------------------------------

Kind = Literal["goals", "count", "number", "change", "yes_no", "yes_no_unknown"]


@dataclass(frozen=True)
class Question:
    field: str
    """The Situation field the answer fills."""
    text: str
    kind: Kind


QUESTIONS: list[Question] = [
    Question("goals", f"What must customisation achieve? ({_choices(Goal)}; several allowed)", "goals"),
    Question("n_examples", "How many quality examples (input + ideal output) do you have?", "count"),
    Question("calls_per_month", "How many requests per month do you expect?", "count"),
    Question("requirements_change", f"How often do the facts, rules or labels change? ({_choices(Change)})", "change"),
    Question("needs_fresh_facts", "Do answers need information newer than any training run?", "yes_no"),
    Question("has_corpus", "Do you have the documents that hold the knowledge (a corpus)?", "yes_no_unknown"),
    Question("latency_budget_ms", "What p95 latency can the product tolerate, in milliseconds?", "number"),
    Question("style_critical", "Must the output match a voice, tone or house style closely?", "yes_no_unknown"),
    Question("new_language_or_modality", "Is a language or modality involved that the base model barely knows?", "yes_no"),
    Question("multiple_distinct_tasks", "Does one endpoint serve several distinct specialised tasks or domains?", "yes_no"),
    Question("want_smaller_faster", "Do you want a smaller or faster model than the current one?", "yes_no"),
]


def format_answer(value: Any) -> str:
    """How an answer reads in the checklist.

    >>> format_answer(None), format_answer(True), format_answer([Goal.style, Goal.format]), format_answer(12000)
    ('unknown', 'yes', 'style, format', '12,000')
    """
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(g.value for g in value) or "none"
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def checklist(situation: Situation) -> list[tuple[Question, str]]:
    """Every question with the answer the situation gives it."""
    return [(q, format_answer(getattr(situation, q.field))) for q in QUESTIONS]


# -- interactive ------------------------------------------------------------------------------

_UNKNOWN = {"", "?", "unknown", "dont know", "don't know", "n/a"}
_YES = {"y", "yes", "true", "1"}
_NO = {"n", "no", "false", "0"}


def parse_answer(kind: Kind, raw: str) -> Any:
    """One typed answer; raises click.BadParameter (the prompt asks again) naming the valid answers.

    >>> parse_answer("goals", "style, knowledge"), parse_answer("count", "12,000"), parse_answer("yes_no_unknown", "")
    ([<Goal.style: 'style'>, <Goal.knowledge: 'knowledge'>], 12000, None)
    """
    text = raw.strip().lower()
    if kind == "goals":
        words = [w for w in text.replace(",", " ").split() if w not in ("none", "-")]
        bad = [w for w in words if w not in {g.value for g in Goal}]
        if bad:
            raise click.BadParameter(f"unknown goal(s) {', '.join(bad)}; valid goals: {_choices(Goal)}")
        return [Goal(w) for w in dict.fromkeys(words)]
    if kind in ("count", "number"):
        if text in _UNKNOWN:
            return None
        try:
            value = float(text.replace(",", "").replace("_", ""))
        except ValueError:
            raise click.BadParameter(f"expected a number or empty for unknown, got {raw!r}") from None
        if kind == "count":
            if value < 0 or not value.is_integer():
                raise click.BadParameter(f"expected a whole number >= 0, got {raw!r}")
            return int(value)
        if value <= 0:
            raise click.BadParameter(f"expected a number > 0, got {raw!r}")
        return value
    if kind == "change":
        if text in _UNKNOWN:
            return None
        if text not in {c.value for c in Change}:
            raise click.BadParameter(f"unknown value {raw!r}; valid values: {_choices(Change)}, or empty for unknown")
        return Change(text)
    if text in _YES:
        return True
    if text in _NO:
        return False
    if kind == "yes_no_unknown" and text in _UNKNOWN:
        return None
    valid = "yes or no" + (", or empty for unknown" if kind == "yes_no_unknown" else "")
    raise click.BadParameter(f"expected {valid}, got {raw!r}")


_HINTS: dict[Kind, str] = {
    "goals": "empty for none",
    "count": "empty if unknown",
    "number": "empty if none",
    "change": "empty if unknown",
    "yes_no": "y/n",
    "yes_no_unknown": "y/n, empty if unknown",
}


def ask(known: dict[str, Any] | None = None, prompt: Callable[..., Any] = click.prompt) -> Situation:
    """Ask every question in QUESTIONS not already answered in `known` and build the Situation.
    Prompts go to stderr so `--json` output stays clean; a bad answer is explained and asked again."""
    answers: dict[str, Any] = dict(known or {})
    for question in QUESTIONS:
        if question.field in answers:
            continue
        default = "n" if question.kind == "yes_no" else ""
        answers[question.field] = prompt(
            f"{question.text} [{_HINTS[question.kind]}]",
            default=default,
            show_default=False,
            value_proc=lambda raw, kind=question.kind: parse_answer(kind, raw),
            err=True,
        )
    return Situation(**answers)
