"""The task file: one YAML document describing one decision.

Every field is documented where it is declared. `load_task` validates the whole file at once and
raises `TaskError` whose message names each bad field and its value.
"""

from __future__ import annotations

import difflib
import math
import reprlib
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


from tunewise.cost.pricing import Pricing
from tunewise.errors import TunewiseError


class TaskError(TunewiseError):
    """A task file that cannot be used; the message says what and how to fix it."""


SHOWN_CHARS = 80
"""Longest value echoed in an error: a hostile file must not make a megabyte-long message."""

_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 4, 6, SHOWN_CHARS, SHOWN_CHARS


def shorten(value: Any, limit: int = SHOWN_CHARS) -> str:
    """repr(value), cut to `limit` characters with an ellipsis.

    >>> shorten("x" * 200, 10)
    "'xxxxxxxx…"
    """
    try:
        text = repr(value[: limit + 1]) if isinstance(value, str) else _REPR.repr(value)
    except ValueError:  # an int too long for str() (Python's 4,300-digit limit)
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cut(text: str, limit: int = 200) -> str:
    """Message text (not a value: no quotes) cut to `limit` characters."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_metric_name(name: str) -> str:
    """A registered metric, or `module:function` / `path/to/file.py:function` (checked for form only:
    the file's existence is checked by `load_task`, and nothing is imported before the run)."""
    from tunewise.eval.metrics import METRICS

    if name in METRICS:
        return name
    if ":" in name:
        target, _, function = name.rpartition(":")
        if not target or not function.isidentifier():
            raise ValueError(f"custom metric {shorten(name)}: write module:function or path/to/file.py:function")
        return name
    close = difflib.get_close_matches(name, METRICS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"unknown metric {shorten(name)}{hint}; valid metrics: {', '.join(METRICS)}, "
        "or your own function as module:function or path/to/file.py:function"
    )


def custom_metric_file(name: str, base: Path) -> Path | None:
    """The file a `path/to/file.py:function` metric names (resolved against `base`), else None."""
    if name.count(":") < 1:
        return None
    target = name.rpartition(":")[0]
    if not (target.endswith(".py") or "/" in target or "\\" in target):
        return None  # module:function, found on the import path at run time
    path = Path(target)
    return path if path.is_absolute() else (base / path).resolve()


class Goal(str, Enum):
    knowledge = "knowledge"  # answer from facts the model does not know
    freshness = "freshness"  # facts change after training
    style = "style"  # a voice, tone or house style
    format = "format"  # strict output structure (JSON, labels, templates)
    behaviour = "behaviour"  # follow a procedure / policy consistently
    latency = "latency"  # faster or smaller model
    cost = "cost"  # cheaper per request at volume
    language = "language"  # a new language or modality


class Change(str, Enum):
    """How often the requirements (facts, rules, labels) change."""

    never = "never"
    yearly = "yearly"
    monthly = "monthly"
    weekly = "weekly"
    daily = "daily"


class Strict(BaseModel):
    # allow_inf_nan=False: `.inf`, `.nan` and the strings "inf"/"nan" are refused where they are read,
    # not deep in a cost or a chart two minutes into a run.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Business(Strict):
    """The context the advisor and the cost model need."""

    goals: list[Goal] = Field(default_factory=list, description="what customisation must achieve")
    calls_per_month: int = Field(10_000, ge=0, description="expected requests per month")
    requirements_change: Change = Field(Change.monthly, description="how often facts/rules/labels change")
    needs_fresh_facts: bool = Field(False, description="answers need up-to-date information")
    latency_budget_ms: float | None = Field(None, gt=0, description="p95 latency the product tolerates")
    horizon_months: int = Field(12, ge=1, description="months over which a one-off training cost is amortised")
    pricing: Pricing = Field(default_factory=Pricing)


class DataSpec(Strict):
    """Where the examples are. Either train and eval files, or one file split by eval_fraction."""

    train: Path | None = Field(None, description="training examples (any supported format)")
    eval: Path | None = Field(None, description="held-out examples scored by the ladder")
    file: Path | None = Field(None, description="one file to split into train/eval")
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="share of `file` held out for eval")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed for the split and every sampler (numpy's range)")
    format: str = Field("auto", description="auto, chat, prompt_completion, alpaca, sharegpt, csv")
    unlabelled: Path | None = Field(
        None, description="inputs without answers (e.g. production logs: user turns only, in any format above, "
        "detected from the file) that the distill rung's teacher answers too (docs/distill.md)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> "DataSpec":
        if self.file is None and (self.train is None or self.eval is None):
            raise ValueError("give `train` and `eval`, or `file` with `eval_fraction`")
        if self.file is not None and (self.train is not None or self.eval is not None):
            raise ValueError("give either `file` or `train`/`eval`, not both")
        return self


class ModelOptions(Strict):
    """How to reach or run the model. Unset fields keep the backend's defaults."""

    base_url: str | None = Field(None, description="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    api_key_env: str | None = Field(None, description="environment variable holding the API key (OPENAI_API_KEY)")
    max_concurrency: int | None = Field(None, ge=1, description="parallel HTTP requests")
    bf16: Literal["auto", "on", "off"] | None = Field(None, description="bf16 autocast for local models")
    max_batch_tokens: int | None = Field(None, ge=1, description="token budget of one generation batch")
    engine: Literal["transformers", "vllm"] | None = Field(
        None, description="generation engine for local models: transformers (default, anywhere) or vllm (CUDA, `pip install 'tunewise[vllm]'`)"
    )


class ModelEntry(Strict):
    """One model of a task's `models:` section: what it is, how to reach it, and its prices."""

    model: str = Field(description="embedded, a local folder, a .gguf path, a hub id, or openai:NAME")
    options: ModelOptions = Field(default_factory=ModelOptions)
    pricing: Pricing | None = Field(
        None, description="this model's prices as deployed (hosted per-token, or gpu_hourly for self-hosting); default: business.pricing"
    )

    @property
    def is_endpoint(self) -> bool:
        """Reached over HTTP (an OpenAI-compatible API): it answers, but cannot be trained here."""
        return self.model.startswith("openai:") or self.options.base_url is not None


class FewShotSpec(Strict):
    k: int = Field(5, ge=1, le=64, description="examples shown in the prompt")
    selection: Literal["nearest", "fixed"] = Field("nearest", description="nearest by embedding, or a fixed sample")


class QuantizeSpec(Strict):
    """The quantized rungs (docs/quantize.md): the same model with quantized weights, asked with a
    prompted rung's requests, so the paired test against that rung on the unquantized model measures
    the quantization alone."""

    prompt: Literal["zero_shot", "few_shot", "rag", "few_shot_rag"] = Field(
        "zero_shot", description="the prompted rung whose requests the quantized model answers (list it before the "
        "quantized rungs: their quality change and speed-up are against it)"
    )
    gguf_type: Literal["q8_0", "f16", "f32", "source"] = Field(
        "q8_0", description="quantized_gguf: the GGUF weight type written from the model's weights, or `source`: "
        "the model's own GGUF file as shipped (embedded: Q4_1); needs a GGUF model (embedded or a .gguf)"
    )


class RagSpec(Strict):
    k: int = Field(3, ge=1, le=50, description="chunks put in the prompt")
    chunk_words: int = Field(200, ge=20, description="long documents are split into chunks of about this many words")
    mode: Literal["hybrid", "bm25", "dense"] = Field("hybrid", description="hybrid fuses BM25 and dense by RRF")


class DistillSpec(Strict):
    """The distill rung (docs/distill.md): a LoRA student, asked with the zero-shot prompt, trained on a
    teacher candidate's answers to the training inputs (and `data.unlabelled`)."""

    teacher: str = Field(
        "few_shot", description="the candidate whose answers the student learns: any rung on any model "
        "(few_shot, few_shot@large, rag, lora@large); a bare rung runs on the first model"
    )
    keep_disagreeing: bool = Field(
        False, description="keep teacher answers that score 0 against a training input's gold answer; true: the "
        "gold answers are never used, the student learns the teacher's answers only"
    )
    folds: int = Field(
        5, ge=2, le=50, description="a teacher that shows training examples in its prompt (few-shot) answers each "
        "fold of the training inputs from the other folds' examples, so it never sees an input's own gold answer"
    )

    @field_validator("teacher")
    @classmethod
    def _teacher_rung(cls, v: str) -> str:
        from tunewise.rungs import RUNGS, split_candidate  # imports this module: only at validation time

        rung = split_candidate(v)[0]
        if rung == "distill":
            raise ValueError(f"the teacher {shorten(v)} is itself a student; name a rung that answers on its own, e.g. few_shot")
        if rung not in RUNGS:
            raise ValueError(f"unknown rung {shorten(v)}; valid teachers: {', '.join(n for n in RUNGS if n != 'distill')} "
                             "(on a model of `models:`: rung@model, e.g. few_shot@large)")
        return v


class LoraSpec(Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class RaftSpec(Strict):
    """How the `lora_rag` rung builds its training prompts, the RAFT way (Zhang et al. 2024;
    docs/finetune.md, "lora_rag: trained the RAFT way"): each train question asked with documents in
    the prompt exactly as the rung asks at inference, the gold document shuffled among distractors in
    `oracle_share` of them and left out of the rest. Only the train questions are ever retrieved for;
    the `lora` rung's adapter is not affected."""

    oracle_share: float = Field(
        0.8, ge=0, le=1, description="share of examples whose prompt holds the gold document (RAFT's P); the rest get one "
        "more distractor instead, so the adapter also learns to answer from memory when retrieval misses"
    )
    distractors: int | None = Field(
        None, ge=0, le=49, description="distractor chunks beside the gold one; default ladder.rag.k - 1, so a prompt "
        "holds k documents as at inference"
    )
    distractors_from: Literal["retrieved", "random"] = Field(
        "retrieved", description="retrieved: the train question's best-ranked chunks that are not from its gold document "
        "(the near misses inference shows); random: chunks drawn from the rest of the corpus (RAFT's sampling)"
    )
    max_examples: int | None = Field(
        None, ge=1, description="build prompts for a seeded sample of this many train examples (a RAFT prompt is about 10x "
        "a bare question's tokens, and so is its training time); default: every train example"
    )
    max_length: int | None = Field(
        None, ge=16, description="tokens a RAFT example is cut to (train.max_length for the bare-question adapter); default "
        "train.max_length plus 2 tokens a word of the documents (ladder.rag.k x ladder.rag.chunk_words)"
    )
    batch_size: int | None = Field(
        None, ge=1, description="the RAFT adapter's batch size; default train.batch_size. Training memory grows with "
        "batch x length and a RAFT prompt is about 10x a bare question: lower it when training runs out of memory"
    )


class TrainSpec(Strict):
    method: Literal["lora", "full", "qlora"] = "lora"
    lora: LoraSpec = Field(default_factory=LoraSpec)
    learning_rate: float = Field(2e-4, gt=0)
    epochs: int = Field(3, ge=1, le=20, description="the field's advice: 1-3")
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(512, ge=16, description="examples are truncated to this many tokens")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, description="carved from train for early stopping")
    early_stopping_patience: int = Field(1, ge=0, description="evaluations without improvement before stopping")
    eval_every_steps: int | None = Field(None, ge=1, description="validate every N steps instead of every epoch")
    checkpoint_every_minutes: float | None = Field(
        10, gt=0, description="also checkpoint when this long has passed since the last save, so a kill loses at most this much; null: at epoch ends (or eval steps) only"
    )
    learning_curve: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0], description="train-split shares")
    raft: RaftSpec = Field(
        default_factory=RaftSpec, description="the lora_rag rung's training prompts: retrieved documents, distractors, the gold one left out of a share"
    )

    @field_validator("learning_curve")
    @classmethod
    def _shares(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not 0 < x <= 1]
        if bad:
            raise ValueError(f"shares must be in (0, 1]; got {', '.join(shorten(x) for x in bad[:5])}, "
                             "e.g. [0.25, 0.5, 1.0]")
        return v
    bf16: Literal["auto", "on", "off"] = "auto"


class TuneSpec(Strict):
    """Tuning on dev (docs/decision.md, "Tuning on dev"): each listed knob's values are tried on a dev
    split carved (seeded) from train, never from eval, and the best on the task's metric is scored on
    eval once. A knob left unset keeps its one value from `few_shot`, `rag` or `train`."""

    dev_examples: int = Field(60, ge=5, le=5000, description="train examples held out as the dev split (not shown, retrieved or trained on by a tuned rung)")
    few_shot_k: list[int] | None = Field(None, description="few-shot k values to try (few_shot, few_shot_rag), e.g. [2, 4, 8]")
    few_shot_selection: list[Literal["nearest", "fixed"]] | None = Field(None, description="few-shot selections to try")
    rag_k: list[int] | None = Field(None, description="retrieved chunks to try (rag, few_shot_rag, lora_rag), e.g. [1, 3, 5]")
    learning_rate: list[float] | None = Field(None, description="learning rates to try (lora, lora_rag): one adapter trained per configuration")
    epochs: list[int] | None = Field(None, description="epoch counts to try (lora, lora_rag): one adapter trained per configuration")
    max_configs: int = Field(6, ge=1, le=50, description="the budget: at most this many configurations per rung, each scored on every dev example")

    @field_validator("few_shot_k", "rag_k", "learning_rate", "epochs", "few_shot_selection")
    @classmethod
    def _values(cls, v: list[Any] | None, info: Any) -> list[Any] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("give at least one value, or leave the knob out")
        if len(set(v)) != len(v):
            raise ValueError(f"values repeat: {shorten(v)}")
        limits = {"few_shot_k": (1, 64), "rag_k": (1, 50), "epochs": (1, 20)}
        if info.field_name in limits:
            low, high = limits[info.field_name]
            bad = [x for x in v if not low <= x <= high]
            if bad:
                raise ValueError(f"values must be in [{low}, {high}]; got {shorten(bad)}")
        if info.field_name == "learning_rate" and any(x <= 0 for x in v):
            raise ValueError(f"learning rates must be > 0; got {shorten(v)}")
        return sorted(v) if info.field_name != "few_shot_selection" else v


def default_rungs() -> list[str]:
    """Every rung of the registry that is not opt-in, cheapest first (today: zero_shot, few_shot, rag,
    few_shot_rag, lora, lora_rag)."""
    from tunewise.rungs import RUNGS  # imports this module: only when a task is built

    return [name for name, rung in RUNGS.items() if not rung.opt_in]


class LadderSpec(Strict):
    rungs: list[str] = Field(
        default_factory=default_rungs,
        description="rungs to climb, cheapest first; rungs that need a corpus are skipped without one",
    )

    @field_validator("rungs")
    @classmethod
    def _known_rungs(cls, v: list[str]) -> list[str]:
        from tunewise.rungs import RUNGS, split_candidate  # imports this module: only at validation time

        unknown = [name for name in v if split_candidate(name)[0] not in RUNGS]
        if unknown:
            raise ValueError(f"unknown rung {shorten(unknown[0])}; valid rungs: {', '.join(RUNGS)} "
                             "(on a model of `models:`: rung@model, e.g. few_shot@large)")
        if len(set(v)) != len(v):
            raise ValueError(f"a rung is listed twice: {shorten(sorted({n for n in v if v.count(n) > 1}))}")
        return v
    few_shot: FewShotSpec = Field(default_factory=FewShotSpec)
    quantize: QuantizeSpec = Field(default_factory=QuantizeSpec)
    rag: RagSpec = Field(default_factory=RagSpec)
    distill: DistillSpec = Field(default_factory=DistillSpec)
    max_new_tokens: int = Field(64, ge=1, le=4096)
    batch_size: int = Field(16, ge=1)
    eval_limit: int | None = Field(None, ge=1, description="score only the first N eval examples")
    alpha: float = Field(
        0.05, gt=0, lt=1, description="error rate of the whole decision: the chance of confidently choosing a rung worse than the best by more than the margin"
    )
    margin: float = Field(
        0.03, gt=0, description="smallest difference that matters, on the metric's scale (0.03 = 3 points of a 0-1 metric)"
    )
    relative_margin: float | None = Field(
        None, gt=0, lt=1, description="margin as a share of the best score instead (0.05 = 5% of it); overrides `margin`"
    )
    latency_requests: int = Field(
        16, ge=1, le=1000, description="single requests timed per rung for latency, interleaved across rungs"
    )
    adaptive: bool = Field(
        True, description="score eval in four looks and stop once the verdict cannot change (`tunewise run --full` scores all)"
    )
    tune: TuneSpec | None = Field(
        None, description="choose each rung's knobs on a dev split carved from train (docs/decision.md); off by default"
    )

    @model_validator(mode="after")
    def _tuning_budget(self) -> "LadderSpec":
        if self.tune is not None:
            from tunewise.ladder.tuning import budget_problems  # imports this module: only at validation time

            problems = budget_problems(self, self.rungs)
            if problems:
                raise ValueError("; ".join(problems))
        return self


class Task(Strict):
    """One decision: the data, how to score it, and the business context."""

    name: str = Field(description="short name, used for run folders")
    description: str = ""
    data: DataSpec
    corpus: Path | None = Field(None, description="knowledge corpus: JSONL with id/text, or a folder of .txt/.md")
    metric: str = Field("exact_match", description="a registered metric name, or module:function / file.py:function")
    metric_options: dict[str, Any] = Field(default_factory=dict, description="options for the metric, e.g. schema")
    extra_metrics: list[str] | None = Field(
        None,
        description="metrics reported beside `metric`, which alone decides; default: its usual companions "
        "(exact_match and contains beside token_f1, json_valid beside json_fields); [] for none",
    )
    target: float | None = Field(None, description="score that is good enough (same scale as the metric)")
    system_prompt: str | None = Field(None, description="defaults to the data's own system message")
    constraint: dict[str, Any] | None = Field(
        None,
        description="what constrained rungs (zero_shot_constrained, ...) restrict answers to: {labels: [...]}, "
        "{json_schema: {...} or file.json} or {regex: '...'}; default: the train labels (accuracy, macro_f1) "
        "or a JSON schema inferred from the train answers (json_* metrics)",
    )
    model: str = Field("embedded", description="embedded, a local folder, a .gguf path, a hub id, or openai:NAME")
    model_options: ModelOptions = Field(default_factory=ModelOptions)
    models: dict[str, ModelEntry] | None = Field(
        None,
        description="several models, by name, each with its own prices; rungs name theirs as rung@name "
        "(few_shot@large, lora@small), a bare rung runs on the first; replaces `model:`",
    )
    business: Business = Field(default_factory=Business)
    ladder: LadderSpec = Field(default_factory=LadderSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)

    path: Path | None = Field(None, exclude=True, description="the task file (set by load_task)")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError("use letters, digits, '-', '_' or '.' only")
        return v

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        return check_metric_name(v)

    @field_validator("extra_metrics")
    @classmethod
    def _known_extra_metrics(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            check_metric_name(name)
        return v

    @model_validator(mode="after")
    def _metric_takes_options(self) -> "Task":
        import inspect

        from tunewise.eval.metrics import METRICS

        given = sorted(self.metric_options)
        if not given:
            return self
        if self.metric not in METRICS:
            raise ValueError(f"metric_options: a custom metric takes no options; got {', '.join(given)}")
        accepted = list(inspect.signature(METRICS[self.metric]).parameters)
        unknown = [k for k in given if k not in accepted]
        if unknown:
            takes = f"takes only {', '.join(accepted)}" if accepted else "takes no options"
            raise ValueError(f"metric_options: metric {self.metric!r} {takes}; got {shorten(', '.join(unknown))}")
        return self

    @model_validator(mode="after")
    def _models(self) -> "Task":
        from tunewise.rungs import get_rung, split_candidate

        if self.models is not None:
            if not self.models:
                raise ValueError("models: name at least one model, e.g. {small: {model: embedded}}")
            bad = [k for k in self.models if not k or not all(c.isalnum() or c in "-_." for c in k)]
            if bad:
                raise ValueError(f"models: name {shorten(bad[0])}: use letters, digits, '-', '_' or '.' only")
            moved = [f for f in ("model", "model_options") if f in self.model_fields_set]
            if moved:
                raise ValueError(f"give `models:` or `{moved[0]}:`, not both: move it into a `models:` entry")
        explicit = "rungs" in self.ladder.model_fields_set
        for name in self.ladder.rungs:
            key = split_candidate(name)[1]
            if key is not None and (self.models is None or key not in self.models):
                known = f"models: {', '.join(self.models)}" if self.models else "the task has no `models:` section"
                raise ValueError(f"ladder.rungs: {shorten(name)} names model {shorten(key)}, which is not defined ({known})")
            entry = self.model_entry(key)
            if explicit and get_rung(name).trains and entry.is_endpoint:
                where = f"model {key!r}" if key else "the model"
                raise ValueError(f"ladder.rungs: {name} trains, but {where} ({_cut(entry.model, 80)}) is an OpenAI-compatible "
                                 "endpoint and cannot be trained here; run it on a local model (e.g. lora@small) or drop it")
        return self

    @model_validator(mode="after")
    def _distill_teacher_model(self) -> "Task":
        from tunewise.rungs import split_candidate

        teacher = self.ladder.distill.teacher
        key = split_candidate(teacher)[1]
        if key is not None and (self.models is None or key not in self.models):
            known = f"models: {', '.join(self.models)}" if self.models else "the task has no `models:` section"
            raise ValueError(f"ladder.distill.teacher: {shorten(teacher)} names model {shorten(key)}, which is not defined ({known})")
        return self

    @property
    def default_model_key(self) -> str | None:
        """The model a bare rung name runs on: the first of `models:`, or None (the single `model:`)."""
        return next(iter(self.models)) if self.models else None

    def candidate(self, name: str) -> str:
        """A rung or candidate name as results name it: bare with one `model:`, rung@model with `models:`."""
        from tunewise.rungs import MODEL_SEPARATOR, split_candidate

        rung, key = split_candidate(name)
        key = key or self.default_model_key
        return rung if key is None else f"{rung}{MODEL_SEPARATOR}{key}"

    def model_entry(self, key: str | None) -> ModelEntry:
        """A `models:` entry (the first for None), or the single `model:` as an entry."""
        if self.models is None:
            return ModelEntry(model=self.model, options=self.model_options, pricing=self.business.pricing)
        return self.models[key or next(iter(self.models))]

    def for_model(self, key: str | None) -> "Task":
        """This task as one of its models sees it: `model`, `model_options` and the prices set from
        that `models:` entry, so code that runs one model (training, generation, costs) needs nothing else."""
        if self.models is None:
            return self
        entry = self.model_entry(key)
        business = self.business.model_copy(update={"pricing": entry.pricing or self.business.pricing})
        return self.model_copy(update={"model": entry.model, "model_options": entry.options, "business": business})

    def resolved(self, base: Path) -> "Task":
        """Paths relative to the task file become absolute."""

        def fix(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p).resolve())

        data = self.data.model_copy(update={k: fix(getattr(self.data, k)) for k in ("train", "eval", "file", "unlabelled")})
        return self.model_copy(update={"data": data, "corpus": fix(self.corpus)})


# -- reading YAML safely ------------------------------------------------------------------------------

MAX_TASK_BYTES = 256_000
"""A task file is a page of settings (the bundled ones are under 3 KB); more is a mistake or an
attack, refused before parsing (PyYAML reads about a megabyte a second)."""
MAX_YAML_DEPTH = 50
"""Nesting deeper than this is refused while composing (PyYAML's composer recurses)."""
MAX_ALIAS_GROWTH = 100_000
"""Characters (plus one per node) aliases may add to what the file spells out. Anchors reuse a
value; the billion-laughs file uses them to multiply one, so every later reader (validation, error
messages, task_to_yaml) would walk 10**9 strings."""
MAX_NUMBER = 1e15
"""Largest magnitude of any number in a task file: more is a typo, and overflows costs to inf."""


class _YamlLimit(Exception):
    pass


class BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses deep nesting while composing; `read_yaml` also bounds what the
    aliases expand to. Timestamps stay strings (no task field is a date, and `2024-13-45` would be
    a ValueError), and an integer too long for int() stays a string for validation to name."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _YamlLimit(f"nested more than {MAX_YAML_DEPTH} levels deep at line {mark.line + 1}; "
                                 "flatten the structure")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_yaml_int(self, node: Any) -> Any:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            return node.value


