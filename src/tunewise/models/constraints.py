"""Constrained decoding: what a rung's answers may look like, and how each backend enforces it.

A `Constraint` is one of three kinds (docs/models.md, "Constrained decoding"):

- `labels`: the answer is exactly one of a fixed set of strings (the labels seen in train);
- `json_schema`: the answer is a JSON value conforming to a schema (given, or inferred from the
  training answers: keys and value types);
- `regex`: the answer matches a regular expression.

Which kind applies is inferred from the task's metric unless the task says (`constraint:` in the
task file). Local transformers models enforce it with an xgrammar logits processor
(`hf_logits_processor`); OpenAI-compatible APIs get it as request fields (`openai_fields`).

This module imports no torch at import time; xgrammar is imported inside the function that needs it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tunewise.errors import TunewiseError
from tunewise.models.base import Generation, Messages, Progress, TokenStream, whole_answer

if TYPE_CHECKING:
    from tunewise.data.example import Example
    from tunewise.task import Task

Kind = Literal["labels", "json_schema", "regex"]
KINDS = ("labels", "json_schema", "regex")
LABEL_METRICS = ("accuracy", "macro_f1")
MAX_LABELS = 500
"""More distinct train answers than this is not a label set (free text): infer no label constraint."""


@dataclass(frozen=True)
class Constraint:
    kind: Kind
    labels: tuple[str, ...] = ()
    schema: dict[str, Any] | None = field(default=None, compare=False)
    pattern: str | None = None

    @property
    def key(self) -> str:
        """A stable identity, for caching compiled grammars."""
        return json.dumps([self.kind, list(self.labels), self.schema, self.pattern], sort_keys=True)

    def describe(self) -> str:
        """For titles and logs.

        >>> Constraint("labels", ("a", "b")).describe()
        'labels (2)'
        """
        if self.kind == "labels":
            return f"labels ({len(self.labels)})"
        if self.kind == "json_schema":
            return "JSON schema"
        return "regex"

    def ebnf(self) -> str:
        """The label set as an EBNF grammar (xgrammar's dialect): one alternative per label.

        >>> Constraint("labels", ("a", 'say "hi"')).ebnf()
        'root ::= "a" | "say \\\\"hi\\\\""'
        """
        return "root ::= " + " | ".join(json.dumps(label, ensure_ascii=False) for label in self.labels)

    def openai_fields(self, hosted_openai: bool) -> dict[str, Any]:
        """Request-body fields that carry the constraint to an OpenAI-compatible API.

        A JSON schema travels as OpenAI's structured outputs (`response_format: json_schema`), which
        vLLM, SGLang, llama.cpp's server and Ollama accept too. Labels and regexes have no field in
        OpenAI's own API; vLLM (and SGLang) take them as `guided_choice` / `guided_regex`.

        >>> Constraint("labels", ("yes", "no")).openai_fields(hosted_openai=False)
        {'guided_choice': ['yes', 'no']}
        """
        if self.kind == "json_schema":
            return {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": self.schema, "strict": True},
                }
            }
        if hosted_openai:
            raise TunewiseError(
                f"api.openai.com cannot constrain answers to a {self.kind.replace('_', ' ')} (only a JSON schema, "
                "through structured outputs); use an unconstrained rung, or a vLLM/SGLang server via base_url"
            )
        if self.kind == "labels":
            return {"guided_choice": list(self.labels)}
        return {"guided_regex": self.pattern}


# -- which constraint a task gets ---------------------------------------------------------------


def parse_constraint(raw: Any, base_dir: Any = None) -> Constraint:
    """The task file's `constraint:`, one of `{labels: [...]}`, `{json_schema: {...} or path}`,
    `{regex: '...'}`; every problem named in one error."""
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in KINDS:
        raise TunewiseError(
            f"constraint: give exactly one of {', '.join(KINDS)} (e.g. constraint: {{labels: [yes, no]}}); got {raw!r}"[:300]
        )
    kind, value = next(iter(raw.items()))
    if kind == "labels":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise TunewiseError(f"constraint.labels must be a non-empty list of non-empty strings; got {value!r}"[:300])
        return Constraint("labels", tuple(dict.fromkeys(value)))
    if kind == "regex":
        import re

        if not isinstance(value, str) or not value:
            raise TunewiseError(f"constraint.regex must be a non-empty string; got {value!r}")
        try:
            re.compile(value)
        except re.error as err:
            raise TunewiseError(f"constraint.regex {value!r} is not a valid regular expression ({err})") from None
        return Constraint("regex", pattern=value)
    return Constraint("json_schema", schema=_load_schema(value, base_dir, "constraint.json_schema"))


def _load_schema(value: Any, base_dir: Any, where: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        from pathlib import Path

        path = Path(value)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise TunewiseError(f"{where}: cannot read a JSON schema from {path} ({err})") from None
        if isinstance(schema, dict):
            return schema
    raise TunewiseError(f"{where} must be a JSON schema object or the path of a .json file; got {value!r}"[:300])


def label_set(answers: Sequence[str]) -> tuple[str, ...]:
    """The distinct training answers, stripped, in sorted order.

    >>> label_set([" b", "a", "b"])
    ('a', 'b')
    """
    return tuple(sorted({a.strip() for a in answers if a.strip()}))


_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"), (dict, "object"))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return next(name for cls, name in _JSON_TYPES if isinstance(value, cls))


def key_order(objects: Sequence[dict[str, Any]]) -> list[str]:
    """The keys of all objects in the order the objects write them: each next key is one that no
    remaining key precedes in most objects where both appear (ties: first seen). Constrained decoding
    writes a schema's properties in its order, so a key seen late must not be put last.

    >>> key_order([{"name": 1, "area": 1}, {"name": 1, "rating": 1, "area": 1}])
    ['name', 'rating', 'area']
    """
    seen = list(dict.fromkeys(k for obj in objects for k in obj))
    before: dict[tuple[str, str], int] = {}
    for obj in objects:
        keys = list(obj)
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                before[a, b] = before.get((a, b), 0) + 1
    order: list[str] = []
    remaining = list(seen)
    while remaining:
        def preceded(k: str) -> int:
            return sum(before.get((o, k), 0) > before.get((k, o), 0) for o in remaining if o != k)

        nxt = min(remaining, key=lambda k: (preceded(k), seen.index(k)))
        order.append(nxt)
        remaining.remove(nxt)
    return order


def infer_json_schema(answers: Sequence[str]) -> dict[str, Any]:
    """A JSON schema for answers like the training ones: an object with the keys seen (in the order
    the answers write them, `key_order`), each with the value types seen; keys present in every
    answer are required; no others.

    >>> infer_json_schema(['{"a": "x", "b": 1}', '{"a": "y"}'])
    {'type': 'object', 'properties': {'a': {'type': 'string'}, 'b': {'type': 'integer'}}, 'required': ['a'], 'additionalProperties': False}
    """
    objects, bad = [], []
    for i, text in enumerate(answers):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict):
            objects.append(value)
        else:
            bad.append(i + 1)
    if bad or not objects:
        shown = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise TunewiseError(
            f"cannot infer a JSON schema: {len(bad)} of {len(answers)} training answers are not JSON objects "
            f"(examples {shown or 'none given'}); give one with `constraint: {{json_schema: ...}}`"
        )
    types: dict[str, list[str]] = {}
    for obj in objects:
        for key, value in obj.items():
            seen = types.setdefault(key, [])
            kind = _json_type(value)
            if kind not in seen:
                seen.append(kind)
    properties: dict[str, Any] = {}
    for key in key_order(objects):
        kinds = types[key]
        if set(kinds) == {"integer", "number"}:
            kinds = ["number"]
        properties[key] = {"type": kinds[0] if len(kinds) == 1 else kinds}
    required = [k for k in types if all(k in obj for obj in objects)]
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def infer_constraint(task: "Task", train: Sequence["Example"]) -> Constraint:
    """The task's own `constraint:`, else one inferred from its metric and training answers:
    the train labels for accuracy and macro_f1, a JSON schema for json_* metrics (the metric's own
    `schema` option where given, else inferred from the training answers)."""
    given = getattr(task, "constraint", None)
    base = task.path.parent if task.path else None
    if given is not None:
        return parse_constraint(given, base)
    if task.metric in LABEL_METRICS:
        labels = label_set([ex.answer for ex in train])
        if not labels:
            raise TunewiseError("a label constraint needs training answers; the train split has none")
        if len(labels) > MAX_LABELS:
            raise TunewiseError(
                f"{len(labels)} distinct training answers is not a label set (more than {MAX_LABELS}); "
                "list the labels with `constraint: {labels: [...]}`"
            )
        return Constraint("labels", labels)
    if task.metric.startswith("json_"):
        if task.metric_options.get("schema") is not None:
            return Constraint("json_schema", schema=_load_schema(task.metric_options["schema"], base, "metric_options.schema"))
        return Constraint("json_schema", schema=infer_json_schema([ex.answer for ex in train]))
    raise TunewiseError(
        f"no constraint can be inferred for metric {task.metric!r} (labels for {', '.join(LABEL_METRICS)}, "
        "a JSON schema for json_* metrics); set `constraint:` in the task file: "
        "{labels: [...]}, {json_schema: ...} or {regex: '...'}"
    )


def constraint_kind(task: "Task") -> str:
    """What a constrained rung of this task restricts answers to, in words, without reading data.

    >>> from types import SimpleNamespace as T
    >>> constraint_kind(T(constraint=None, metric="accuracy")), constraint_kind(T(constraint={"regex": "x"}, metric="accuracy"))
    ('labels', 'regex')
    """
    given = getattr(task, "constraint", None)
    if isinstance(given, dict) and len(given) == 1:
        kind = next(iter(given))
    elif task.metric in LABEL_METRICS:
        kind = "labels"
    elif task.metric.startswith("json_"):
        kind = "json_schema"
    else:
        return "none"
    return {"json_schema": "JSON schema"}.get(kind, kind)


def constraint_unavailable(task: "Task") -> str | None:
    """Why constrained rungs cannot run on this task (a skip note), or None when they can."""
    if constraint_kind(task) == "none":
        return (
            f"no constraint for metric {task.metric!r}: set `constraint:` in the task file "
            "({labels: [...]}, {json_schema: ...} or {regex: '...'})"
        )
    return None


# -- backends -----------------------------------------------------------------------------------


class ConstrainedModel:
    """A `ChatModel` that generates every answer under one constraint, through a backend that
    accepts `constraint=` in `generate` (and `stream`). Rungs wrap their model in it, so the ladder,
    the latency timing and `tunewise serve` all use the constrained path unchanged."""

    def __init__(self, model: Any, constraint: Constraint) -> None:
        import inspect

        if "constraint" not in inspect.signature(model.generate).parameters:
            raise TunewiseError(
                f"model {getattr(model, 'name', model)!r} ({type(model).__name__}) cannot constrain its answers; "
                "constrained rungs need a local transformers model or an OpenAI-compatible API"
            )
        self.inner = model
        self.constraint = constraint
        self.name = model.name

    def budget(self, max_new_tokens: int) -> int:
        """A label is never cut short: its budget covers the longest label spelled one byte a token
        (constrained greedy decoding may choose a non-canonical split), plus the end token.
        Generation stops at the end token, so the larger budget costs nothing otherwise."""
        if self.constraint.kind != "labels":
            return max_new_tokens
        return max(max_new_tokens, 1 + max(len(label.encode()) for label in self.constraint.labels))

    def generate(self, conversations: Sequence[Messages], max_new_tokens: int, progress: Progress | None = None) -> list[Generation]:
        return self.inner.generate(conversations, self.budget(max_new_tokens), progress, constraint=self.constraint)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def __getattr__(self, name: str) -> Any:
        # Everything else (the transformers model for its context window, prompt_ids, precision)
        # is the wrapped backend's.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def stream(self, messages: Messages, max_new_tokens: int) -> TokenStream:
        own = getattr(self.inner, "stream", None)
        if callable(own):
            return own(messages, self.budget(max_new_tokens), constraint=self.constraint)
        return whole_answer(self, messages, max_new_tokens)


class GrammarCache:
    """xgrammar compiled grammars for one tokenizer, compiled once per constraint."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: list[int]) -> None:
        import xgrammar as xgr

        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_ids)
        self.compiler = xgr.GrammarCompiler(info, max_threads=1)
        self.compiled: dict[str, Any] = {}

    def get(self, constraint: Constraint) -> Any:
        if constraint.key not in self.compiled:
            c = self.compiler
            if constraint.kind == "labels":
                grammar = c.compile_grammar(constraint.ebnf())
            elif constraint.kind == "json_schema":
                # Compact JSON (no free whitespace): fewer tokens, and no runaway indentation.
                grammar = c.compile_json_schema(json.dumps(constraint.schema), any_whitespace=False)
            else:
                grammar = c.compile_regex(constraint.pattern)
            self.compiled[constraint.key] = grammar
        return self.compiled[constraint.key]


def hf_logits_processor(cache: GrammarCache, constraint: Constraint) -> Any:
    """A fresh transformers logits processor for one `generate` call (it keeps per-row state)."""
    import xgrammar.contrib.hf

    return xgrammar.contrib.hf.LogitsProcessor(cache.get(constraint))


def import_error_hint() -> str:
    return "constrained decoding needs xgrammar: pip install 'xgrammar>=0.2.9' (in the `ml` extra)"
