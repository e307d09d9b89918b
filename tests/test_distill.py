"""The distill rung: a tiny Llama student trained on a fake teacher's answers (a few seconds a
training), through `prepare`, `run_ladder` with evidence and the report, and `tunewise serve`; one
slow test distils few-shot into a LoRA on the real embedded model."""

from __future__ import annotations

import json
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from conftest import EXAMPLES, write_jsonl  # noqa: E402
from test_finetune import ANIMALS, SOUNDS, tiny_dir  # noqa: E402,F401  (tiny_dir: the saved tiny Llama fixture)

from tunewise.cost.model import request_cost  # noqa: E402
from tunewise.data.example import Example  # noqa: E402
from tunewise.data.formats import DataError, read_inputs  # noqa: E402
from tunewise.errors import TunewiseError  # noqa: E402
from tunewise.finetune.train import upfront_training_cost  # noqa: E402
from tunewise.ladder.run import RunOptions, run_ladder  # noqa: E402
from tunewise.models.base import FakeModel  # noqa: E402
from tunewise.rungs import RUNGS, get_rung  # noqa: E402
from tunewise.rungs import distill  # noqa: E402
from tunewise.rungs.base import LadderContext  # noqa: E402
from tunewise.task import TaskError, load_task, parse_task  # noqa: E402

SYSTEM = "answer briefly ."
RIGHT = dict(zip(ANIMALS, SOUNDS))


def question(i: int) -> str:
    """Unique inputs (the trailing number is an unknown word to the tiny tokenizer), so a teacher's
    prompt can be checked for the input's own example."""
    return f"what does the {ANIMALS[i % len(ANIMALS)]} say ? {i}"


def rows(n: int, offset: int = 0) -> list[dict]:
    return [
        {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question(i)},
                      {"role": "assistant", "content": SOUNDS[i % len(SOUNDS)]}]}
        for i in range(offset, offset + n)
    ]


def examples(n: int, offset: int = 0) -> list[Example]:
    return [Example(r["messages"][:-1], r["messages"][-1]["content"]) for r in rows(n, offset)]


def teacher_says(messages) -> str:
    """The teacher: right in its own words ("Answer: Moo."), wrong on the owl, no label for the pig."""
    animal = next(a for a in ANIMALS if f"the {a} say" in messages[-1]["content"])
    if animal == "pig":
        return "I'm sorry, I cannot help with that."
    return "woof" if animal == "owl" else f"Answer: {RIGHT[animal].capitalize()}."


TRAIN = {"method": "lora", "epochs": 2, "batch_size": 8, "learning_rate": 0.01, "max_length": 64, "bf16": "off",
         "learning_curve": [0.5, 1.0]}


def make_task(tiny_dir, tmp_path, **distill_spec):
    return parse_task(
        {
            "name": "sounds",
            "data": {"train": "train.jsonl", "eval": "eval.jsonl"},
            "metric": "accuracy",
            "model": str(tiny_dir),
            "ladder": {"rungs": ["few_shot", "distill"], "few_shot": {"k": 2, "selection": "fixed"}, "max_new_tokens": 4,
                       "distill": {"teacher": "few_shot", "folds": 4, **distill_spec}},
            "train": TRAIN,
        },
        tmp_path / "task.yaml",
    )


def context(task, run_dir, teacher, n_train=24, n_eval=8) -> LadderContext:
    return LadderContext(task, examples(n_train), examples(n_eval, offset=100), run_dir, lambda: teacher, lambda: None, lambda: None)


# -- what the student learns (no model) --------------------------------------------------------------


@pytest.mark.parametrize(
    "metric, answer, expected",
    [
        ("accuracy", "Answer: Moo.", "moo"),  # written back as the training data spells the label
        ("accuracy", "a cow says moo", None),  # not one of the training labels
        ("macro_f1", '"quack"', "quack"),
        ("json_valid", 'Sure: {"a": 1}', 'Sure: {"a": 1}'),
        ("json_valid", '{"a": 1', None),
        ("json_fields", "[1, 2]", None),  # JSON, but no object to compare fields with
        ("exact_match", "  ", None),
        ("exact_match", " moo ", "moo"),
    ],
)
def test_answers_that_fail_the_metrics_validity_check_are_dropped(tmp_path, metric, answer, expected):
    task = parse_task({"name": "t", "data": {"train": "a", "eval": "b"}, "metric": metric})
    labels = {"moo": "moo", "quack": "quack"}
    assert distill.valid_answer(answer, task, distill.task_metric(task), labels) == expected