BoundedLoader.add_constructor("tag:yaml.org,2002:timestamp", BoundedLoader.construct_yaml_str)
BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)


def _check_expansion(root: Any) -> None:
    """Refuse a node graph whose aliases grow it by over MAX_ALIAS_GROWTH or nest it past MAX_YAML_DEPTH,
    or refer to themselves. Sizes are memoised per node, so this costs one visit of each distinct node."""
    seen: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, height)
    open_nodes: set[int] = set()
    written = 0  # size of the distinct nodes visited so far: what the file itself spells out

    def visit(node: Any, depth: int) -> tuple[int, int]:
        nonlocal written
        key = id(node)
        if key in open_nodes:
            raise _YamlLimit("an alias refers to its own anchor (a recursive structure); write the value out")
        if key not in seen:
            if depth > MAX_YAML_DEPTH:
                raise _YamlLimit(f"aliases nest values more than {MAX_YAML_DEPTH} levels deep")
            open_nodes.add(key)
            if isinstance(node, yaml.ScalarNode):
                children: list[Any] = []
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            else:
                children = [n for pair in node.value for n in pair]
            size, height = 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0), 1
            written += size
            for child in children:
                child_size, child_height = visit(child, depth + 1)
                size, height = size + child_size, max(height, child_height + 1)
                if size > written + MAX_ALIAS_GROWTH:  # a subtree holds at most `written` distinct units
                    raise _YamlLimit(f"the YAML expands by more than {MAX_ALIAS_GROWTH:,} characters through its "
                                     "anchors and aliases (&name / *name); write the values out instead")
            open_nodes.discard(key)
            seen[key] = (size, height)
        size, height = seen[key]
        if depth + height - 1 > MAX_YAML_DEPTH:
            raise _YamlLimit(f"aliases nest values more than {MAX_YAML_DEPTH} levels deep")
        return size, height

    visit(root, 1)


