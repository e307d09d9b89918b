"""Damaged run folders heal on a rerun, commands on them fail in one line, checkpoints on a time budget,
and custom metric code from a run folder runs only when the user asks (issue 16, items 3 and 7).
Fake models only, except the checkpoint test (a tiny random Llama, as in test_finetune.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_ladder import make_task, oracle
from tunewise.cli import main
from tunewise.ladder.results import load_results
from tunewise.ladder.run import RunOptions, run_ladder
from tunewise.models.base import FakeModel


def few_shot_call(conversation) -> bool:
    return any(m["role"] == "assistant" for m in conversation)


N_EVAL = 24  # below the size where adaptive evaluation starts: every rung answers every example


def finished_run(tmp_path: Path) -> tuple[object, dict, Path, object]:
    """A finished two-rung run: (task, options, run folder, results)."""
    task = make_task(tmp_path, n_eval=N_EVAL, target=0.99, rungs=("zero_shot", "few_shot"))
    options = dict(evidence=False, report=False, out_dir=tmp_path / "runs")
    results = run_ladder(task, RunOptions(model=FakeModel(respond=oracle(0.4, 0.9)), **options), log=lambda m: None)
    return task, options, tmp_path / "runs" / results.run_id, results


def tear_last_line(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) - 1 - len(text.rstrip("\n").splitlines()[-1]) // 2])


def garbage_line(path: Path, line: int) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[line - 1] = "\x00\x00 not json\n"
    path.write_text("".join(lines))


def truncate(path: Path) -> None:
    path.write_text(path.read_text()[:40])


DAMAGE = {
    "torn last line": (lambda d: tear_last_line(d / "predictions" / "few_shot.jsonl"), f"predictions/few_shot.jsonl: line {N_EVAL} is damaged"),
    "garbage line": (lambda d: garbage_line(d / "predictions" / "few_shot.jsonl", 17), "predictions/few_shot.jsonl: line 17 is damaged"),
    "deleted predictions": (lambda d: (d / "predictions" / "few_shot.jsonl").unlink(), "predictions/few_shot.jsonl is missing"),
    "truncated rung file": (lambda d: truncate(d / "rungs" / "few_shot.json"), "rungs/few_shot.json is damaged"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_rerun_recomputes_only_the_damaged_rung(tmp_path, case):
    task, options, run_dir, first = finished_run(tmp_path)
    damage, says = DAMAGE[case]
    damage(run_dir)
    lines: list[str] = []
    model = FakeModel(respond=oracle(0.4, 0.9))
    results = run_ladder(task, RunOptions(model=model, **options), log=lines.append)

    # One line names the damage and the rung recomputed; the zero-shot rung is read back untouched.
    [line] = [m for m in lines if "damaged" in m or "missing" in m]
    assert line.startswith(says) and line.endswith("; recomputing few_shot")
    assert any(m.startswith("Zero-shot prompt: finished earlier") for m in lines)
    # The intact .partial.jsonl rows are reused: no eval answer is generated again, only the 1 + 16
    # single-request latency probes of the recomputed rung, and none for zero-shot.
    assert model.calls and all(few_shot_call(c) for c in model.calls)
    assert len(model.calls) == 17
    for name in ("zero_shot", "few_shot"):
        assert results.rung(name).status == "done"
        assert results.rung(name).score == first.rung(name).score
    rows = [json.loads(line) for line in (run_dir / "predictions" / "few_shot.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(N_EVAL))
    assert json.loads((run_dir / "rungs" / "few_shot.json").read_text())["status"] == "done"

    # Healed: the next rerun reads both rungs back and calls the model for nothing.
    again = FakeModel(respond=oracle(0.4, 0.9))
    lines.clear()
    run_ladder(task, RunOptions(model=again, **options), log=lines.append)
    assert again.calls == [] and not any("damaged" in m or "missing" in m for m in lines)


def test_a_truncated_results_json_is_rewritten_without_calling_the_model(tmp_path):
    task, options, run_dir, first = finished_run(tmp_path)
    truncate(run_dir / "results.json")
    lines: list[str] = []
    model = FakeModel(respond=oracle(0.4, 0.9))
    results = run_ladder(task, RunOptions(model=model, **options), log=lines.append)
    assert model.calls == []
    assert [m for m in lines if "results.json" in m and "damaged" in m]
    assert load_results(run_dir).decision == results.decision == first.decision


def test_damaged_partial_rows_are_regenerated_and_the_sound_ones_kept(tmp_path):
    """A garbage line inside .partial.jsonl costs that one answer, not every answer after it; a torn
    last line is not glued to the next appended row."""
    task, options, run_dir, first = finished_run(tmp_path)
    partial = run_dir / "predictions" / "few_shot.partial.jsonl"
    garbage_line(partial, 10)
    tear_last_line(partial)
    final = run_dir / "predictions" / "few_shot.jsonl"
    inputs = [json.loads(line)["input"] for line in final.read_text().splitlines()]
    final.unlink()
    model = FakeModel(respond=oracle(0.4, 0.9))
    results = run_ladder(task, RunOptions(model=model, **options), log=lambda m: None)
    asked = [c[-1]["content"] for c in model.calls[:2]]
    assert asked == [inputs[9], inputs[N_EVAL - 1]]  # lines 10 and N_EVAL of the partial file
    assert len(model.calls) == 2 + 17
    assert results.rung("few_shot").score == first.rung("few_shot").score
    rows = [json.loads(line) for line in partial.read_text().splitlines()]
    assert sorted(r["index"] for r in rows) == list(range(N_EVAL))


# -- commands on a damaged folder: one line, no traceback ------------------------------------------


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("case", ["torn last line", "garbage line", "deleted predictions", "truncated rung file"])
def test_compare_on_a_damaged_folder_is_one_clear_line(tmp_path, capsys, case):
    _, _, run_dir, _ = finished_run(tmp_path)
    damage, says = DAMAGE[case]
    damage(run_dir)
    if case == "truncated rung file":  # compare reads results.json and the answers, both intact
        main(["compare", str(run_dir), "few_shot", "zero_shot"])
        return
    code, err = run_cli(["compare", str(run_dir), "few_shot", "zero_shot"], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("Error: ") and "rerun the task to recompute few_shot" in err
    assert says.split(": line")[0].removesuffix(" is missing") in err


@pytest.mark.parametrize("command", ["compare", "report", "serve", "export"])
@pytest.mark.parametrize("damaged", ["results.json", "config.yaml"])
def test_commands_on_a_damaged_run_folder_say_so_in_one_line(tmp_path, capsys, command, damaged):
    _, _, run_dir, _ = finished_run(tmp_path)
    truncate(run_dir / damaged)
    if damaged == "config.yaml":
        (run_dir / damaged).write_text("name: toy\ndata: {train: [unclosed\n")
    args = {"compare": ["few_shot", "zero_shot"], "report": [], "serve": ["--port", "0"], "export": []}[command]
    if command == "report" and damaged == "config.yaml":
        main([command, str(run_dir)])  # the report is drawn from results.json alone
        return
    code, err = run_cli([command, str(run_dir), *args], capsys)
    assert code != 0 and "Traceback" not in err, err
    # serve heads its list of per-run problems with "cannot serve:"; the problem itself is one line.
    assert err.strip().removeprefix("Error: cannot serve:\n").count("\n") == 0, err
    if command != "export":  # export looks for an adapter first; this run trained none
        assert damaged in err


# -- checkpoints on a time budget ------------------------------------------------------------------


def test_lora_checkpoints_on_a_time_budget_and_resumes_mid_epoch(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from test_finetune import Capture, Interrupt, build_model, build_tokenizer, probe_ids, sound_examples
    from test_finetune import make_task as tiny_task

    from tunewise.finetune import train as ft

    tiny = tmp_path / "tiny"
    tokenizer = build_tokenizer()
    build_model(tokenizer).save_pretrained(tiny)
    tokenizer.save_pretrained(tiny)
    # One epoch of 6 steps, checkpointed at its end only (no eval_every_steps) ... unless 10 minutes
    # pass: this clock says a minute passes between any two looks at it, so every 10th look saves.
    ticks = iter(range(0, 10_000, 60))
    monkeypatch.setattr(ft, "_monotonic", lambda: float(next(ticks)))
    task = tiny_task(tiny, epochs=1, batch_size=4, early_stopping_patience=0, checkpoint_every_minutes=2)
    data = sound_examples(24)  # 22 train + 2 validation: 6 steps
    with pytest.raises(KeyboardInterrupt):
        ft.train_model(task, data, tmp_path / "out", callbacks=[Interrupt(at_step=5)])
    folder = next((tmp_path / "out").iterdir())
    steps = sorted(int(p.name.split("-")[1]) for p in (folder / "checkpoints").iterdir())
    assert steps and max(steps) >= 3  # mid-epoch work survived the kill
    capture = Capture(probe_ids())
    out = ft.train_model(task, data, tmp_path / "out", callbacks=[capture])
    assert capture.first_step == max(steps) + 1
    assert max(p.step for p in out.summary.loss_curve) == 6 and out.summary.epochs_run == 1.0


def test_checkpoint_budget_does_not_change_run_ids_or_training_folders(tmp_path):
    from tunewise.finetune import train as ft
    from tunewise.ladder.run import config_hash

    task = make_task(tmp_path)
    assert task.train.checkpoint_every_minutes == 10
    other = task.model_copy(update={"train": task.train.model_copy(update={"checkpoint_every_minutes": 1})})
    assert config_hash(task, RunOptions()) == config_hash(other, RunOptions())
    assert ft.training_config(task, "d", "m", None, None) == ft.training_config(other, "d", "m", None, None)


# -- custom metric code: said plainly, never loaded from a run folder unasked -----------------------


METRIC_CODE = """
from pathlib import Path
Path(__file__).with_name("ran.txt").write_text("the metric file ran")

