"""distill: a student LoRA on the candidate's model, asked with the zero-shot prompt, trained on a
teacher candidate's answers instead of the gold answers (docs/distill.md).

Fine-tuning's other gain is fewer tokens a request: a student that learnt what a long prompt
(few-shot demonstrations, retrieved documents, a large hosted model) makes the teacher answer needs
only the short prompt. `distill@small` trains the student on model `small`; the teacher is any
candidate of the task (`ladder.distill.teacher`: few_shot, few_shot@large, rag, lora@large).

1. Lessons: every training input, then every input of `data.unlabelled` (production logs: user turns
   without answers) that is not a repeat, a training input or an eval input (an eval input would leak
   the test into training).
2. The teacher answers them, asked as its rung asks, never shown the gold answer. A teacher that shows
   training examples in its prompt (`shots`, few-shot) answers the training inputs in `folds` folds,
   each from the other folds' examples: otherwise its nearest demonstration of a training input is the
   input itself, with the gold answer the student must not see. The answers are saved in
   <run>/teacher/<teacher>.jsonl as each block finishes, keyed by content, so a rerun, a resumed run or
   `tunewise serve` asks nothing twice and, with every answer saved, does not even load the teacher.
3. Answers the metric marks invalid are dropped (a label outside the training labels, no JSON for a
   json_* metric, an empty answer); a label is written as the training data spells it. Answers that
   score 0 against a training input's gold answer are dropped unless `keep_disagreeing` (then the gold
   answers are never used).
4. The student trains on the rest (finetune/rung.train_adapter, in its own folder under the model's
   train folder) and is served like `lora`. Its one-off cost is its training plus the labelling: every
   teacher answer's tokens at the teacher model's prices.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewise.data.example import Example
from tunewise.errors import TunewiseError
from tunewise.models.base import Messages
from tunewise.rungs.base import LadderContext, Prepared, Rung, user_turns, with_system

if TYPE_CHECKING:
    from tunewise.task import Task

RungOf = Callable[[str], Rung]
"""The registry's lookup (tunewise.rungs.get_rung), handed in by the registry itself: the teacher is
another of its rungs, and importing the registry from a module it lists would be an import cycle."""
CACHE_FORMAT = 1
"""Version of a teacher-answer line; lines of another version are asked again."""
LABEL_METRICS = ("accuracy", "macro_f1")
JSON_METRICS = ("json_valid", "json_fields", "json_schema")


@dataclass(frozen=True)
class Lesson:
    """One input the teacher answers: the user's turns, and the training example when it has a gold answer."""

    turns: Messages
    gold: Example | None = None
    fold: int | None = None
    """The fold of a training input answered by a teacher that shows training examples; None: the full teacher."""

    @property
    def key(self) -> str:
        """The cache key: the input's content and whether the full teacher or a fold's answers it."""
        how = "full" if self.fold is None else "held-out"
        return hashlib.sha256(json.dumps([how, self.turns], ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:24]


def teacher_of(task: Task) -> str:
    """The teacher candidate as results name it (bare, or rung@model with `models:`)."""
    return task.candidate(task.ladder.distill.teacher)


# -- 1. lessons -------------------------------------------------------------------------------------


def fold_of(n: int, folds: int, seed: int) -> list[int]:
    """A seeded fold for each of n training inputs, as even as possible.

    >>> sorted(fold_of(7, 3, seed=0))
    [0, 0, 0, 1, 1, 2, 2]
    """
    order = list(range(n))
    random.Random(f"distill-folds-{seed}").shuffle(order)
    out = [0] * n
    for position, i in enumerate(order):
        out[i] = position % folds
    return out


def train_folds(ctx: LadderContext) -> list[int]:
    """The fold of each training input, for a teacher that shows training examples in its prompt."""
    if len(ctx.train) < 2:
        raise TunewiseError("distill: a teacher that shows training examples needs at least 2 of them, to answer "
                            "each from the others; give more training examples or another teacher")
    return fold_of(len(ctx.train), min(ctx.task.ladder.distill.folds, len(ctx.train)), ctx.seed)


def lessons(ctx: LadderContext, teacher_shows_examples: bool) -> tuple[list[Lesson], dict[str, int]]:
    """The inputs the teacher answers, and counts of the unlabelled inputs left out and why."""
    folds = train_folds(ctx) if teacher_shows_examples else None
    out = [Lesson(user_turns(ex.messages), ex, None if folds is None else folds[i]) for i, ex in enumerate(ctx.train)]
    skipped = {"unlabelled": 0, "repeated": 0, "in_eval": 0}
    path = ctx.task.data.unlabelled
    if path is None:
        return out, skipped
    from tunewise.data.formats import read_inputs

    seen = {lesson.key for lesson in out} | {Lesson(user_turns(ex.messages)).key for ex in ctx.train}
    evals = {ex.input_text.strip() for ex in ctx.eval}
    for messages in read_inputs(path):
        skipped["unlabelled"] += 1
        lesson = Lesson(user_turns(messages))
        if lesson.turns[-1]["content"].strip() in evals:
            skipped["in_eval"] += 1
        elif lesson.key in seen:
            skipped["repeated"] += 1
        else:
            seen.add(lesson.key)
            out.append(lesson)
    return out, skipped


# -- 2. the teacher's answers, saved as they come -----------------------------------------------------


class TeacherAnswers:
    """<run>/teacher/<teacher>.jsonl: one JSON line an answered input, appended (and synced) a block at
    a time. A damaged line (a torn last line after a crash, garbage) is dropped when read and its input
    asked again; the sound lines are rewritten first so the next append never lands on a torn line."""

    FIELDS = ("key", "answer", "prompt_tokens", "output_tokens", "seconds")

    def __init__(self, path: Path) -> None:
        self.path = path

    def _sound(self, row: Any) -> bool:
        if not isinstance(row, dict) or row.get("v") != CACHE_FORMAT or not all(k in row for k in self.FIELDS):
            return False
        numbers = [row[k] for k in ("prompt_tokens", "output_tokens", "seconds")]
        return isinstance(row["key"], str) and isinstance(row["answer"], str) and all(
            isinstance(x, int | float) and not isinstance(x, bool) and x >= 0 for x in numbers
        )

    def load(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        rows: dict[str, dict[str, Any]] = {}
        damaged = False
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                row = None
            if self._sound(row):
                rows.setdefault(row["key"], row)
            else:
                damaged = True
        if damaged or not data.endswith(b"\n"):
            from tunewise.ladder.results import atomic_write_text

            atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows.values()))
        return rows

    def append(self, rows: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps({"v": CACHE_FORMAT, **row}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def teacher_answers(ctx: LadderContext, teacher: str, rung: Rung, todo: list[Lesson]) -> dict[str, dict[str, Any]]:
    """Every lesson's answer row (key -> row), asking the teacher (candidate `teacher`, of rung `rung`)
    only for those not saved yet. The teacher (and its model) is prepared only when something is missing."""
    store = TeacherAnswers(ctx.run_dir / "teacher" / f"{teacher}.jsonl")
    saved = store.load()
    missing: dict[str, Lesson] = {}
    for lesson in todo:
        if lesson.key not in saved:
            missing.setdefault(lesson.key, lesson)
    if not missing:
        return saved
    from tunewise.ui import progress_bar

    teacher_ctx = ctx.for_candidate(teacher)
    max_new_tokens, block = teacher_ctx.task.ladder.max_new_tokens, 4 * teacher_ctx.task.ladder.batch_size
    groups: dict[int | None, list[Lesson]] = {}
    for lesson in missing.values():
        groups.setdefault(lesson.fold, []).append(lesson)
    with progress_bar(f"Teacher {teacher} answers", len(missing)) as advance:
        for fold in sorted(groups, key=lambda f: -1 if f is None else f):
            if fold is None:  # the teacher as the run prepared it (shared with its own rung's scoring)
                prepared = ctx.candidate(teacher) if ctx.candidate is not None else rung.prepare(teacher_ctx)
            else:  # demonstrations from the other folds only: never the input's own example
                pool = [ex for ex, f in zip(ctx.train, train_folds(ctx)) if f != fold]
                prepared = rung.prepare(replace(teacher_ctx, train=pool))
            lessons_left = groups[fold]
            for start in range(0, len(lessons_left), block):
                part = lessons_left[start : start + block]
                requests = [prepared.build(lesson.turns) for lesson in part]
                began = time.perf_counter()
                generations = prepared.model.generate([r.messages for r in requests], max_new_tokens, advance)
                seconds = (time.perf_counter() - began) / len(part)
                rows = [
                    {"key": lesson.key, "answer": g.text, "prompt_tokens": g.prompt_tokens, "output_tokens": g.output_tokens,
                     "seconds": seconds}
                    for lesson, g in zip(part, generations)
                ]
                store.append(rows)
                saved.update((row["key"], {"v": CACHE_FORMAT, **row}) for row in rows)
    return saved


# -- 3. which answers the student learns ---------------------------------------------------------------


def task_metric(task: Task) -> Any:
    from tunewise.eval.metrics import get_metric

    return get_metric(task.metric, base_dir=task.path.parent if task.path else None, **task.metric_options)


def valid_answer(answer: str, task: Task, metric: Any, labels: dict[str, str]) -> str | None:
    """The answer as the student learns it, or None when the metric's own validity check fails: a
    label outside the training labels (written back as the training data spells it), no JSON object
    or array for a json_* metric (no conforming one for json_schema), or nothing at all.

    >>> from tunewise.task import Task
    >>> task = Task(name="t", data={"train": "a", "eval": "b"}, metric="accuracy")
    >>> [valid_answer(a, task, None, {"play music": "play_music"}) for a in ("Intent: Play music.", "I'm sorry")]
    ['play_music', None]
    """
    from tunewise.eval.metrics import extract_json, normalize_label

    answer = answer.strip()
    if task.metric in LABEL_METRICS:
        return labels.get(normalize_label(answer))
    if task.metric == "json_schema":
        return answer if metric.per_example(answer, Example([{"role": "user", "content": ""}], answer)) >= 1 else None
    if task.metric == "json_fields":
        return answer if isinstance(extract_json(answer), dict) else None
    if task.metric == "json_valid":
        return answer if extract_json(answer) is not None else None
    return answer or None


def disagrees(answer: str, gold: Example, metric: Any) -> bool:
    """Whether a teacher answer scores no better against the gold answer than an empty answer would
    (0 on every built-in metric). A gold answer the metric cannot score counts as a disagreement."""
    from tunewise.eval.metrics import MetricError

    try:
        score = metric.per_example(answer, gold)
        floor = 0.0 if metric.higher_is_better else metric.per_example("", gold)
    except MetricError:
        return True
    return score <= floor if metric.higher_is_better else score >= floor


@dataclass
class Selection:
    examples: list[Example]
    """What the student trains on: the zero-shot prompt and the teacher's (cleaned) answer."""
    invalid: int = 0
    disagreeing_dropped: int = 0
    train_inputs: int = 0
    teacher_right_on_train: int = 0
    """Training inputs whose teacher answer is valid and agrees with the gold answer."""


def select(ctx: LadderContext, todo: list[Lesson], answers: dict[str, dict[str, Any]]) -> Selection:
    """The student's training examples from the teacher's answers, and what was dropped and why."""
    task, metric = ctx.task, task_metric(ctx.task)
    labels: dict[str, str] = {}
    if task.metric in LABEL_METRICS:
        from tunewise.eval.metrics import normalize_label

        for ex in ctx.train:
            labels.setdefault(normalize_label(ex.answer), ex.answer)
    keep_disagreeing = task.ladder.distill.keep_disagreeing
    out = Selection([])
    for lesson in todo:
        answer = valid_answer(answers[lesson.key]["answer"], task, metric, labels)
        wrong = lesson.gold is not None and (answer is None or disagrees(answer, lesson.gold, metric))
        if lesson.gold is not None:
            out.train_inputs += 1
            out.teacher_right_on_train += not wrong
        if answer is None:
            out.invalid += 1
        elif wrong and not keep_disagreeing:
            out.disagreeing_dropped += 1
        else:
            out.examples.append(Example(with_system(ctx.system_prompt, lesson.turns), answer))
    return out


# -- 4. the student ------------------------------------------------------------------------------------


def labelling_cost(ctx: LadderContext, teacher: str, rows: list[dict[str, Any]], finetuned: bool) -> float:
    """The teacher's answers at the teacher model's prices (its fine-tuned prices for a fine-tuned
    teacher; a `measured` GPU throughput is the rate the teacher answered at)."""
    from tunewise.cost.model import PREFILL_WEIGHT, request_cost

    pricing = ctx.for_candidate(teacher).task.business.pricing
    seconds = sum(r["seconds"] for r in rows)
    weighted = sum(PREFILL_WEIGHT * r["prompt_tokens"] + r["output_tokens"] for r in rows)
    pricing = pricing.with_throughput(weighted / seconds if seconds > 0 else None)
    return sum(request_cost(r["prompt_tokens"], r["output_tokens"], pricing, finetuned=finetuned) for r in rows)


def student_folder(ctx: LadderContext, teacher: str) -> Path:
    """Under the model's train folder, beside (never in place of) the lora rung's adapter."""
    return ctx.train_dir / f"distill-from-{teacher}"


def prepare(ctx: LadderContext, rung_of: RungOf) -> Prepared:
    from tunewise.finetune.rung import prepared_from_adapter, train_adapter

    teacher = teacher_of(ctx.task)
    rung = rung_of(teacher)
    todo, skipped = lessons(ctx, teacher_shows_examples=rung.shots)
    answers = teacher_answers(ctx, teacher, rung, todo)
    chosen = select(ctx, todo, answers)
    asked = list({lesson.key: answers[lesson.key] for lesson in todo}.values())  # each distinct input once
    if not chosen.examples:
        raise TunewiseError(
            f"distill: the student has nothing to learn: of {len(todo)} teacher answers, {chosen.invalid} are invalid for "
            f"metric {ctx.task.metric} and {chosen.disagreeing_dropped} disagree with the gold answer; read them in "
            f"{ctx.run_dir / 'teacher' / (teacher + '.jsonl')}, choose another teacher (ladder.distill.teacher), "
            "or keep disagreeing answers (ladder.distill.keep_disagreeing: true)"
        )
    outcome = train_adapter(ctx, chosen.examples, student_folder(ctx, teacher))
    prepared = prepared_from_adapter(ctx, outcome.adapter_path, outcome.summary, with_rag=False)
    labelling = labelling_cost(ctx, teacher, asked, finetuned=rung.trains)
    prepared.upfront_cost += labelling
    prepared.details["distill"] = {
        "teacher": teacher,
        "answers": len(asked),
        "train_inputs": chosen.train_inputs,
        "unlabelled_inputs": len(todo) - chosen.train_inputs,
        "unlabelled_read": skipped["unlabelled"],
        "unlabelled_repeated": skipped["repeated"],
        "unlabelled_in_eval": skipped["in_eval"],
        "kept": len(chosen.examples),
        "invalid": chosen.invalid,
        "disagreeing_dropped": chosen.disagreeing_dropped,
        "keep_disagreeing": ctx.task.ladder.distill.keep_disagreeing,
        "folds": min(ctx.task.ladder.distill.folds, len(ctx.train)) if rung.shots else None,
        "teacher_right_on_train": chosen.teacher_right_on_train,
        "labelling_cost": labelling,
        "labelling_prompt_tokens": int(sum(r["prompt_tokens"] for r in asked)),
        "labelling_output_tokens": int(sum(r["output_tokens"] for r in asked)),
        "teacher_prompt_tokens": sum(r["prompt_tokens"] for r in asked) / len(asked),
    }
    return prepared


# -- facts: what only this rung has ------------------------------------------------------------------


def _teacher_eval_rows(ctx: LadderContext, teacher: str) -> dict[int, dict[str, Any]]:
    """The teacher's saved eval answers by index, when it was scored in this run (sound lines only)."""
    path = ctx.run_dir / "predictions" / f"{teacher}.jsonl"
    out: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return out
    for raw in path.read_bytes().split(b"\n"):
        try:
            row = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (UnicodeDecodeError, ValueError, RecursionError):
            continue
        if isinstance(row, dict) and isinstance(row.get("index"), int) and isinstance(row.get("prediction"), str):
            out[row["index"]] = row
    return out


def facts(ctx: LadderContext, prepared: Prepared, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The student's agreement with its teacher on eval, prompt tokens saved, the labelling bill, and
    what the teacher's answers were: how many kept, dropped as invalid, or as disagreeing with gold."""
    from tunewise.cost.money import fmt_money

    d = prepared.details.get("distill")
    if not d:
        return {}
    teacher = d["teacher"]
    out: dict[str, Any] = {}
    unlabelled = f" + {d['unlabelled_inputs']} unlabelled" if d["unlabelled_read"] else ""
    left_out = [f"{d[k]} {what}" for k, what in (("unlabelled_repeated", "repeated"), ("unlabelled_in_eval", "also eval inputs")) if d[k]]
    out["teacher"] = {
        "value": teacher,
        "text": f"taught by {teacher}: {d['answers']} answers to {d['train_inputs']} training inputs{unlabelled}"
        + (f" (unlabelled left out: {', '.join(left_out)})" if left_out else ""),
    }
    dropped = [f"{d['invalid']} invalid"] + ([f"{d['disagreeing_dropped']} disagreeing with gold"] if not d["keep_disagreeing"] else [])
    out["kept"] = {
        "value": d["kept"],
        "text": f"trained on {d['kept']} teacher answers ({', '.join(dropped)} dropped"
        + ("; gold answers unused" if d["keep_disagreeing"] else "") + ")",
    }
    if d["train_inputs"]:
        how = f", each answered from the other {d['folds'] - 1} of {d['folds']} folds' examples" if d["folds"] else ""
        share = d["teacher_right_on_train"] / d["train_inputs"]
        out["teacher_on_train"] = {"value": share, "text": f"teacher matches gold on {share:.0%} of training inputs{how}"}

    student_prompt = sum(r["prompt_tokens"] for r in rows) / len(rows) if rows else None
    taught = _teacher_eval_rows(ctx, teacher)
    pairs = [(r, taught[r["index"]]) for r in rows if r["index"] in taught and r["index"] < len(ctx.eval)
             and taught[r["index"]].get("input", ctx.eval[r["index"]].input_text) == ctx.eval[r["index"]].input_text]
    if pairs:
        metric = task_metric(ctx.task)
        from tunewise.eval.metrics import MetricError

        def agree(student: str, index: int, answer: str) -> float:
            try:
                return metric.per_example(student, Example(ctx.eval[index].messages, answer))
            except MetricError:
                return 0.0

        agreement = sum(agree(s["prediction"], s["index"], t["prediction"]) for s, t in pairs) / len(pairs)
        out["agreement"] = {
            "value": agreement,
            "text": f"agrees with its teacher on {agreement:.0%} of {len(pairs)} eval answers ({ctx.task.metric} against the teacher's answer)",
        }
        teacher_prompt = sum(float(t.get("prompt_tokens", 0)) for _, t in pairs) / len(pairs)
        where = "on eval"
    else:
        out["agreement"] = {"value": None, "text": f"agreement with the teacher: not measured ({teacher} was not scored on eval in this "
                                                    "run; list it in ladder.rungs before distill)"}
        teacher_prompt, where = d["teacher_prompt_tokens"], "on training inputs"
    if student_prompt is not None:
        saved = teacher_prompt - student_prompt
        share = f" ({saved / teacher_prompt:.0%} fewer)" if teacher_prompt > 0 else ""
        out["prompt_tokens_saved"] = {
            "value": saved,
            "text": f"{saved:,.0f} prompt tokens saved a request{share}: {student_prompt:,.0f} instead of the teacher's {teacher_prompt:,.0f} {where}",
        }
    out["labelling_cost"] = {
        "value": d["labelling_cost"],
        "text": f"labelling: {fmt_money(d['labelling_cost'])} for {d['answers']} teacher answers ({d['labelling_prompt_tokens']:,} prompt + "
        f"{d['labelling_output_tokens']:,} output tokens at the teacher's prices), in the one-off cost",
    }
    return out


def describe(task: Task, rung_of: RungOf) -> str:
    teacher = task.ladder.distill.teacher
    if "@" in teacher:
        return f"Distilled from {teacher}"
    return f"Distilled from {rung_of(teacher).title(task)}"


def unavailable(task: Task, rung_of: RungOf) -> str | None:
    """A teacher that cannot run on this task (a constrained rung without a constraint) teaches nothing."""
    teacher = rung_of(task.ladder.distill.teacher)
    why = teacher.unavailable(task) if teacher.unavailable else None
    return f"its teacher {task.ladder.distill.teacher} cannot run: {why}" if why else None


def make_rung(rung_of: RungOf) -> Rung:
    """The distill rung, given the registry's lookup. tunewise.rungs calls this with its own `get_rung`
    (the teacher is another of its rungs), so this module never imports the registry that lists it."""
    return Rung(
        "distill",
        "Distilled LoRA",
        lambda ctx: prepare(ctx, rung_of),
        approaches=("quantize_distil",),
        trains=True,
        opt_in=True,
        describe=lambda task: describe(task, rung_of),
        unavailable=lambda task: unavailable(task, rung_of),
        facts=facts,
        # The learning curve trains on gold subsets: for a student it would be lora's curve, not its own.
        evidence_steps=("forgetting",),
        adapter_folder=lambda ctx: student_folder(ctx, ctx.task.ladder.distill.teacher),
    )