@pytest.mark.parametrize("keep", [False, True])
def test_answers_that_disagree_with_gold_are_dropped_unless_kept(tmp_path, keep):
    task = make_task(tmp_path, tmp_path, keep_disagreeing=keep)
    ctx = context(task, tmp_path / "run", None, n_train=16)
    todo, _ = distill.lessons(ctx, teacher_shows_examples=False)
    answers = {lesson.key: {"answer": teacher_says(lesson.turns)} for lesson in todo}
    chosen = distill.select(ctx, todo, answers)
    owls, pigs = 2, 2  # of 16 inputs cycling through 8 animals
    assert chosen.invalid == pigs and chosen.train_inputs == 16
    assert chosen.teacher_right_on_train == 16 - owls - pigs
    assert chosen.disagreeing_dropped == (0 if keep else owls)
    assert len(chosen.examples) == 16 - pigs - (0 if keep else owls)
    taught = {ex.input_text.rsplit(" ", 1)[0]: ex.answer for ex in chosen.examples}
    assert taught.get("what does the owl say ?") == ("woof" if keep else None)  # the teacher's answer, not gold
    assert taught["what does the cow say ?"] == "moo"
    # The student is asked as it will be served: the zero-shot prompt and the user's turn.
    assert chosen.examples[0].messages == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question(0)}]


