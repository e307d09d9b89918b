"""Tuning on dev (ladder.tune): the choice, eval untouched, the pool, the cache, the budget. Fake models only."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from test_ladder import LABELS, make_task
from tunewise.errors import TunewiseError
from tunewise.ladder.results import load_results
from tunewise.ladder.run import RunOptions, config_hash, run_ladder
from tunewise.ladder.tuning import describe, grid, split_dev
from tunewise.models.base import FakeModel
from tunewise.task import TaskError, load_task, parse_task

SHARE_BY_K = {2: 0.5, 4: 0.9, 8: 0.7}
"""The fake model's accuracy by number of demonstrations: k=4 is best, on dev and on eval."""


def question(messages) -> tuple[int, str]:
    found = re.search(r"item (\d+) kind (\w+)", messages[-1]["content"])
    return int(found.group(1)), found.group(2)


def by_shots(messages) -> str:
    index, gold = question(messages)
    k = sum(m["role"] == "assistant" for m in messages)
    right = (index * 7919 % 100) < SHARE_BY_K.get(k, 0.3) * 100
    return gold if right else LABELS[(LABELS.index(gold) + 1) % 3]


def shown(messages) -> list[str]:
    """The user turns of the demonstrations (all but the question)."""
    return [m["content"] for m in messages[:-1] if m["role"] == "user"]


def tuned_task(tmp_path, **tune):
    tune = {"dev_examples": 30, "few_shot_k": [2, 4, 8], **tune}
    return make_task(tmp_path, n_train=90, n_eval=40, rungs=("few_shot",), target=0.5, tune=tune)


def run(task, tmp_path, model, **options):
    opts = RunOptions(model=model, evidence=False, report=False, out_dir=tmp_path / "runs", **options)
    return run_ladder(task, opts, log=lambda m: None)


def test_tuning_picks_the_k_best_on_dev_without_seeing_eval(tmp_path):
    task = tuned_task(tmp_path)
    model = FakeModel(respond=by_shots)
    results = run(task, tmp_path, model)
    few = results.rung("few_shot")

    assert few.tuning.chosen == {"few_shot_k": 4}
    assert [t.config["few_shot_k"] for t in few.tuning.tried] == [2, 4, 8]
    dev_scores = {t.config["few_shot_k"]: t.dev_score.value for t in few.tuning.tried}
    assert dev_scores[4] > dev_scores[8] > dev_scores[2]
    assert few.tuning.dev_examples == 30 and few.tuning.pool_examples == 60
    assert few.title == "Few-shot (k=4, fixed)"
    assert describe(few.tuning).startswith("k=4 chosen on 30 dev examples (k=2 ")

    train = [f"item {i} kind {LABELS[i % 3]}" for i in range(90)]
    _, dev = split_dev([ex for ex in load_task_examples(task)], 30, task.data.seed)
    dev_inputs = {ex.input_text for ex in dev}
    assert dev_inputs < set(train)
    is_eval = [question(c)[0] >= 1000 for c in model.calls]
    first_eval = is_eval.index(True)
    # Before the first eval request: every configuration on every dev example, and nothing else.
    assert first_eval == 3 * 30
    assert all(c[-1]["content"] in dev_inputs for c in model.calls[:first_eval])
    # From then on: eval only (the answers, then the latency probes), every request with the chosen k.
    assert all(is_eval[first_eval:])
    assert {len(shown(c)) for c in model.calls[first_eval:]} == {4}
    answered = [question(c)[0] for c in model.calls[first_eval : first_eval + 40]]
    assert sorted(answered) == list(range(1000, 1040))
    # No demonstration is ever a dev example: while tuning (it would see itself) and after.
    assert not any(set(shown(c)) & dev_inputs for c in model.calls)

    saved = load_results(tmp_path / "runs" / results.run_id).rung("few_shot").tuning
    assert saved == few.tuning
    assert (tmp_path / "runs" / results.run_id / "tuning" / "few_shot.json").is_file()


def load_task_examples(task):
    from tunewise.data.splits import load_splits

    return load_splits(task)[0]


def test_a_rerun_reads_the_choice_back_without_model_calls(tmp_path):
    task = tuned_task(tmp_path)
    first = run(task, tmp_path, FakeModel(respond=by_shots))
    again = FakeModel(respond=by_shots)
    second = run(task, tmp_path, again)
    assert again.calls == [] and second.rung("few_shot").tuning == first.rung("few_shot").tuning

    # With the eval answers gone, the dev scores are still read from tuning/few_shot.json:
    # only eval is generated again.
    run_dir = tmp_path / "runs" / first.run_id
    for path in [run_dir / "rungs" / "few_shot.json", *run_dir.glob("predictions/few_shot*")]:
        path.unlink()
    third_model = FakeModel(respond=by_shots)
    third = run(task, tmp_path, third_model)
    assert all(question(c)[0] >= 1000 for c in third_model.calls)
    assert sorted(question(c)[0] for c in third_model.calls[:40]) == list(range(1000, 1040))
    assert third.rung("few_shot").tuning == first.rung("few_shot").tuning
    assert third.rung("few_shot").score == first.rung("few_shot").score