def read_yaml(path: str | Path, max_bytes: int = MAX_TASK_BYTES) -> Any:
    """The one YAML reader for files a user hands tunewise (task files, a run folder's config.yaml):
    size-capped, UTF-8 with a clear error, safe tags only, aliases bounded. Raises TaskError.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise TaskError(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise TaskError(f"{path}: too large for a settings file (over {max_bytes:,} bytes); "
                        "point `data:` at the examples instead of pasting them in")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise TaskError(f"{path}: not UTF-8 (byte 0x{data[err.start]:02x} at line {line}); "
                        "save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None
    return parse_yaml(text, path)


def parse_yaml(text: str, where: str | Path = "task") -> Any:
    """YAML text, read as `read_yaml` reads a file (safe tags, nesting and aliases bounded); `where`
    starts every error message. Raises TaskError."""
    path = where
    if len(text) > MAX_TASK_BYTES:
        raise TaskError(f"{path}: too large for a settings file (over {MAX_TASK_BYTES:,} characters)")
    loader = None
    try:
        loader = BoundedLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    except _YamlLimit as err:
        raise TaskError(f"{path}: {err}") from None
    except yaml.reader.ReaderError as err:  # a control character: say where, not "position 7"
        line = text[: err.position].count("\n") + 1
        raise TaskError(f"{path}: not valid YAML at line {line}: character #x{err.character:04x} is not "
                        "allowed; delete it") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TaskError(f"{path}: not valid YAML{at}: {_cut(getattr(err, 'problem', None) or str(err))}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as err:  # a constructor on odd input
        raise TaskError(f"{path}: not valid YAML: {_cut(f'{type(err).__name__}: {err}')}") from None
    finally:
        if loader is not None:
            loader.dispose()


# -- validation ---------------------------------------------------------------------------------------


def _number_problems(value: Any, loc: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], str]:
    """Non-finite or absurdly large numbers anywhere in the file, by location (metric_options only
    needs finite: a JSON schema may hold any bound), and lone surrogates: YAML's "\\ud800" escape
    reads as half a UTF-16 pair, which no tokenizer can encode."""
    problems: dict[tuple[Any, ...], str] = {}
    if isinstance(value, bool):
        return problems
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            escape = value[err.start].encode("utf-8", "backslashreplace").decode("ascii")
            problems[loc] = (f"lone surrogate {escape} at character {err.start + 1} (half of a UTF-16 pair); "
                             "write the character itself, or both halves of the pair, or delete it")
        return problems
    if isinstance(value, float) and not math.isfinite(value):
        problems[loc] = f"Input should be a finite number (got {shorten(value)})"
    elif isinstance(value, int | float) and loc[:1] != ("metric_options",) and abs(value) > MAX_NUMBER:
        problems[loc] = f"too large (got {shorten(value)}); the largest accepted is {MAX_NUMBER:.0e}"
    elif isinstance(value, dict):
        for k, v in value.items():
            problems.update(_number_problems(v, (*loc, k)))
            if isinstance(k, str):
                problems.update({(*loc, k): f"{msg} (in the key)" for msg in _number_problems(k).values()})
    elif isinstance(value, list):
        for i, v in enumerate(value):
            problems.update(_number_problems(v, (*loc, i)))
    return problems


def _where(loc: tuple[Any, ...]) -> str:
    return ".".join(shorten(p, 40).strip("'") if not isinstance(p, int) else str(p) for p in loc)


def _format_errors(err: ValidationError | None, numbers: dict[tuple[Any, ...], str]) -> list[str]:
    lines = [f"{_where(loc)}: {msg}" for loc, msg in numbers.items()]
    for e in err.errors() if err else []:
        loc = tuple(e["loc"])
        if any(loc[: len(bad)] == bad for bad in numbers):
            continue  # already said, more plainly
        value = e.get("input")
        shown = "" if isinstance(value, dict) or e["type"] == "value_error" else f" (got {shorten(value)})"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling against examples/*/task.yaml"
        lines.append(f"{_where(loc)}: {msg}{shown}" if loc else f"{msg}{shown}")
    return lines


def parse_task(raw: Any, path: Path | None = None) -> Task:
    where = str(path) if path else "task"
    if not isinstance(raw, dict):
        raise TaskError(f"{where}: expected a YAML mapping of fields, got {type(raw).__name__}")
    numbers = _number_problems(raw)
    try:
        task = Task.model_validate(raw)
        error = None
        # again after coercion: YAML 1.1 reads `1.0e300` (no exponent sign) as a string
        numbers.update(_number_problems(task.model_dump(exclude={"path"})))
    except ValidationError as err:
        error = err
    if error is not None or numbers:
        problems = _format_errors(error, numbers)
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise TaskError(f"{where}: {len(problems)} problem(s):\n  " + "\n  ".join(shown)) from None
    base = path.parent.resolve() if path else Path.cwd()
    task = task.resolved(base)
    task.path = path.resolve() if path else None
    return task


def _missing(path: Path, label: str) -> str | None:
    """Why `path` cannot be used, or None when it exists."""
    what = "custom metric file" if "metric" in label else "file"
    try:
        return None if path.exists() else f"{what} not found: {_cut(str(path))}"
    except OSError as err:  # a name too long for the file system, a permission on the way
        return f"{what} cannot be checked ({err.strerror or err}): {_cut(str(path))}"


def load_task(path: str | Path, check_files: bool = True) -> Task:
    """Read and validate a task file: every setting, and (check_files) that every file it names exists,
    so nothing fails after model work began. Relative paths are relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"task file not found: {path} (see examples/intent/task.yaml for a template)")
    task = parse_task(read_yaml(path), path)
    if check_files:
        base = path.parent.resolve()
        named = [
            ("data.train", task.data.train),
            ("data.eval", task.data.eval),
            ("data.file", task.data.file),
            ("data.unlabelled", task.data.unlabelled),
            ("corpus", task.corpus),
            ("metric", custom_metric_file(task.metric, base)),
            *(("extra_metrics", custom_metric_file(m, base)) for m in task.extra_metrics or []),
        ]
        missing = [f"{label}: {problem}" for label, p in named if p is not None and (problem := _missing(p, label))]
        if missing:
            raise TaskError(f"{path}: " + "; ".join(missing))
    return task


def task_to_yaml(task: Task) -> str:
    """The resolved config, saved beside every result."""
    # With `models:`, the single-model fields are not the task's (and may not be given beside it).
    exclude = {"model", "model_options"} if task.models is not None else set()
    return yaml.safe_dump(task.model_dump(mode="json", exclude=exclude), sort_keys=False, allow_unicode=True)
