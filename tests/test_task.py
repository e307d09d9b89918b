from pathlib import Path

import pytest

from tunewise.task import TaskError, load_task, parse_task, task_to_yaml


def test_minimal_task_resolves_paths_relative_to_file(tmp_path):
    (tmp_path / "t.jsonl").write_text("")
    (tmp_path / "e.jsonl").write_text("")
    f = tmp_path / "task.yaml"
    f.write_text("name: demo\ndata: {train: t.jsonl, eval: e.jsonl}\n")
    task = load_task(f)
    assert task.data.train == (tmp_path / "t.jsonl").resolve()
    assert task.business.calls_per_month == 10_000
    assert "name: demo" in task_to_yaml(task)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"data": {"train": "a", "eval": "b"}}, "name: Field required"),
        ({"name": "x", "data": {"train": "a"}}, "data: give `train` and `eval`"),
        ({"name": "x", "data": {"file": "a"}, "target": "high"}, "target: Input should be a valid number"),
        ({"name": "x", "data": {"file": "a"}, "business": {"calls_per_month": -5}}, "business.calls_per_month"),
        ({"name": "x", "data": {"file": "a"}, "bussiness": {}}, "bussiness: unknown field"),
        ({"name": "x y", "data": {"file": "a"}}, "name: use letters"),
        (
            {"name": "x", "data": {"file": "a"}, "business": {"pricing": {"input_per_1m": None, "gpu_hourly": None}}},
            "give input_per_1m and output_per_1m",
        ),
    ],
)
def test_errors_name_the_field(raw, expected):
    with pytest.raises(TaskError) as err:
        parse_task(raw, Path("task.yaml"))
    assert expected in str(err.value)


def test_all_errors_reported_at_once():
    with pytest.raises(TaskError) as err:
        parse_task({"name": "x", "data": {"file": "a"}, "target": "high", "metric": 3}, Path("t.yaml"))
    assert "2 problem(s)" in str(err.value)
    assert "(got 'high')" in str(err.value)


def test_missing_files_and_bad_yaml(tmp_path):
    f = tmp_path / "task.yaml"
    f.write_text("name: x\ndata: {train: nope.jsonl, eval: nope2.jsonl}\ncorpus: docs/\n")
    with pytest.raises(TaskError, match="data.train: file not found.*corpus: file not found"):
        load_task(f)
    f.write_text("name: x\n  data: [\n")
    with pytest.raises(TaskError, match="not valid YAML at line"):
        load_task(f)
    with pytest.raises(TaskError, match="task file not found"):
        load_task(tmp_path / "missing.yaml")


# -- hostile and careless task files (issue 16, items 1 and 8) ---------------------------------------


