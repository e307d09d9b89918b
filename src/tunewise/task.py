"""The task file: one YAML document describing one decision.

Every field is documented where it is declared. `load_task` validates the whole file at once and
raises `TaskError` whose message names each bad field and its value.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


from tunewise.errors import TunewiseError


class TaskError(TunewiseError):
    """A task file that cannot be used; the message says what and how to fix it."""


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
    model_config = ConfigDict(extra="forbid")


class Pricing(Strict):
    """Prices used for every cost figure. Defaults are OpenAI gpt-4o-mini list prices (USD, 2024):
    set yours. Give hosted API prices, or a GPU hourly price for self-hosting, or both."""

    input_per_1m: float | None = Field(0.15, ge=0, description="$ per 1M prompt tokens, base model")
    output_per_1m: float | None = Field(0.60, ge=0, description="$ per 1M output tokens, base model")
    finetuned_input_per_1m: float | None = Field(0.30, ge=0, description="$ per 1M prompt tokens, fine-tuned model")
    finetuned_output_per_1m: float | None = Field(1.20, ge=0, description="$ per 1M output tokens, fine-tuned model")
    training_per_1m: float | None = Field(3.00, ge=0, description="hosted fine-tuning $ per 1M training tokens")
    gpu_hourly: float | None = Field(None, ge=0, description="self-hosting: $ per GPU hour")
    gpu_inference_tokens_per_s: float = Field(2500.0, gt=0, description="self-hosting: tokens/s one GPU serves")
    gpu_training_tokens_per_s: float = Field(5000.0, gt=0, description="self-hosting: tokens/s one GPU trains")

    @model_validator(mode="after")
    def _some_price(self) -> "Pricing":
        hosted = self.input_per_1m is not None and self.output_per_1m is not None
        if not hosted and self.gpu_hourly is None:
            raise ValueError("give input_per_1m and output_per_1m (hosted API) or gpu_hourly (self-hosting)")
        return self

    @property
    def self_hosted(self) -> bool:
        return self.gpu_hourly is not None and (self.input_per_1m is None or self.output_per_1m is None)


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
    seed: int = Field(0, description="seed for the split and every sampler")
    format: str = Field("auto", description="auto, chat, prompt_completion, alpaca, sharegpt, csv")

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


class FewShotSpec(Strict):
    k: int = Field(5, ge=1, le=64, description="examples shown in the prompt")
    selection: Literal["nearest", "fixed"] = Field("nearest", description="nearest by embedding, or a fixed sample")


class RagSpec(Strict):
    k: int = Field(3, ge=1, le=50, description="chunks put in the prompt")
    chunk_words: int = Field(200, ge=20, description="long documents are split into chunks of about this many words")
    mode: Literal["hybrid", "bm25", "dense"] = Field("hybrid", description="hybrid fuses BM25 and dense by RRF")


class LoraSpec(Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


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
    bf16: Literal["auto", "on", "off"] = "auto"


class LadderSpec(Strict):
    rungs: list[str] = Field(
        default_factory=lambda: ["zero_shot", "few_shot", "rag", "few_shot_rag", "lora", "lora_rag"],
        description="rungs to climb, cheapest first; rungs that need a corpus are skipped without one",
    )
    few_shot: FewShotSpec = Field(default_factory=FewShotSpec)
    rag: RagSpec = Field(default_factory=RagSpec)
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
    adaptive: bool = Field(
        True, description="score eval in four looks and stop once the verdict cannot change (`tunewise run --full` scores all)"
    )


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
    model: str = Field("embedded", description="embedded, a local folder, a .gguf path, a hub id, or openai:NAME")
    model_options: ModelOptions = Field(default_factory=ModelOptions)
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

    def resolved(self, base: Path) -> "Task":
        """Paths relative to the task file become absolute."""

        def fix(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else (base / p).resolve())

        data = self.data.model_copy(update={k: fix(getattr(self.data, k)) for k in ("train", "eval", "file")})
        return self.model_copy(update={"data": data, "corpus": fix(self.corpus)})


def _format_errors(err: ValidationError, raw: dict[str, Any]) -> list[str]:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling against examples/*/task.yaml"
        lines.append(f"{loc}: {msg}{shown}")
    return lines


def parse_task(raw: Any, path: Path | None = None) -> Task:
    where = str(path) if path else "task"
    if not isinstance(raw, dict):
        raise TaskError(f"{where}: expected a YAML mapping of fields, got {type(raw).__name__}")
    try:
        task = Task.model_validate(raw)
    except ValidationError as err:
        problems = _format_errors(err, raw)
        raise TaskError(f"{where}: {len(problems)} problem(s):\n  " + "\n  ".join(problems)) from None
    base = path.parent.resolve() if path else Path.cwd()
    task = task.resolved(base)
    task.path = path.resolve() if path else None
    return task


def load_task(path: str | Path, check_files: bool = True) -> Task:
    """Read and validate a task file. Relative data paths are relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"task file not found: {path} (see examples/intent/task.yaml for a template)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TaskError(f"{path}: not valid YAML{at}: {getattr(err, 'problem', err)}") from None
    task = parse_task(raw, path)
    if check_files:
        missing = [
            f"{label}: file not found: {p}"
            for label, p in (
                ("data.train", task.data.train),
                ("data.eval", task.data.eval),
                ("data.file", task.data.file),
                ("corpus", task.corpus),
            )
            if p is not None and not p.exists()
        ]
        if missing:
            raise TaskError(f"{path}: " + "; ".join(missing))
    return task


def task_to_yaml(task: Task) -> str:
    """The resolved config, saved beside every result."""
    return yaml.safe_dump(task.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
