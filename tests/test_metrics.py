"""Metrics: hand-computed values for every registered metric, custom functions, registry errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import EXAMPLES

from tunewise.data.example import Example
from tunewise.eval.metrics import (
    METRICS,
    MetricError,
    available_metrics,
    chrf_score,
    extract_json,
    get_metric,
    normalize_answer,
    normalize_label,
    secondary_metrics,
)


def ex(answer: str, *references: str, line: int | None = None) -> Example:
    return Example([{"role": "user", "content": "q"}], answer, list(references), line=line)


GIRAFFE = '{"name": "Giraffe", "eatType": "restaurant", "food": "Fast food", "near": "Rainbow Vegetarian Café"}'

# (metric, prediction, gold answer, extra references, expected score)
CASES = [
    # exact_match: SQuAD normalisation, any reference
    ("exact_match", "The Denver Broncos", "Denver Broncos", [], 1.0),
    ("exact_match", "denver  broncos!", "Denver Broncos", [], 1.0),
    ("exact_match", "an apple", "apple", [], 1.0),
    ("exact_match", "“Warsaw”", "Warsaw", [], 1.0),
    ("exact_match", "Broncos", "Denver Broncos", [], 0.0),
    ("exact_match", "geomorphologic", "Vistula Valley", ["Vistula Valley", "geomorphologic"], 1.0),
    # token_f1: SQuAD token F1, best over references
    ("token_f1", "Broncos won in Denver", "Denver Broncos", [], 2 / 3),  # P 2/4, R 2/2
    ("token_f1", "the Denver Broncos", "Denver Broncos", [], 1.0),
    ("token_f1", "Vistula", "Vistula Valley", ["Vistula Valley", "geomorphologic"], 2 / 3),  # P 1, R 1/2
    ("token_f1", "cat cat cat", "cat sat", [], 0.4),  # overlap counts min(3, 1) = 1: P 1/3, R 1/2
    ("token_f1", "Paris", "London", [], 0.0),
    ("token_f1", "", "", [], 1.0),
    # contains: answer recall, on word boundaries after SQuAD normalisation
    ("contains", "The mayor of Warsaw is called President.", "President", [], 1.0),
    ("contains", "It was the Denver Broncos, in 2016", "Denver Broncos", [], 1.0),
    ("contains", "Presidential", "President", [], 0.0),  # not a word of the prediction
    ("contains", "Broncos", "Denver Broncos", [], 0.0),  # part of the answer is not the answer
    ("contains", "about 22 times", "iron", ["iron", "22 times"], 1.0),  # any reference
    ("contains", "anything", "the", [], 0.0),  # a reference that normalises to nothing never matches
    # accuracy: tolerant label parsing
    ("accuracy", "play_music", "play_music", [], 1.0),
    ("accuracy", '"Play_Music."', "play_music", [], 1.0),
    ("accuracy", "Intent: book_restaurant\nThe user wants a table.", "book_restaurant", [], 1.0),
    ("accuracy", "**get_weather**", "get_weather", [], 1.0),
    ("accuracy", "get weather", "get_weather", [], 1.0),
    ("accuracy", "\n  rate_book\n", "rate_book", [], 1.0),
    ("accuracy", "I think it is get_weather", "get_weather", [], 0.0),
    ("accuracy", "rate_book", "get_weather", [], 0.0),
    ("accuracy", "", "get_weather", [], 0.0),
    # rouge_l: LCS F1 on word tokens
    ("rouge_l", "police killed the gunman", "police kill the gunman", [], 0.75),  # LCS 3 of 4 and 4
    ("rouge_l", "the gunman kill police", "police killed the gunman", [], 0.5),  # LCS "the gunman"
    ("rouge_l", "the cat sat on the mat", "the cat was on the mat", [], 5 / 6),
    ("rouge_l", "A B C D", "a c e", [], 4 / 7),  # LCS 2: P 1/2, R 2/3
    ("rouge_l", "x y", "a c e", ["a c e", "x y z"], 0.8),  # best reference: P 1, R 2/3
    # chrf: character n-grams up to 6, beta 2, whitespace removed
    ("chrf", "ab", "abc", [], 7 / 11),  # P (1 + 1)/2, R (2/3 + 1/2)/2 -> 5PR/(4P + R) = 35/55
    ("chrf", "a b", "abc", [], 7 / 11),
    ("chrf", "abc", "abc", [], 1.0),
    ("chrf", "xyz", "abc", [], 0.0),
    # sacrebleu's published value for this pair (HF metric card): 61.576379378113785
    (
        "chrf",
        "The relationship between Obama and Netanyahu is not exactly friendly.",
        "The ties between Obama and Netanyahu are not particularly friendly.",
        [],
        0.61576379378113785,
    ),
    # json_valid: first JSON object or array anywhere in the text
    ("json_valid", '{"a": 1}', "{}", [], 1.0),
    ("json_valid", '```json\n{"a": 1}\n```', "{}", [], 1.0),
    ("json_valid", 'Here it is: {"a": {"b": [1]}} Hope this helps', "{}", [], 1.0),
    ("json_valid", "[1, 2]", "{}", [], 1.0),
    ("json_valid", '{"a": 1', "{}", [], 0.0),
    ("json_valid", "{'a': 1}", "{}", [], 0.0),
    ("json_valid", "no json here", "{}", [], 0.0),
    # json_fields: F1 over (key, value) pairs, text compared lowercased with whitespace collapsed
    ("json_fields", GIRAFFE, GIRAFFE, [], 1.0),
    ("json_fields", '{"NEAR": "rainbow  vegetarian café", "food": "FAST FOOD", "eatType": "restaurant", "name": "Giraffe"}', GIRAFFE, [], 1.0),
    ("json_fields", '{"name": "Giraffe", "eatType": "restaurant", "food": "Chinese", "near": "Rainbow Vegetarian Café"}', GIRAFFE, [], 0.75),
    ("json_fields", '{"name": "Giraffe", "eatType": "restaurant", "near": "Rainbow Vegetarian Café"}', GIRAFFE, [], 6 / 7),  # P 1, R 3/4
    ("json_fields", GIRAFFE[:-1] + ', "area": "riverside"}', GIRAFFE, [], 8 / 9),  # P 4/5, R 1
    ("json_fields", f"```json\n{GIRAFFE}\n```", GIRAFFE, [], 1.0),
    ('json_fields', '{"rating": 5}', '{"rating": "5"}', [], 1.0),
    ("json_fields", "name: Giraffe", GIRAFFE, [], 0.0),
    ("json_fields", "[1, 2]", GIRAFFE, [], 0.0),
    ("json_fields", "{}", "{}", [], 1.0),
]


@pytest.mark.parametrize("name, prediction, answer, references, expected", CASES)
def test_metric_hand_values(name, prediction, answer, references, expected):
    metric = get_metric(name)
    assert metric.per_example(prediction, ex(answer, *references)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", [n for n in METRICS if n not in ("json_schema", "judge")])  # judge: a model; test_judge.py
def test_every_registered_metric_builds_under_its_name_and_scores_in_range(name):
    metric = get_metric(name)
    assert metric.name == name and metric.higher_is_better
    rows = [(p, ex(a, *r)) for n, p, a, r, _ in CASES if n == name] or [(p, ex(a, *r)) for _, p, a, r, _ in CASES[:6]]
    scores = metric.scores([p for p, _ in rows], [e for _, e in rows])
    assert all(0.0 <= s <= 1.0 for s in scores)
    if metric.binary:
        assert set(scores) <= {0.0, 1.0}


def test_binary_flags_choose_the_right_test():
    assert {n for n in METRICS if n != "json_schema" and get_metric(n).binary} == {"exact_match", "contains", "accuracy", "json_valid"}


@pytest.mark.parametrize(
    "text, expected",
    [("The  Denver Broncos!", "denver broncos"), ("A cat, an owl & the dog.", "cat owl dog"), ("theatre", "theatre")],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ('"Play_Music."\nBecause the user asked for a song.', "play music"),
        ("Label: search-creative-work", "search creative work"),
        ("`rate_book`", "rate book"),
        ("\n\n", ""),
    ],
)
def test_normalize_label(text, expected):
    assert normalize_label(text) == expected


def test_extract_json_takes_the_first_object_and_skips_broken_ones():
    assert extract_json('broken {"a": 1 then {"b": 2} and {"c": 3}') == {"b": 2}
    assert extract_json("nothing") is None


def test_macro_f1_is_corpus_level_on_a_small_confusion():
    gold = ["a", "a", "a", "b", "b", "c"]
    predicted = ["a", "a", "b", "b", "c", "c"]
    # a: TP 2 FN 1 -> 4/5; b: TP 1 FP 1 FN 1 -> 2/4; c: TP 1 FP 1 -> 2/3
    expected = (4 / 5 + 2 / 4 + 2 / 3) / 3
    metric = get_metric("macro_f1")
    examples = [ex(g) for g in gold]
    assert metric.aggregate(predicted, examples) == pytest.approx(expected)
    # Not the mean of per-example scores (that would be accuracy, 4/6).
    assert np.mean(metric.scores(predicted, examples)) == pytest.approx(4 / 6)
    assert get_metric("accuracy").aggregate(predicted, examples) == pytest.approx(4 / 6)


def test_macro_f1_counts_an_invented_label_as_a_miss_not_a_class():
    metric = get_metric("macro_f1")
    assert metric.aggregate(["a", "zz"], [ex("a"), ex("b")]) == pytest.approx(0.5)  # a: 1, b: 0


def test_macro_f1_matches_sklearn_over_gold_labels():
    f1_score = pytest.importorskip("sklearn.metrics").f1_score
    rng = np.random.default_rng(3)
    gold = rng.choice(list("abcd"), 80).tolist()
    predicted = rng.choice(list("abcdz"), 80).tolist()
    ours = get_metric("macro_f1").aggregate(predicted, [ex(g) for g in gold])
    assert ours == pytest.approx(f1_score(gold, predicted, labels=sorted(set(gold)), average="macro"))


def test_chrf_takes_the_best_reference():
    assert chrf_score("abc", "xyz") == 0.0
    assert get_metric("chrf").per_example("abc", ex("xyz", "xyz", "abc")) == 1.0


def test_aggregate_defaults_to_the_mean():
    metric = get_metric("token_f1")
    assert metric.aggregate(["Broncos won in Denver", "Paris"], [ex("Denver Broncos"), ex("Paris")]) == pytest.approx((2 / 3 + 1) / 2)


def test_json_fields_reports_every_gold_answer_that_is_not_json():
    metric = get_metric("json_fields")
    examples = [ex(GIRAFFE, line=1), ex("not json", line=7), ex("[1]", line=9)]
    with pytest.raises(MetricError) as err:
        metric.scores([GIRAFFE] * 3, examples)
    message = str(err.value)
    assert "2 of 3" in message and "line 7" in message and "line 9" in message and "'not json'" in message


def test_many_failures_are_summarised_after_ten():
    with pytest.raises(MetricError, match=r"12 of 12 examples:(\n  example \d+: .*){10}\n  \.\.\. and 2 more$"):
        get_metric("json_fields").scores(["{}"] * 12, [ex("not json")] * 12)


def test_length_mismatch_is_refused():
    with pytest.raises(ValueError, match="2 predictions for 1 examples"):
        get_metric("accuracy").scores(["a", "b"], [ex("a")])


# -- json_schema ------------------------------------------------------------------------------

SCHEMA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}


@pytest.mark.parametrize(
    "prediction, expected",
    [('{"name": "x"}', 1.0), ('Sure: {"name": "x", "extra": 1}', 1.0), ('{"name": 3}', 0.0), ("{}", 0.0), ("nope", 0.0)],
)
def test_json_schema(prediction, expected):
    pytest.importorskip("jsonschema")
    metric = get_metric("json_schema", schema=SCHEMA)
    assert metric.binary
    assert metric.per_example(prediction, ex("{}")) == expected


def test_json_schema_from_a_file(tmp_path):
    pytest.importorskip("jsonschema")
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    assert get_metric("json_schema", schema=path).per_example('{"name": "x"}', ex("{}")) == 1.0


@pytest.mark.parametrize(
    "schema, message",
    [(None, "needs a schema"), ("missing.json", "not found"), ({"type": "nonsense"}, "schema itself is invalid")],
)
def test_json_schema_errors(schema, message):
    pytest.importorskip("jsonschema")
    with pytest.raises(MetricError, match=message):
        get_metric("json_schema", schema=schema)


def test_json_schema_without_jsonschema_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "jsonschema", None)
    with pytest.raises(MetricError, match="pip install jsonschema"):
        get_metric("json_schema", schema=SCHEMA)


# -- registry and custom functions ------------------------------------------------------------


def test_unknown_metric_lists_every_valid_name():
    with pytest.raises(MetricError) as err:
        get_metric("acuracy")
    message = str(err.value)
    assert "'acuracy'" in message and "did you mean 'accuracy'" in message
    assert all(name in message for name in METRICS)
    assert "module:function" in message


def test_options_a_metric_does_not_take_are_refused():
    with pytest.raises(MetricError, match="'accuracy' takes no options; got schema"):
        get_metric("accuracy", schema=SCHEMA)


def test_secondary_metrics_are_registered_companions():
    assert secondary_metrics("accuracy") == ["macro_f1"]
    assert secondary_metrics("json_fields") == ["json_valid"]
    assert secondary_metrics("token_f1") == ["exact_match", "contains"]
    assert secondary_metrics("mymodule:score") == []
    for name in METRICS:
        assert name not in secondary_metrics(name)
        assert set(secondary_metrics(name)) <= set(METRICS)


def test_available_metrics_describes_every_metric():
    described = available_metrics()
    assert list(described) == list(METRICS) and all(described.values())


CUSTOM = '''
def contains(prediction, references):
    """1 when a reference appears in the prediction."""
    return any(r.lower() in prediction.lower() for r in references)

contains.binary = True

def same_as_question(prediction, example):
    return float(prediction == example.input_text)

def length(prediction, references):
    return len(prediction)

length.higher_is_better = False

def broken(prediction, references):
    raise KeyError("boom")

def returns_text(prediction, references):
    return "high"

def not_really_binary(prediction, references):
    return 0.5

not_really_binary.binary = True

def one_argument(prediction):
    return 1.0

NOT_A_FUNCTION = 3
'''


@pytest.fixture
def custom_file(tmp_path):
    path = tmp_path / "scoring" / "custom_metric.py"
    path.parent.mkdir()
    path.write_text(CUSTOM)
    return path


def test_custom_function_from_a_file(custom_file):
    metric = get_metric("scoring/custom_metric.py:contains", base_dir=custom_file.parent.parent)
    assert metric.name == "scoring/custom_metric.py:contains"
    assert metric.binary and metric.description == "1 when a reference appears in the prediction."
    examples = [ex("Paris"), ex("Rome", "Roma", "Rome")]
    assert metric.scores(["It is paris.", "Milan"], examples) == [1.0, 0.0]
    assert metric.aggregate(["It is paris.", "I say roma"], examples) == 1.0


def test_custom_function_from_a_module(custom_file, monkeypatch):
    monkeypatch.syspath_prepend(str(custom_file.parent))
    metric = get_metric("custom_metric:length")
    assert not metric.binary and not metric.higher_is_better
    assert metric.per_example("abcd", ex("x")) == 4.0


def test_custom_function_may_take_the_example(custom_file):
    metric = get_metric(f"{custom_file}:same_as_question")
    assert metric.per_example("q", ex("x")) == 1.0 and metric.per_example("x", ex("x")) == 0.0


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_such_module_xyz:score", "cannot import module 'no_such_module_xyz'"),
        ("missing/file.py:score", "custom metric file not found"),
        ("{file}:nope", "'nope' not found in .* functions there: broken, contains, length, not_really_binary, one_argument"),
        ("{file}:NOT_A_FUNCTION", "is a int, not a function"),
        ("{file}:one_argument", r"must accept \(prediction, references\)"),
        ("{file}:", "write module:function"),
    ],
)
def test_custom_function_errors_say_what_to_fix(custom_file, spec, message):
    with pytest.raises(MetricError, match=message):
        get_metric(spec.format(file=custom_file))


def test_custom_file_that_fails_to_import(tmp_path):
    (tmp_path / "bad.py").write_text("import no_such_package_xyz\n")
    with pytest.raises(MetricError, match=r"importing .*bad.py failed: ModuleNotFoundError"):
        get_metric("bad.py:score", base_dir=tmp_path)


@pytest.mark.parametrize(
    "function, message",
    [
        ("broken", "raised KeyError: 'boom'"),
        ("returns_text", "returned 'high'; return a finite number"),
        ("not_really_binary", "sets binary = True but returned 0.5; return 0 or 1"),
    ],
)
def test_custom_function_failures_name_every_example(custom_file, function, message):
    metric = get_metric(f"{custom_file}:{function}")
    with pytest.raises(MetricError) as err:
        metric.scores(["a", "b"], [ex("x", line=3), ex("y", line=4)])
    text = str(err.value)
    assert "2 of 2" in text and "line 3" in text and "line 4" in text and message in text


# -- real data and the import budget ----------------------------------------------------------


def _load(path):
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Example(r["messages"][:-1], r["messages"][-1]["content"], r.get("references", [])) for r in rows]


@pytest.mark.parametrize(
    "task, names",
    [("intent", ["accuracy", "macro_f1"]), ("e2e_extract", ["json_fields", "json_valid"]), ("squad_rag", ["exact_match", "token_f1", "contains"])],
)
def test_gold_answers_score_perfectly_on_bundled_data(task, names):
    examples = _load(EXAMPLES / task / "eval.jsonl")
    for name in names:
        assert get_metric(name).aggregate([e.answer for e in examples], examples) == 1.0


def test_wrong_labels_score_zero_on_bundled_data():
    examples = _load(EXAMPLES / "intent" / "eval.jsonl")
    labels = sorted({e.answer for e in examples})
    shifted = [labels[(labels.index(e.answer) + 1) % len(labels)] for e in examples]
    assert get_metric("accuracy").aggregate(shifted, examples) == 0.0
    assert get_metric("macro_f1").aggregate(shifted, examples) == 0.0


def test_eval_imports_neither_torch_nor_scipy():
    code = "import sys, tunewise.eval; print(sorted(m for m in ('torch', 'scipy', 'jsonschema') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