def score(prediction, references):
    return float(prediction.strip() in references)
score.binary = True
"""


def test_loading_a_custom_metric_file_says_so_in_one_line(tmp_path, capsys):
    from tunewise.eval.metrics import get_metric

    (tmp_path / "m.py").write_text(METRIC_CODE)
    get_metric("m.py:score", base_dir=tmp_path)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "m.py") in err and "runs Python code" in err


def test_compare_runs_metric_code_named_by_a_run_folder_only_when_trusted(tmp_path, capsys):
    _, _, run_dir, _ = finished_run(tmp_path)
    # A run folder from elsewhere whose config names a metric file shipped beside it.
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("metric: accuracy", "metric: m.py:score"))
    (run_dir / "m.py").write_text(METRIC_CODE)
    code, err = run_cli(["compare", str(run_dir), "few_shot", "zero_shot"], capsys)
    assert code != 0 and "Traceback" not in err and "--trust-metric-code" in err and "m.py" in err
    assert not (run_dir / "ran.txt").exists()
    from click.testing import CliRunner

    from tunewise.cli import cli

    out = CliRunner().invoke(cli, ["compare", str(run_dir), "few_shot", "zero_shot", "--trust-metric-code", "--json"])
    assert out.exit_code == 0, out.output
    assert (run_dir / "ran.txt").exists() and json.loads(out.stdout)["metric"] == "m.py:score"


def test_a_metric_file_the_user_names_runs_without_the_flag(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from tunewise.cli import cli

    _, _, run_dir, _ = finished_run(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "m.py").write_text(METRIC_CODE)
    monkeypatch.chdir(mine)  # a relative --metric path is the user's, relative to where they stand
    out = CliRunner().invoke(cli, ["compare", str(run_dir), "few_shot", "zero_shot", "--metric", "m.py:score", "--json"])
    assert out.exit_code == 0, out.output
    assert (mine / "ran.txt").exists()


def test_report_and_serve_never_load_metric_code_from_the_run_folder(tmp_path):
    from tunewise.serve.config import load_runs

    _, _, run_dir, _ = finished_run(tmp_path)
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("metric: accuracy", "metric: m.py:score"))
    (run_dir / "m.py").write_text(METRIC_CODE)
    main(["report", str(run_dir)])  # returns normally: no SystemExit on success
    load_runs([run_dir], model=FakeModel(["x"]), log=lambda m: None)
    assert not (run_dir / "ran.txt").exists()


def test_answers_of_an_older_version_of_a_rung_are_recomputed(tmp_path, monkeypatch):
    """A rung that changes how it answers (lora_rag's RAFT training) raises its version: a rerun
    does not read the old version's answers back as if they were the new rung's."""
    from dataclasses import replace

    import tunewise.rungs as registry
    from tunewise.ladder.run import RunOptions, run_ladder
    from tunewise.models.base import FakeModel
    from tunewise.task import parse_task

    from conftest import chat, write_jsonl

    write_jsonl(tmp_path / "t.jsonl", [chat(f"q{i}", "a") for i in range(4)])
    write_jsonl(tmp_path / "e.jsonl", [chat(f"q{i}", "a") for i in range(4, 8)])
    task = parse_task({"name": "v", "data": {"train": "t.jsonl", "eval": "e.jsonl"}, "ladder": {"rungs": ["zero_shot"]}},
                      tmp_path / "task.yaml")
    options = RunOptions(out_dir=tmp_path / "runs", model=FakeModel(respond=lambda m: "old"), evidence=False, report=False)
    first = run_ladder(task, options, log=lambda m: None)
    assert first.rungs[0].rung_version == 1 and first.rungs[0].score.value == 0.0

    monkeypatch.setitem(registry.RUNGS, "zero_shot", replace(registry.RUNGS["zero_shot"], version=2))
    lines: list[str] = []
    options.model = FakeModel(respond=lambda m: "a")
    again = run_ladder(task, options, log=lines.append)
    assert again.rungs[0].rung_version == 2 and again.rungs[0].score.value == 1.0
    assert any("answered by version 1 of the zero_shot rung, now 2; recomputing zero_shot" in line for line in lines)
