"""results.json: the machine-readable record of a run, versioned.

The HTML and Markdown reports are rendered from this file alone, so an old run can be re-rendered.
Bump SCHEMA_VERSION on any incompatible change and keep `load_results` reading the old ones.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from tunewise.errors import TunewiseError

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 2: margin-based verdicts (vs_best, Decision.confident, examples_needed)


class Score(BaseModel):
    value: float
    ci_low: float
    ci_high: float
    n: int


class LossPoint(BaseModel):
    step: int
    epoch: float
    train_loss: float | None = None
    val_loss: float | None = None


class TrainingSummary(BaseModel):
    method: str  # lora, full, qlora
    train_examples: int
    val_examples: int
    epochs_run: float
    best_epoch: float | None = None
    train_tokens: int  # tokens seen in training (all epochs)
    tokens_per_s: float
    wall_s: float
    peak_memory_mb: float | None = None
    device: str
    bf16: bool
    loss_curve: list[LossPoint] = Field(default_factory=list)
    overfitting_warning: str | None = None
    underfitting_note: str | None = None  # validation loss still falling clearly at the last epoch
    adapter_path: str | None = None
    gpu_cost_estimate: float | None = None  # $ to train at the task's GPU price
    hosted_cost_estimate: float | None = None  # $ at the hosted fine-tuning price


class Tried(BaseModel):
    config: dict[str, Any]  # knob -> value, e.g. {"few_shot_k": 4}
    dev_score: Score


class Tuning(BaseModel):
    """How a rung's knobs were chosen on dev (docs/decision.md, "Tuning on dev")."""

    dev_examples: int  # carved from train, never from eval
    pool_examples: int  # train examples left for the rung to draw on (dev removed)
    chosen: dict[str, Any]  # the configuration scored on eval
    tried: list[Tried]  # every configuration with its dev score, in the order tried (cheapest first)


class Fact(BaseModel):
    """One rung-specific figure, shown under the results table."""

    value: float | str | None
    text: str  # the figure in words, e.g. "agrees with its teacher on 93% of eval answers"


class RungResult(BaseModel):
    name: str  # the candidate: a registry name, e.g. "few_shot", or rung@model with `models:` ("few_shot@large")
    title: str  # for people, e.g. "Few-shot (k=5, nearest)"; "... on large" with several models
    model: str | None = None  # the model it ran on, as named by its spec (e.g. "SmolLM2-135M-Instruct")
    rung_version: int | None = None  # the rung module's version that answered (None: before versions, i.e. 1)
    pricing: str | None = None  # how that model is priced, in a few words ("hosted $0.15/$0.60 per 1M", "self-hosted $1.20/GPU h")
    status: Literal["done", "skipped", "failed"] = "done"
    note: str | None = None  # why skipped / failed
    finetuned: bool = False
    score: Score | None = None
    p_value_vs_best: float | None = None
    p_value_vs_previous: float | None = None
    p_value_vs_zero_shot: float | None = None  # paired test against the plain prompt, the baseline
    significantly_worse_than_best: bool | None = None  # schema 1; schema 2 reads vs_best
    # Against the best, within the task's margin (docs/decision.md): best, better, equivalent,
    # non-inferior, worse (by more than the margin) or inconclusive.
    vs_best: str | None = None
    diff_vs_best: float | None = None  # this rung minus the best, oriented: negative is worse
    diff_vs_best_low: float | None = None  # its confidence bounds at the decision's level
    diff_vs_best_high: float | None = None
    scored_examples: int | None = None  # eval examples scored; fewer than all when adaptive evaluation stopped early
    stopped: str | None = None  # why adaptive evaluation stopped scoring it early
    generation_s: float | None = None  # wall time spent generating its eval answers (this session)
    meets_target: bool | None = None
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    latency_p50_ci: tuple[float, float] | None = None  # 95% bootstrap interval of the median
    latency_requests: int | None = None  # single requests timed, interleaved with the other rungs'; None: before schema 2
    prompt_tokens: float | None = None  # mean per request
    output_tokens: float | None = None  # mean per request
    cost_per_1k: float | None = None  # $ per 1,000 requests
    monthly_cost: float | None = None  # $ per month at the task's volume
    upfront_cost: float = 0.0  # one-off $ (training)
    horizon_cost: float | None = None  # upfront + horizon_months x monthly
    retrieval_recall: float | None = None  # recall@k of the gold source document
    extra_scores: dict[str, Score] = Field(default_factory=dict)  # task.extra_metrics, reported, not decided on
    # Label tasks: gold label -> predicted label -> count; answers that are no gold label count as "(other)".
    confusion: dict[str, dict[str, int]] | None = None
    predictions_file: str | None = None
    training: TrainingSummary | None = None
    tuning: Tuning | None = None  # knobs chosen on dev before eval was scored; None when not tuned
    # Figures only this rung has, from its module's `facts` hook, e.g. a distilled student's agreement
    # with its teacher or a quantized model's memory: name -> (value, how to read it).
    facts: dict[str, Fact] = Field(default_factory=dict)