def alias_bomb(depth: int = 9, under: str = "name") -> str:
    """The billion-laughs YAML: ~1 KB whose expansion is 10**depth strings."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, depth + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + f"\n{under}: *a{depth}\ndata: {{file: x.jsonl}}\n"


def task_file(tmp_path, text: str | bytes, name: str = "task.yaml"):
    (tmp_path / "x.jsonl").write_text("")
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


@pytest.mark.parametrize("under", ["name", "unknown_key", "metric_options"])
def test_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path, under):
    import time
    import tracemalloc

    path = task_file(tmp_path, alias_bomb(under=under))
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(TaskError) as err:
            load_task(path)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - started < 60  # a hang guard: the bomb ran past 90 s before the fix
    assert peak < 20_000_000
    assert len(str(err.value)) < 1000
    assert "expands" in str(err.value) and "anchors" in str(err.value)


def test_small_aliases_are_still_fine(tmp_path):
    path = task_file(tmp_path, "name: x\ndata: {file: x.jsonl}\nmetric: json_schema\nmetric_options: &o {schema: {type: object}}\n"
                               "business: {goals: &g [cost]}\n")
    assert load_task(path).business.goals[0].value == "cost"


def test_every_echoed_value_is_capped(tmp_path):
    path = task_file(tmp_path, f"name: 'x y{'z' * 100_000}'\ndata: {{file: x.jsonl}}\nbogus: '{'q' * 100_000}'\n")
    with pytest.raises(TaskError) as err:
        load_task(path)
    message = str(err.value)
    assert len(message) < 1000 and "…" in message
    assert "name: use letters" in message and "bogus: unknown field" in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: [" * 5000, "nested more than"),
        ("name: x\ndata: {file: x.jsonl}\nbusiness: {calls_per_month: " + "9" * 5000 + "}\n", "business.calls_per_month"),
        ("name: x\ndata: {file: x.jsonl}\nbusiness: {calls_per_month: 0x" + "f" * 5000 + "}\n", "business.calls_per_month"),
        ("name: x\ndata: {file: x.jsonl}\nmetric_options: !!python/object:os.system {}\n", "not valid YAML"),
        ("a: &a [*a]\nname: x\n", "recursive"),
        ("- 1\n- 2\n", "expected a YAML mapping"),
    ],
)
def test_hostile_yaml_is_a_task_error(tmp_path, text, expected):
    with pytest.raises(TaskError) as err:
        load_task(task_file(tmp_path, text))
    assert expected in str(err.value) and len(str(err.value)) < 2000


def test_huge_file_is_refused_before_parsing(tmp_path):
    path = task_file(tmp_path, "name: x\ndata: {file: x.jsonl}\ndescription: " + "w" * 3_000_000 + "\n")
    with pytest.raises(TaskError, match="too large"):
        load_task(path)


def test_non_utf8_task_file_says_where_and_how_to_fix(tmp_path):
    path = task_file(tmp_path, "name: x\ndata: {file: x.jsonl}\ndescription: caf\xe9\n".encode("latin-1"))
    with pytest.raises(TaskError) as err:
        load_task(path)
    assert "not UTF-8" in str(err.value) and "line 3" in str(err.value) and "save it as UTF-8" in str(err.value)


def test_dates_stay_text(tmp_path):
    # YAML 1.1 reads 2024-13-45 as a timestamp and datetime() raised ValueError: a traceback
    assert load_task(task_file(tmp_path, BASE + "description: 2024-13-45\n")).description == "2024-13-45"


def test_utf8_bom_is_accepted(tmp_path):
    assert load_task(task_file(tmp_path, b"\xef\xbb\xbfname: x\ndata: {file: x.jsonl}\n")).name == "x"


BASE = "name: x\ndata: {file: x.jsonl}\n"


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("data: {file: x.jsonl, seed: -1}", "data.seed: Input should be greater than or equal to 0 (got -1)"),
        ("business: {pricing: {input_per_1m: .inf}}", "business.pricing.input_per_1m: Input should be a finite number"),
        ("business: {pricing: {gpu_hourly: .nan}}", "business.pricing.gpu_hourly: Input should be a finite number"),
        ("business: {pricing: {output_per_1m: 'inf'}}", "business.pricing.output_per_1m: Input should be a finite number"),
        ("business: {latency_budget_ms: 1.0e300}", "business.latency_budget_ms: too large"),
        ("target: .nan", "target: Input should be a finite number"),
        ("target: -.inf", "target: Input should be a finite number"),
        ("train: {learning_curve: [-0.5, 2.0]}", "train.learning_curve: shares must be in (0, 1]; got -0.5, 2.0"),
        ("train: {learning_curve: [.nan]}", "train.learning_curve.0: Input should be a finite number"),
        ("ladder: {rungs: [zero_shot, few_shots]}", "ladder.rungs: unknown rung 'few_shots'; valid rungs: zero_shot, few_shot"),
        ("metric: acurracy", "metric: unknown metric 'acurracy' (did you mean 'accuracy'?); valid metrics: exact_match"),
        ("extra_metrics: [token_f1, bleu]", "extra_metrics: unknown metric 'bleu'"),
        ("metric: 'score.py:'", "metric: custom metric 'score.py:': write module:function"),
        ("metric: accuracy\nmetric_options: {schema: {}}", "metric_options: metric 'accuracy' takes no options; got 'schema'"),
    ],
)
def test_every_setting_is_checked_at_load(tmp_path, extra, expected):
    text = BASE.replace("data: {file: x.jsonl}\n", "") if extra.startswith("data:") else BASE
    with pytest.raises(TaskError) as err:
        load_task(task_file(tmp_path, text + extra + "\n"))
    assert expected in str(err.value)


def test_custom_metric_file_must_exist_and_is_not_imported_at_load(tmp_path):
    (tmp_path / "m.py").write_text("raise SystemExit('imported at load')\ndef score(p, r):\n    return 1.0\n")
    task = load_task(task_file(tmp_path, BASE + "metric: m.py:score\nextra_metrics: [metrics/other.py:f]\n"
                                              .replace("[metrics/other.py:f]", "[]")))
    assert task.metric == "m.py:score"
    with pytest.raises(TaskError, match=r"metric: custom metric file not found: .*nope\.py"):
        load_task(task_file(tmp_path, BASE + "metric: nope.py:score\n"))
    with pytest.raises(TaskError, match=r"extra_metrics: custom metric file not found: .*other\.py"):
        load_task(task_file(tmp_path, BASE + "extra_metrics: [sub/other.py:f]\n"))
    # a module:function metric is left to the import at run time
    assert load_task(task_file(tmp_path, BASE + "metric: my_pkg.metrics:score\n")).metric == "my_pkg.metrics:score"


def test_bundled_examples_still_load():
    from conftest import EXAMPLES

    paths = sorted(EXAMPLES.glob("*/*.yaml"))
    assert len(paths) >= 4
    for path in paths:
        load_task(path)


def test_read_yaml_is_the_one_safe_reader_for_run_folders(tmp_path):
    from tunewise.task import read_yaml

    path = tmp_path / "config.yaml"
    path.write_text(alias_bomb())
    with pytest.raises(TaskError, match="expands"):
        read_yaml(path)
    path.write_text("a: 1\n")
    assert read_yaml(path) == {"a": 1}


def test_parse_yaml_reads_text_as_read_yaml_reads_files():
    from tunewise.task import parse_yaml

    assert parse_yaml("name: x\nwhen: 2024-01-01\n") == {"name": "x", "when": "2024-01-01"}
    with pytest.raises(TaskError, match="^form: the YAML expands"):
        parse_yaml(alias_bomb(), "form")
    with pytest.raises(TaskError, match="^form: not valid YAML at line 1"):
        parse_yaml("a: !!python/name:os.system x\n", "form")


def test_advise_task_uses_the_same_validation(tmp_path, capsys):
    from tunewise.cli import main

    path = task_file(tmp_path, "name: x\ndata: {train: nope.jsonl, eval: x.jsonl}\n")
    with pytest.raises(SystemExit) as exit_:
        main(["advise", "--task", str(path), "--json"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "data.train: file not found" in err and "Traceback" not in err

    path.write_text("name: x\ndata: {file: x.jsonl}\nmetric: acurracy\nladder: {rungs: [lora, qlora]}\n")
    with pytest.raises(SystemExit) as exit_:
        main(["advise", "--task", str(path), "--json"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "unknown metric 'acurracy'" in err and "unknown rung 'qlora'" in err


# -- a task's examples (issue 16, item 4: run side) --------------------------------------------------


def test_lone_surrogate_is_one_line_naming_file_line_and_fix(tmp_path):
    from tunewise.data.formats import DataError
    from tunewise.data.splits import load_splits

    good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'
    bad = '{"messages": [{"role": "user", "content": "a\\ud800b"}, {"role": "assistant", "content": "yo"}]}'
    (tmp_path / "train.jsonl").write_text(f"{good}\n{bad}\n{good}\n", encoding="utf-8")
    (tmp_path / "eval.jsonl").write_text(f"{good}\n", encoding="utf-8")
    path = task_file(tmp_path, "name: x\ndata: {train: train.jsonl, eval: eval.jsonl}\n")
    with pytest.raises(DataError) as err:
        load_splits(load_task(path))
    message = str(err.value)
    (line,) = [x for x in message.splitlines() if "surrogate" in x]
    assert str(tmp_path / "train.jsonl") in line and "line 2" in line and "fix:" in line
    message.encode("utf-8")  # printable: the message itself holds no surrogate


def test_examples_built_in_memory_are_checked_too(tmp_path):
    from tunewise.data.example import Example

    ex = Example([{"role": "system", "content": "ok"}, {"role": "user", "content": "x\udc80"}], "fine")
    assert ex.lone_surrogate() == ("messages[1].content", "\\udc80")
    assert Example([{"role": "user", "content": "😀"}], "a", references=["a", "b\ud83d"]).lone_surrogate() == (
        "references[1]", "\\ud83d")
    assert Example([{"role": "user", "content": "😀"}], "a").lone_surrogate() is None


def test_load_splits_refuses_a_surrogate_any_reader_lets_through(tmp_path, monkeypatch):
    from tunewise.data import splits
    from tunewise.data.example import Example
    from tunewise.data.formats import DataError

    def reader(path, fmt):
        yield 1, Example([{"role": "user", "content": "fine"}], "ok", line=1)
        yield 3, Example([{"role": "user", "content": "q"}], "bad\ud800", line=3)

    monkeypatch.setattr(splits, "iter_records", reader)
    (tmp_path / "d.jsonl").write_text("")
    task = load_task(task_file(tmp_path, "name: x\ndata: {file: d.jsonl}\n"))
    with pytest.raises(DataError, match=r"d\.jsonl: line 3: lone surrogate \\ud800 in answer.*fix: write the character"):
        splits.load_splits(task)


def test_lone_surrogate_in_the_task_file_is_refused(tmp_path):
    # the escape is valid YAML, but the system prompt would crash the tokenizer at the first request
    with pytest.raises(TaskError, match=r"system_prompt: lone surrogate \\ud800 .*write the character itself"):
        load_task(task_file(tmp_path, BASE + 'system_prompt: "be brief \\ud800"\n'))