# -- unlabelled inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content",
    [
        ("logs.jsonl", '{"prompt": "play jazz"}\n{"prompt": "rain tomorrow?", "completion": "a reply logged"}\n'),
        ("logs.jsonl", json.dumps({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "play jazz"}]}) + "\n"
         + json.dumps({"messages": [{"role": "user", "content": "rain tomorrow?"}, {"role": "assistant", "content": ""}]}) + "\n"),
        ("logs.json", json.dumps([{"instruction": "play jazz"}, {"instruction": "rain tomorrow?"}])),
        ("logs.jsonl", json.dumps({"conversations": [{"from": "human", "value": "play jazz"}]}) + "\n"
         + json.dumps({"conversations": [{"from": "human", "value": "rain tomorrow?"}]}) + "\n"),
        ("logs.csv", "question,when\nplay jazz,monday\nrain tomorrow?,tuesday\n"),
    ],
)
def test_unlabelled_inputs_are_read_in_every_format_and_their_logged_answers_ignored(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    inputs = read_inputs(path)
    assert [m[-1] for m in inputs] == [{"role": "user", "content": "play jazz"}, {"role": "user", "content": "rain tomorrow?"}]
    assert all(m["role"] != "assistant" for conversation in inputs for m in conversation)


def test_bad_unlabelled_lines_are_all_reported_with_their_numbers(tmp_path):
    path = write_jsonl(tmp_path / "logs.jsonl", [{"prompt": "ok"}, {"prompt": ""}, "{not json", {"prompt": 3}])
    with pytest.raises(DataError) as err:
        read_inputs(path)
    message = str(err.value)
    assert "3 problem(s) on 3 line(s)" in message
    assert "line 2: `prompt` is empty" in message and "line 3: invalid JSON" in message and "line 4: `prompt` must be a string" in message
    (tmp_path / "odd.jsonl").write_text('{"text": "hi"}\n')
    with pytest.raises(DataError, match=r"cannot detect the format of these inputs, records with keys: text\. Give one input a record"):
        read_inputs(tmp_path / "odd.jsonl")


def test_unlabelled_inputs_skip_repeats_training_inputs_and_eval_inputs(tmp_path):
    logs = write_jsonl(tmp_path / "logs.jsonl", [
        {"prompt": "what does the fox say ?"}, {"prompt": "what does the fox say ?"},  # a repeat
        {"prompt": question(3)},  # a training input
        {"prompt": question(101)},  # an eval input: answering it would leak the test into training
        {"prompt": "what does the hen say ?"},
    ])
    task = make_task(tmp_path, tmp_path).model_copy(update={"data": make_task(tmp_path, tmp_path).data.model_copy(update={"unlabelled": logs})})
    todo, skipped = distill.lessons(context(task, tmp_path / "run", None), teacher_shows_examples=True)
    extra = [lesson for lesson in todo if lesson.gold is None]
    assert [lesson.turns[-1]["content"] for lesson in extra] == ["what does the fox say ?", "what does the hen say ?"]
    assert all(lesson.fold is None for lesson in extra)  # answered by the full teacher: nothing of theirs is in its prompt
    assert skipped == {"unlabelled": 5, "repeated": 2, "in_eval": 1}
    assert {lesson.fold for lesson in todo if lesson.gold is not None} == {0, 1, 2, 3}


def test_the_task_file_checks_the_teacher_and_the_unlabelled_file(tmp_path):
    base = {"name": "t", "data": {"train": "a.jsonl", "eval": "b.jsonl"}}
    for spec, message in [
        ({"teacher": "distill"}, "is itself a student"),
        ({"teacher": "few_shots"}, "unknown rung 'few_shots'; valid teachers: zero_shot, few_shot"),
        ({"teacher": "few_shot@large"}, "names model 'large', which is not defined"),
        ({"folds": 1}, "ladder.distill.folds"),
    ]:
        with pytest.raises(TaskError, match=re.escape(message)):
            parse_task({**base, "ladder": {"distill": spec}})
    write_jsonl(tmp_path / "a.jsonl", rows(2))
    write_jsonl(tmp_path / "b.jsonl", rows(2))
    (tmp_path / "task.yaml").write_text("name: t\ndata: {train: a.jsonl, eval: b.jsonl, unlabelled: logs/prod.jsonl}\n")
    with pytest.raises(TaskError, match=r"data\.unlabelled: file not found: .*logs/prod\.jsonl"):
        load_task(tmp_path / "task.yaml")
    write_jsonl(tmp_path / "logs" / "prod.jsonl", [{"prompt": "hi"}])
    assert load_task(tmp_path / "task.yaml").data.unlabelled == (tmp_path / "logs" / "prod.jsonl").resolve()
    assert RUNGS["distill"].opt_in and RUNGS["distill"].trains and RUNGS["distill"].approaches == ("quantize_distil",)


# -- the student, trained on a fake teacher's answers ---------------------------------------------------


@pytest.fixture(scope="module")
def student(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distill")
    task = make_task(tiny_dir, tmp, keep_disagreeing=False)
    teacher = FakeModel(respond=teacher_says, name="teacher")
    ctx = context(task, tmp / "run", teacher)
    return ctx, RUNGS["distill"].prepare(ctx), teacher


def test_a_teacher_that_shows_training_examples_never_sees_the_inputs_own(student):
    ctx, prepared, teacher = student
    assert len(teacher.calls) == 24  # each training input once
    for call in teacher.calls:
        shown = [m["content"] for m in call[:-1] if m["role"] == "user"]
        assert len(shown) == 2 and call[-1]["content"] not in shown  # k=2 demonstrations from other folds
    assert prepared.details["distill"]["folds"] == 4


def test_the_student_learns_the_kept_answers_and_pays_for_the_labelling(student):
    ctx, prepared, teacher = student
    d = prepared.details["distill"]
    assert (d["answers"], d["invalid"], d["disagreeing_dropped"], d["kept"]) == (24, 3, 3, 18)
    summary = prepared.details["training"]
    assert prepared.finetuned and summary.train_examples + summary.val_examples == 18
    saved = [json.loads(line) for line in (ctx.run_dir / "teacher" / "few_shot.jsonl").read_text().splitlines()]
    assert len(saved) == 24 and {row["answer"] for row in saved} >= {"woof", "Answer: Moo."}
    # The one-off cost is the student's training plus every teacher answer at the teacher's prices.
    labelling = sum(request_cost(r["prompt_tokens"], r["output_tokens"], ctx.task.business.pricing) for r in saved)
    assert labelling > 0 and d["labelling_cost"] == pytest.approx(labelling)
    assert prepared.upfront_cost == pytest.approx(upfront_training_cost(ctx.task, summary) + labelling)
    # Served with the zero-shot prompt: the system prompt and the user's turn, nothing else.
    request = prepared.build([{"role": "system", "content": "caller's"}, {"role": "user", "content": question(5)}])
    assert request.messages == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question(5)}]
    assert prepared.adapter_path.is_relative_to(ctx.train_dir / "distill-from-few_shot")


def test_a_rerun_asks_the_teacher_nothing_and_reuses_the_student(student):
    ctx, prepared, _ = student
    silent = FakeModel(name="teacher")  # any call fails: it has no answer queued
    again = RUNGS["distill"].prepare(context(ctx.task, ctx.run_dir, silent))
    assert silent.calls == [] and again.adapter_path == prepared.adapter_path
    assert again.details["distill"] == prepared.details["distill"]


