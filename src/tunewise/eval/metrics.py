"""Scoring: one small contract, `Metric`, and one registry, `METRICS`.

A metric scores one prediction against one `Example` (`per_example`, a float in [0, 1]) and a whole
eval set (`aggregate`, the mean of the per-example scores unless the metric is corpus-level, like
macro-F1). `get_metric` turns a task's `metric:` string into a `Metric`: a registered name, or
`module:function` / `path/to/file.py:function` for your own scoring function.

>>> get_metric("token_f1").per_example("Broncos won in Denver", Example([], "Denver Broncos"))
0.6666666666666666

Pure Python plus numpy: nothing heavy is imported here (jsonschema only when `json_schema` is built).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import re
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunewise.data.example import Example
from tunewise.errors import TunewiseError

Scorer = Callable[[str, Example], float]
CorpusStatistic = Callable[[np.ndarray], float]
"""A corpus-level metric recomputed on a subset of examples, given by their indices (bootstrap)."""


class MetricError(TunewiseError):
    """A metric that cannot be built or cannot score the data; the message says how to fix it."""


@dataclass(frozen=True)
class Metric:
    """One scoring function. Scores are in [0, 1] and higher is better for every built-in metric."""

    name: str
    score: Scorer
    """(prediction, example) -> score of that one example."""
    binary: bool = False
    """Per-example scores are 0 or 1, so two systems are compared with McNemar's test."""
    description: str = ""
    corpus: Callable[[list[str], list[Example]], CorpusStatistic] | None = None
    """Corpus-level metrics only (macro-F1): builds `statistic(indices) -> value`."""
    higher_is_better: bool = True

    def per_example(self, prediction: str, example: Example) -> float:
        return float(self.score(prediction, example))

    def scores(self, predictions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        """Per-example scores. Every example a metric cannot score is reported in one error."""
        _check_lengths(predictions, examples)
        scores, problems = [], []
        for i, (prediction, example) in enumerate(zip(predictions, examples)):
            try:
                scores.append(self.per_example(prediction, example))
            except MetricError as err:
                where = f"example {i}" + (f" (line {example.line})" if example.line else "")
                problems.append(f"{where}: {err}")
                scores.append(math.nan)
        if problems:
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise MetricError(
                f"metric {self.name!r} could not score {len(problems)} of {len(scores)} examples:\n  "
                + "\n  ".join(problems[:10])
                + more
            )
        return scores

    def corpus_statistic(self, predictions: Sequence[str], examples: Sequence[Example]) -> CorpusStatistic | None:
        """`statistic(indices) -> value` for a corpus-level metric; None when the metric is a plain mean
        of per-example scores (the statistics then resample those scores directly, which is faster)."""
        if self.corpus is None:
            return None
        _check_lengths(predictions, examples)
        return self.corpus(list(predictions), list(examples))

    def aggregate(self, predictions: Sequence[str], examples: Sequence[Example]) -> float:
        """The metric over the whole set: the mean of per-example scores, or the corpus-level value."""
        statistic = self.corpus_statistic(predictions, examples)
        if statistic is not None:
            return statistic(np.arange(len(examples)))
        return float(np.mean(self.scores(predictions, examples)))


def _check_lengths(predictions: Sequence[str], examples: Sequence[Example]) -> None:
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples; give one per example")
    if not examples:
        raise ValueError("no examples to score")


# -- normalisation ----------------------------------------------------------------------------

_ASCII_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _is_punctuation(char: str) -> bool:
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, drop punctuation, drop articles, collapse whitespace.

    >>> normalize_answer("The  Denver Broncos!")
    'denver broncos'
    """
    text = "".join(c for c in text.lower() if not _is_punctuation(c))
    return " ".join(_ARTICLES.sub(" ", text).split())


_LABEL_WRAPPERS = " \t\"'`*.“”‘’"
_LABEL_PREFIX = re.compile(r"^(?:answer|label|intent|category|class|output)\s*:\s*", re.IGNORECASE)


def normalize_label(text: str) -> str:
    """A class label as small models write it, reduced to a comparable form.

    First non-empty line; surrounding quotes, backticks, asterisks and periods removed; a leading
    "Answer:", "Label:", "Intent:", "Category:", "Class:" or "Output:" removed; lowercased; runs of
    underscores, hyphens and whitespace become one space.

    >>> normalize_label('"Play_Music."\\nBecause the user asked for a song.')
    'play music'
    >>> normalize_label("Intent: book_restaurant")
    'book restaurant'
    """
    line = next((line for line in text.splitlines() if line.strip()), "")
    line = _LABEL_PREFIX.sub("", line.strip(_LABEL_WRAPPERS)).strip(_LABEL_WRAPPERS)
    return " ".join(re.sub(r"[_\-\s]+", " ", line.lower()).split())


_JSON_DECODER = json.JSONDecoder()


def extract_json(text: str) -> dict | list | None:
    """The first JSON object or array anywhere in the text, or None.

    Text around it is ignored, so a ```json fence or "Here is the JSON:" still parses.

    >>> extract_json('Sure! ```json\\n{"a": 1}\\n```')
    {'a': 1}
    >>> extract_json('{"a": 1') is None
    True
    """
    for start, char in enumerate(text):
        if char in "{[":
            try:
                value, _ = _JSON_DECODER.raw_decode(text, start)
            except json.JSONDecodeError:
                continue
            return value
    return None


def _f1(overlap: int, predicted: int, gold: int) -> float:
    if predicted == 0 and gold == 0:
        return 1.0
    if overlap == 0:
        return 0.0
    precision, recall = overlap / predicted, overlap / gold
    return 2 * precision * recall / (precision + recall)


# -- text metrics -----------------------------------------------------------------------------


def exact_match_score(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1_score(prediction: str, reference: str) -> float:
    """SQuAD token F1 on normalised tokens; two empty answers agree (SQuAD v2 convention)."""
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    overlap = sum((Counter(predicted) & Counter(gold)).values())
    return _f1(overlap, len(predicted), len(gold))


def _rouge_tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def contains_score(prediction: str, reference: str) -> float:
    """1 when the normalised reference appears, on word boundaries, in the normalised prediction.

    Answer recall for generative QA (as in PopQA, Mallen et al. 2023): it credits "The mayor of Warsaw
    is called President." for the gold "President", which token F1 scores 0.29. A model that writes whole
    paragraphs games it, so keep `max_new_tokens` small and read it beside token F1.

    >>> contains_score("The mayor of Warsaw is called President.", "President"), contains_score("Presidential", "President")
    (1.0, 0.0)
    """
    gold = normalize_answer(reference)
    return float(bool(gold) and f" {gold} " in f" {normalize_answer(prediction)} ")


def rouge_l_score(prediction: str, reference: str) -> float:
    """ROUGE-L F1: longest common subsequence of lowercased word tokens (no stemming).

    >>> round(rouge_l_score("police killed the gunman", "police kill the gunman"), 2)
    0.75
    """
    predicted, gold = _rouge_tokens(prediction), _rouge_tokens(reference)
    return _f1(_lcs_length(predicted, gold), len(predicted), len(gold))


def _char_ngrams(text: str, n: int) -> Counter:
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf_score(prediction: str, reference: str, order: int = 6, beta: float = 2.0) -> float:
    """chrF (Popović 2015) as sacrebleu computes it by default, on a 0-1 scale.

    Whitespace is removed; for n = 1..order, character n-gram precision and recall are averaged over
    the orders both strings have n-grams for; the score is the F-beta of those two averages.

    >>> round(chrf_score("ab", "abc"), 4)  # P = (1 + 1)/2, R = (2/3 + 1/2)/2, F2 = 5PR/(4P + R)
    0.6364
    """
    predicted, gold = "".join(prediction.split()), "".join(reference.split())
    precisions, recalls = [], []
    for n in range(1, order + 1):
        predicted_ngrams, gold_ngrams = _char_ngrams(predicted, n), _char_ngrams(gold, n)
        if predicted_ngrams and gold_ngrams:
            matched = sum((predicted_ngrams & gold_ngrams).values())
            precisions.append(matched / predicted_ngrams.total())
            recalls.append(matched / gold_ngrams.total())
    if not precisions:
        return 0.0
    precision, recall = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if precision + recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (beta**2 * precision + recall)


# -- labels -----------------------------------------------------------------------------------


def label_match(prediction: str, reference: str) -> float:
    return float(normalize_label(prediction) == normalize_label(reference))


def _macro_f1_statistic(predictions: list[str], examples: list[Example]) -> CorpusStatistic:
    """Macro-F1 over the gold labels (each example's `answer`); other predictions are misses."""
    gold_labels = [normalize_label(ex.answer) for ex in examples]
    labels = sorted(set(gold_labels))
    code = {label: i for i, label in enumerate(labels)}
    gold = np.array([code[label] for label in gold_labels])
    predicted = np.array([code.get(normalize_label(p), -1) for p in predictions])
    n_labels = len(labels)

    def statistic(indices: np.ndarray) -> float:
        g, p = gold[indices], predicted[indices]
        true_pos = np.bincount(g[g == p], minlength=n_labels)
        gold_count = np.bincount(g, minlength=n_labels)
        predicted_count = np.bincount(p[p >= 0], minlength=n_labels)
        denominator = gold_count + predicted_count  # = 2TP + FP + FN
        # A label absent from both gold and predictions of a resample has no F1 (0/0): leave it out.
        present = denominator > 0
        return float(np.mean(2 * true_pos[present] / denominator[present]))

    return statistic


# -- JSON -------------------------------------------------------------------------------------


def _normalize_json_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return " ".join(text.split()).lower()


def _json_pairs(obj: dict) -> set[tuple[str, str]]:
    return {(_normalize_json_text(k), _normalize_json_text(v)) for k, v in obj.items()}


def json_valid_score(prediction: str, example: Example) -> float:
    return float(extract_json(prediction) is not None)


def json_fields_score(prediction: str, example: Example) -> float:
    """F1 over (key, value) pairs of the predicted and gold JSON objects, best over references.

    Keys and values are compared as text, lowercased with whitespace collapsed; nested values are
    compared whole. A missing gold field lowers recall, an extra or wrong field lowers precision.
    """
    golds = [obj for obj in (extract_json(r) for r in example.references) if isinstance(obj, dict)]
    if not golds:
        raise MetricError(
            f"json_fields needs a JSON object as the gold answer, got {example.answer[:80]!r}; "
            "fix the data or choose another metric (token_f1, rouge_l)"
        )
    predicted = extract_json(prediction)
    if not isinstance(predicted, dict):
        return 0.0
    predicted_pairs = _json_pairs(predicted)
    return max(
        _f1(len(predicted_pairs & gold_pairs), len(predicted_pairs), len(gold_pairs))
        for gold_pairs in map(_json_pairs, golds)
    )


def json_schema_metric(schema: dict | str | Path | None = None) -> Metric:
    """1 when the prediction holds a JSON value that conforms to the JSON schema, else 0."""
    if schema is None:
        raise MetricError(
            "json_schema needs a schema: get_metric('json_schema', schema=<dict or path to a .json file>)"
        )
    if not isinstance(schema, dict):
        path = Path(schema)
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MetricError(f"json_schema: schema file not found: {path}") from None
        except json.JSONDecodeError as err:
            raise MetricError(f"json_schema: {path} is not valid JSON: {err}") from None
    try:
        import jsonschema
    except ImportError:
        raise MetricError("json_schema needs the jsonschema package: pip install jsonschema") from None
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as err:
        raise MetricError(f"json_schema: the schema itself is invalid: {err.message}") from None
    validator = validator_class(schema)

    def score(prediction: str, example: Example) -> float:
        value = extract_json(prediction)
        return float(value is not None and validator.is_valid(value))

    return Metric("json_schema", score, binary=True, description="The prediction conforms to the JSON schema.")


# -- registry ---------------------------------------------------------------------------------


def _best_reference(score: Callable[[str, str], float]) -> Scorer:
    return lambda prediction, example: max(score(prediction, reference) for reference in example.references)


def _builder(name: str, score: Scorer, binary: bool, description: str, **extra: Any) -> Callable[[], Metric]:
    def build() -> Metric:
        return Metric(name, score, binary=binary, description=description, **extra)

    build.__doc__ = description
    return build


METRICS: dict[str, Callable[..., Metric]] = {
    "exact_match": _builder(
        "exact_match", _best_reference(exact_match_score), True, "Normalised prediction equals a reference (SQuAD)."
    ),
    "accuracy": _builder("accuracy", _best_reference(label_match), True, "Predicted label equals the gold label."),
    "macro_f1": _builder(
        "macro_f1",
        lambda prediction, example: label_match(prediction, example.answer),
        False,
        "Macro-averaged F1 over the gold labels, computed on the whole set.",
        corpus=_macro_f1_statistic,
    ),
    "token_f1": _builder("token_f1", _best_reference(token_f1_score), False, "SQuAD token F1, best over references."),
    "contains": _builder(
        "contains", _best_reference(contains_score), True, "A normalised reference appears in the prediction (answer recall)."
    ),
    "rouge_l": _builder("rouge_l", _best_reference(rouge_l_score), False, "ROUGE-L F1 on words, best over references."),
    "chrf": _builder("chrf", _best_reference(chrf_score), False, "chrF (character 6-grams, beta 2), 0-1 scale."),
    "json_valid": _builder("json_valid", json_valid_score, True, "The prediction contains a JSON object or array."),
    "json_fields": _builder("json_fields", json_fields_score, False, "F1 over the gold JSON's (key, value) pairs."),
    "json_schema": json_schema_metric,
}
"""Every built-in metric, by name: a function that builds it (json_schema takes `schema=`).

`judge` (a model as the judge; takes `judge=`, `mode=`, `rubric=` and more) registers itself here from
tunewise.eval.judge, which `tunewise.eval` imports: that module builds on `Metric`, so this one does
not import it back."""

SECONDARY: dict[str, list[str]] = {
    "accuracy": ["macro_f1"],
    "macro_f1": ["accuracy"],
    "exact_match": ["token_f1", "contains"],
    "token_f1": ["exact_match", "contains"],
    "contains": ["token_f1"],
    "rouge_l": ["chrf"],
    "chrf": ["rouge_l"],
    "json_fields": ["json_valid"],
    "json_schema": ["json_valid"],
    "json_valid": [],
}


def secondary_metrics(primary: str) -> list[str]:
    """Metrics worth reporting beside the primary one; none for a custom function.

    >>> secondary_metrics("accuracy")
    ['macro_f1']
    """
    return list(SECONDARY.get(primary, []))


def available_metrics() -> dict[str, str]:
    """Name -> one-line description, for help text and error messages."""
    return {name: (build.__doc__ or "").strip().splitlines()[0] for name, build in METRICS.items()}


def get_metric(name: str, base_dir: str | Path | None = None, **options: Any) -> Metric:
    """A metric by registered name, or a user function given as `module:function` or
    `path/to/file.py:function` (a relative path is relative to `base_dir`, default the current folder).

    `options` go to the metric's builder: `get_metric("json_schema", schema={...})`.
    """
    if name in METRICS:
        build = METRICS[name]
        accepted = list(inspect.signature(build).parameters)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            takes = f"takes only {', '.join(accepted)}" if accepted else "takes no options"
            raise MetricError(f"metric {name!r} {takes}; got {', '.join(unknown)}")
        return build(**options)
    if ":" in name:
        if options:
            raise MetricError(f"a custom metric takes no options; got {', '.join(sorted(options))}")
        return load_custom_metric(name, base_dir)
    close = difflib.get_close_matches(name, METRICS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise MetricError(
        f"unknown metric {name!r}{hint}; valid metrics: {', '.join(METRICS)}, "
        "or your own function as module:function or path/to/file.py:function"
    )


# -- custom metrics ---------------------------------------------------------------------------


_ANNOUNCED: set[str] = set()


def _announce_code(what: str) -> None:
    """One line on stderr, once per process and file, whenever a custom metric's code is loaded: it
    runs with the user's permissions, so nobody should be surprised that it ran (docs/metrics.md)."""
    if what not in _ANNOUNCED:
        _ANNOUNCED.add(what)
        print(f"custom metric: runs Python code from {what}", file=sys.stderr, flush=True)


def _import_target(target: str, base_dir: str | Path | None) -> Any:
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_absolute():
            path = Path(base_dir or Path.cwd()) / path
        path = path.resolve()
        if not path.is_file():
            raise MetricError(f"custom metric file not found: {path}")
        # A unique module name per file, so two metric files called metric.py do not collide.
        module_name = f"tunewise_user_metric_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        _announce_code(str(path))
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[module_name]
            raise MetricError(f"importing {path} failed: {type(err).__name__}: {err}") from None
        return module
    _announce_code(f"module {target}")
    try:
        return importlib.import_module(target)
    except Exception as err:
        raise MetricError(
            f"cannot import module {target!r} ({type(err).__name__}: {err}); "
            "put it on PYTHONPATH or give a file path, e.g. metrics/score.py:function"
        ) from None


def load_custom_metric(spec: str, base_dir: str | Path | None = None) -> Metric:
    """Wrap `fn(prediction, references) -> float` (or `fn(prediction, example)`) as a Metric.

    The second argument is the Example when that parameter is named `example` or annotated
    `Example`; otherwise it is the list of accepted answers. Optional attributes on the function:
    `fn.binary = True` (scores are 0/1: compare with McNemar), `fn.higher_is_better = False`.
    """
    target, _, function_name = spec.rpartition(":")
    if not target or not function_name:
        raise MetricError(f"custom metric {spec!r}: write module:function or path/to/file.py:function")
    module = _import_target(target, base_dir)
    fn = getattr(module, function_name, None)
    if not callable(fn):
        functions = sorted(n for n, v in vars(module).items() if inspect.isfunction(v) and not n.startswith("_"))
        found = "not found" if fn is None else f"is a {type(fn).__name__}, not a function"
        raise MetricError(
            f"custom metric {spec!r}: {function_name!r} {found} in {target}; "
            f"functions there: {', '.join(functions) or 'none'}"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None  # a builtin without a signature: assume the documented one
    if signature is not None:
        try:
            signature.bind("prediction", ["reference"])
        except TypeError:
            raise MetricError(
                f"custom metric {spec!r} must accept (prediction, references); its signature is {signature}"
            ) from None
    parameters = list(signature.parameters.values()) if signature else []
    second = parameters[1] if len(parameters) > 1 else None
    wants_example = second is not None and (second.name == "example" or second.annotation in (Example, "Example"))
    binary = bool(getattr(fn, "binary", False))

    def score(prediction: str, example: Example) -> float:
        try:
            value = fn(prediction, example if wants_example else list(example.references))
        except Exception as err:
            raise MetricError(f"{spec} raised {type(err).__name__}: {err}") from None
        if not (isinstance(value, bool | int | float | np.number) and math.isfinite(value)):
            raise MetricError(f"{spec} returned {value!r}; return a finite number")
        if binary and value not in (0, 1):
            raise MetricError(f"{spec} sets binary = True but returned {value!r}; return 0 or 1, or drop binary")
        return float(value)

    return Metric(
        spec,
        score,
        binary=binary,
        description=(inspect.getdoc(fn) or f"custom metric {spec}").splitlines()[0],
        higher_is_better=bool(getattr(fn, "higher_is_better", True)),
    )