def test_a_tie_goes_to_the_cheaper_configuration(tmp_path):
    task = tuned_task(tmp_path)
    results = run(task, tmp_path, FakeModel(respond=lambda m: question(m)[1]))  # always right
    assert results.rung("few_shot").tuning.chosen == {"few_shot_k": 2}


def test_selection_and_k_are_tuned_together(tmp_path):
    task = tuned_task(tmp_path, few_shot_k=[2, 4], few_shot_selection=["fixed"])
    assert grid("few_shot", task.ladder) == [
        {"few_shot_k": 2, "few_shot_selection": "fixed"},
        {"few_shot_k": 4, "few_shot_selection": "fixed"},
    ]
    results = run(task, tmp_path, FakeModel(respond=by_shots))
    assert results.rung("few_shot").tuning.chosen == {"few_shot_k": 4, "few_shot_selection": "fixed"}


def test_the_budget_is_enforced_when_the_task_is_loaded(tmp_path):
    raw = {
        "name": "t",
        "data": {"train": "a.jsonl", "eval": "b.jsonl"},
        "ladder": {
            "rungs": ["few_shot", "few_shot_rag"],
            "tune": {"few_shot_k": [2, 4, 8], "few_shot_selection": ["nearest", "fixed"], "rag_k": [1, 3]},
        },
    }
    with pytest.raises(TaskError) as err:
        parse_task(raw)
    message = str(err.value)
    assert "rung few_shot_rag would try 12 configurations (rag_k 2 x few_shot_k 3 x few_shot_selection 2)" in message
    assert "tune.max_configs = 6" in message and "rung few_shot " not in message  # 6 fits
    raw["ladder"]["tune"]["max_configs"] = 12
    assert len(grid("few_shot_rag", parse_task(raw).ladder)) == 12

    (tmp_path / "task.yaml").write_text(
        "name: t\ndata: {train: a.jsonl, eval: b.jsonl}\nladder:\n  tune: {}\n", encoding="utf-8"
    )
    with pytest.raises(TaskError, match="tune lists no knob to try"):
        load_task(tmp_path / "task.yaml", check_files=False)
    with pytest.raises(TaskError, match=r"few_shot_k: .*values must be in \[1, 64\]; got \[0\]"):
        parse_task({**raw, "ladder": {"tune": {"few_shot_k": [0, 2]}}})


def test_rungs_added_on_the_command_line_are_held_to_the_budget(tmp_path):
    task = tuned_task(tmp_path, rag_k=[1, 3, 5])  # few_shot (3 configurations) fits
    model = FakeModel(respond=by_shots)
    with pytest.raises(TunewiseError, match="rung few_shot_rag would try 9 configurations"):
        run(task, tmp_path, model, rungs=["few_shot", "few_shot_rag"])
    assert model.calls == [] and not (tmp_path / "runs").exists()


def test_a_dev_split_as_large_as_train_fails_before_any_work(tmp_path):
    task = make_task(tmp_path, n_train=20, rungs=("few_shot",), tune={"dev_examples": 20, "few_shot_k": [2, 4]})
    model = FakeModel(respond=by_shots)
    with pytest.raises(TunewiseError, match="dev_examples is 20 but the train split has 20 examples"):
        run(task, tmp_path, model)
    assert model.calls == []


def test_tuning_off_leaves_run_ids_and_results_unchanged(tmp_path):
    plain = make_task(tmp_path, rungs=("zero_shot", "few_shot"))
    assert "tune" not in plain.ladder.model_dump(exclude_defaults=True)
    explicit = plain.model_copy(update={"ladder": plain.ladder.model_copy(update={"tune": None})})
    assert config_hash(plain, RunOptions()) == config_hash(explicit, RunOptions())
    tuned = plain.model_copy(update={"ladder": plain.ladder.model_copy(update={"tune": tuned_task(tmp_path / "t").ladder.tune})})
    assert config_hash(tuned, RunOptions()) != config_hash(plain, RunOptions())

    model = FakeModel(respond=by_shots)
    results = run(plain, tmp_path, model, all_rungs=True, rungs=["zero_shot", "few_shot"])
    assert all(r.tuning is None for r in results.rungs)
    assert not (tmp_path / "runs" / results.run_id / "tuning").exists()
    assert results.rung("few_shot").title == "Few-shot (k=2, fixed)"
    raw = json.loads((tmp_path / "runs" / results.run_id / "results.json").read_text())
    assert all(r["tuning"] is None for r in raw["rungs"])


