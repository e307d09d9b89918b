"""`tunewise advise`: the published worked examples, every rule, conflicts, the CLI and the questionnaire."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from conftest import EXAMPLES, ROOT
from tunewise.advise import RULES, AdviseError, Approach, Situation, advise, get_rule, situation_from_task
from tunewise.advise.questionnaire import QUESTIONS, parse_answer
from tunewise.advise.rules import ANY_FINE_TUNE, FINE_TUNE_ALONE
from tunewise.cli import cli, main
from tunewise.commands import advise as advise_command
from tunewise.task import Change, Goal, load_task

A = Approach
G = Goal


def rule_id(prefix: str) -> str:
    """The full id of the rule whose id starts with `prefix` (e.g. "R05")."""
    (match,) = [r.id for r in RULES if r.id.startswith(prefix + "-")]
    return match


def flags(s: Situation) -> list[str]:
    """The command line that describes situation `s`."""
    out: list[str] = []
    for goal in s.goals:
        out += ["--goal", goal.value]
    if s.n_examples is not None:
        out += ["--examples", str(s.n_examples)]
    if s.calls_per_month is not None:
        out += ["--calls-per-month", str(s.calls_per_month)]
    if s.requirements_change is not None:
        out += ["--changes", s.requirements_change.value]
    if s.needs_fresh_facts:
        out.append("--fresh")
    if s.has_corpus is not None:
        out.append("--corpus" if s.has_corpus else "--no-corpus")
    if s.latency_budget_ms is not None:
        out += ["--latency-ms", str(s.latency_budget_ms)]
    if s.style_critical is not None:
        out.append("--style-critical" if s.style_critical else "--style-not-critical")
    if s.new_language_or_modality:
        out.append("--new-language")
    if s.multiple_distinct_tasks:
        out.append("--multi-task")
    if s.want_smaller_faster:
        out.append("--smaller")
    return out


def run_cli(args: list[str], input: str | None = None):
    return CliRunner().invoke(cli, ["advise", *args], input=input, catch_exceptions=False)


# -- the published worked examples ---------------------------------------------------------------

# (case, situation, recommended, try first, if that fails, rules that must fire)
PUBLISHED = [
    (
        "customer-support bot answering from product docs that change; style not critical",
        Situation(goals=[G.knowledge], has_corpus=True, requirements_change=Change.monthly, style_critical=False),
        A.rag, A.rag, A.finetune_rag, ["R06", "R07"],
    ),
    (
        "legal contract generator: the firm's exact style and format, specific clauses and precedents",
        Situation(goals=[G.style, G.format, G.knowledge], style_critical=True, has_corpus=True, n_examples=400,
                  requirements_change=Change.yearly),
        A.finetune_rag, A.finetune_rag, A.collect_data, ["R04", "R06", "R09"],
    ),
    (
        "code review assistant: the team's review style and terminology; coding standards evolve",
        Situation(goals=[G.style], style_critical=True, has_corpus=True, n_examples=300,
                  requirements_change=Change.monthly),
        A.finetune_rag, A.finetune_rag, A.collect_data, ["R04", "R07", "R09"],
    ),
    (
        "marketing-copy translation in a brand voice with consistent terminology",
        Situation(goals=[G.style, G.format], style_critical=True, n_examples=600, calls_per_month=30_000,
                  requirements_change=Change.yearly),
        A.lora, A.lora, A.collect_data, ["R09", "R10"],
    ),
    (
        "needs current information",
        Situation(needs_fresh_facts=True),
        A.rag, A.rag, A.finetune_rag, ["R05"],
    ),
    (
        "fewer than 50 quality examples",
        Situation(n_examples=30),
        A.collect_data, A.collect_data, A.few_shot, ["R08"],
    ),
    (
        "smaller/faster model wanted",
        Situation(want_smaller_faster=True),
        A.quantize_distil, A.quantize_distil, A.quantize_distil, ["R03"],
    ),
    (
        "new language or modality",
        Situation(new_language_or_modality=True),
        A.prompting, A.prompting, A.continued_pretraining, ["R02"],
    ),
    (
        "several distinct specialised tasks",
        Situation(multiple_distinct_tasks=True),
        A.router, A.router, A.lora, ["R01"],
    ),
    (
        "lots of examples, high volume, stable requirements, format and cost goals",
        Situation(goals=[G.format, G.cost], n_examples=5_000, calls_per_month=200_000,
                  requirements_change=Change.never),
        A.lora, A.lora, A.full_sft, ["R10", "R12"],
    ),
    (
        "nothing special",
        Situation(),
        A.prompting, A.prompting, A.few_shot, ["R20"],
    ),
]


@pytest.mark.parametrize(
    "case, situation, approach, first, fails, must_fire", PUBLISHED, ids=[c[0][:40] for c in PUBLISHED]
)
def test_published_worked_examples(case, situation, approach, first, fails, must_fire):
    advice = advise(situation)
    assert advice.approach == approach, case
    assert advice.try_first.approach == first
    assert advice.if_that_fails is not None and advice.if_that_fails.approach == fails
    for prefix in must_fire:
        assert rule_id(prefix) in advice.rule_ids
    assert get_rule(advice.decided_by).recommend == approach


def test_quantize_first_names_gptq_awq_then_distil():
    advice = advise(Situation(want_smaller_faster=True))
    assert "GPTQ" in advice.try_first.how and "AWQ" in advice.try_first.how
    assert "distil" in advice.if_that_fails.how


def test_new_language_starts_from_a_multilingual_base():
    advice = advise(Situation(new_language_or_modality=True))
    assert "multilingual" in advice.try_first.how


def test_full_sft_is_an_option_with_1000_examples_not_the_default():
    advice = advise(Situation(goals=[G.format, G.cost], n_examples=5_000, calls_per_month=200_000,
                              requirements_change=Change.never))
    assert advice.approach == A.lora
    assert A.full_sft in advice.also_consider


# -- every rule fires somewhere and is cited -------------------------------------------------------

RULE_CASES = {
    "R01": Situation(multiple_distinct_tasks=True),
    "R02": Situation(new_language_or_modality=True),
    "R03": Situation(want_smaller_faster=True),
    "R04": Situation(goals=[G.style], needs_fresh_facts=True),
    "R05": Situation(needs_fresh_facts=True),
    "R06": Situation(goals=[G.knowledge]),
    "R07": Situation(requirements_change=Change.weekly, has_corpus=True),
    "R08": Situation(n_examples=10),
    "R09": Situation(style_critical=True),
    "R10": Situation(goals=[G.cost], n_examples=100, calls_per_month=10_000, requirements_change=Change.never),
    "R11": Situation(goals=[G.behaviour]),
    "R12": Situation(goals=[G.style], n_examples=1_000),
    "R13": Situation(goals=[G.style], n_examples=50),
    "R14": Situation(goals=[G.style]),
    "R15": Situation(calls_per_month=10_000),
    "R16": Situation(goals=[G.style], calls_per_month=9_999),
    "R17": Situation(goals=[G.style], requirements_change=Change.daily),
    "R18": Situation(goals=[G.knowledge], has_corpus=False),
    "R19": Situation(latency_budget_ms=500),
    "R20": Situation(),
}


def test_every_rule_has_a_case():
    assert sorted(RULE_CASES) == sorted(r.id.split("-")[0] for r in RULES)


@pytest.mark.parametrize("prefix", sorted(RULE_CASES))
def test_rule_fires_and_is_cited_in_every_output(prefix):
    rule = get_rule(rule_id(prefix))
    situation = RULE_CASES[prefix]
    advice = advise(situation)
    assert rule.id in advice.rule_ids
    cited = {r["id"]: r["reason"] for r in advice.to_dict()["rules"]}
    assert cited[rule.id] == rule.reason
    for text in rule.risks:  # a rule that fired and was not set aside contributes its risks
        if rule.id not in {rid for _, rid, _ in advice.overruled}:
            assert text in [t for _, t in advice.risks]

    as_json = run_cli([*flags(situation), "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == json.loads(json.dumps(advice.to_dict()))

    text = run_cli(flags(situation))
    assert rule.id in text.stdout


def test_no_rule_but_the_default_fires_on_an_empty_situation():
    assert advise(Situation()).rule_ids == [rule_id("R20")]


# (rule prefix, situation just inside, situation just outside)
THRESHOLDS = [
    ("R08", Situation(n_examples=49), Situation(n_examples=50)),
    ("R13", Situation(goals=[G.style], n_examples=99), Situation(goals=[G.style], n_examples=100)),
    ("R12", Situation(goals=[G.style], n_examples=1_000), Situation(goals=[G.style], n_examples=999)),
    ("R15", Situation(calls_per_month=10_000), Situation(calls_per_month=9_999)),
    ("R19", Situation(latency_budget_ms=500), Situation(latency_budget_ms=501)),
    (
        "R10",
        Situation(goals=[G.format], n_examples=100, calls_per_month=10_000, requirements_change=Change.yearly),
        Situation(goals=[G.format], n_examples=100, calls_per_month=10_000, requirements_change=Change.monthly),
    ),
    ("R09", Situation(goals=[G.style]), Situation(goals=[G.style], style_critical=False)),
]


@pytest.mark.parametrize("prefix, inside, outside", THRESHOLDS, ids=[t[0] for t in THRESHOLDS])
def test_thresholds(prefix, inside, outside):
    assert rule_id(prefix) in advise(inside).rule_ids
    assert rule_id(prefix) not in advise(outside).rule_ids


def test_registry_is_well_formed():
    ids = [r.id for r in RULES]
    assert len(set(ids)) == len(ids)
    assert [int(i[1:3]) for i in ids] == list(range(1, len(ids) + 1))  # numbered in precedence order
    for rule in RULES:
        assert re.fullmatch(r"R\d\d-[a-z0-9-]+", rule.id)
        assert rule.reason and "\n" not in rule.reason and rule.source
        assert (rule.recommend is None) == (rule.plan is None)
    assert [r.id for r in RULES if r.fallback] == [rule_id("R20")]


def test_a_rule_that_recommends_needs_a_plan():
    with pytest.raises(ValueError, match="recommend"):
        type(RULES[0])(id="R99-x", reason="x", source="x", when=lambda s: True, recommend=A.rag)


# -- conflicts ---------------------------------------------------------------------------------------


def test_freshness_forbids_finetune_alone_even_with_a_style_goal():
    advice = advise(Situation(goals=[G.style], needs_fresh_facts=True, n_examples=500))
    assert advice.approach == A.finetune_rag
    assert set(advice.forbidden) >= FINE_TUNE_ALONE
    assert (A.lora, rule_id("R09"), [rule_id("R05")]) in advice.overruled


def test_too_few_examples_with_fresh_facts_keeps_rag_and_asks_for_data():
    advice = advise(Situation(goals=[G.style], needs_fresh_facts=True, n_examples=20))
    assert advice.approach == A.rag
    assert A.collect_data in advice.also_consider
    assert A.finetune_rag in advice.forbidden
    # The fine-tune rules were set aside, so their forgetting risk is not reported.
    assert not any("forgetting" in text for _, text in advice.risks)


def test_too_few_examples_overrule_a_style_goal():
    advice = advise(Situation(goals=[G.style], n_examples=20))
    assert advice.approach == A.collect_data
    assert (A.lora, rule_id("R09"), [rule_id("R08")]) in advice.overruled


def test_style_not_critical_does_not_pull_in_a_finetune():
    advice = advise(Situation(goals=[G.style, G.knowledge], style_critical=False, has_corpus=True))
    assert advice.approach == A.rag
    assert not set(advice.rule_ids) & {rule_id("R04"), rule_id("R09")}


def test_combined_approach_does_not_repeat_its_parts():
    advice = advise(Situation(goals=[G.style, G.knowledge], n_examples=400))
    assert advice.approach == A.finetune_rag
    assert A.rag not in advice.also_consider and A.lora not in advice.also_consider


def _grid():
    goal_sets = [[], [G.style], [G.format, G.cost], [G.knowledge], [G.style, G.knowledge], [G.behaviour]]
    for goals, n, calls, change, fresh, corpus, smaller in itertools.product(
        goal_sets, [None, 10, 60, 300, 2_000], [None, 1_000, 50_000], [None, Change.yearly, Change.daily],
        [False, True], [None, True, False], [False, True],
    ):
        yield Situation(goals=goals, n_examples=n, calls_per_month=calls, requirements_change=change,
                        needs_fresh_facts=fresh, has_corpus=corpus, want_smaller_faster=smaller)


def test_invariants_over_a_grid_of_situations():
    checked = 0
    for s in _grid():
        advice = advise(s)
        assert advice.approach not in advice.forbidden
        assert get_rule(advice.decided_by).recommend == advice.approach
        if s.needs_fresh_facts:
            assert advice.approach not in FINE_TUNE_ALONE, s
        if s.n_examples is not None and s.n_examples < 50:
            assert advice.approach not in ANY_FINE_TUNE, s
        assert advice.approach not in advice.also_consider
        checked += 1
    assert checked > 1000


# -- situation, task files ---------------------------------------------------------------------------


def test_situation_collects_every_problem_and_names_valid_choices():
    with pytest.raises(AdviseError) as err:
        Situation(goals=["styel"], requirements_change="hourly", n_examples=-3, latency_budget_ms=0)
    msg = str(err.value)
    assert "4 problem(s)" in msg
    assert "'styel'" in msg and "knowledge, freshness, style" in msg
    assert "'hourly'" in msg and "never, yearly, monthly, weekly, daily" in msg
    assert "n_examples" in msg and "-3" in msg and "latency_budget_ms" in msg


def test_goals_and_flags_stay_in_step():
    s = Situation(goals=["freshness", "Style"], want_smaller_faster=True)
    assert s.needs_fresh_facts and G.latency in s.goals and s.goals[:2] == [G.freshness, G.style]


@pytest.mark.parametrize(
    "task, n_examples, approach",
    [("intent", 493, A.lora), ("e2e_extract", 700, A.lora), ("squad_rag", 2_273, A.rag)],
)
def test_bundled_tasks(task, n_examples, approach):
    loaded = load_task(EXAMPLES / task / "task.yaml")
    assert advise_command.count_examples(loaded) == n_examples
    assert advise(situation_from_task(loaded, n_examples)).approach == approach


def test_task_file_with_flag_override():
    result = run_cli(["--task", str(EXAMPLES / "intent" / "task.yaml"), "--examples", "30", "--json"])
    data = json.loads(result.stdout)
    assert data["approach"] == "collect_data"
    assert data["situation"]["calls_per_month"] == 200_000  # the rest still comes from the task


def test_task_file_counts_examples_and_says_so():
    result = run_cli(["--task", str(EXAMPLES / "e2e_extract" / "task.yaml"), "--json"])
    assert json.loads(result.stdout)["situation"]["n_examples"] == 700
    assert "counted 700" in result.stderr


# -- CLI ------------------------------------------------------------------------------------------------


def test_text_output_has_every_section():
    result = run_cli(["--goal", "style", "--fresh", "--examples", "500", "--calls-per-month", "5000"])
    out = result.stdout
    assert result.exit_code == 0
    assert "Recommendation: Fine-tune (LoRA) + RAG" in out
    for heading in ("Try first:", "If that fails:", "Set aside:", "Rules that fired", "Checklist", "Risks"):
        assert heading in out
    for question in QUESTIONS[:3]:
        assert question.text.split("?")[0][:30] in out.replace("\n", " ")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--goal", "speed"], "knowledge"),
        (["--changes", "hourly"], "daily"),
        (["--examples", "-1"], "-1"),
        (["--latency-ms", "0"], "0"),
    ],
)
def test_bad_values_name_the_valid_choices(args, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["advise", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Invalid value" in err and expected in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--goal", "freshness", "--no-fresh"], "contradicts"),
        (["--task", "x.yaml", "--interactive"], "not both"),
    ],
)
def test_contradictory_flags(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["advise", *args])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_missing_task_file_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["advise", "--task", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "task file not found" in err and "Traceback" not in err


def test_no_flags_off_a_terminal_uses_defaults_and_says_so():
    result = run_cli([])
    assert result.exit_code == 0
    assert "advising on defaults" in result.stderr
    assert "Recommendation: Prompting" in result.stdout


# -- questionnaire ---------------------------------------------------------------------------------------

# One answer per question, in QUESTIONS order.
ANSWERS = {
    "goals": "style, knowledge",
    "n_examples": "1,200",
    "calls_per_month": "",
    "requirements_change": "weekly",
    "needs_fresh_facts": "n",
    "has_corpus": "y",
    "latency_budget_ms": "800",
    "style_critical": "",
    "new_language_or_modality": "",
    "multiple_distinct_tasks": "no",
    "want_smaller_faster": "n",
}


def test_answers_cover_every_question():
    assert list(ANSWERS) == [q.field for q in QUESTIONS]


def test_interactive_questionnaire_through_stdin():
    result = run_cli(["--interactive", "--json"], input="\n".join(ANSWERS.values()) + "\n")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # prompts went to stderr
    assert data["situation"] == Situation(
        goals=[G.style, G.knowledge], n_examples=1_200, requirements_change=Change.weekly, has_corpus=True,
        latency_budget_ms=800.0,
    ).to_dict()
    assert data["approach"] == "finetune_rag"
    answers = {item["field"]: item["answer"] for item in data["checklist"]}
    assert answers["n_examples"] == "1,200" and answers["calls_per_month"] == "unknown"


def test_no_flags_on_a_terminal_asks(monkeypatch):
    monkeypatch.setattr(advise_command, "stdin_is_terminal", lambda: True)
    result = run_cli([], input="\n".join(ANSWERS.values()) + "\n")
    assert result.exit_code == 0, result.output
    assert QUESTIONS[0].text in result.stderr
    assert "Fine-tune (LoRA) + RAG" in result.stdout


def test_a_bad_answer_is_explained_and_asked_again():
    answers = dict(ANSWERS, goals="styel\nstyle")
    result = run_cli(["-i", "--json"], input="\n".join(answers.values()) + "\n")
    assert result.exit_code == 0, result.output
    assert "valid goals: knowledge" in result.stderr
    assert json.loads(result.stdout)["situation"]["goals"] == ["style"]


def test_flags_answer_their_questions_in_interactive_mode():
    remaining = [v for k, v in ANSWERS.items() if k not in ("goals", "n_examples")]
    result = run_cli(["-i", "--goal", "format", "--examples", "20", "--json"], input="\n".join(remaining) + "\n")
    assert result.exit_code == 0, result.output
    assert QUESTIONS[0].text not in result.stderr
    data = json.loads(result.stdout)
    assert data["situation"]["goals"] == ["format"] and data["situation"]["n_examples"] == 20
    # weekly changes with a corpus (answered at the prompts) -> RAG; 20 examples -> collect data too
    assert data["approach"] == "rag" and "collect_data" in data["also_consider"]


@pytest.mark.parametrize(
    "kind, raw, value",
    [
        ("goals", "Style knowledge style", [G.style, G.knowledge]),
        ("goals", "", []),
        ("count", "12_000", 12_000),
        ("count", "?", None),
        ("number", "250.5", 250.5),
        ("change", "Daily", Change.daily),
        ("change", "", None),
        ("yes_no", "YES", True),
        ("yes_no_unknown", "n", False),
        ("yes_no_unknown", "unknown", None),
    ],
)
def test_parse_answer(kind, raw, value):
    assert parse_answer(kind, raw) == value


@pytest.mark.parametrize(
    "kind, raw", [("goals", "speed"), ("count", "1.5"), ("count", "-2"), ("number", "0"), ("change", "hourly"),
                  ("yes_no", ""), ("yes_no_unknown", "maybe")]
)
def test_parse_answer_rejects(kind, raw):
    with pytest.raises(click.BadParameter):
        parse_answer(kind, raw)


def test_advise_imports_no_heavy_library():
    code = (
        "import sys, tunewise.advise, tunewise.commands.advise; "
        "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'numpy') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- docs ----------------------------------------------------------------------------------------------


def test_docs_list_every_rule_with_its_reason():
    docs = (ROOT / "docs" / "advise.md").read_text(encoding="utf-8")
    for rule in RULES:
        assert f"`{rule.id}`" in docs
        assert rule.reason in docs, rule.id