def test_a_torn_last_line_is_asked_again_and_nothing_else(student, tmp_path):
    ctx, _, _ = student
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ctx.run_dir / "teacher", run / "teacher")
    cache = run / "teacher" / "few_shot.jsonl"
    lines = cache.read_text().splitlines()
    cache.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # a crash mid-write
    teacher = FakeModel(respond=teacher_says, name="teacher")
    todo, _ = distill.lessons(context(ctx.task, run, teacher), teacher_shows_examples=True)
    answers = distill.teacher_answers(context(ctx.task, run, teacher), "few_shot", get_rung("few_shot"), todo)
    assert len(teacher.calls) == 1 and len(answers) == 24
    assert len(cache.read_text().splitlines()) == 24 and all(json.loads(line) for line in cache.read_text().splitlines())


def test_facts_agreement_tokens_saved_and_labelling(student):
    ctx, prepared, _ = student
    rows_ = [{"index": i, "prediction": p, "prompt_tokens": 10} for i, p in enumerate(["moo", "woof", "moo"])]
    alone = RUNGS["distill"].facts(ctx, prepared, rows_)
    assert alone["agreement"]["value"] is None and "was not scored on eval in this run" in alone["agreement"]["text"]
    assert "on training inputs" in alone["prompt_tokens_saved"]["text"]
    # The teacher scored on eval in the same run: its answers, matched by index and input.
    (ctx.run_dir / "predictions").mkdir(exist_ok=True)
    teacher_rows = [{"index": i, "prediction": p, "prompt_tokens": 40, "input": ctx.eval[i].input_text}
                    for i, p in enumerate(["Answer: moo", "meow", "moo"])]
    write_jsonl(ctx.run_dir / "predictions" / "few_shot.jsonl", teacher_rows)
    facts = RUNGS["distill"].facts(ctx, prepared, rows_)
    assert facts["agreement"]["value"] == pytest.approx(2 / 3)
    assert facts["agreement"]["text"].startswith("agrees with its teacher on 67% of 3 eval answers")
    assert facts["prompt_tokens_saved"]["value"] == 30
    assert facts["prompt_tokens_saved"]["text"] == "30 prompt tokens saved a request (75% fewer): 10 instead of the teacher's 40 on eval"
    assert facts["kept"]["text"] == "trained on 18 teacher answers (3 invalid, 3 disagreeing with gold dropped)"
    assert facts["teacher_on_train"]["value"] == pytest.approx(18 / 24)
    assert facts["labelling_cost"]["value"] == prepared.details["distill"]["labelling_cost"]


# -- a run with two models: a hosted teacher, a small student --------------------------------------------


def two_model_task(tmp_path, tiny_dir):
    write_jsonl(tmp_path / "train.jsonl", rows(32))
    write_jsonl(tmp_path / "eval.jsonl", rows(16, offset=100))
    write_jsonl(tmp_path / "logs.jsonl", [{"prompt": f"what does the {a} say ? {200 + i}"} for i, a in enumerate(ANIMALS)])
    return parse_task(
        {
            "name": "sounds",
            "data": {"train": "train.jsonl", "eval": "eval.jsonl", "unlabelled": "logs.jsonl"},
            "metric": "accuracy",
            "models": {
                "small": {"model": str(tiny_dir), "options": {"bf16": "off"},
                          "pricing": {"input_per_1m": None, "output_per_1m": None, "gpu_hourly": 1.5}},
                "big": {"model": "openai:big", "pricing": {"input_per_1m": 2.5, "output_per_1m": 10.0}},
            },
            "ladder": {"rungs": ["few_shot@big", "distill@small"], "few_shot": {"k": 2, "selection": "fixed"},
                       "max_new_tokens": 4, "distill": {"teacher": "few_shot@big", "keep_disagreeing": True}},
            "train": TRAIN,
            "business": {"calls_per_month": 100_000, "horizon_months": 12},
        },
        tmp_path / "task.yaml",
    )