def test_the_choice_is_shown_in_the_cli_and_the_report(tmp_path, capsys):
    from tunewise.commands.run import print_results
    from tunewise.report.render import render_report

    task = tuned_task(tmp_path)
    results = run(task, tmp_path, FakeModel(respond=by_shots))
    line = describe(results.rung("few_shot").tuning)
    print_results(results)
    out = " ".join(capsys.readouterr().out.split())
    assert f"tuned on dev: Few-shot (k=4, fixed): {line}" in out
    html, md = render_report(results, tmp_path / "report")
    assert f"Few-shot (k=4, fixed): {line}." in md.read_text()
    assert f"Few-shot (k=4, fixed): {line}." in html.read_text()


def test_the_tune_flag_default_grid_fits_its_budget_for_every_rung(tmp_path):
    from tunewise.rungs import RUNGS
    from tunewise.ladder.tuning import budget_problems, with_default_grid

    task = with_default_grid(make_task(tmp_path))
    assert budget_problems(task.ladder, list(RUNGS)) == []
    assert [len(grid(n, task.ladder)) for n in ("zero_shot", "few_shot", "rag", "few_shot_rag", "lora")] == [0, 3, 3, 9, 0]


def test_lora_learning_rate_is_tuned_on_dev_with_the_dev_split_left_out_of_training(tmp_path):
    pytest.importorskip("torch")
    from conftest import chat, write_jsonl
    from test_finetune import ANIMALS, SOUNDS, build_model, build_tokenizer

    tiny = tmp_path / "tiny"
    tokenizer = build_tokenizer()
    build_model(tokenizer).save_pretrained(tiny)
    tokenizer.save_pretrained(tiny)
    rows = [chat(f"what does the {ANIMALS[i % 8]} say ?", SOUNDS[i % 8], system="answer briefly .") for i in range(40)]
    raw = {
        "name": "tiny",
        "data": {"train": str(write_jsonl(tmp_path / "t.jsonl", rows)), "eval": str(write_jsonl(tmp_path / "e.jsonl", rows[:8]))},
        "model": str(tiny),
        "metric": "exact_match",
        "ladder": {"rungs": ["lora"], "max_new_tokens": 2, "tune": {"dev_examples": 8, "learning_rate": [1e-5, 3e-2]}},
        "train": {"epochs": 3, "batch_size": 4, "max_length": 64, "bf16": "off", "checkpoint_every_minutes": None},
    }
    task = parse_task(raw, tmp_path / "task.yaml")
    results = run_ladder(task, RunOptions(evidence=False, report=False, out_dir=tmp_path / "runs"), log=lambda m: None)
    lora = results.rung("lora")
    scores = {t.config["learning_rate"]: t.dev_score.value for t in lora.tuning.tried}
    assert lora.tuning.chosen == {"learning_rate": 3e-2} and scores[3e-2] > scores[1e-5]
    # One adapter per configuration, each trained on the 32 pool examples (less its validation
    # share), and the rung scored on eval with the chosen one, not retrained.
    folders = sorted((tmp_path / "runs" / results.run_id / "train").iterdir())
    assert len([f for f in folders if (f / "adapter").is_dir()]) == 2
    assert lora.training.train_examples + lora.training.val_examples == 32
    assert describe(lora.tuning).startswith("lr=0.03 chosen on 8 dev examples (lr=1e-05 ")
    # Export finds the chosen adapter even when another configuration's is newer.
    from tunewise.finetune.export import find_adapter, load_deployment

    run_dir = tmp_path / "runs" / results.run_id
    chosen = Path(lora.training.adapter_path)
    other = next(f / "adapter" for f in folders if f.name != chosen.parent.name)
    os.utime(other, (time.time() + 60, time.time() + 60))
    assert find_adapter(run_dir).resolve() == chosen.resolve()
    assert load_deployment(run_dir, "lora").finetune.resolve() == chosen.resolve()


def test_serve_and_export_use_the_knobs_chosen_on_dev(tmp_path):
    from tunewise.finetune.export import load_deployment
    from tunewise.serve.config import load_runs

    task = tuned_task(tmp_path)
    results = run(task, tmp_path, FakeModel(respond=by_shots))
    run_dir = tmp_path / "runs" / results.run_id
    _, dev = split_dev(load_task_examples(task), 30, task.data.seed)
    dev_inputs = {ex.input_text for ex in dev}

    configs = load_runs([run_dir], "few_shot", model=FakeModel(respond=by_shots), log=lambda m: None)
    request = configs["toy"].prepared.build([{"role": "user", "content": "item 1001 kind beta"}])
    assert len(shown(request.messages)) == 4 and not set(shown(request.messages)) & dev_inputs

    dep = load_deployment(run_dir, "few_shot")
    assert dep.title == "Few-shot (k=4, fixed)"
    shots = [m["content"] for m in dep.shots if m["role"] == "user"]
    assert len(shots) == 4 and not set(shots) & dev_inputs
