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