def test_run_ladder_scores_the_student_against_its_teacher_and_serve_answers_without_it(tmp_path, tiny_dir):
    task = two_model_task(tmp_path, tiny_dir)
    big = FakeModel(respond=teacher_says, name="big")
    results = run_ladder(task, RunOptions(out_dir=tmp_path / "runs", models={"big": big}), log=lambda m: None)
    run_dir = tmp_path / "runs" / results.run_id
    by = {r.name: r for r in results.rungs}
    student_ = by["distill@small"]
    assert student_.status == "done" and student_.finetuned and student_.title == "Distilled from few_shot@big on small"
    assert student_.score is not None and student_.score.ci_low <= student_.score.value <= student_.score.ci_high
    assert student_.p_value_vs_best is not None or results.decision.rung == "distill@small"
    # 32 training inputs + 8 unlabelled ones; gold hidden: only the 4 pig answers (no label) dropped.
    facts = student_.facts
    assert facts["teacher"].text == "taught by few_shot@big: 40 answers to 32 training inputs + 8 unlabelled"
    assert facts["kept"].text == "trained on 35 teacher answers (5 invalid dropped; gold answers unused)"
    assert facts["agreement"].value is not None and 0 <= facts["agreement"].value <= 1
    assert facts["prompt_tokens_saved"].value > 0 and facts["prompt_tokens_saved"].text.endswith(" on eval")
    # Labelling is paid at the big model's prices and counted in the student's one-off cost and break-even.
    saved = [json.loads(line) for line in (run_dir / "teacher" / "few_shot@big.jsonl").read_text().splitlines()]
    labelling = sum(r["prompt_tokens"] * 2.5e-6 + r["output_tokens"] * 10e-6 for r in saved)
    assert len(saved) == 40 and facts["labelling_cost"].value == pytest.approx(labelling)
    assert student_.upfront_cost == pytest.approx(labelling + upfront_training_cost(task.for_model("small"), student_.training))
    assert ("few_shot@big", "distill@small") in {(b.cheaper_upfront, b.cheaper_per_call) for b in results.break_even}
    assert results.forgetting is not None and results.forgetting.rung == "distill@small"
    # Shown in results.json and both reports.
    stored = json.loads((run_dir / "results.json").read_text())
    assert next(r for r in stored["rungs"] if r["name"] == "distill@small")["facts"]["agreement"]["value"] == facts["agreement"].value
    for report in ("report.md", "report.html"):
        assert facts["agreement"].text.split(" (")[0] in (run_dir / report).read_text()

    # A rerun replays the saved answers: the teacher is asked nothing.
    calls = len(big.calls)
    again = run_ladder(task, RunOptions(out_dir=tmp_path / "runs", models={"big": big}), log=lambda m: None)
    assert len(big.calls) == calls and {r.name: r.score for r in again.rungs} == {r.name: r.score for r in results.rungs}

    # `tunewise serve` serves the student from its adapter; openai:big is never reached.
    from tunewise.serve.config import load_runs

    config = load_runs([run_dir], rung="distill@small")["sounds"]
    question_ = [{"role": "user", "content": question(100)}]
    served = config.prepared.model.generate([config.prepared.build(question_).messages], 4)[0].text
    answers = [json.loads(line) for line in (run_dir / student_.predictions_file).read_text().splitlines()]
    assert served == next(a["prediction"] for a in answers if a["input"] == question(100))
    assert len(big.calls) == calls


# -- the real model -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_few_shot_distilled_into_a_lora_on_the_embedded_model(tmp_path):
    intent = EXAMPLES / "intent"
    train = [json.loads(line) for line in (intent / "train.jsonl").read_text().splitlines()[:40]]
    evals = [json.loads(line) for line in (intent / "eval.jsonl").read_text().splitlines()[:12]]
    write_jsonl(tmp_path / "train.jsonl", train)
    write_jsonl(tmp_path / "eval.jsonl", evals)
    task = parse_task(
        {
            "name": "intent-distill",
            "data": {"train": "train.jsonl", "eval": "eval.jsonl"},
            "metric": "accuracy",
            "model": "embedded",
            "ladder": {"rungs": ["few_shot", "distill"], "few_shot": {"k": 4, "selection": "nearest"}, "max_new_tokens": 8,
                       "distill": {"teacher": "few_shot", "keep_disagreeing": True}, "adaptive": False},
            "train": {"epochs": 1, "batch_size": 8, "learning_rate": 5e-4, "max_length": 128},
        },
        tmp_path / "task.yaml",
    )
    results = run_ladder(task, RunOptions(out_dir=tmp_path / "runs", evidence=False), log=lambda m: None)
    by = {r.name: r for r in results.rungs}
    student_, teacher = by["distill"], by["few_shot"]
    assert student_.status == "done" and student_.score.n == 12
    facts = student_.facts
    assert facts["agreement"].value is not None
    # The student's prompt is the zero-shot one: far shorter than four demonstrations.
    assert student_.prompt_tokens < teacher.prompt_tokens / 2
    assert facts["prompt_tokens_saved"].value == pytest.approx(teacher.prompt_tokens - student_.prompt_tokens)
    assert facts["kept"].value >= 1 and student_.upfront_cost > facts["labelling_cost"].value > 0