class BreakEven(BaseModel):
    cheaper_upfront: str  # rung with lower one-off cost (usually prompted)
    cheaper_per_call: str  # rung with lower per-request cost (usually fine-tuned)
    calls_per_month: float | None  # volume above which cheaper_per_call wins; None: never


class CurvePoint(BaseModel):
    examples: int
    score: Score


class LearningCurve(BaseModel):
    rung: str
    points: list[CurvePoint]
    fit: dict[str, float] | None = None  # parameters of the saturating curve
    fit_formula: str | None = None
    target: float | None = None
    examples_needed: float | None = None  # None with a verdict when the curve flattens below target
    verdict: str


class ProbeScore(BaseModel):
    name: str  # probe set name
    base: Score
    finetuned: Score
    delta: float
    delta_ci_low: float
    delta_ci_high: float
    p_value: float | None = None


class Forgetting(BaseModel):
    rung: str
    probes: list[ProbeScore]
    verdict: str


class Disagreement(BaseModel):
    index: int
    input: str
    gold: str
    answers: dict[str, str]  # rung -> answer
    scores: dict[str, float]  # rung -> per-example score


class Look(BaseModel):
    """One look of adaptive evaluation (docs/decision.md)."""

    examples: int  # eval examples each remaining rung had scored
    level: float  # one-sided level spent at this look, per comparison
    dropped: list[str] = Field(default_factory=list)  # shown worse than a rival by more than the margin
    settled: bool = False  # the verdict could no longer change: scoring stopped here


class Decision(BaseModel):
    rung: str | None  # None when nothing meets the target
    sentence: str  # the verdict in one sentence
    reasons: list[str]
    advisor_approach: str | None = None
    advisor_rules: list[str] = Field(default_factory=list)
    agreement: str | None = None  # where measurement and rules agree or disagree
    # What `agreement` says, for code: "unmeasured" when the advised approach has no rung.
    # None in results.json written before this field existed (the report then reads the sentence).
    agreement_kind: Literal["agree", "disagree", "unmeasured"] | None = None
    # Schema 2: the margin-based verdict. None in older results.json.
    confident: bool | None = None  # the rung is shown within the margin of the best (error rate controlled)
    margin: float | None = None  # smallest difference that matters, on the metric's scale
    alpha: float | None = None  # bound on the chance of confidently choosing a rung worse by more than the margin
    level: float | None = None  # one-sided level of each comparison after multiplicity control
    open_question: str | None = None  # what the data cannot tell, in words
    examples_needed: int | None = None  # eval examples that would settle it (80% power)
    looks: list[Look] = Field(default_factory=list)  # adaptive evaluation: what each look saw
    # What the score hides (decision/warnings.py): collapsed classes, companion metrics that disagree.
    warnings: list[str] = Field(default_factory=list)


class Results(BaseModel):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    task: str
    created: str  # ISO 8601
    model: str
    metric: str
    target: float | None = None
    higher_is_better: bool = True  # the metric's direction
    eval_examples: int
    train_examples: int
    calls_per_month: int
    horizon_months: int
    currency: str = "USD"
    rungs: list[RungResult] = Field(default_factory=list)
    decision: Decision | None = None
    break_even: list[BreakEven] = Field(default_factory=list)
    learning_curve: LearningCurve | None = None
    forgetting: Forgetting | None = None
    audit: dict[str, Any] | None = None  # summary from tunewise.data.audit
    advice: dict[str, Any] | None = None  # from tunewise.advise
    disagreements: list[Disagreement] = Field(default_factory=list)
    wall_s: float | None = None
    models: dict[str, str] = Field(default_factory=dict)  # a task's `models:`: name -> model (empty with one `model:`)

    def extra_metric_names(self) -> list[str]:
        """The extra metrics some rung was scored with, in first-seen order."""
        return list(dict.fromkeys(n for r in self.rungs for n in r.extra_scores))

    def rung(self, name: str) -> RungResult | None:
        return next((r for r in self.rungs if r.name == name), None)


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_results(results: Results, run_dir: Path) -> Path:
    path = run_dir / "results.json"
    atomic_write_text(path, results.model_dump_json(indent=2))
    return path


def load_results(path: Path) -> Results:
    """Read results.json from a run folder (or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise TunewiseError(f"no results.json at {path}; give a run folder written by `tunewise run`")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise TunewiseError(f"{path} is not valid JSON ({err}); rerun the task to rewrite it") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version not in READABLE_VERSIONS:
        raise TunewiseError(
            f"{path}: results schema version {version!r}, this tunewise reads {', '.join(map(str, READABLE_VERSIONS))}; "
            "upgrade tunewise or rerun the task"
        )
    try:
        return Results.model_validate(raw)
    except ValidationError as err:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
        raise TunewiseError(
            f"{path} is not a valid results.json ({len(problems)} problem(s): {'; '.join(problems)}); "
            "rerun the task to rewrite it"
        ) from None
